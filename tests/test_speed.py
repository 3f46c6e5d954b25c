"""The speed settings: bf16 and channels_last defaults, device-resident data with kornia, lr scaling with batch; the
benchmark."""

import json

import pytest
import torch
from helpers import STAGED_1_1_1, STEPS_PER_EPOCH, assert_follows_schedule, flags
from tiny_run import run

from training.arguments import parse_arguments
from training.data import DataArguments, load_image_data
from training.device_data import DeviceData
from training.hardware import cpu_has_bf16


def test_fast_settings_are_the_default_where_the_hardware_has_them():
    training_args = parse_arguments([])[3]
    gpu = torch.cuda.is_available()
    assert training_args.bf16 == (torch.cuda.is_bf16_supported(including_emulation=False) if gpu else cpu_has_bf16())
    assert training_args.channels_last == (training_args.bf16 or gpu)
    assert training_args.data_on_device is None  # decided once the data is loaded: on for images up to 64x64
    off = parse_arguments(["--bf16", "false", "--channels_last", "false"])[3]
    assert (off.bf16, off.channels_last) == (False, False)


def test_device_data_without_augmentation_equals_the_pil_eval_path(dataset):
    args = DataArguments(dataset_name=str(dataset), validation_split="8", augment="none", image_size=16)
    data = load_image_data(args)
    device = DeviceData(data, augment="none")
    for split in ("train", "validation"):
        rows = [device.splits[split][i] for i in range(5)]
        batch = torch.utils.data.default_collate(rows)
        inputs = device.inputs(batch, train=split == "train")
        expected = torch.stack([data.splits[split][i]["pixel_values"] for i in range(5)])
        torch.testing.assert_close(inputs["pixel_values"], expected)
        assert inputs["labels"].tolist() == [data.splits[split][i]["labels"] for i in range(5)]


def test_device_data_augments_per_sample(dataset):
    data = load_image_data(DataArguments(dataset_name=str(dataset), validation_split="8", image_size=16))
    device = DeviceData(data)
    batch = {"index": torch.tensor([0, 0, 0, 0]), "labels": torch.zeros(4, dtype=torch.long)}
    pixels = device.inputs(batch, train=True)["pixel_values"]
    assert pixels.shape == (4, 3, 16, 16)
    assert not torch.equal(pixels[0], pixels[1]), "the same image twice in a batch gets different augmentations"
    evaluated = device.inputs(batch, train=False)["pixel_values"]
    assert torch.equal(evaluated[0], evaluated[1])


def test_a_run_with_data_on_the_device_follows_the_schedule(dataset, tmp_path):
    finished, recorder = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--data_on_device", "true"))
    assert finished.trainer.device_data is not None
    assert_follows_schedule(recorder.steps, finished.trainer.schedule)


def test_scale_lr_with_batch_multiplies_every_rate(dataset, tmp_path):
    _, recorder = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--scale_lr_with_batch", "true"))
    plan = STAGED_1_1_1.over_steps(3 * STEPS_PER_EPOCH)
    for record in recorder.steps:
        assert record["lrs"] == pytest.approx({g: plan.lr(g, record["step"]) * 8 / 64 for g in record["lrs"]})


HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")  # each waits for the device


def test_no_training_step_reads_a_tensor_on_the_host(dataset, tmp_path, monkeypatch):
    """Between logging steps nothing waits for the device: no tensor is read on the host inside a training step
    (forward, loss, divergence record, device-side augmentation). The reads at logging steps still happen."""
    from training.trainer import StagedTrainer

    reads = {"in_step": [], "elsewhere": 0}
    inside = [False]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(tensor, *args, _name=name, _original=original):
            if inside[0]:
                reads["in_step"].append(_name)
            else:
                reads["elsewhere"] += 1
            return _original(tensor, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    training_step = StagedTrainer.training_step

    def watched(self, *args, **kwargs):
        inside[0] = True
        try:
            return training_step(self, *args, **kwargs)
        finally:
            inside[0] = False

    monkeypatch.setattr(StagedTrainer, "training_step", watched)
    run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--data_on_device", "true", "--logging_steps", "2",
              "--augment", "crop-flip"))
    assert reads["in_step"] == [], f"host reads inside training steps: {sorted(set(reads['in_step']))}"
    assert reads["elsewhere"] > 0, "the counting itself works: logging and evaluation read tensors"


def test_logging_nan_inf_filter_is_refused():
    with pytest.raises(ValueError, match="--logging_nan_inf_filter: a non-finite loss stops the run"):
        parse_arguments(["--logging_nan_inf_filter", "true"])


def test_crop_flip_on_the_device_is_a_crop_of_the_reflect_padded_image_maybe_mirrored():
    from torch.nn import functional as F

    from training.device_data import CropFlip

    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 8)
    out = CropFlip(2)(images)
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    seen = set()
    for image, result in zip(padded, out, strict=True):
        found = [(top, left, flip) for top in range(5) for left in range(5) for flip in (False, True)
                 if torch.equal(result, (lambda crop: crop.flip(-1) if flip else crop)(image[:, top:top + 8,
                                                                                          left:left + 8]))]
        assert found, "every output is a crop of its padded image, mirrored or not"
        seen.update(found)
    assert {flip for _, _, flip in seen} == {False, True} and len({top for top, _, _ in seen}) == 5


def test_the_benchmark_measures_the_precision_asked_and_says_where_the_step_time_goes(tmp_path, capfd, caplog):
    from helpers import load_script

    figures = tmp_path / "bench.json"
    argv = ["--steps", "1", "--warmup", "1", "--eval_images", "10", "--batch_size", "2", "--profile_steps", "1",
            "--fp16", "true", "--json", str(figures)]
    assert load_script("benchmark").main(argv) == 0
    result = json.loads(figures.read_text())
    assert result["dtype"] == "fp16 autocast with loss scaling" and result["image_size"] == 32
    for key in ("step_img_s", "step_fp32_img_s", "data_img_s", "plain_loop_img_s", "trainer_img_s", "eval_img_s"):
        assert result[key] > 0, key
    profile = result["profile"]
    assert sum(profile["by_kind"].values()) == pytest.approx(profile["ms_per_step"])
    assert profile["by_kind"]["convolution"] > 0 and profile["by_kind"]["optimizer"] > 0
    out, err = capfd.readouterr()
    assert "where a train step's time goes" in out
    # its output is its table: no profiler or GPU-probe lines, no Trainer log dicts, no warnings meant for real runs
    for noise in ("profiler_start", "gpuGetDeviceCount", "{'train_runtime'", "'eval_accuracy'"):
        assert noise not in out + err, noise
    assert not [r for r in caplog.records if "too short to learn" in r.getMessage() or "about chance" in
                r.getMessage()]


def test_the_benchmark_measures_the_network_asked_with_its_size(tmp_path):
    from helpers import load_script

    figures = tmp_path / "bench.json"
    argv = ["--architecture", "resnet50", "--steps", "1", "--warmup", "1", "--eval_images", "10", "--batch_size", "2",
            "--bf16", "false", "--json", str(figures)]
    assert load_script("benchmark").main(argv) == 0
    result = json.loads(figures.read_text())
    assert result["architecture"] == "resnet50" and int(result["parameters"].replace(",", "")) > 23_000_000
    assert result["multiply_adds_g"] == 1.3 and result["step_img_s"] > 0  # ResNet50-CBAM, CIFAR stem, 32 px (18: 0.56)

