"""Device-resident data for small images: decoded once into a uint8 tensor, augmented per sample by kornia.

The DataLoader then carries only row indices and labels (so the Trainer's sampler, DDP sharding and resume
skipping work unchanged); the images are gathered and augmented on the training device inside the step, with no
PIL work per step. Meant for CIFAR-sized data on a GPU: 50,000 32x32 images take 150 MB.
"""

import logging

import kornia.augmentation as K
import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.nn import functional as F

from training.data import ImageData
from training.images import ROW, DataError, decode_image
from training.transforms import COLOR_JITTER, POLICIES, ROTATION_DEGREES, crop_padding

logger = logging.getLogger(__name__)

MAX_PIXELS = 64 * 64  # larger images go through the DataLoader path
MAX_BYTES = 4 * 2**30


def supports_device_data(data: ImageData) -> bool:
    size = data.image_size
    return data.native_size == (size, size) and size * size <= MAX_PIXELS and data.augment not in POLICIES


class ImageStore:
    """All images of one split as a (N, 3, H, W) uint8 tensor, and their labels."""

    def __init__(self, split: Dataset, name: str, image_column: str, label_column: str, size: int):
        nbytes = len(split) * 3 * size * size
        if nbytes > MAX_BYTES:
            raise DataError(f"the {name} split needs {nbytes / 2**30:.1f} GiB as uint8: too large to keep on the "
                            "device")
        raw = split.with_format(None)
        images = torch.empty(len(split), 3, size, size, dtype=torch.uint8)
        for position, (value, row) in enumerate(zip(raw[image_column], raw[ROW], strict=True)):
            image = decode_image(value, name, row)
            if image.size != (size, size):
                where = f" ({value['path']})" if isinstance(value, dict) and value.get("path") else ""
                raise DataError(f"{name} row {row}{where}: image is {image.size[0]}x{image.size[1]}, not "
                                f"{size}x{size}; device-resident data needs every image at the model's size: train "
                                "without it (--data_on_device false), which resizes each image")
            images[position] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        self.images = images
        self.labels = torch.as_tensor(raw[label_column])


class IndexedSplit(torch.utils.data.Dataset):
    """What the DataLoader sees: a row's index among the images of every split (its split's offset + the row), and
    its label. One index tensor says where each image is: no split id to read on the host, which on a GPU would
    wait for the device at every step."""

    def __init__(self, store: ImageStore, offset: int):
        self.store, self.offset = store, offset

    def __len__(self) -> int:
        return len(self.store.labels)

    def __getitem__(self, index: int) -> dict:
        return {"index": self.offset + index, "labels": self.store.labels[index]}


class CropFlip(nn.Module):
    """A random crop of each image reflect-padded by `padding` pixels, then a horizontal flip with probability 1/2:
    the PIL path's crop-flip, drawn and gathered on the device. kornia's RandomCrop reads its crop boxes on the host
    (`.tolist()`), which on a GPU waits for the device at every step; this reads nothing."""

    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        pad, device = self.padding, images.device
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect").flatten(2)  # (n, c, (h + 2p) * (w + 2p))
        top = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device)
        left = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device)
        flip = torch.rand(n, 1, 1, device=device) < 0.5
        columns = torch.arange(width, device=device)
        columns = left + torch.where(flip, columns.flip(0), columns)  # (n, 1, w)
        rows = top + torch.arange(height, device=device)[:, None]  # (n, h, 1)
        index = (rows * (width + 2 * pad) + columns).flatten(1)  # (n, h * w)
        return padded.gather(2, index[:, None].expand(n, channels, -1)).view(n, channels, height, width)


def device_augmentation(augment: str, size: int, mean, std, random_erasing: float = 0.0) -> nn.Module:
    """The PIL path's augmentations of `augment` (data.build_transforms; torchvision semantics, random per sample),
    then Normalize, then kornia's RandomErasing with probability `random_erasing`, on float [0, 1] input. crop-flip
    and none read no tensor on the host; tutorial's (kornia's crop, colour jitter and rotation) does, a few times a
    step."""
    augmentation = _device_augmentation(augment, size, K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))
    if not random_erasing:
        return augmentation
    return nn.Sequential(augmentation, K.RandomErasing(p=random_erasing))  # torchvision's defaults: box, ratio, 0


def _device_augmentation(augment: str, size: int, normalize: nn.Module) -> nn.Module:
    if augment == "crop-flip":
        return nn.Sequential(CropFlip(crop_padding(size)), normalize)
    if augment == "none":
        return normalize
    if augment == "resized-crop-flip":
        return K.AugmentationSequential(K.RandomResizedCrop((size, size)), K.RandomHorizontalFlip(), normalize)
    return K.AugmentationSequential(
        K.RandomCrop((size, size), padding=crop_padding(size)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*COLOR_JITTER, p=1.0),
        K.RandomRotation(float(ROTATION_DEGREES), resample="nearest", p=1.0),  # torchvision's default
        normalize,
    )


class DeviceData:
    """The stores of every split and the transforms that turn an index batch into model inputs on the device."""

    def __init__(self, data: ImageData, augment: str | None = None):
        if not supports_device_data(data):
            raise DataError(f"device-resident data needs images already {data.image_size}x{data.image_size} and at "
                            f"most {MAX_PIXELS} pixels; these are {data.profile.describe()}")
        size = data.image_size
        stores = {name: ImageStore(split, name, data.image_column, data.label_column, size)
                  for name, split in data.splits.items()}
        offsets = np.cumsum([0, *(len(store.labels) for store in stores.values())])[:-1].tolist()
        self.splits = {name: IndexedSplit(store, offset)
                       for (name, store), offset in zip(stores.items(), offsets, strict=True)}
        self.images = torch.cat([store.images for store in stores.values()])  # moved to the device on first use
        self.train_transform = device_augmentation(augment or data.augment, size, data.image_mean, data.image_std,
                                                   data.random_erasing)
        self.eval_transform = device_augmentation("none", size, data.image_mean, data.image_std)
        logger.info("device-resident data: %s images decoded once",
                    ", ".join(f"{name} {len(s):,}" for name, s in self.splits.items()))

    def inputs(self, batch: dict, train: bool, augment_seed: int | None = None) -> dict:
        """{"index", "labels"} on the device -> {"pixel_values", "labels"}, augmented when training.

        With `augment_seed`, the augmentation draws from an RNG seeded with it and leaves the global one alone: the
        trainer seeds it from (seed, step, rank), so a resumed run augments exactly as the uninterrupted one did.
        """
        if "index" not in batch:
            return batch
        if self.images.device != batch["index"].device:
            self.images = self.images.to(batch["index"].device)
        pixels = self.images[batch["index"]].float().div_(255)
        transform = (self.train_transform if train else self.eval_transform).to(pixels.device)
        devices = [pixels.device] if pixels.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=augment_seed is not None):
            if augment_seed is not None:
                torch.manual_seed(augment_seed)
            pixels = transform(pixels)
        return {"pixel_values": pixels, "labels": batch["labels"]}
