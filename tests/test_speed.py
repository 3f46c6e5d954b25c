"""The speed settings: bf16 and channels_last defaults, device-resident data with kornia, lr scaling with batch."""

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
    assert training_args.bf16 == (torch.cuda.is_bf16_supported() if gpu else cpu_has_bf16())
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
        batch = {key: torch.as_tensor([row[key] for row in rows]) for key in rows[0]}
        inputs = device.inputs(batch, train=split == "train")
        expected = torch.stack([data.splits[split][i]["pixel_values"] for i in range(5)])
        torch.testing.assert_close(inputs["pixel_values"], expected)
        assert inputs["labels"].tolist() == [data.splits[split][i]["labels"] for i in range(5)]


def test_device_data_augments_per_sample(dataset):
    data = load_image_data(DataArguments(dataset_name=str(dataset), validation_split="8", image_size=16))
    device = DeviceData(data)
    batch = {"index": torch.tensor([0, 0, 0, 0]), "labels": torch.zeros(4, dtype=torch.long),
             "store": torch.zeros(4, dtype=torch.long)}
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
