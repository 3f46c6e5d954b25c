"""The learning-rate range test (Leslie Smith's, as fastai's `lr_find`): train a fresh copy of the run's model on
the groups one stage trains, the lr rising exponentially at every step, until the loss diverges; the rate to use is
read off the curve. Nothing is saved: the model is built for the test and dropped."""

import logging
import math
from dataclasses import dataclass

import torch

from training.callbacks import batchnorm_affine, freeze_for_stage, trained_parameter_count
from training.hardware import autocast, mixed_precision
from training.run import Run

logger = logging.getLogger(__name__)
SMOOTHING = 0.98  # of the loss's exponential moving average (bias-corrected), as fastai's


@dataclass
class RangeTest:
    """The rates tried (the peak of the stage's groups), the smoothed loss at each, and why the test ended."""

    stage: int  # 1-based
    groups: tuple[str, ...]
    trainable: int  # parameters
    lrs: list[float]
    losses: list[float]
    ended: str

    @property
    def minimum(self) -> float:
        """The rate of the lowest smoothed loss."""
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)]

    @property
    def suggestion(self) -> float:
        """The rule this test suggests by: a tenth of the rate of the lowest smoothed loss (fastai's `lr_min`),
        where the loss still falls fast and is far from diverging."""
        return self.minimum / 10

    @property
    def steepest(self) -> float:
        """The rate where the smoothed loss falls fastest per decade of lr (fastai's `lr_steep`), up to the minimum;
        shown beside the suggestion, being noisier on short tests."""
        end = self.losses.index(min(self.losses))
        if end < 2:
            return self.lrs[0]
        slopes = [(self.losses[i + 1] - self.losses[i - 1]) / math.log10(self.lrs[i + 1] / self.lrs[i - 1])
                  for i in range(1, end)]
        return self.lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def range_test(run: Run, stage_index: int, start_lr: float, end_lr: float, steps: int,
               diverge: float = 4.0) -> RangeTest:
    """Train `run`'s model on the groups of stage `stage_index` (0-based) with --optim, the lr of step t being
    start_lr * (end_lr / start_lr) ** (t / (steps - 1)) for the stage's highest rate and in proportion for its other
    groups; stop after `steps` steps or once the smoothed loss exceeds `diverge` times its lowest (or is not
    finite). Batches, augmentation, precision and loss (label smoothing included) are the run's."""
    trainer = run.trainer
    args, model = trainer.args, trainer.model.to(trainer.args.device)
    stage = trainer.schedule.stages[stage_index]
    train_bn = trainer.schedule.train_bn
    freeze_for_stage(model, stage, distributed=False, train_bn=train_bn)
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    groups = {g: [p for p in parameters if id(p) in trained] for g, parameters in model.parameter_groups().items()}
    optimizer = args.optimizer.build({g: parameters for g, parameters in groups.items() if parameters}, args.device,
                                     batchnorm_affine(model) if train_bn else ())
    peak = max(stage.lrs.values())
    mixed = mixed_precision(args.bf16, args.fp16)
    scaler = torch.amp.GradScaler(args.device.type, enabled=mixed == "fp16")
    model.train()
    lrs, losses, average, ended = [], [], 0.0, f"after {steps} steps"
    batches = _forever(trainer.get_train_dataloader())
    for step in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr * stage.peak_lr(group["group"], group.get("batchnorm", False)) / peak
        inputs = trainer._model_inputs(next(batches), train=True)
        with autocast(args.device, mixed):
            loss = trainer.compute_loss(model, inputs)  # the run's own loss: label smoothing, mixed soft targets
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(smoothed) or (losses and smoothed > diverge * min(losses)):
            ended = f"diverged at lr {lr:.3g} (step {step + 1}: smoothed loss {smoothed:.3g})"
            break
        lrs.append(lr)
        losses.append(smoothed)
    return RangeTest(stage_index + 1, stage.groups, trained_parameter_count(model, stage, train_bn), lrs, losses,
                     ended)


def _forever(loader):
    """The loader's batches, epoch after epoch (itertools.cycle would keep every batch in memory)."""
    while True:
        yield from loader
