"""Augmentation policies (RandAugment, TrivialAugment, AutoAugment) and random erasing: what each does, on which
path, and that a run with them resumes exactly."""

import logging

import pytest
import torch
from helpers import assert_same_weights, flags
from tiny_run import run
from torchvision.transforms import v2

from training.data import DataArguments, load_image_data
from training.device_data import DeviceData
from training.images import DataError
from training.transforms import POLICIES, build_transforms

POLICY_CLASSES = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide,
                  "autoaugment": v2.AutoAugment}


def load(dataset, **more):
    return load_image_data(DataArguments(dataset_name=str(dataset), validation_split="8", image_size=16, **more))


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_follows_the_crop_and_flip_and_draws_anew_for_each_image(dataset, policy):
    data = load(dataset, augment=policy)
    steps = build_transforms(data, train=True).transforms
    assert [type(step) for step in steps[:3]] == [v2.RandomCrop, v2.RandomHorizontalFlip, POLICY_CLASSES[policy]]
    if policy == "autoaugment":
        assert steps[2].policy == v2.AutoAugmentPolicy.CIFAR10, "small images at their own size: CIFAR-10's policy"
    first, second = (data.splits["train"][0]["pixel_values"] for _ in range(2))
    assert first.shape == (3, 16, 16) and not torch.equal(first, second)
    evaluation = data.splits["validation"][0]["pixel_values"]
    assert torch.equal(evaluation, data.splits["validation"][0]["pixel_values"]), "evaluation is never augmented"


def test_policies_run_in_the_loader_and_refuse_the_device_path(dataset, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result, _ = run(flags(dataset, tmp_path / "auto", "--save_strategy", "no", "--augment", "trivialaugment"))
    assert result.trainer.device_data is None
    assert any("augment trivialaugment: torchvision's policy on PIL images in the DataLoader" in m
               for m in caplog.messages)
    with pytest.raises(DataError, match="--augment randaugment is torchvision's policy on PIL images"):
        run(flags(dataset, tmp_path / "device", "--augment", "randaugment", "--data_on_device", "true"))
    assert not (tmp_path / "device").exists(), "refused before anything was written"


def erased(pixels: torch.Tensor) -> torch.Tensor:
    """Per image, whether some pixel is exactly 0 in every channel: an erased box (noise images have none)."""
    return (pixels == 0).all(dim=1).flatten(1).any(dim=1)


def test_random_erasing_erases_a_box_with_its_probability_on_both_paths(dataset):
    never, always = load(dataset, augment="crop-flip"), load(dataset, augment="crop-flip", random_erasing=1.0)
    assert always.augmentation == "crop-flip + random erasing (p=1)" and never.augmentation == "crop-flip"
    loader = torch.stack([always.splits["train"][i]["pixel_values"] for i in range(8)])
    assert erased(loader).all()
    assert not erased(torch.stack([never.splits["train"][i]["pixel_values"] for i in range(8)])).any()
    assert not erased(torch.stack([always.splits["validation"][i]["pixel_values"] for i in range(8)])).any()
    batch = {"index": torch.arange(8), "labels": torch.zeros(8, dtype=torch.long)}
    assert erased(DeviceData(always).inputs(dict(batch), train=True, augment_seed=0)["pixel_values"]).all()
    assert not erased(DeviceData(never).inputs(dict(batch), train=True, augment_seed=0)["pixel_values"]).any()
    assert not erased(DeviceData(always).inputs(dict(batch), train=False)["pixel_values"]).any()


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_a_random_erasing_that_is_no_probability_is_refused_by_name(value, tmp_path):
    from training.arguments import parse_arguments

    with pytest.raises(DataError, match=f"--random_erasing is a probability in \\[0, 1\\].*got {value}"):
        parse_arguments(["--output_dir", str(tmp_path), "--random_erasing", value])


def test_a_run_with_a_policy_and_random_erasing_resumes_exactly(dataset, tmp_path):
    augment = ["--augment", "randaugment", "--random_erasing", "0.5"]
    full, _ = run(flags(dataset, tmp_path / "full", "--save_strategy", "epoch", *augment))
    assert full.record.augment == "randaugment + random erasing (p=0.5)"
    run(flags(dataset, tmp_path / "resumed", "--save_strategy", "no", *augment,
              "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-4")))
    assert_same_weights(tmp_path / "full", tmp_path / "resumed")
