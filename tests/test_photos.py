"""A folder of photographs works by default: the input, stem and CBAM init chosen from the data and the weights,
the run's length said before it starts, the card and the evaluation following the run."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from datasets import Dataset
from datasets import Image as ImageFeature
from helpers import load_script, tiny_dataset
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torchvision.models.resnet import BasicBlock

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training import recipes
from training.backbones import load_backbone_weights, torchvision_state_dict
from training.callbacks import ChanceLevelCallback
from training.cli import finetune_main
from training.data import DataArguments, load_image_data
from training.defaults import (
    CIFAR_MEAN,
    IMAGENET_MEAN,
    KEPT_STEM_INPUT,
    PHOTO_INPUT,
    multiply_adds,
    resolve_architecture,
    wants_pretrained_stem,
)
from training.images import SizeProfile, decode_image, profile_sizes
from training.inference import preprocess_image
from training.synthetic import hub_layout_folder

PHOTO_SIZES = [(120, 90), (300, 200), (150, 260), (90, 140), (640, 480)]
TINY_PHOTO_RUN = ["--depths", "1,1,1,1", "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0",
                  "--report_to", "none", "--save_strategy", "no"]
ONE_EPOCH = ["--num_train_epochs", "1"]  # the one stage of the default recipe on trained weights (and of fast)
THREE_STAGES = ["--stage_epochs", "1,1,1"]  # a staged recipe's


def photo_folder(root: Path, sizes=PHOTO_SIZES, names=("ants", "bees")) -> Path:
    """Class folders of JPEG photos of several sizes, all larger than CIFAR's; the first file is the largest."""
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for index, (width, height) in enumerate(sorted(sizes, key=lambda s: -s[0] * s[1])):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.jpg")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hymenoptera")
    photo_folder(root / "train")
    photo_folder(root / "val")
    return root


def torchvision_file(path: Path, depths=(1, 1, 1, 1)) -> Path:
    """A plain torchvision ResNet's state dict, as torchvision's ImageNet file holds it (random values)."""
    torch.save(torchvision.models.resnet.ResNet(BasicBlock, list(depths)).state_dict(), path)
    return path


def test_photos_get_the_imagenet_input_from_the_sizes_of_a_sample_not_the_first_file(photos):
    data = load_image_data(DataArguments(train_dir=str(photos / "train"), validation_dir=str(photos / "val")))
    assert (data.image_size, data.image_mean, data.crop_pct, data.augment) == (224, IMAGENET_MEAN, 0.875,
                                                                                "resized-crop-flip")
    assert data.preset is PHOTO_INPUT and data.native_size is None
    assert data.profile.describe() == "images 120x90 to 640x480 px (median shorter side 150; all 10 read)"
    assert data.splits["validation"][0]["pixel_values"].shape == (3, 224, 224)
    assert data.splits["train"][0]["pixel_values"].shape == (3, 224, 224)


def test_cifar_sized_data_keep_the_seed_recipes_input_from_random_weights(tmp_path):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10)})
    data = load_image_data(DataArguments(dataset_name=str(folder)))
    assert (data.image_size, data.image_mean, data.crop_pct, data.augment) == (32, CIFAR_MEAN, 1.0, "tutorial")
    assert data.native_size == (32, 32) and data.preset.stem == "cifar"
    upsampled = load_image_data(DataArguments(dataset_name=str(folder), image_size=64))  # as the study pretrains
    assert (upsampled.image_mean, upsampled.crop_pct, upsampled.augment) == (IMAGENET_MEAN, 1.0, "tutorial")


def test_cifar_sized_data_on_a_pretrained_backbone_are_upsampled_for_its_stem(tmp_path):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10)})
    data = load_image_data(DataArguments(dataset_name=str(folder)), pretrained_stem=True)
    assert (data.image_size, data.image_mean, data.crop_pct, data.augment) == (64, IMAGENET_MEAN, 1.0, "tutorial")
    assert data.preset is KEPT_STEM_INPUT and data.preset.stem == "imagenet"
    assert "on a pretrained backbone" in data.input_choice
    assert data.splits["train"][0]["pixel_values"].shape == (3, 64, 64)
    # the seed-exact tutorial, a stem given as cifar and random weights keep the seed recipe's input
    staged, full, seed_exact = (recipes.get(name) for name in ("staged", "full", "seed-exact"))
    assert wants_pretrained_stem(True, staged, None) and wants_pretrained_stem(True, full, "imagenet")
    assert not wants_pretrained_stem(True, seed_exact, None)
    assert not wants_pretrained_stem(True, staged, "cifar") and not wants_pretrained_stem(False, staged, None)


@pytest.mark.parametrize("flags, expected", [
    ([], ("imagenet", 64, "identity")),
    (["--recipe", "seed-exact"], ("cifar", 32, "default")),
    (["--stem", "cifar"], ("cifar", 32, "identity")),
])
def test_a_cifar_sized_run_on_pretrained_weights_keeps_their_stem_by_default(tmp_path, capsys, flags, expected):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(12)})
    out = tmp_path / "run"
    code = finetune_main(["--dataset_name", str(folder), "--validation_split", "4", "--backbone_weights",
                          str(torchvision_file(tmp_path / "resnet.pth")), "--output_dir", str(out), *TINY_PHOTO_RUN,
                          *(THREE_STAGES if "seed-exact" in flags else ONE_EPOCH), *flags])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert (config["stem"], config["image_size"], config["cbam_init"]) == expected
    assert ("conv1.weight dropped" in (out / "README.md").read_text()) == (expected[0] == "cifar")


def test_every_input_flag_given_wins_and_is_named(photos):
    data = load_image_data(DataArguments(train_dir=str(photos / "train"), validation_dir=str(photos / "val"),
                                         image_size=96, augment="none",
                                         image_mean=[0.5, 0.5, 0.5], image_std=[0.2, 0.2, 0.2]))
    assert (data.image_size, data.image_mean, data.augment) == (96, (0.5, 0.5, 0.5), "none")
    assert "given: --image_size, --image_mean, --image_std, --augment" in data.input_choice


@pytest.mark.parametrize("given, recipe_name, pretrained, expected", [
    ({}, "staged", True, {"stem": "imagenet", "cbam_init": "identity"}),
    ({}, "staged", False, {"stem": "imagenet", "cbam_init": "default"}),
    ({}, "seed-exact", True, {"stem": "imagenet", "cbam_init": "default"}),
    ({"stem": "cifar", "cbam_init": "default"}, "staged", True, {"stem": "cifar", "cbam_init": "default"}),
    ({"cbam_placement": "none"}, "staged", True, {"stem": "imagenet"}),
])
def test_the_stem_follows_the_images_and_cbam_starts_as_the_identity_on_pretrained_weights(given, recipe_name,
                                                                                           pretrained, expected):
    resolved, reasons = resolve_architecture(given, PHOTO_INPUT, recipes.get(recipe_name), pretrained)
    assert {key: resolved.get(key) for key in expected} == expected
    assert len(reasons) == 2 - len({"stem", "cbam_init"} & set(given)) - ("cbam_placement" in given)


def test_the_cifar_stem_on_large_images_is_warned_with_its_cost(caplog):
    from training.defaults import warn_costly_stem

    assert round(multiply_adds(ResNetCBAMConfig(stem="imagenet"), 224) / 1e9, 2) == 1.81
    with caplog.at_level(logging.WARNING):
        warn_costly_stem(ResNetCBAMConfig(stem="cifar", image_size=64))
        assert not caplog.records
        warn_costly_stem(ResNetCBAMConfig(stem="cifar", image_size=224))
    assert "27.2 G multiply-adds per image, 15x the ImageNet stem's 1.81 G" in caplog.text
    assert "--stem imagenet" in caplog.text


def test_a_run_too_short_to_learn_is_said_with_the_flags_that_lengthen_it():
    short, warning = recipes.get("fast").schedule().with_lengths([2]).validate().over_steps(8).length_report()
    assert short == "8 optimizer steps (4 per epoch)"
    assert "8 optimizer steps in all" in warning and "--num_train_epochs" in warning and "--stage_epochs" in warning
    text, none = recipes.get("staged").schedule().over_steps(50 * 4).length_report()
    assert none is None and text == "200 optimizer steps (4 per epoch): 20, 60, 120 in stages 1-3"


def test_the_chance_warning_gives_the_majority_class_rate(caplog):
    callback = ChanceLevelCallback([70, 83], ["ants", "bees"])
    state = type("State", (), {"epoch": 1.0})()
    with caplog.at_level(logging.WARNING):
        callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.8})
        callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 102 / 153})  # 3 standard errors above
        assert not caplog.records
        callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 83 / 153})
    assert "about chance (54.25%, what always answering 'bees', its most frequent class, scores)" in caplog.text
    caplog.clear()
    ten_classes = ChanceLevelCallback([500] * 10, [str(label) for label in range(10)])
    with caplog.at_level(logging.WARNING):
        ten_classes.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.12})  # 4.7 standard errors above
        assert not caplog.records
        ten_classes.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.11})
    assert "is 11.00%, about chance (10.00%)" in caplog.text


def test_a_photo_run_from_a_torchvision_file_keeps_the_pretrained_stem(photos, tmp_path, capsys):
    weights = torchvision_file(tmp_path / "resnet.pth")
    out = tmp_path / "run"
    code = finetune_main(["--train_dir", str(photos / "train"), "--validation_dir", str(photos / "val"),
                          "--backbone_weights", str(weights), "--output_dir", str(out), *TINY_PHOTO_RUN,
                          "--recipe", "staged", *THREE_STAGES])  # staged: its rule for a pretrained stem
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert (config["stem"], config["image_size"], config["cbam_init"], config["crop_pct"]) == ("imagenet", 224,
                                                                                              "identity", 0.875)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 256} and processor["crop_size"] == {"height": 224, "width": 224}
    assert list(processor["image_mean"]) == list(IMAGENET_MEAN)
    saved = load_file(out / "model.safetensors")
    reference = torch.load(weights)
    # loaded (not dropped), then trained only in the last stage: 3 Adam steps at 1e-4 move a weight by at most 3e-4
    assert torch.allclose(saved["resnet_cbam.backbone.conv1.weight"], reference["conv1.weight"], atol=4e-4, rtol=0)
    state = json.loads((out / "trainer_state.json").read_text())
    first = next(entry for entry in state["log_history"] if "lr_stem" in entry)
    assert float(first["lr_stem"]) == 0  # the pretrained stem is not a new module: it waits for layer1
    card = (out / "README.md").read_text()
    assert "fine-tuned on **hymenoptera" in card and str(photos) not in card
    assert "224 px, ImageNet mean and std" in card and "CBAM init identity" in card
    assert "resize to 256 and centre-crop 224" in card


def test_seed_exact_keeps_the_papers_cbam_on_pretrained_weights(photos, tmp_path, capsys):
    out = tmp_path / "run"
    code = finetune_main(["--train_dir", str(photos / "train"), "--validation_dir", str(photos / "val"),
                          "--backbone_weights", str(torchvision_file(tmp_path / "resnet.pth")), "--recipe",
                          "seed-exact", "--output_dir", str(out), *TINY_PHOTO_RUN, *THREE_STAGES])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["cbam_init"] == "default"


@pytest.fixture(scope="module")
def photo_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "photos"
    one_epoch = [*TINY_PHOTO_RUN, *ONE_EPOCH]
    assert finetune_main(["--train_dir", str(photos / "train"), "--validation_dir", str(photos / "val"),
                          "--backbone_weights", "none", "--output_dir", str(out), *one_epoch]) == 0
    return out


def test_a_photo_run_from_random_weights_uses_the_papers_cbam_and_the_from_scratch_recipe(photo_run):
    config = json.loads((photo_run / "config.json").read_text())
    assert (config["stem"], config["cbam_init"]) == ("imagenet", "default")
    card = (photo_run / "README.md").read_text()
    assert "CBAM init default (random weights: the paper's CBAM)" in card
    assert "recipe fast (random weights: the from-scratch recipe" in card and "recipe `fast`" in card


def test_evaluate_model_follows_its_run_and_validation_dir_alone_works(photos, photo_run, capsys):
    evaluate = load_script("evaluate_model")
    assert evaluate.main(["--model", str(photo_run)]) == 0
    output = capsys.readouterr().out
    assert "data: the run's own" in output and "validation: 10 images" in output
    assert evaluate.main(["--model", str(photo_run), "--validation_dir", str(photos / "val")]) == 0
    assert "validation: 10 images" in capsys.readouterr().out
    code = evaluate.main(["--model", str(photo_run), "--train_dir", str(photos / "train"), "--validation_dir",
                          str(photos / "val")])
    assert code == 2
    assert "has no test split (splits: train, validation); choose one with --split" in capsys.readouterr().err


def test_validation_dir_alone_is_refused_for_training(photos, tmp_path, capsys):
    code = finetune_main(["--validation_dir", str(photos / "val"), "--output_dir", str(tmp_path / "out"),
                          "--backbone_weights", "none"])
    assert code == 2 and "needs --train_dir" in capsys.readouterr().err


def test_the_no_network_error_names_the_flag(monkeypatch):
    from modeling_resnet_cbam import ResNetCBAMForImageClassification

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ValueError, match="--backbone_weights none"):
        load_backbone_weights(ResNetCBAMForImageClassification(ResNetCBAMConfig()), "torchvision")


def test_a_size_profile_describes_mixed_and_uniform_samples():
    assert SizeProfile(((32, 32),) * 3, 10).describe() == "images 32x32 px (3 of 10 sampled)"
    mixed = SizeProfile(((500, 375), (193, 130), (1488, 1984)), 3)
    assert mixed.median_short_side == 375 and mixed.uniform is None
    assert mixed.describe() == "images 193x130 to 1488x1984 px (median shorter side 375; all 3 read)"


def test_a_plain_model_saves_as_torchvisions_resnet_file_and_loads_back_as_a_backbone(tmp_path):
    from modeling_resnet_cbam import ResNetCBAMForImageClassification

    plain = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet",
                                                              cbam_placement="none", num_labels=3))
    state_dict = torchvision_state_dict(plain)
    resnet = torchvision.models.resnet.ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)
    resnet.load_state_dict(state_dict)  # strict: exactly torchvision's names and shapes
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(resnet.eval()(x), plain.eval()(x).logits, atol=1e-5)
    torch.save(state_dict, tmp_path / "resnet.pth")
    target = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet"))
    report = load_backbone_weights(target, tmp_path / "resnet.pth")
    assert "resnet_cbam.backbone.conv1.weight" in report.loaded and not report.dropped


def test_a_checkpoint_from_before_crop_pct_existed_still_resumes(tmp_path):
    from training.checkpoints import LATER_MODEL_FACTS, RUN_FACTS, changed_facts

    model = {"depths": [2, 2, 2, 2], "stem": "cifar", "image_size": 32}
    (tmp_path / RUN_FACTS).write_text(json.dumps({"model": model, "seed": 42}))
    now = {**model, **LATER_MODEL_FACTS}  # today's run names every later fact; an older run had these values
    assert changed_facts(tmp_path, {"model": now, "seed": 42}) == []
    changed = changed_facts(tmp_path, {"model": {**now, "crop_pct": 0.875}, "seed": 42})
    then, now_said = changed[0].split(" in the checkpoint, ")
    assert len(changed) == 1 and '"crop_pct": 1.0' in then and '"crop_pct": 0.875' in now_said


def turned_photo(path: Path) -> Image.Image:
    """A 40x20 JPEG stored sideways, as a phone stores a portrait photo: EXIF orientation 6 tells a viewer to turn it
    90 degrees clockwise, to 20x40. Returns what a viewer shows."""
    stored = Image.new("RGB", (40, 20), "red")
    stored.paste("blue", (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def test_photos_are_read_upright_as_viewers_datasets_and_pipeline_show_them(tmp_path):
    upright = turned_photo(tmp_path / "portrait.jpg")
    assert upright.size == (20, 40)
    value = {"path": str(tmp_path / "portrait.jpg"), "bytes": None}
    decoded = decode_image(value, "train", 0)  # training, inspect_data, evaluate_model, the demo's examples
    assert decoded.size == (20, 40) and np.array_equal(np.asarray(decoded), np.asarray(upright))
    split = Dataset.from_dict({"image": [value]}).cast_column("image", ImageFeature(decode=False))
    assert profile_sizes(split, "image").sizes == ((20, 40),)  # the input preset sees a portrait photo
    seen = preprocess_image(lambda image, return_tensors: {"pixel_values": [np.asarray(image)]},
                            tmp_path / "portrait.jpg")  # predict, attention maps, the demo
    assert np.array_equal(seen, np.asarray(upright))


def test_predict_evaluate_and_pipeline_agree_on_a_photo_stored_sideways(tmp_path):
    """A phone's portrait photo (stored sideways, EXIF orientation 6) gets the same probabilities from predict.py,
    evaluate_model.py and transformers' pipeline, the documented way to use a saved model: all three see it upright."""
    from transformers import pipeline

    folder = tmp_path / "model"
    torch.manual_seed(0)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, stem="imagenet",
                                                              id2label={0: "ants", 1: "bees"}))
    with torch.no_grad():
        model.classifier.weight.mul_(300)  # confident: a photo read sideways would score clearly otherwise
    model.eval().save_pretrained(folder)
    for name in ("ants", "bees"):
        (tmp_path / "val" / name).mkdir(parents=True)
        turned_photo(tmp_path / "val" / name / f"{name}.jpg")
    photo = tmp_path / "val" / "ants" / "ants.jpg"
    assert load_script("predict").main(["--model", str(folder), str(photo), "--top_k", "2", "--num_workers", "0",
                                        "--device", "cpu", "--json", str(tmp_path / "p.json")]) == 0
    predicted = {row["label"]: row["score"] for row in json.loads((tmp_path / "p.json").read_text())[0]["predictions"]}
    piped = {row["label"]: row["score"] for row in pipeline("image-classification", model=str(folder),
                                                               trust_remote_code=True)(str(photo), top_k=2)}
    assert predicted.keys() == piped.keys() == {"ants", "bees"}
    assert all(abs(predicted[label] - piped[label]) < 1e-4 for label in piped), (predicted, piped)
    assert load_script("evaluate_model").main(["--model", str(folder), "--validation_dir", str(tmp_path / "val"),
                                               "--top_losses", "2", "--device", "cpu", "--json",
                                               str(tmp_path / "e.json"), "--top_losses_plot",
                                               str(tmp_path / "worst.png")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["top_losses"]
    loss = next(row["loss"] for row in rows if row["true"] == "ants")
    sideways = tmp_path / "sideways.png"  # the stored pixels, without the EXIF turn
    with Image.open(photo) as stored:
        stored.convert("RGB").save(sideways)
    read_sideways = {row["label"]: row["score"] for row in pipeline("image-classification", model=str(folder),
                                                                       trust_remote_code=True)(str(sideways), top_k=2)}
    assert abs(loss - -np.log(piped["ants"])) < 1e-4, "evaluate_model scores the photo as pipeline does"
    assert abs(read_sideways["ants"] - piped["ants"]) > 0.01, "read sideways it scores otherwise: the test can fail"
