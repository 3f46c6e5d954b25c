"""What a batch goes through between the DataLoader and the model: device-resident images gathered and augmented,
MixUp or CutMix of a training batch, the weights' memory format.

Every draw is seeded by the caller's seed for that batch (StagedTrainer: the run's seed, the optimizer step, the
micro-batch and the rank), so that a resumed run sees exactly the batches of an uninterrupted one.
"""

import torch
from torchvision.transforms import v2

from training.device_data import DeviceData

MIXING_SEED_OFFSET = 1 << 62  # the mixing's seed beside the step's augmentation seed (those stay far below it)


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """torchvision v2's MixUp and CutMix batch transforms ((images, int labels) -> (mixed images, soft labels)):
    the one asked for, one of the two per batch when both are, or None."""
    chosen = [mix(alpha=alpha, num_classes=num_classes) for mix, alpha in ((v2.MixUp, mixup_alpha),
                                                                         (v2.CutMix, cutmix_alpha)) if alpha]
    return None if not chosen else chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


def describe_mixing(mixup_alpha: float, cutmix_alpha: float) -> str:
    """E.g. 'MixUp (alpha 0.2) or CutMix (alpha 1), one per batch'; '' when neither is on."""
    alphas = (("MixUp", mixup_alpha), ("CutMix", cutmix_alpha))
    chosen = [f"{name} (alpha {alpha:g})" for name, alpha in alphas if alpha]
    return " or ".join(chosen) + (", one per batch" if len(chosen) == 2 else "")


class BatchPipeline:
    """A DataLoader batch (on the device) to the model's inputs: training batches are augmented on the device (with
    device-resident data) and mixed (--mixup_alpha, --cutmix_alpha); evaluation batches are neither."""

    def __init__(self, device_data: DeviceData | None, mixing, channels_last: bool):
        self.device_data, self.mixing, self.channels_last = device_data, mixing, channels_last

    def __call__(self, inputs: dict, seed: int | None) -> dict:
        """`seed`: a training batch's seed; None for an evaluation batch."""
        train = seed is not None
        if self.device_data is not None:
            inputs = self.device_data.inputs(inputs, train, seed)
        if train and self.mixing is not None:
            inputs = self._mixed(inputs, seed)
        if self.channels_last:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        return inputs

    def _mixed(self, inputs: dict, seed: int) -> dict:
        """MixUp or CutMix of a training batch: soft targets for the loss, and as labels each image's dominant class
        (what train_accuracy counts)."""
        pixel_values = inputs["pixel_values"]
        with torch.random.fork_rng(devices=[pixel_values.device] if pixel_values.is_cuda else []):
            torch.manual_seed(seed + MIXING_SEED_OFFSET)  # not the augmentation's draws again
            pixel_values, targets = self.mixing(pixel_values, inputs["labels"])
        return {**inputs, "pixel_values": pixel_values, "targets": targets, "labels": targets.argmax(dim=-1)}
