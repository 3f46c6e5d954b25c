"""ONNX export: the file computes what the PyTorch model computes (onnxruntime, dynamic batch), its settings are
enough to prepare an image with numpy, a mismatch or a bad input leaves no file, and a run can export itself."""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from helpers import hub_layout_folder, load_script, run_script, tiny_dataset
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from PIL import Image
from tiny_run import TINY
from transformers import AutoImageProcessor

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training import cli, onnx_export

export_script = load_script("export_onnx")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "model"
    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, id2label=dict(enumerate("abc")))
    model = ResNetCBAMForImageClassification(config)
    with torch.no_grad():  # BN statistics and scales away from their init, so that a mistranslated BN would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    model.eval().save_pretrained(folder)
    return folder


def allowed(expected: torch.Tensor) -> float:
    """The export's own bound: TOLERANCE relative to the largest |logit| (or absolute below 1)."""
    return onnx_export.TOLERANCE * max(1.0, float(expected.abs().max()))


def reference(folder: Path):
    model = ResNetCBAMForImageClassification.from_pretrained(folder).eval()
    return model, AutoImageProcessor.from_pretrained(folder)


def test_the_file_computes_the_models_logits_at_any_batch(saved, tmp_path, capsys):
    output = tmp_path / "model.onnx"
    assert export_script.main(["--model", str(saved), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output} (opset 18, dynamic batch; outputs logits)" in printed
    assert "on batches of 1 and 5 images: largest difference" in printed
    model, _ = reference(saved)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "pixel_values" and session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        (logits,) = session.run(["logits"], {"pixel_values": x.numpy()})
        with torch.no_grad():
            expected = model(x).logits
        assert logits.shape == (batch, 3)
        np.testing.assert_allclose(logits, expected.numpy(), rtol=0, atol=allowed(expected))
    assert not list(tmp_path.glob(".*partial")), "no temporary file is left"


def test_attention_outputs_match_and_the_settings_prepare_an_image_with_numpy(saved, tmp_path):
    output = tmp_path / "attention.onnx"
    assert export_script.main(["--model", str(saved), "--output", str(output), "--output_attentions"]) == 0
    settings = json.loads((tmp_path / "attention.onnx.json").read_text())
    model, processor = reference(saved)
    names = [f"resnet_cbam.cbam.layer{i}" for i in range(1, 5)]  # model.cbam_names
    assert settings["outputs"] == ["logits", *(f"channel_attention.{n}" for n in names),
                                   *(f"spatial_attention.{n}" for n in names)]
    assert settings["id2label"] == {"0": "a", "1": "b", "2": "c"}
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 41, 3), dtype=np.uint8))
    # what the README shows a user without transformers doing
    side = settings["resize_shortest_edge"]
    scale = side / min(image.size)
    resized = image.convert(settings["convert"]).resize((int(image.width * scale), int(image.height * scale)),
                                                        Image.BILINEAR)
    height, width = settings["center_crop"]
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    array = np.asarray(resized.crop((left, top, left + width, top + height)), dtype=np.float32)
    array = (array * settings["rescale_factor"] - settings["image_mean"]) / settings["image_std"]
    pixel_values = array.transpose(2, 0, 1)[None].astype(np.float32)
    expected = processor(image, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(pixel_values, expected.numpy(), atol=0.05)  # PIL and the processor round apart
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    outputs = session.run(settings["outputs"], {"pixel_values": expected.numpy()})
    with torch.no_grad():
        out = model(expected, output_attentions=True)
    for got, want in zip(outputs, [out.logits, *out.channel_attentions, *out.spatial_attentions], strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=allowed(out.logits))


def test_a_file_that_computes_something_else_is_removed_with_exit_1(saved, tmp_path, monkeypatch, capsys):
    def off_by_a_little(module, pixel_values):
        return [array + 0.01 for array in reference_outputs(module, pixel_values)]

    reference_outputs = onnx_export._torch_outputs
    monkeypatch.setattr(onnx_export, "_torch_outputs", off_by_a_little)
    output = tmp_path / "model.onnx"
    assert export_script.main(["--model", str(saved), "--output", str(output)]) == 1
    assert "the exported file differs from the PyTorch model: largest difference 1.00e-02" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "neither the file, its settings nor a partial file is left"


def read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    if os.access("/sys", os.F_OK) and not _can_create(Path("/sys")):
        return Path("/sys")  # root writes anywhere a mode forbids; not in sysfs
    pytest.skip("running as root without a read-only folder")


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".probe").open("x").close()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.mark.parametrize("case", ["not a model", "unknown hub id", "missing folder", "read-only folder", "taken",
                                  "tolerance", "speed batch beyond memory"])
def test_bad_inputs_are_one_line_and_exit_2_with_nothing_written(saved, tmp_path, case):
    model, output = str(saved), tmp_path / "out" / "model.onnx"
    (tmp_path / "out").mkdir()
    more, message = [], ""
    if case == "not a model":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "config.json").write_text("{not json")
        model, message = str(tmp_path / "junk"), f"--model {tmp_path / 'junk'}: no model could be loaded from it"
    elif case == "unknown hub id":
        model, message = "someone/no-such-model", "--model someone/no-such-model: no model could be loaded from it"
    elif case == "missing folder":
        output, message = tmp_path / "absent" / "model.onnx", f"the folder {tmp_path / 'absent'} does not exist"
    elif case == "read-only folder":
        folder = read_only_folder(tmp_path)
        output, message = folder / "model.onnx", f"the folder {folder} cannot be written"
    elif case == "taken":
        output.write_text("a finished file")
        message = f"{output} exists; remove it or pass --overwrite"
    elif case == "tolerance":
        more, message = ["--tolerance", "0"], "--tolerance must be positive, got 0.0"
    else:  # was an allocation traceback after a good export
        more, message = ["--speed", "1,100000000"], "--speed: a batch of 100,000,000 images at 16 px holds at least"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = run_script("export_onnx.py", "--model", model, "--output", str(output), *more, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and message in done.stderr, done.stderr
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == (["model.onnx"] if case == "taken" else []), "nothing written, nothing half-written"
    if case == "taken":
        assert output.read_text() == "a finished file"


def test_without_the_extra_the_export_says_what_to_install(saved, tmp_path, monkeypatch, capsys):
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None if name == "onnxruntime"
                        else real(name))
    assert export_script.main(["--model", str(saved), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "ONNX export needs onnxruntime: pip install 'resnet-cbam[onnx]'" in capsys.readouterr().err
    code = cli.finetune_main(["--dataset_name", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o"),
                              "--export_onnx"])
    assert code == 2, "refused before anything loads, not after the training"
    assert "ONNX export needs onnxruntime" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_run_exports_itself_and_the_push_sends_the_file(tmp_path, monkeypatch):
    dataset = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16))})
    monkeypatch.setattr(cli, "check_push_access", lambda *args: "someone/model")
    sent = []

    def upload_folder(self, folder_path, ignore_patterns, **kwargs):
        files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
        sent.extend(filter_repo_objects(files, ignore_patterns=ignore_patterns))
        return "commit-url"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    output_dir = tmp_path / "out"
    code = cli.finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir",
                              str(output_dir), "--save_strategy", "no", "--export_onnx", "--push_to_hub",
                              "--hub_model_id", "someone/model"])
    assert code == 0
    assert {"model.onnx", "model.onnx.json", "model.safetensors"} <= set(sent)
    model, processor = reference(output_dir)
    session = onnxruntime.InferenceSession(str(output_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).logits
    got = session.run(["logits"], {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=allowed(expected))


def test_a_runs_failed_export_keeps_the_model_and_says_how_to_retry(tmp_path, monkeypatch, capsys):
    dataset = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16))})

    def mismatch(output_dir, attentions=False):
        raise onnx_export.ParityError("the exported file differs from the PyTorch model: largest difference 1.00e-01")

    monkeypatch.setattr(cli, "export_run", mismatch)
    output_dir = tmp_path / "out"
    code = cli.finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir",
                              str(output_dir), "--save_strategy", "no", "--export_onnx"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: the ONNX export failed: the exported file differs" in err
    assert f"python scripts/export_onnx.py --model {output_dir} --output {output_dir / 'model.onnx'}" in err
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "run_complete.json").is_file()
    assert not (output_dir / "model.onnx").exists()
