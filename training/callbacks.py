"""Callbacks, each doing one thing from the step it is at: apply the stage, check that DDP ranks agree, warn
about a chance-level start.

The stage plan is read from the scheduler the Trainer hands every callback (training/trainer.py's StageLR):
learning rates are not set here, because the Trainer's LambdaLR rewrites every param group's lr at each step.
"""

import logging
import math
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from training.stages import GROUPS, Stage

logger = logging.getLogger(__name__)


def _set_eval_mode(module: nn.Module, _inputs) -> None:
    module.train(False)


def batchnorm_affine(model: nn.Module) -> list[nn.Parameter]:
    """The scale and shift of every BatchNorm layer: what `train_bn` keeps training in the frozen groups."""
    return [parameter for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for parameter in (module.weight, module.bias) if parameter is not None]


def frozen_parameters(model: nn.Module, stage: Stage, train_bn: bool) -> list[nn.Parameter]:
    """The parameters `stage` leaves unchanged: those of the groups it does not train, but for their BatchNorm
    scale and shift with `train_bn`."""
    kept = {id(p) for p in batchnorm_affine(model)} if train_bn else set()
    return [p for group, parameters in model.parameter_groups().items() if group not in stage.lrs
            for p in parameters if id(p) not in kept]


def trained_parameter_count(model: nn.Module, stage: Stage, train_bn: bool) -> int:
    frozen = sum(p.numel() for p in frozen_parameters(model, stage, train_bn))
    return sum(p.numel() for p in model.parameters()) - frozen


def freeze_for_stage(model, stage: Stage, distributed: bool, train_bn: bool = False) -> list[nn.Parameter]:
    """Make `stage`'s groups the trained ones (with `train_bn`, and the frozen groups' BatchNorm scale and shift);
    return the parameters whose gradients must be dropped.

    One process: frozen parameters get requires_grad=False (no weight gradients are computed for them), nothing to
    drop. Several processes: every parameter stays trainable, since DDP only all-reduces what required grad when it
    wrapped the model; the frozen parameters are returned, to be dropped before each optimizer step.
    """
    frozen = frozen_parameters(model, stage, train_bn)
    if distributed:
        return frozen
    model.requires_grad_(True)
    for parameter in frozen:
        parameter.requires_grad_(False)
    return []


class StageCallback(TrainerCallback):
    """At each stage's first step: the trainable set, a fresh optimizer state, and the BatchNorm policy of frozen
    groups. `bn_policy="frozen"` puts frozen groups' BatchNorm in eval mode through a forward pre-hook, which
    outlives the `model.train()` the Trainer calls at every step."""

    def __init__(self, bn_policy: str = "train"):
        self.bn_policy = bn_policy
        self.applied: int | None = None  # the stage the model is set up for
        self._dropped: list[nn.Parameter] = []
        self._hooks: list = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.world_size > 1 and not all(p.requires_grad for p in model.parameters()):
            raise RuntimeError(
                "under DDP every parameter must require grad when the model is wrapped, or it is "
                "never all-reduced once unfrozen; call model.requires_grad_(True) before the Trainer"
            )

    def on_step_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        plan = lr_scheduler.plan
        lr_scheduler.follow(state.global_step)  # after a step the GradScaler skipped, the lrs still follow the step
        if plan.is_stage_start(state.global_step):
            optimizer.state.clear()  # a fresh optimizer for the new stage (and for a resume exactly at its start)
        index = plan.stage_index(state.global_step)
        if index != self.applied:
            self._apply(index, plan.schedule, model, args.world_size > 1)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for parameter in self._dropped:
            parameter.grad = None  # the optimizer skips a parameter without a gradient: frozen, bit for bit

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._remove_hooks()
        self.applied = None
        model.requires_grad_(True)

    def _apply(self, index: int, schedule, model: nn.Module, distributed: bool) -> None:
        self.applied = index
        stage = schedule.stages[index]
        self._dropped = freeze_for_stage(model, stage, distributed, schedule.train_bn)
        self._remove_hooks()
        if self.bn_policy == "frozen":
            self._hooks = [
                module.register_forward_pre_hook(_set_eval_mode)
                for name, module in model.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
                and model.parameter_group(f"{name}.weight") not in stage.lrs
            ]
        first = schedule.first_epochs()[index] + 1
        frozen_groups = [group for group in GROUPS if group not in stage.lrs]
        frozen_bn = (f", and the frozen groups' BatchNorm scale and shift at lr "
                     f"{stage.peak_lr(frozen_groups[0], trained_batchnorm=True):g}"
                     if schedule.train_bn and frozen_groups else "")
        logger.info(
            "Stage %d/%d (epochs %d-%d%s): training %s%s; %s of %s parameters trainable%s",
            index + 1,
            len(schedule.stages),
            first,
            first + stage.epochs - 1,
            f", {stage.name}" if stage.name else "",
            stage.describe(),
            frozen_bn,
            f"{trained_parameter_count(model, stage, schedule.train_bn):,}",
            f"{sum(p.numel() for p in model.parameters()):,}",
            f"; BatchNorm of {len(self._hooks)} frozen layers in eval mode" if self._hooks else "",
        )

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


class RankConsistencyCallback(TrainerCallback):
    """Under DDP, at each stage's end: all-gather a checksum of every group on every rank; stop if they differ."""

    def on_step_end(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        if args.world_size > 1 and lr_scheduler.plan.is_stage_end(state.global_step):
            check_ranks_agree(model, args.device, f"the stage ending at step {state.global_step}")


def group_checksums(model) -> torch.Tensor:
    """Per group: the float64 sum and sum of squares of its parameters (identical parameters, identical sums)."""
    rows = []
    for parameters in model.parameter_groups().values():
        values = [p.detach().double() for p in parameters] or [torch.zeros(1, dtype=torch.float64)]
        rows.append(torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)]))
    return torch.stack(rows)


def check_ranks_agree(model, device: torch.device, when: str) -> None:
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


def improves(value: float, best: float | None, greater: bool) -> bool:
    """Whether an evaluation improves on the best before it: strictly, as the Trainer counts it."""
    return best is None or (value > best if greater else value < best)


def best_evaluation(entries: list[dict], key: str, greater: bool) -> dict | None:
    """The log entry with the best `key` value, the first of equal ones (the Trainer keeps a best until beaten)."""
    best = None
    for entry in entries:
        best = entry if improves(entry[key], None if best is None else best[key], greater) else best
    return best


def evaluations_without_improvement(evaluations: list[tuple[int, float]], counted_from: int, greater: bool) -> int:
    """How many of the latest evaluations (step, value), in a row, did not improve on the best before them; only
    evaluations after step `counted_from` count (earlier ones still set the best)."""
    best, waited = None, 0
    for step, value in evaluations:
        improved = improves(value, best, greater)
        best = value if improved else best
        waited = 0 if improved else waited + (step > counted_from)
    return waited


class EarlyStopping(TrainerCallback):
    """--early_stopping_patience: stop training once `patience` evaluations in a row have not improved the watched
    validation metric, counting only evaluations after the last stage has started. The earlier stages train a part
    of the network at a rate meant for it and plateau by design (stage 1 with a frozen backbone most of all); a
    stage that stops improving is what the schedule moves on from, not a reason to stop. The count is derived from
    the log history at every evaluation, so a resumed run stops where the uninterrupted one does."""

    def __init__(self, patience: int, metric: str, greater: bool):
        self.patience, self.key, self.greater = patience, f"eval_{metric}", greater

    def on_evaluate(self, args, state, control, lr_scheduler=None, **kwargs):
        plan = lr_scheduler.plan
        evaluations = [(entry["step"], entry[self.key]) for entry in state.log_history if self.key in entry]
        waited = evaluations_without_improvement(evaluations, plan.first_steps[-1], self.greater)
        if waited >= self.patience and state.global_step < plan.last_step:
            control.should_training_stop = True
            logger.info("early stopping at epoch %g: %s has not improved for %d evaluations in the last stage",
                        state.epoch, self.key, waited)


class BestOfWholeRun(TrainerCallback):
    """--load_best_model_at_end on a resumed run: the best evaluation is chosen over the run's whole log history,
    resumes included. The Trainer carries its best over from the checkpoint's state, which a run resumed with
    --allow_changed_run may not have (it watched nothing, or another metric): it would then keep the best since the
    resume. An evaluation counts if its checkpoint is still on disk (in the folder of `checkpoint`: a run resumed
    into another folder reads its earlier epochs from there); a better one whose checkpoint is gone is named."""

    def __init__(self, checkpoint: Path):
        self.folder = checkpoint.parent

    def on_train_begin(self, args, state, control, **kwargs):
        key, greater = f"eval_{args.metric_for_best_model}", args.greater_is_better
        evaluations = [entry for entry in state.log_history if key in entry]
        kept = [entry for entry in evaluations if (self.folder / f"checkpoint-{entry['step']}").is_dir()]
        best, overall = best_evaluation(kept, key, greater), best_evaluation(evaluations, key, greater)
        if overall is not None and (best is None or overall[key] != best[key]):
            logger.warning("epoch %g had the best %s of the run so far, %.4f, but its checkpoint is no longer in %s: "
                           "it cannot be the model kept", overall["epoch"], key, overall[key], self.folder)
        state.best_metric = best[key] if best else None
        state.best_global_step = best["step"] if best else None
        state.best_model_checkpoint = str(self.folder / f"checkpoint-{best['step']}") if best else None


class ChanceLevelCallback(TrainerCallback):
    """After the first epoch, warn when validation accuracy is at chance: usually preprocessing or labels.

    Chance is what always answering the validation split's most frequent class scores (`label_counts`: its images
    per class), which is 1 / classes only where the classes are balanced. "At chance" is within three standard
    errors of it on this many images (a model that guesses lands there 99.9% of the time): 66% on 153 photos of two
    classes is a start, not a broken pipeline, where 11% on 5,000 images of ten is."""

    def __init__(self, label_counts: list[int], label_names: list[str]):
        total = sum(label_counts)
        majority = max(range(len(label_counts)), key=label_counts.__getitem__)
        self.baseline = label_counts[majority] / total if total else 1 / len(label_counts)
        self.margin = 3 * math.sqrt(self.baseline * (1 - self.baseline) / max(total, 1))
        self.balanced = len(set(label_counts)) == 1
        self.majority_name = label_names[majority]

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        accuracy = (metrics or {}).get("eval_accuracy")
        if accuracy is None or round(state.epoch or 0) != 1:
            return
        baseline = self.baseline
        if accuracy <= baseline + self.margin:
            chance = f"{100 * baseline:.2f}%" if self.balanced else \
                f"{100 * baseline:.2f}%, what always answering {self.majority_name!r}, its most frequent class, scores"
            logger.warning(
                "validation accuracy after the first epoch is %.2f%%, about chance (%s): check the preprocessing "
                "(normalisation, image size, channel order) and that labels match images",
                100 * accuracy, chance,
            )
