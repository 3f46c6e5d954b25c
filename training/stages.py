"""The stage schedule as data: which module groups train, at which learning rate, for how many epochs.

A stage lists a learning rate per trained group; every other group is frozen during it. Stages follow each other,
and each one starts with a fresh Adam state. Everything here is validated before training starts.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from training.groups import GROUPS

NEW_MODULES = ("stem", "cbam", "head")  # randomly initialised, whatever the backbone weights


class ScheduleError(ValueError):
    """A stage schedule that cannot run, with a message that names the stage and the field."""


@dataclass(frozen=True)
class Stage:
    epochs: int
    lrs: dict[str, float]  # group -> learning rate; groups absent here are frozen
    name: str = ""

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g in GROUPS if g in self.lrs)

    def describe(self) -> str:
        by_lr: dict[float, list[str]] = {}
        for group in self.groups:
            by_lr.setdefault(self.lrs[group], []).append(group)
        return "; ".join(f"{', '.join(groups)} at lr {lr:g}" for lr, groups in by_lr.items())


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]

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

    def in_steps(self, steps_per_epoch: int) -> "StepSchedule":
        return StepSchedule(self, steps_per_epoch)

    def over_steps(self, total_steps: int) -> "StepSchedule":
        """The schedule spread over the Trainer's total optimizer steps (stages are whole epochs)."""
        return self.in_steps(total_steps // self.total_epochs)

    def validate(self, num_train_epochs: float | None = None) -> "Schedule":
        if not self.stages:
            raise ScheduleError("the schedule has no stage")
        for index, stage in enumerate(self.stages, start=1):
            if not isinstance(stage.epochs, int) or isinstance(stage.epochs, bool) or stage.epochs < 1:
                raise ScheduleError(f"stage {index}: epochs must be a positive integer, got {stage.epochs!r}")
            if not stage.lrs:
                raise ScheduleError(f"stage {index}: trains no group")
            for group, lr in stage.lrs.items():
                if group not in GROUPS:
                    raise ScheduleError(f"stage {index}: unknown group {group!r}; the groups are {', '.join(GROUPS)}")
                if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
                    raise ScheduleError(f"stage {index}: the lr of {group} must be a positive number, got {lr!r}")
        if num_train_epochs is not None and num_train_epochs != self.total_epochs:
            lengths = "+".join(str(stage.epochs) for stage in self.stages)
            raise ScheduleError(
                f"the stages last {lengths}={self.total_epochs} epochs but --num_train_epochs is {num_train_epochs:g}; "
                "drop --num_train_epochs or make them agree"
            )
        return self


@dataclass(frozen=True)
class StepSchedule:
    """The schedule in optimizer steps: a pure function of the global step, so it resumes by itself."""

    schedule: Schedule
    steps_per_epoch: int

    @property
    def first_steps(self) -> list[int]:
        return [epoch * self.steps_per_epoch for epoch in self.schedule.first_epochs()]

    @property
    def last_step(self) -> int:
        return self.schedule.total_epochs * self.steps_per_epoch

    def stage_index(self, step: int) -> int:
        """The 0-based stage that optimizer step `step` (0-based) belongs to."""
        return max(i for i, first in enumerate(self.first_steps) if first <= step)

    def stage(self, step: int) -> Stage:
        return self.schedule.stages[self.stage_index(step)]

    def lr(self, group: str, step: int) -> float:
        """The learning rate of `group` at optimizer step `step`: its stage's rate, 0 while frozen."""
        return self.stage(min(step, self.last_step - 1)).lrs.get(group, 0.0)

    def is_stage_start(self, step: int) -> bool:
        return step in self.first_steps

    def is_stage_end(self, step: int) -> bool:
        """True once `step` optimizer steps are done and they complete a stage."""
        return step > 0 and (step in self.first_steps or step == self.last_step)


def _all(lr: float, groups=GROUPS) -> dict[str, float]:
    return dict.fromkeys(groups, lr)


def recipe(name: str, full_epochs: int = 50, full_lr: float = 1e-3) -> Schedule:
    """The named recipes: `staged` (default), `seed-exact` (the seed's frozen stem) and `full` (one stage)."""
    if name == "staged":
        return Schedule(
            (
                Stage(5, _all(1e-3, NEW_MODULES), "new modules"),
                Stage(15, _all(1e-4, NEW_MODULES + ("layer3", "layer4")), "+ layer3, layer4"),
                Stage(30, _all(1e-5), "everything"),
            )
        )
    if name == "seed-exact":
        return Schedule(
            (
                Stage(5, _all(1e-3, ("cbam", "head")), "CBAM + head"),
                Stage(15, _all(1e-4, ("cbam", "head", "layer3", "layer4")), "+ layer3, layer4"),
                Stage(30, _all(1e-5), "everything"),
            )
        )
    if name == "full":
        return Schedule((Stage(full_epochs, _all(full_lr), "everything"),))
    raise ScheduleError(f"unknown recipe {name!r}; the recipes are staged, seed-exact, full")


def override(schedule: Schedule, epochs: list[int] | None = None, lrs: list[float] | None = None) -> Schedule:
    """Replace the stages' lengths and/or rates (one value per stage; a stage's groups all take its rate)."""
    stages = list(schedule.stages)
    for values, what in ((epochs, "--stage_epochs"), (lrs, "--stage_lrs")):
        if values is not None and len(values) != len(stages):
            raise ScheduleError(f"{what} gives {len(values)} values for {len(stages)} stages")
    if epochs is not None:
        stages = [Stage(e, s.lrs, s.name) for s, e in zip(stages, epochs, strict=True)]
    if lrs is not None:
        stages = [Stage(s.epochs, dict.fromkeys(s.lrs, lr), s.name) for s, lr in zip(stages, lrs, strict=True)]
    return Schedule(tuple(stages))


def scale_lrs(schedule: Schedule, factor: float) -> Schedule:
    """Every lr times `factor` (the linear scaling rule for a batch `factor` times the seed's)."""
    stages = (Stage(s.epochs, {g: lr * factor for g, lr in s.lrs.items()}, s.name) for s in schedule.stages)
    return Schedule(tuple(stages))


def from_json(path: str | Path) -> Schedule:
    """Stages from a JSON list. Each stage: {"epochs": 5, "lr": {"cbam": 1e-3, "head": 1e-3}} or
    {"epochs": 5, "train": ["cbam", "head"], "lr": 1e-3}; "train": "all" means every group."""
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
        unknown = set(entry) - {"epochs", "lr", "train", "name"}
        if unknown:
            raise ScheduleError(f"{path}: stage {index} has unknown keys {sorted(unknown)}")
        lr = entry["lr"]
        if isinstance(lr, dict):
            lrs = dict(lr)
        else:
            train = entry.get("train", "all")
            lrs = dict.fromkeys(GROUPS if train == "all" else train, lr)
        stages.append(Stage(entry["epochs"], lrs, entry.get("name", "")))
    return Schedule(tuple(stages))
