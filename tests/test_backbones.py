"""Backbone weights from every library a user holds them from (torchvision, timm, transformers), the architecture
and stem taken from the weights, and the refusals that name what the weights are (training/backbones.py)."""

import re

import pytest
import torch
from helpers import flags
from safetensors.torch import save_file
from tiny_run import TINY

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification, ResNetCBAMModel
from training.arguments import parse_arguments
from training.backbones import load_backbone_weights, read_backbone_weights
from training.defaults import architecture_from_weights
from training.run import build_run

TINY_BOTTLENECK = [1, 1, 1, 1]  # the bottleneck's layout at the least depth: what ResNet50, 101, 152 share


def torchvision_resnet(depths):
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, depths)


def timm_resnet(depths):
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(block=Bottleneck, layers=depths)


def transformers_resnet(depths, **config):
    from transformers import ResNetConfig, ResNetModel

    return ResNetModel(ResNetConfig(layer_type="bottleneck", depths=depths, hidden_sizes=[256, 512, 1024, 2048],
                                    **config))


def saved(library: str, model, tmp_path):
    """The weights as each library's users hold them: torchvision's .pth, timm's .safetensors, transformers'
    save_pretrained folder."""
    if library == "transformers":
        model.save_pretrained(tmp_path / "resnet")
        return tmp_path / "resnet"
    if library == "timm":
        save_file(model.state_dict(), tmp_path / "resnet.safetensors")
        return tmp_path / "resnet.safetensors"
    torch.save(model.state_dict(), tmp_path / "resnet.pth")
    return tmp_path / "resnet.pth"


def their_features(library: str, model, images):
    if library == "transformers":
        return model(images).last_hidden_state
    if library == "timm":
        return model.forward_features(images)
    return torch.nn.Sequential(*list(model.children())[:-2])(images)


def assert_same_features(library: str, reference, path, images):
    """Read the weights as a run does, take the architecture from them, load them into a ResNet-CBAM with identity
    CBAM: the features are the library's own."""
    weights = read_backbone_weights(path)
    architecture, reasons = architecture_from_weights({}, weights)
    model = ResNetCBAMModel(ResNetCBAMConfig(**architecture, stem="imagenet", cbam_init="identity")).eval()
    report = load_backbone_weights(model, weights)
    assert not report.dropped and not report.skipped or all(k.startswith("fc.") for k in report.skipped)
    with torch.no_grad():
        ours, theirs = model(images).last_hidden_state, their_features(library, reference.eval(), images)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    return architecture, reasons


@pytest.mark.parametrize("library", ["torchvision", "timm", "transformers"])
def test_a_bottleneck_resnet_of_each_library_loads_and_computes_its_own_features(tmp_path, library):
    torch.manual_seed(0)
    reference = {"torchvision": torchvision_resnet, "timm": timm_resnet,
                 "transformers": transformers_resnet}[library](TINY_BOTTLENECK)
    images = torch.randn(2, 3, 64, 64)
    architecture, reasons = assert_same_features(library, reference, saved(library, reference, tmp_path), images)
    assert (architecture["layer_type"], architecture["depths"]) == ("bottleneck", TINY_BOTTLENECK)
    assert reasons == ["architecture (bottleneck blocks, depths [1, 1, 1, 1]): the weights'"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
@pytest.mark.parametrize("library", ["torchvision", "timm", "transformers"])
def test_real_resnet50_and_101_of_each_library_load_and_compute_their_features(tmp_path, library, name):
    """The real sizes (`python -m pytest -m slow`): 25.6 and 44.5 million parameters, random weights."""
    import timm
    import torchvision

    depths = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}[name]
    reference = {"torchvision": lambda: getattr(torchvision.models, name)(), "timm": lambda: timm.create_model(name),
                 "transformers": lambda: transformers_resnet(depths)}[library]()
    architecture, reasons = assert_same_features(library, reference, saved(library, reference, tmp_path),
                                                 torch.randn(1, 3, 64, 64))
    assert architecture["depths"] == depths and reasons[0].startswith(f"{name} (bottleneck blocks")


@pytest.mark.parametrize("setting", ["downsample_in_bottleneck", "downsample_in_first_stage"])
def test_a_transformers_resnet_that_downsamples_elsewhere_is_refused_with_the_reason(tmp_path, setting):
    folder = saved("transformers", transformers_resnet(TINY_BOTTLENECK, **{setting: True}), tmp_path)
    with pytest.raises(ValueError, match=rf"{setting}=true, which downsamples .*compute something else"):
        read_backbone_weights(folder)
    with pytest.raises(ValueError, match=rf"{setting}=true"):
        read_backbone_weights(folder / "model.safetensors")


def test_an_architecture_given_that_the_weights_do_not_have_names_both(tmp_path):
    weights = read_backbone_weights(saved("torchvision", torchvision_resnet(TINY_BOTTLENECK), tmp_path))
    with pytest.raises(ValueError, match=re.escape("the weights are a ResNet (bottleneck blocks, depths [1, 1, 1, 1]) "
                                                   "with a 7x7 ImageNet stem, not the resnet18 the flags ask for")):
        architecture_from_weights({"layer_type": "basic", "depths": [2, 2, 2, 2]}, weights)
    given = {"layer_type": "bottleneck", "depths": TINY_BOTTLENECK, "stem": "imagenet"}
    assert architecture_from_weights(given, weights) == (given, [])  # given and theirs: nothing to say


def test_a_run_takes_the_architecture_and_the_cifar_stem_from_its_backbone_folder(tmp_path, dataset):
    """A model this project trained from random weights on CIFAR-sized images (bottleneck blocks, its 3x3 CIFAR
    conv1) given as --backbone_weights with no architecture flag: the run is that network with that stem, said in
    its log's defaults; once refused with "use --stem cifar"."""
    source = ResNetCBAMForImageClassification(ResNetCBAMConfig(layer_type="bottleneck", depths=[1, 1, 2, 1],
                                                               stem="cifar", num_labels=4))
    source.save_pretrained(tmp_path / "mine")
    depths = TINY.index("--depths")
    tiny = TINY[:depths] + TINY[depths + 2:]
    run = build_run(*parse_arguments([*tiny, *flags(dataset, tmp_path / "out"), "--backbone_weights",
                                      str(tmp_path / "mine")]))
    config = run.trainer.model.config
    assert (config.layer_type, config.depths, config.stem) == ("bottleneck", [1, 1, 2, 1], "cifar")
    assert "architecture (bottleneck blocks, depths [1, 1, 2, 1]): the weights'" in run.config.defaults
    assert "stem cifar: the weights' conv1 is 3x3, a CIFAR stem's" in run.config.defaults
    loaded = run.trainer.model.resnet_cbam.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], source.resnet_cbam.backbone.conv1.weight)


class AuthorsCBAM(torch.nn.Module):
    """The CBAM authors' module as their code names and computes it (MODELS/cbam.py): a channel gate whose MLP (with
    biases, after a Flatten) scores the average- and max-pooled vectors, then a spatial gate over the [max, mean]
    maps whose 7x7 convolution is followed by a BatchNorm."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = torch.nn.Module()
        self.ChannelGate.mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels, channels // reduction),
                                                   torch.nn.ReLU(), torch.nn.Linear(channels // reduction, channels))
        self.SpatialGate = torch.nn.Module()
        self.SpatialGate.spatial = torch.nn.Module()
        self.SpatialGate.spatial.conv = torch.nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.SpatialGate.spatial.bn = torch.nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x):
        mlp = self.ChannelGate.mlp
        channel = mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(channel)[:, :, None, None]
        maps = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.SpatialGate.spatial.bn(self.SpatialGate.spatial.conv(maps)))


def authors_resnet(depths):
    """Their ResidualNet("ImageNet", ..., att_type="CBAM") layout: torchvision's bottleneck ResNet with a CBAM on
    every block's residual branch, before the addition."""
    from torchvision.models.resnet import Bottleneck, ResNet

    class AuthorsBottleneck(Bottleneck):
        def __init__(self, inplanes, planes, *args, **kwargs):
            super().__init__(inplanes, planes, *args, **kwargs)
            self.cbam = AuthorsCBAM(planes * self.expansion)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(self.cbam(out) + identity)

    network = ResNet(AuthorsBottleneck, depths)
    for name, tensor in network.state_dict().items():  # trained-looking statistics and scales, so that all count
        if name.endswith(("running_mean", "bn.weight", "bn.bias")):
            tensor.copy_(torch.randn_like(tensor) * 0.1 + (1.0 if name.endswith("bn.weight") else 0.0))
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    return network.eval()


def authors_checkpoint(network, path, rename=None):
    """Saved as their train_imagenet.py saves it: DataParallel's `module.` names under `state_dict`, with the
    epoch and best accuracy beside them."""
    state = {f"module.{name}": tensor for name, tensor in network.state_dict().items()
             if not name.endswith("num_batches_tracked")}  # their torch predates it
    if rename:
        state = {name.replace(*rename): tensor for name, tensor in state.items()}
    torch.save({"epoch": 90, "arch": "resnet", "state_dict": state, "best_prec1": 77.6}, path)
    return path


def test_the_cbam_authors_checkpoint_loads_every_tensor_and_computes_their_network(tmp_path):
    torch.manual_seed(0)
    theirs = authors_resnet(TINY_BOTTLENECK)
    weights = read_backbone_weights(authors_checkpoint(theirs, tmp_path / "RESNET50_CBAM.pth"))
    architecture, reasons = architecture_from_weights({}, weights)
    assert {key: architecture[key] for key in ("layer_type", "cbam_style", "cbam_placement", "cbam_init")} == {
        "layer_type": "bottleneck", "cbam_style": "authors", "cbam_placement": "block", "cbam_init": "default"}
    assert any(reason.startswith("CBAM: the authors' module in every block, loaded as they trained") for reason in
               reasons)
    ours = ResNetCBAMForImageClassification(ResNetCBAMConfig(**architecture, stem="imagenet", num_labels=1000))
    report = load_backbone_weights(ours, weights)
    used = [name for name in theirs.state_dict() if not name.endswith("num_batches_tracked")]
    assert len(report.loaded) == len(used) - 2 and sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert not [name for name in report.new if "backbone" in name]  # every tensor of their network is used
    ours.classifier.load_state_dict(theirs.fc.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(images).logits, theirs(images), rtol=1e-4, atol=1e-4)


def test_a_cbam_checkpoint_of_another_layout_is_refused_naming_the_first_tensor_that_does_not_fit(tmp_path):
    path = authors_checkpoint(authors_resnet(TINY_BOTTLENECK), tmp_path / "other.pth",
                              rename=("SpatialGate.spatial.conv.", "SpatialGate.spatial.conv2d."))
    weights = read_backbone_weights(path)
    architecture, _ = architecture_from_weights({}, weights)
    model = ResNetCBAMModel(ResNetCBAMConfig(**architecture, stem="imagenet"))
    with pytest.raises(ValueError, match=re.escape("tensor 'layer1.0.cbam.SpatialGate.spatial.conv2d.weight' has no "
                                                   "counterpart")):
        load_backbone_weights(model, weights)


@pytest.mark.slow
def test_a_resnet50_from_a_weights_file_fine_tunes_on_the_photos_and_its_folder_loads_alone(tmp_path):
    """Issue 42's end to end, at the real size (`python -m pytest -m slow`): torchvision's ResNet50 layout saved to a
    file, a few steps on the ants and bees photos, then the saved folder alone (no project package) through
    AutoModelForImageClassification and pipeline."""
    import torchvision
    from helpers import ROOT, load_alone

    from training.cli import finetune_main

    photos = ROOT.parent / "shared" / "datasets" / "hymenoptera"
    if not photos.is_dir():
        pytest.skip("the ants and bees photos are not here (../shared)")
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    out = tmp_path / "run"
    assert finetune_main(["--train_dir", str(photos / "train"), "--validation_dir", str(photos / "val"),
                          "--architecture", "resnet50", "--backbone_weights", str(tmp_path / "resnet50.pth"),
                          "--max_train_samples", "8", "--max_eval_samples", "8", "--num_train_epochs", "1",
                          "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--report_to",
                          "none", "--save_strategy", "no", "--output_dir", str(out)]) == 0
    model = ResNetCBAMForImageClassification.from_pretrained(out).eval()
    assert (model.config.layer_type, model.config.depths, model.config.image_size) == ("bottleneck", [3, 4, 6, 3],
                                                                                         224)
    x = torch.randn(1, 3, 224, 224)
    torch.save(x, tmp_path / "x.pt")
    alone = load_alone(out, tmp_path / "x.pt", tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(alone["logits"]), model(x).logits, rtol=1e-4, atol=1e-4)
    assert {row["label"] for row in alone["pipeline"]} == {"ants", "bees"}
