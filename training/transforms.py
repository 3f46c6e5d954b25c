"""torchvision transforms of the training and evaluation images, set lazily on the splits."""

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from training.images import ROW, decode_image

# torchvision v2's automatic augmentation policies, each after the input's crop and flip (crop-flip at the images'
# own size, resized-crop-flip otherwise), on the PIL images in the DataLoader workers (no device-resident version)
POLICIES = ("randaugment", "trivialaugment", "autoaugment")
AUGMENTATIONS = ("tutorial", "crop-flip", "resized-crop-flip", *POLICIES, "none")
AUGMENT_ALIASES = {"seed": "tutorial"}  # the old name, accepted for one release
# The tutorial's augmentation parameters, shared by the PIL path here and the kornia path in device_data.py
COLOR_JITTER = (0.2, 0.2, 0.2, 0.1)  # brightness, contrast, saturation, hue
ROTATION_DEGREES = 15


def crop_padding(size: int) -> int:
    """RandomCrop padding: 4 px at the tutorial's 32 px, in proportion elsewhere."""
    return size // 8


def build_transforms(data, train: bool, augment: str | None = None) -> Callable:
    """The torchvision v2 pipeline for one PIL RGB image: the augmentations for training (`augment`, default the
    data's), then normalise. Evaluation images are resized to image_size / crop_pct and centre-cropped.

    The geometric and colour steps run on the PIL image: on 32 px images they are 1.5x to 7x faster there than
    on uint8 tensors (rotation most of all).
    """
    size, augment = data.image_size, augment or data.augment
    native = data.native_size == (size, size)
    steps: list = []
    if train and augment == "tutorial":
        crop = v2.RandomCrop(size, padding=crop_padding(size), pad_if_needed=True) if native \
            else v2.RandomResizedCrop(size, antialias=True)
        steps += [crop, v2.RandomHorizontalFlip(), v2.ColorJitter(*COLOR_JITTER), v2.RandomRotation(ROTATION_DEGREES)]
    elif train and augment == "resized-crop-flip":  # torchvision's and timm's ImageNet training crop
        steps += [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    elif train and augment in POLICIES:
        crop = v2.RandomCrop(size, padding=crop_padding(size), padding_mode="reflect") if native \
            else v2.RandomResizedCrop(size, antialias=True)
        steps += [crop, v2.RandomHorizontalFlip(), policy_transform(augment, small=native)]
    else:  # every image to the model's size (PIL leaves a same-size image as it is)
        steps += [v2.Resize(round(size / data.crop_pct), antialias=True), v2.CenterCrop(size)]
    if train and augment == "crop-flip":  # a translation of at most crop_padding pixels, and a mirror
        steps += [v2.RandomCrop(size, padding=crop_padding(size), padding_mode="reflect"), v2.RandomHorizontalFlip()]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(data.image_mean, data.image_std)]
    if train and data.random_erasing:  # after normalising: the erased box is 0, the mean colour
        steps.append(v2.RandomErasing(p=data.random_erasing))
    return v2.Compose(steps)


def policy_transform(policy: str, small: bool) -> v2.Transform:
    """torchvision v2's policy: RandAugment (2 ops at magnitude 9, the paper's ImageNet setting), TrivialAugment
    (TrivialAugmentWide, no parameters), or AutoAugment with the policy searched on CIFAR-10 for images at their own
    small size, ImageNet's otherwise."""
    if policy == "randaugment":
        return v2.RandAugment()
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10 if small else v2.AutoAugmentPolicy.IMAGENET)


def set_transforms(data) -> None:
    """Lazy per-batch transforms: decode to RGB, transform, and hand the Trainer pixel_values and labels."""
    for name, split in data.splits.items():
        transform = build_transforms(data, train=name == "train")
        split.set_transform(
            _BatchTransform(transform, name, data.image_column, data.label_column),
            columns=[data.image_column, data.label_column, ROW],
        )


@dataclass
class _BatchTransform:
    """A picklable batch transform (DataLoader workers receive a copy of it)."""

    transform: Callable
    split: str
    image_column: str
    label_column: str

    def __call__(self, batch: dict) -> dict:
        _quiet_stop_signals_in_worker()
        images = [decode_image(v, self.split, r) for v, r in zip(batch[self.image_column], batch[ROW], strict=True)]
        return {
            "pixel_values": [self.transform(image) for image in images],
            "labels": batch[self.label_column],
        }


_worker_signals_set = False


def _quiet_stop_signals_in_worker() -> None:
    """In a DataLoader worker, once: SIGTERM ends the worker quietly (exit 0) and SIGINT is ignored. `accelerate
    launch` (on `timeout` or a pre-emption) and Ctrl-C signal every process of the tree, and torch's own worker
    handler dies of a SIGTERM its parent did not send, so that the main process reports a killed worker, with a
    traceback, after its own stop message. The main process, signalled too, unwinds and stops its workers."""
    global _worker_signals_set
    if _worker_signals_set or torch.utils.data.get_worker_info() is None:
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_signals_set = True
