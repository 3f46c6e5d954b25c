"""The stage schedule as data: which parameter groups train, at which learning rate and lr shape, for how long.

A stage lists a learning rate per trained group; every other group is frozen during it. Within a stage the rates
follow the stage's shape (constant, cosine or linear, after an optional linear warmup). Stages follow each other,
and each one starts with a fresh optimizer state. Everything here is validated before training starts.
"""

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from modeling_resnet_cbam import PARAMETER_GROUPS as GROUPS

SHAPES = ("constant", "cosine", "linear")
MIN_RUN_STEPS, MIN_STAGE_STEPS = 50, 10  # fewer optimizer steps than these learn little, whatever the lr
STAGE_FILE_KEYS = {"epochs", "lr", "train", "name", "shape", "warmup", "warmup_steps", "start", "floor"}
STAGE_OPTIONS = ("name", "shape", "warmup", "warmup_steps", "start", "floor")


class ScheduleError(ValueError):
    """A stage schedule that cannot run, with a message that names the stage and the field."""


@dataclass(frozen=True)
class Stage:
    epochs: int
    lrs: dict[str, float]  # group -> peak learning rate; groups absent here are frozen
    name: str = ""
    shape: str = "constant"  # constant | cosine (to `floor` x the peak) | linear (to 0)
    warmup: float = 0.0  # fraction of the stage's steps spent rising linearly to the peak
    warmup_steps: int = 0  # the same as a number of steps; wins over `warmup` when set
    start: float = 0.0  # the rate warmup starts from, as a fraction of the peak (0.2: a one-cycle triangle)
    floor: float = 0.0  # cosine only: the rate at the stage's end, as a fraction of the peak

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g in GROUPS if g in self.lrs)

    @property
    def rate(self) -> float:
        """The stage's rate, as --stage_lrs gives one per stage: its highest peak where its groups' rates differ."""
        return max(self.lrs.values())

    def peak_lr(self, group: str, trained_batchnorm: bool = False) -> float:
        """The peak rate of `group` in this stage, 0 while frozen; of a frozen group's BatchNorm scale and shift
        that train (`trained_batchnorm`, with train_bn), the stage's lowest rate."""
        if group in self.lrs:
            return self.lrs[group]
        return min(self.lrs.values()) if trained_batchnorm else 0.0

    def parameter_count(self, groups: dict[str, list]) -> int:
        """How many parameters this stage trains, given the model's parameters by group."""
        return sum(p.numel() for g in self.groups for p in groups[g])

    def warmup_length(self, steps: int) -> int:
        return min(self.warmup_steps or round(self.warmup * steps), steps)

    def factor(self, step: int, steps: int) -> float:
        """The multiplier of the peak rates at 0-based step `step` of this stage's `steps`. Never 0 on a step
        that trains: warmup rises from `start` to reach the peak at its last step, and the decay ends one step short
        of its end value."""
        warmup = self.warmup_length(steps)
        if step < warmup:
            return self.start + (1 - self.start) * (step + 1) / warmup
        progress = (step - warmup) / (steps - warmup)
        if self.shape == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.shape == "linear":
            return 1 - progress
        return 1.0

    def describe(self) -> str:
        by_lr: dict[float, list[str]] = {}
        for group in self.groups:
            by_lr.setdefault(self.lrs[group], []).append(group)
        parts = ["; ".join(f"{', '.join(groups)} at lr {lr:g}" for lr, groups in by_lr.items())]
        if self.shape != "constant":  # e.g. 'cosine to 0.1x'
            parts.append(self.shape + (f" to {self.floor:g}x" if self.floor else ""))
        if self.warmup_steps or self.warmup:
            parts.append((f"warmup {self.warmup_steps} steps" if self.warmup_steps else f"warmup {self.warmup:.0%}")
                         + (f" from {self.start:g}x" if self.start else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    # The BatchNorm scale and shift of the frozen groups train too (fastai's and Lightning's `train_bn`), at the
    # lowest rate of the stage; their convolutions stay frozen. Off: a frozen group is entirely fixed.
    train_bn: bool = False

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def first_epochs(self) -> list[int]:
        """The 0-based epoch at which each stage starts."""
        starts, epoch = [], 0
        for stage in self.stages:
            starts.append(epoch)
            epoch += stage.epochs
        return starts

    def over_steps(self, total_steps: int) -> "StagePlan":
        """The schedule spread over the Trainer's total optimizer steps (stages are whole epochs)."""
        return StagePlan(self, total_steps // self.total_epochs)

    def with_lengths(self, epochs: list[int]) -> "Schedule":
        self._check_count(epochs, "--stage_epochs")
        return replace(self, stages=tuple(replace(s, epochs=e) for s, e in zip(self.stages, epochs, strict=True)))

    def with_rates(self, lrs: list[float]) -> "Schedule":
        """One rate per stage: every group a stage trains takes its stage's rate."""
        self._check_count(lrs, "--stage_lrs")
        return replace(self, stages=tuple(replace(s, lrs=dict.fromkeys(s.lrs, lr))
                                          for s, lr in zip(self.stages, lrs, strict=True)))

    def of_groups(self, present) -> "Schedule":
        """Each stage trains only the groups in `present` (those that hold parameters in the model): a recipe's
        `cbam` on a model without CBAM is not listed as trained, in the log or the card."""
        return replace(self, stages=tuple(replace(s, lrs={g: lr for g, lr in s.lrs.items() if g in present})
                                          for s in self.stages))

    def with_pretrained_stem(self) -> "Schedule":
        """The stem out of every stage that keeps layer1 frozen: a stem that was loaded with the backbone (the
        ImageNet stem) is not a new module, and trains with the layer it feeds, as the rest of the backbone does."""
        return replace(self, stages=tuple(s if "layer1" in s.lrs or "stem" not in s.lrs else
                                          replace(s, lrs={g: lr for g, lr in s.lrs.items() if g != "stem"})
                                          for s in self.stages))

    def scaled(self, factor: float) -> "Schedule":
        """Every rate times `factor` (the linear scaling rule for a batch `factor` times the recipe's)."""
        return replace(self, stages=tuple(replace(s, lrs={g: lr * factor for g, lr in s.lrs.items()})
                                          for s in self.stages))

    def with_shape(self, shape: str, warmup: float = 0.0, warmup_steps: int = 0, start: float = 0.0,
                   floor: float = 0.0) -> "Schedule":
        """The same shape and warmup in every stage (the command line's --lr_scheduler_type and --warmup_*)."""
        return replace(self, stages=tuple(replace(s, shape=shape, warmup=warmup, warmup_steps=warmup_steps,
                                                  start=start, floor=floor) for s in self.stages))

    def _check_count(self, values: list, flag: str) -> None:
        if len(values) != len(self.stages):
            given, stages = len(values), len(self.stages)
            raise ScheduleError(f"{flag} gives {given} value{'s' * (given > 1)} for {stages} stage{'s' * (stages > 1)}")

    def validate(self, num_train_epochs: float | None = None) -> "Schedule":
        if not self.stages:
            raise ScheduleError("the schedule has no stage")
        for index, stage in enumerate(self.stages, start=1):
            _validate_stage(stage, f"stage {index}")
        if num_train_epochs is not None and num_train_epochs != self.total_epochs:
            lengths = "+".join(str(stage.epochs) for stage in self.stages)
            raise ScheduleError(
                f"the stages last {lengths}={self.total_epochs} epochs but --num_train_epochs is {num_train_epochs:g}; "
                "drop --num_train_epochs or make them agree"
            )
        return self


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_stage(stage: Stage, where: str) -> None:
    if not isinstance(stage.epochs, int) or isinstance(stage.epochs, bool) or stage.epochs < 1:
        raise ScheduleError(f"{where}: epochs must be a positive integer, got {stage.epochs!r}")
    if not stage.lrs:
        raise ScheduleError(f"{where}: trains no group")
    for group, lr in stage.lrs.items():
        if group not in GROUPS:
            raise ScheduleError(f"{where}: unknown group {group!r}; the groups are {', '.join(GROUPS)}")
        if not _is_number(lr) or not 0 < lr < math.inf:
            raise ScheduleError(f"{where}: the lr of {group} must be a positive finite number, got {lr!r}")
    if stage.shape not in SHAPES:
        raise ScheduleError(f"{where}: unknown lr shape {stage.shape!r}; the shapes are {', '.join(SHAPES)}")
    if not _is_number(stage.warmup) or not 0 <= stage.warmup < 1:
        raise ScheduleError(f"{where}: warmup must be a fraction of the stage in [0, 1), got {stage.warmup!r}")
    if not isinstance(stage.warmup_steps, int) or isinstance(stage.warmup_steps, bool) or stage.warmup_steps < 0:
        raise ScheduleError(f"{where}: warmup_steps must be a non-negative integer, got {stage.warmup_steps!r}")
    warms = stage.warmup or stage.warmup_steps
    if not _is_number(stage.start) or not 0 <= stage.start < 1 or (stage.start and not warms):
        raise ScheduleError(f"{where}: start is the fraction in [0, 1) of the peak that warmup starts from, with a "
                            f"warmup only; got {stage.start!r}")
    if not _is_number(stage.floor) or not 0 <= stage.floor < 1 or (stage.floor and stage.shape != "cosine"):
        raise ScheduleError(f"{where}: floor is a fraction in [0, 1) of the peak, for the cosine shape only; "
                            f"got {stage.floor!r} with shape {stage.shape}")


@dataclass(frozen=True)
class StagePlan:
    """The schedule in optimizer steps: a pure function of the global step, so it resumes by itself. Built once,
    when the Trainer knows its number of steps, and read by everything that needs a stage or a rate."""

    schedule: Schedule
    steps_per_epoch: int
    first_steps: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        starts = tuple(epoch * self.steps_per_epoch for epoch in self.schedule.first_epochs())
        object.__setattr__(self, "first_steps", starts)

    @property
    def last_step(self) -> int:
        return self.schedule.total_epochs * self.steps_per_epoch

    def stage_index(self, step: int) -> int:
        """The 0-based stage that optimizer step `step` (0-based) belongs to."""
        return max(i for i, first in enumerate(self.first_steps) if first <= step)

    def stage(self, step: int) -> Stage:
        return self.schedule.stages[self.stage_index(step)]

    def lr(self, group: str, step: int, batchnorm: bool = False) -> float:
        """The learning rate of `group` at optimizer step `step`: its stage's rate times the shape, 0 while frozen;
        of the group's BatchNorm scale and shift (`batchnorm`) with `train_bn`, the stage's lowest rate while
        frozen."""
        step = min(step, self.last_step - 1)
        index = self.stage_index(step)
        stage = self.schedule.stages[index]
        peak = stage.peak_lr(group, batchnorm and self.schedule.train_bn)
        return peak and peak * stage.factor(step - self.first_steps[index], stage.epochs * self.steps_per_epoch)

    def is_stage_start(self, step: int) -> bool:
        return step in self.first_steps

    def is_stage_end(self, step: int) -> bool:
        """True once `step` optimizer steps are done and they complete a stage."""
        return step > 0 and (step in self.first_steps or step == self.last_step)

    @property
    def stage_steps(self) -> list[int]:
        return [stage.epochs * self.steps_per_epoch for stage in self.schedule.stages]

    def length_report(self) -> tuple[str, str | None]:
        """The optimizer steps of each stage, and a warning (or None) when the run or a stage is too short to learn
        anything: fewer than MIN_RUN_STEPS steps in all, or MIN_STAGE_STEPS in a stage."""
        steps = self.stage_steps
        text = f"{self.last_step:,} optimizer steps ({self.steps_per_epoch:,} per epoch)"
        if len(steps) > 1:
            text += f": {', '.join(f'{count:,}' for count in steps)} in stages 1-{len(steps)}"
        short = [index + 1 for index, count in enumerate(steps) if count < MIN_STAGE_STEPS]
        if self.last_step >= MIN_RUN_STEPS and not short:
            return text, None
        why = (f"{self.last_step:,} optimizer steps in all" if self.last_step < MIN_RUN_STEPS
               else f"stage {', '.join(map(str, short))} has fewer than {MIN_STAGE_STEPS} optimizer steps")
        return text, (f"this run is too short to learn much: {why} (the recipes' lengths are meant for tens of "
                      "thousands of images); lengthen it with --num_train_epochs (one-stage recipes) or "
                      "--stage_epochs, or take a smaller --per_device_train_batch_size")


def from_json(path: str | Path) -> Schedule:
    """Stages from a JSON list. Each stage: {"epochs": 5, "lr": {"cbam": 1e-3, "head": 1e-3}} or
    {"epochs": 5, "train": ["cbam", "head"], "lr": 1e-3}; "train": "all" means every group. Optional keys:
    "name", "shape" (constant | cosine | linear), "warmup" (a fraction), "warmup_steps", "floor" (cosine)."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ScheduleError(f"cannot read the stages file {path}: {error}") from error
    if not isinstance(entries, list):
        raise ScheduleError(f"{path}: expected a JSON list of stages")
    stages = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "epochs" not in entry or "lr" not in entry:
            raise ScheduleError(f"{path}: stage {index} needs 'epochs' and 'lr'")
        unknown = set(entry) - STAGE_FILE_KEYS
        if unknown:
            raise ScheduleError(f"{path}: stage {index} has unknown keys {sorted(unknown)}; "
                                f"the keys are {', '.join(sorted(STAGE_FILE_KEYS))}")
        lr = entry["lr"]
        if isinstance(lr, dict):
            lrs = dict(lr)
        else:
            train = entry.get("train", "all")
            train = GROUPS if train == "all" else [train] if isinstance(train, str) else train
            lrs = dict.fromkeys(train, lr)
        options = {key: entry[key] for key in STAGE_OPTIONS if key in entry}
        stage = Stage(entry["epochs"], lrs, **options)
        _validate_stage(stage, f"{path}: stage {index}")
        stages.append(stage)
    return Schedule(tuple(stages))
