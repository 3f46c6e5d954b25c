"""Callbacks that apply the stage schedule, check that DDP ranks agree, and warn about a chance-level start.

Learning rates are not set here: they are a function of the step in the scheduler (training/trainer.py), because
the Trainer's LambdaLR rewrites every param group's lr at each step.
"""

import logging

import torch
from torch import nn
from transformers import TrainerCallback

from training.groups import GROUPS, group_of, parameters_by_group
from training.stages import Schedule

logger = logging.getLogger(__name__)


def _set_eval_mode(module: nn.Module, _inputs) -> None:
    module.train(False)


class StageCallback(TrainerCallback):
    """At each stage's first step: the trainable set, a fresh Adam state, and the BatchNorm policy of frozen groups.

    One process: frozen groups get requires_grad=False (no weight gradients are computed for them).
    Several processes: every parameter stays trainable, since DDP only all-reduces what required grad when it
    wrapped the model; frozen groups get their gradients dropped before each optimizer step (and lr 0).
    `bn_policy="frozen"` puts frozen groups' BatchNorm in eval mode through a forward pre-hook, which outlives
    the `model.train()` the Trainer calls at every step.
    """

    def __init__(self, schedule: Schedule, bn_policy: str = "train"):
        if bn_policy not in ("train", "frozen"):
            raise ValueError(f"bn_policy must be 'train' or 'frozen', got {bn_policy!r}")
        self.schedule = schedule
        self.bn_policy = bn_policy
        self.stage_index: int | None = None
        self.trainable_params = 0
        self._frozen: list[nn.Parameter] = []
        self._hooks: list = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.plan = self.schedule.over_steps(state.max_steps)
        self.distributed = args.world_size > 1
        if self.distributed and not all(p.requires_grad for p in model.parameters()):
            raise RuntimeError(
                "under DDP every parameter must require grad when the model is wrapped, or it is "
                "never all-reduced once unfrozen; call model.requires_grad_(True) before the Trainer"
            )
        self._apply(self.plan.stage_index(state.global_step), model)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.plan.is_stage_start(state.global_step):
            optimizer.state.clear()  # a fresh Adam for the new stage (and for a resume exactly at its start)
        stage_index = self.plan.stage_index(state.global_step)
        if stage_index != self.stage_index:
            self._apply(stage_index, model)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for parameter in self._frozen:
            parameter.grad = None  # Adam skips a parameter without a gradient: frozen, bit for bit

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._remove_hooks()
        model.requires_grad_(True)

    def _apply(self, stage_index: int, model: nn.Module) -> None:
        self.stage_index = stage_index
        stage = self.schedule.stages[stage_index]
        trainable = set(stage.groups)
        groups = parameters_by_group(model)
        self._frozen = [p for g in GROUPS if g not in trainable for p in groups[g]] if self.distributed else []
        if not self.distributed:
            for group, parameters in groups.items():
                for parameter in parameters:
                    parameter.requires_grad_(group in trainable)
        self._remove_hooks()
        if self.bn_policy == "frozen":
            self._hooks = [
                module.register_forward_pre_hook(_set_eval_mode)
                for name, module in model.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and group_of(f"{name}.weight") not in trainable
            ]
        self.trainable_params = sum(p.numel() for g in trainable for p in groups[g])
        total = sum(p.numel() for p in model.parameters())
        first = self.schedule.first_epochs()[stage_index] + 1
        last = first + stage.epochs - 1
        logger.info(
            "Stage %d/%d (epochs %d-%d%s): training %s; %s of %s parameters trainable%s",
            stage_index + 1,
            len(self.schedule.stages),
            first,
            last,
            f", {stage.name}" if stage.name else "",
            stage.describe(),
            f"{self.trainable_params:,}",
            f"{total:,}",
            f"; BatchNorm of {len(self._hooks)} frozen layers in eval mode" if self._hooks else "",
        )

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


class RankConsistencyCallback(TrainerCallback):
    """Under DDP, at each stage's end: all-gather a checksum of every group on every rank; stop if they differ."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if args.world_size > 1 and self.schedule.over_steps(state.max_steps).is_stage_end(state.global_step):
            check_ranks_agree(model, args.device, f"the stage ending at step {state.global_step}")


def group_checksums(model: nn.Module) -> torch.Tensor:
    """Per group: the float64 sum and sum of squares of its parameters (identical parameters, identical sums)."""
    rows = []
    for parameters in parameters_by_group(model).values():
        values = [p.detach().double() for p in parameters] or [torch.zeros(1, dtype=torch.float64)]
        rows.append(torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)]))
    return torch.stack(rows)


def check_ranks_agree(model: nn.Module, device: torch.device, when: str) -> None:
    from accelerate.utils import gather

    local = group_checksums(model).to(device)
    every_rank = gather(local[None]).cpu()  # (world_size, groups, 2)
    differing = [g for i, g in enumerate(GROUPS) if not all(torch.equal(r[i], every_rank[0][i]) for r in every_rank)]
    if differing:
        sums = ", ".join(
            f"rank {r}: {every_rank[r][GROUPS.index(differing[0])][0].item():.17g}" for r in range(len(every_rank))
        )
        raise RuntimeError(
            f"DDP ranks hold different parameters after {when}: groups {', '.join(differing)} "
            f"differ ({differing[0]} sums: {sums}). Training stopped; the last checkpoint is intact."
        )
    logger.info("all %d ranks hold identical parameters after %s", len(every_rank), when)


class ChanceLevelWarning(TrainerCallback):
    """After the first epoch, warn when validation accuracy is near chance: usually preprocessing or labels."""

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        accuracy = (metrics or {}).get("eval_accuracy")
        if accuracy is None or round(state.epoch or 0) != 1:
            return
        chance = 1 / model.config.num_labels
        if accuracy < 1.5 * chance:
            logger.warning(
                "accuracy after the first epoch is %.2f%%, about chance (%.2f%%): check the preprocessing "
                "(normalisation, image size, channel order) and that labels match images",
                100 * accuracy,
                100 * chance,
            )
