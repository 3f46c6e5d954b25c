"""Using a trained model: predict, evaluate on a split, attention maps; on a saved random model and made images."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers import NAMES, hub_layout_folder, load_script, random_image, run_script, tiny_dataset, truncated_jpeg
from PIL import Image

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.inference import explain, image_files, load_model, match_labels, predict_files


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "model"
    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, id2label=dict(enumerate(NAMES)))
    ResNetCBAMForImageClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    random_image((40, 30), "RGB", seed=1).save(folder / "rgb.png")
    random_image((17, 23), "L", seed=2).save(folder / "gray.png")
    random_image((64, 20), "RGBA", seed=3).save(folder / "rgba.png")
    random_image((33, 33), "P", seed=4).save(folder / "palette.gif")
    (folder / "sub").mkdir()
    random_image((16, 16), "RGB", seed=5).save(folder / "sub" / "small.jpg")
    (folder / "corrupt.jpg").write_bytes(truncated_jpeg())
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predictions_are_distributions_that_agree_with_the_forward_pass(model_dir, images):
    model, processor = load_model(str(model_dir), "cpu")
    files = image_files([images])
    assert [f.name for f in files] == ["corrupt.jpg", "gray.png", "palette.gif", "rgb.png", "rgba.png", "small.jpg"]
    results = list(predict_files(model, processor, files, top_k=4, batch_size=2, num_workers=0, progress=False))
    assert [r.image for r in results] == [str(f) for f in files]
    assert results[0].error and "corrupt.jpg" in results[0].image and results[0].predictions is None
    for result, file in zip(results[1:], files[1:], strict=True):
        scores = [p["score"] for p in result.predictions]
        assert sorted(p["label"] for p in result.predictions) == sorted(NAMES)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5) and scores == sorted(scores, reverse=True)
        with Image.open(file) as image:
            pixels = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, 3, 16, 16)
        with torch.no_grad():
            expected = model(pixels).logits.softmax(-1)[0]
        for prediction in result.predictions:
            assert prediction["score"] == pytest.approx(expected[NAMES.index(prediction["label"])].item(), abs=1e-5)


def test_predict_script_reports_the_bad_file_and_still_predicts_the_rest(model_dir, images, tmp_path):
    done = run_script("predict.py", "--model", str(model_dir), str(images), "--top_k", "2", "--json",
                      str(tmp_path / "p.json"), "--num_workers", "1")
    assert done.returncode == 1
    assert "corrupt.jpg: cannot read" in done.stderr and "1 of 6 images could not be read" in done.stderr
    written = json.loads((tmp_path / "p.json").read_text())
    assert len(written) == 6 and sum("predictions" in entry for entry in written) == 5
    assert all(len(entry["predictions"]) == 2 for entry in written if "predictions" in entry)
    assert f"{images / 'rgb.png'}: " in done.stdout


def held_out_test_split() -> Dataset:
    return tiny_dataset(5, size=(16, 16), seed=70)


def with_test_split(folder: Path) -> Path:
    """A Hub-layout dataset whose test split is held_out_test_split()."""
    return hub_layout_folder(folder, {"train": tiny_dataset(10, size=(16, 16)), "test": held_out_test_split()})


def direct_logits(model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The saved model's logits on held_out_test_split(), each image prepared by its processor, and the labels."""
    model, processor = load_model(str(model_dir), "cpu")
    test = held_out_test_split()
    pixels = torch.cat([processor(row["img"], return_tensors="pt")["pixel_values"] for row in test])
    with torch.no_grad():
        return model(pixels).logits, torch.tensor(test["label"])


def test_evaluate_model_accuracy_equals_a_direct_computation(model_dir, tmp_path):
    dataset = with_test_split(tmp_path / "ds")
    done = run_script("evaluate_model.py", "--model", str(model_dir), "--dataset_name", str(dataset),
                      "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "cm.png"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "e.json").read_text())
    logits, labels = direct_logits(model_dir)
    direct = (logits.argmax(-1) == labels).float().mean().item()
    assert result["images"] == 20 and result["accuracy"] == pytest.approx(direct)
    assert f"accuracy {100 * direct:.2f}%" in done.stdout and "confusion matrix" in done.stdout
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_model_needs_only_the_split_it_evaluates(model_dir, tmp_path):
    held_out = hub_layout_folder(tmp_path / "held_out", {"test": tiny_dataset(3, size=(16, 16), seed=90)})
    done = run_script("evaluate_model.py", "--model", str(model_dir), "--dataset_name", str(held_out),
                      "--split", "test")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test: 12 images, accuracy" in done.stdout
    missing = run_script("evaluate_model.py", "--model", str(model_dir), "--dataset_name", str(held_out),
                         "--split", "validation")
    assert missing.returncode == 2 and "has no train split to carve a validation split from (splits: test)" \
        in missing.stderr


def test_label_names_are_matched_by_name_and_a_mismatch_is_clear(model_dir, tmp_path):
    assert match_labels(["truck", "cat", "dog", "ship"], dict(enumerate(NAMES))) == [3, 0, 1, 2]
    dataset = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, names=["cat", "dog", "ship", "plane"]),
                                                  "test": tiny_dataset(2, names=["cat", "dog", "ship", "plane"])})
    done = run_script("evaluate_model.py", "--model", str(model_dir), "--dataset_name", str(dataset))
    assert done.returncode == 2
    assert "labels and the model's differ: only in the dataset: plane; only in the model: truck" in done.stderr


def test_attention_maps_are_in_range_and_written_as_png(model_dir, images, tmp_path):
    model, processor = load_model(str(model_dir), "cpu")
    with Image.open(images / "rgb.png") as image:
        pixels = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    predicted, attentions = explain(model, pixels)
    assert predicted in NAMES
    assert [a.name for a in attentions] == ["cbam.layer1", "cbam.layer2", "cbam.layer3", "cbam.layer4"]
    for attention, channels in zip(attentions, (64, 128, 256, 512), strict=True):
        assert attention.spatial.shape == (16, 16) and attention.channel.shape == (channels,)
        assert 0 <= attention.spatial.min() and attention.spatial.max() <= 1
        assert 0 <= attention.channel.min() and attention.channel.max() <= 1
    done = run_script("attention_maps.py", "--model", str(model_dir), str(images / "rgb.png"),
                      str(images / "corrupt.jpg"), str(images / "gray.png"), "--out_dir", str(tmp_path / "maps"))
    assert done.returncode == 1, done.stderr[-2000:]  # the bad file named, the others still drawn
    assert "corrupt.jpg: cannot read: OSError" in done.stderr and "1 of 3 images could not be read" in done.stderr
    for name in ("rgb", "gray"):
        with Image.open(tmp_path / "maps" / f"{name}_attention.png") as png:
            assert png.format == "PNG" and png.size[0] > 600


@pytest.mark.parametrize("script, argv, message", [
    ("predict", ["--model", "m", "x.png", "--top_k", "0"], "--top_k must be at least 1, got 0"),
    ("predict", ["--model", "m", "--num_workers", "-1"], "--num_workers must be at least 0, got -1"),
    ("evaluate_model", ["--model", "m", "--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    ("evaluate_model", ["--model", "m", "--top_losses", "-1"], "--top_losses must be at least 0, got -1"),
    ("attention_maps", ["--model", "m", "--top_channels", "0"], "--top_channels must be at least 1, got 0"),
    ("demo", ["--model", "m", "--top_k", "-3"], "--top_k must be at least 1, got -3"),
    ("demo", ["--model", "m", "--port", "70000"], "--port must be at most 65535, got 70000"),
    ("inspect_data", ["--grid_size", "0"], "--grid_size must be at least 1, got 0"),
    ("benchmark", ["--steps", "0"], "--steps must be at least 1, got 0"),
    ("benchmark", ["--architecture", "resnet9"], "--architecture must be one of resnet18, resnet34, resnet50"),
    ("summary", ["--depth", "0"], "--depth must be at least 1, got 0"),
], ids=lambda value: value if isinstance(value, str) and not value.startswith("--") else None)
def test_every_scripts_counts_below_their_minimum_are_refused_before_loading(script, argv, message, capsys):
    assert load_script(script).main(argv) == 2  # "m" is no model: the flag is refused before anything loads
    assert message in capsys.readouterr().err


def test_the_demo_refuses_a_port_another_server_listens_on_before_loading_anything(capsys):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert load_script("demo").main(["--model", "m", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err and "give another --port" in err
    assert "Traceback" not in err


def test_top_losses_are_the_images_the_model_gets_most_wrong(model_dir, tmp_path):
    dataset = with_test_split(tmp_path / "ds")
    grid = tmp_path / "worst.png"
    done = run_script("evaluate_model.py", "--model", str(model_dir), "--dataset_name", str(dataset),
                      "--top_losses", "6", "--top_losses_plot", str(grid), "--json", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "e.json").read_text())
    logits, labels = direct_logits(model_dir)
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    worst = losses.argsort(descending=True)[:6].tolist()
    assert [row["index"] for row in result["top_losses"]] == worst
    assert [row["loss"] for row in result["top_losses"]] == pytest.approx(losses[worst].tolist(), rel=1e-4)
    assert all(row["true"] == NAMES[labels[row["index"]]] for row in result["top_losses"])
    confusion = result["confusion_matrix"]
    top = result["most_confused"][0]
    assert top["images"] == max(confusion[t][p] for t in range(4) for p in range(4) if t != p)
    assert "most confused (true -> predicted: images):" in done.stdout
    assert f"  {top['true']} -> {top['predicted']}: {top['images']}" in done.stdout
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_a_folder_is_read_without_its_hidden_files(tmp_path):
    """macOS copies leave AppleDouble `._name.jpg` files (not images) beside the photos; training's image folders
    skip hidden files, and so does predict."""
    folder = tmp_path / "photos"
    (folder / ".git").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "cat.jpg")
    (folder / "._cat.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    Image.new("RGB", (8, 8)).save(folder / ".git" / "x.png")
    assert image_files([folder]) == [folder / "cat.jpg"]
