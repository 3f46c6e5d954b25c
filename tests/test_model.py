import json
import re

import pytest
import torch
import torchvision
from helpers import load_alone
from safetensors.torch import save_file
from torch.nn import functional as F

from modeling_resnet_cbam import (
    CBAM,
    PARAMETER_GROUPS,
    ResNetCBAMBackbone,
    ResNetCBAMConfig,
    ResNetCBAMForImageClassification,
    ResNetCBAMModel,
)
from training.backbones import load_backbone_weights, torchvision_state_dict

group_of = ResNetCBAMForImageClassification.parameter_group


def tiny_input(config: ResNetCBAMConfig, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size)


@pytest.mark.parametrize("placement", ["stage", "block"])
@pytest.mark.parametrize("stem, size, final", [("cifar", 32, 4), ("imagenet", 64, 2)])
def test_output_shapes(stem, size, final, placement):
    config = ResNetCBAMConfig(stem=stem, cbam_placement=placement, image_size=size, num_labels=7)
    model = ResNetCBAMForImageClassification(config).eval()
    out = model(tiny_input(config), labels=torch.tensor([0, 6]), output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (2, 7)
    assert out.loss.ndim == 0
    expected_cbams = 4 if placement == "stage" else sum(config.depths)
    assert len(out.channel_attentions) == len(out.spatial_attentions) == len(model.cbam_names) == expected_cbams
    assert out.spatial_attentions[-1].shape == (2, 1, final, final)
    assert out.channel_attentions[-1].shape == (2, 512)
    assert all(0 <= t.min() and t.max() <= 1 for t in out.spatial_attentions + out.channel_attentions)
    assert [h.shape[1] for h in out.hidden_states] == [64, 64, 128, 256, 512]
    base = ResNetCBAMModel(config).eval()(tiny_input(config))
    assert base.last_hidden_state.shape == (2, 512, final, final) and base.pooler_output.shape == (2, 512)
    assert base.channel_attentions is None


def test_resnet34_depths_build():
    config = ResNetCBAMConfig(depths=[3, 4, 6, 3])
    model = ResNetCBAMForImageClassification(config)
    assert len(model.resnet_cbam.backbone.layer3) == 6
    assert model(tiny_input(config)).logits.shape == (2, 10)


def test_cbam_matches_the_formulas():
    cbam = CBAM(channels=8, reduction=2, kernel_size=3)
    x = torch.randn(3, 8, 5, 6)
    w1, w2 = cbam.channel.mlp[0].weight, cbam.channel.mlp[2].weight
    assert w1.shape == (4, 8) and w2.shape == (8, 4) and cbam.channel.mlp[0].bias is None

    def mlp(v):
        return torch.relu(v @ w1.T) @ w2.T

    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    refined = x * channel[:, :, None, None]
    pooled = torch.stack([refined.mean(dim=1), refined.amax(dim=1)], dim=1)
    spatial = torch.sigmoid(F.conv2d(pooled, cbam.spatial.conv.weight, padding=1))
    expected = refined * spatial

    out, channel_weights, spatial_map = cbam(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(channel_weights.flatten(1), channel)
    torch.testing.assert_close(spatial_map, spatial)
    assert cbam.spatial.conv.weight.shape == (1, 2, 3, 3) and cbam.spatial.conv.bias is None


def test_default_model_has_the_tutorials_parameter_counts():
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    groups = model.parameter_groups()
    counts = {group: sum(p.numel() for p in parameters) for group, parameters in groups.items()}
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters()) == 11_217_874
    assert sum(map(len, groups.values())) == len(list(model.parameters())), "each parameter in exactly one group"
    assert counts["cbam"] + counts["head"] == 49_042
    assert counts["cbam"] + counts["head"] + counts["layer3"] + counts["layer4"] == 10_542_482
    assert tuple(counts) == PARAMETER_GROUPS
    assert counts["stem"] == 1_856 and counts["layer1"] == 147_968 and counts["head"] == 5_130
    assert "resnet_cbam.backbone.layer1.0.conv1.weight" in model.state_dict()
    assert all(
        "cbam" in name and any(s in name for s in ("layer1", "layer2", "layer3", "layer4"))
        for name in model.state_dict()
        if group_of(name) == "cbam"
    )


def test_block_placement_names_cbam_inside_blocks():
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(cbam_placement="block"))
    assert model.cbam_names[0] == "resnet_cbam.backbone.layer1.0.cbam"
    assert group_of("resnet_cbam.backbone.layer1.0.cbam.spatial.conv.weight") == "cbam"
    assert group_of("resnet_cbam.backbone.layer1.0.bn1.running_mean") == "layer1"
    assert group_of("resnet_cbam.backbone.bn1.weight") == "stem"
    with pytest.raises(ValueError, match="belongs to none of the groups"):
        group_of("resnet_cbam.pooler.weight")


@pytest.mark.parametrize(
    "field, value",
    [
        ("stem", "tiny"),
        ("cbam_placement", "head"),
        ("depths", [2, 2, 2]),
        ("cbam_kernel_size", 4),
        ("cbam_reduction", 0),
    ],
)
def test_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        ResNetCBAMConfig(**{field: value})


def saved_model(tmp_path, **config_fields):
    config = ResNetCBAMConfig(id2label={i: name for i, name in enumerate("abc")}, **config_fields)
    model = ResNetCBAMForImageClassification(config)
    with torch.no_grad():  # make BN statistics non-trivial so that a reload that re-initialised them would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model.eval().save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_save_and_reload_are_identical(tmp_path):
    model, folder = saved_model(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "configuration_resnet_cbam.py",
        "model.safetensors",
        "modeling_resnet_cbam.py",
        "preprocessor_config.json",
    ]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoBackbone"}
    reloaded = ResNetCBAMForImageClassification.from_pretrained(folder).eval()
    original, again = model.state_dict(), reloaded.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    x = tiny_input(model.config)
    assert torch.equal(model(x).logits, reloaded(x).logits)
    assert reloaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "BitImageProcessor"
    assert processor["crop_size"] == {"height": 32, "width": 32}
    assert processor["image_mean"] == pytest.approx([0.4914, 0.4822, 0.4465])


def test_saved_folder_loads_alone_with_auto_classes_and_pipeline(tmp_path):
    model, folder = saved_model(tmp_path)
    x = tiny_input(model.config)
    torch.save(x, tmp_path / "x.pt")
    result = load_alone(folder, tmp_path / "x.pt", tmp_path)
    assert (result["classifier"], result["base"]) == ("ResNetCBAMForImageClassification", "ResNetCBAMModel")
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(result["logits"]), model(x).logits)
        torch.testing.assert_close(torch.tensor(result["pooled"]), model.resnet_cbam(x).pooler_output)
        torch.testing.assert_close(torch.tensor(result["tuple"][1]), model(x).logits)
    assert result["tuple"][0] == "tuple", "return_dict=False in the config gives tuples, logits first"
    assert {p["label"] for p in result["pipeline"]} == {"a", "b", "c"}
    assert sum(p["score"] for p in result["pipeline"]) == pytest.approx(1.0, abs=1e-4)
    assert result["backbone"] == ["ResNetCBAMBackbone", [64, 128, 512], [1, 2, 8], ["stage1", "stage3"]]
    with torch.no_grad():
        stages = model(x, output_hidden_states=True).hidden_states  # stem, then layer1..layer4 after CBAM
    for got, index in zip(result["feature_maps"] + result["local_maps"], [0, 2, 4, 1, 3], strict=True):
        torch.testing.assert_close(torch.tensor(got), stages[index])


def test_return_dict_false_gives_tuples_at_both_levels():
    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, return_dict=False, num_labels=3)
    model = ResNetCBAMForImageClassification(config).eval()
    x = tiny_input(config)
    with torch.no_grad():
        logits, *rest = model(x)
        base = model.resnet_cbam(x)
        with_loss = model(x, labels=torch.tensor([0, 2]))
    assert isinstance(base, tuple) and base[1].shape == (2, 512)
    assert logits.shape == (2, 3) and rest == []
    torch.testing.assert_close(with_loss[1], logits)
    torch.testing.assert_close(with_loss[0], F.cross_entropy(logits, torch.tensor([0, 2])))
    assert model(x, return_dict=True).logits.shape == (2, 3)


def backbone_of(model):
    return model.resnet_cbam.backbone.state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_import_from_a_torchvision_file(tmp_path, suffix):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    torch.save(reference, path) if suffix == ".pth" else save_file(reference, path)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    report = load_backbone_weights(model, path)
    own = backbone_of(model)
    expected = [k for k in reference if not k.startswith("fc.") and k != "conv1.weight"]
    assert sorted(report.loaded) == sorted(f"resnet_cbam.backbone.{k}" for k in expected)
    assert all(torch.equal(own[k], reference[k]) for k in expected)
    assert not torch.equal(own["conv1.weight"][:, :, :3, :3], reference["conv1.weight"][:, :, :3, :3])
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert "resnet_cbam.backbone.conv1.weight" in report.new
    assert {"classifier.weight", "classifier.bias"} <= set(report.new)
    cbam_tensors = [k for k in model.state_dict() if group_of(k) == "cbam"]
    assert set(cbam_tensors) <= set(report.new)
    assert len(report.new) == len(cbam_tensors) + 3
    assert f"{len(expected)} tensors loaded" in str(report)


def test_imagenet_stem_loads_the_7x7_conv(tmp_path):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(stem="imagenet", image_size=64))
    report = load_backbone_weights(model, tmp_path / "r18.pth")
    assert torch.equal(backbone_of(model)["conv1.weight"], reference["conv1.weight"])
    assert "resnet_cbam.backbone.conv1.weight" in report.loaded


@pytest.mark.parametrize(
    "architecture, first_mismatch", [("resnet34", "layer1.2.conv1.weight"), ("resnet50", "layer1.0.conv1.weight")]
)
def test_wrong_architecture_names_the_first_mismatching_tensor(tmp_path, architecture, first_mismatch):
    torch.save(getattr(torchvision.models, architecture)(weights=None).state_dict(), tmp_path / "w.pth")
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"'{first_mismatch}'.*another architecture"):
        load_backbone_weights(model, tmp_path / "w.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a failed import changed weights"


def test_a_cifar_stem_file_into_an_imagenet_stem_says_which_stem_takes_it(tmp_path):
    cifar = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], cbam_placement="none"))
    path = tmp_path / "w.pth"
    torch.save(torchvision_state_dict(cifar), path)
    with pytest.raises(ValueError, match=r"conv1 is 3x3, a CIFAR stem's.*--stem cifar"):
        load_backbone_weights(ResNetCBAMModel(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet")), path)
    report = load_backbone_weights(ResNetCBAMModel(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="cifar")), path)
    assert "conv1.weight" not in report.dropped


def test_resnet18_file_into_resnet34_names_the_missing_tensor(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "w.pth")
    model = ResNetCBAMModel(ResNetCBAMConfig(depths=[3, 4, 6, 3]))
    with pytest.raises(ValueError, match="no tensor for 'layer1.2.conv1.weight'"):
        load_backbone_weights(model, tmp_path / "w.pth")


def test_torchvision_source_reads_torchvisions_cache(tmp_path, monkeypatch):
    """Up to the network: the file torchvision would download is put where it looks first."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18(weights=None).state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference, checkpoints / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    report = load_backbone_weights(model, "torchvision")
    assert torch.equal(backbone_of(model)["layer4.1.bn2.weight"], reference["layer4.1.bn2.weight"])
    assert len(report.loaded) == len(reference) - 3


def test_timm_hub_id_reads_the_hub_cache(tmp_path, monkeypatch):
    """Up to the network: a timm repo laid out in the Hub cache as hf_hub_download leaves it, read offline."""
    import huggingface_hub.constants

    reference = torchvision.models.resnet18(weights=None).state_dict()  # timm ResNets share torchvision's names
    reference = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}  # timm files omit them
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(reference, repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    report = load_backbone_weights(model, "timm/resnet18.a1_in1k")
    assert torch.equal(backbone_of(model)["layer2.0.downsample.0.weight"], reference["layer2.0.downsample.0.weight"])
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]


def test_a_missing_weights_file_is_named(tmp_path):
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    with pytest.raises(FileNotFoundError, match="backbone weights: no file .*missing.pth"):
        load_backbone_weights(model, tmp_path / "missing.pth")


def test_zero_init_residual_starts_every_block_as_its_shortcut_and_is_off_by_default():
    from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification

    torch.manual_seed(0)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], zero_init_residual=True)).eval()
    x = torch.randn(2, 64, 8, 8)
    for name in ("layer1", "layer2"):
        block = getattr(model.resnet_cbam.backbone, name)[0]
        shortcut = x if block.downsample is None else block.downsample(x)
        out, _ = block(x)
        torch.testing.assert_close(out, torch.relu(shortcut))
        x = out
    default = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1]))
    assert (default.resnet_cbam.backbone.layer1[0].bn2.weight == 1).all()
    assert (model.resnet_cbam.backbone.layer1[0].bn1.weight == 1).all(), "only the block's last BatchNorm is zeroed"


@pytest.mark.parametrize("stem, size, strides", [("cifar", 32, [1, 1, 2, 4, 8]), ("imagenet", 64, [4, 4, 8, 16, 32])])
def test_backbone_reports_the_channels_and_strides_of_its_feature_maps(stem, size, strides):
    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], stem=stem, image_size=size,
                              out_features=["stem", "stage1", "stage2", "stage3", "stage4"])
    backbone = ResNetCBAMBackbone(config).eval()
    with torch.no_grad():
        maps = backbone(tiny_input(config)).feature_maps
    assert backbone.channels == [f.shape[1] for f in maps] == [64, 64, 128, 256, 512]
    assert backbone.strides == [size // f.shape[-1] for f in maps] == strides


def test_backbone_out_features_are_validated_and_saved(tmp_path):
    _, folder = saved_model(tmp_path)
    assert ResNetCBAMBackbone.from_pretrained(folder).out_features == ["stage4"]  # transformers' default: the last
    with pytest.raises(ValueError, match="out_features must be a subset of stage_names"):
        ResNetCBAMBackbone.from_pretrained(folder, out_features=["layer4"])  # torchvision's name, not the stage's
    with pytest.raises(ValueError, match="same order as stage_names"):
        ResNetCBAMConfig(out_features=["stage3", "stage1"])
    with pytest.raises(ValueError, match="out_indices must be valid indices"):
        ResNetCBAMConfig(out_indices=[7])
    backbone = ResNetCBAMBackbone.from_pretrained(folder, out_indices=[0, 2])
    assert backbone.out_features == ["stem", "stage2"]
    backbone.save_pretrained(tmp_path / "backbone")
    again = ResNetCBAMBackbone.from_pretrained(tmp_path / "backbone")
    assert (again.out_features, again.out_indices) == (["stem", "stage2"], [0, 2])
    x = tiny_input(backbone.config)
    with torch.no_grad():
        as_tuple = again(x, return_dict=False)
        torch.testing.assert_close(as_tuple[0][1], backbone(x).feature_maps[1])
        assert backbone(x).hidden_states is None and len(backbone(x, output_hidden_states=True).hidden_states) == 5


def test_a_bottleneck_resnet_has_torchvisions_names_and_computes_its_features(tmp_path):
    """Bottleneck blocks (ResNet50 and up) as torchvision builds them: the same tensors by name and shape, and with
    torchvision's weights loaded and CBAM starting as the identity, the same features (tiny depths: the layout is
    the block's, not the depth's)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    reference = ResNet(Bottleneck, [1, 1, 1, 1]).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet.pth")
    config = ResNetCBAMConfig(layer_type="bottleneck", depths=[1, 1, 1, 1], stem="imagenet", cbam_init="identity",
                              image_size=64, num_labels=3)
    model = ResNetCBAMForImageClassification(config).eval()
    report = load_backbone_weights(model, tmp_path / "resnet.pth")
    assert not report.dropped and len(report.loaded) == len(reference.state_dict()) - 2  # all but fc
    reference.fc = torch.nn.Identity()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.resnet_cbam(images).pooler_output, reference(images), atol=1e-5)
    plain = ResNetCBAMForImageClassification(ResNetCBAMConfig(layer_type="bottleneck", depths=[3, 4, 6, 3],
                                                              stem="imagenet", cbam_placement="none", num_labels=1000))
    ours, theirs = torchvision_state_dict(plain), torchvision.models.resnet50().state_dict()
    assert {name: tuple(t.shape) for name, t in ours.items()} == {name: tuple(t.shape) for name, t in theirs.items()}
    assert model.config.hidden_sizes == [256, 512, 1024, 2048] and model.classifier.in_features == 2048


@pytest.mark.parametrize("flags, expected", [
    (["--architecture", "resnet50"], ("bottleneck", [3, 4, 6, 3])),
    (["--architecture", "resnet152"], ("bottleneck", [3, 8, 36, 3])),
    (["--architecture", "resnet34"], ("basic", [3, 4, 6, 3])),
    (["--layer_type", "bottleneck", "--depths", "3,4,23,3"], ("bottleneck", [3, 4, 23, 3])),
    (["--architecture", "resnet50", "--depths", "2,2,2,2"], "--architecture resnet50 sets the depths and the block "
                                                            "type: leave out --depths"),
    (["--architecture", "resnet9"], "--architecture must be one of resnet18, resnet34, resnet50, resnet101, "
                                    "resnet152"),
])
def test_architecture_names_the_network_as_torchvision_does(flags, expected):
    from training.arguments import ModelArguments
    from training.hub import base_model

    values = dict(zip((f.lstrip("-") for f in flags[::2]), flags[1::2], strict=True))
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            ModelArguments(**values)
        return
    fields = ModelArguments(**values).config_fields
    assert (fields["layer_type"], fields["depths"]) == expected
    if expected == ("bottleneck", [3, 4, 6, 3]):  # torchvision's V2 weights, as the Hub's timm copy names them
        assert base_model("torchvision", [3, 4, 6, 3], layer_type="bottleneck") == "timm/resnet50.tv2_in1k"


def test_weights_of_another_resnet_are_refused_naming_what_they_are(tmp_path):
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.save(ResNet(Bottleneck, [1, 1, 1, 1]).state_dict(), tmp_path / "bottleneck.pth")
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet"))
    with pytest.raises(ValueError, match=re.escape("they are a ResNet with bottleneck blocks and depths [1, 1, 1, 1] "
                                                   "(--layer_type bottleneck --depths 1,1,1,1)")):
        load_backbone_weights(model, tmp_path / "bottleneck.pth")
