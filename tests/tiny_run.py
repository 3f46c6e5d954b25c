"""A tiny fine-tuning run through the project's own code, with test-only callbacks that record what happened.

    python tests/tiny_run.py RECORD.json [--kill_after_save N] [--perturb_rank 1] -- <finetune flags>

Used in-process by tests/test_training.py and as a subprocess under `accelerate launch` (DDP) or to be killed.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.arguments import parse_arguments  # noqa: E402
from training.callbacks import batchnorm_affine  # noqa: E402
from training.cli import setup_logging  # noqa: E402
from training.run import prepare_run, train_and_evaluate  # noqa: E402
from training.stages import GROUPS  # noqa: E402

TINY = [
    "--depths",
    "1,1,1,1",
    "--image_size",
    "16",
    "--backbone_weights",
    "none",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "16",
    "--dataloader_num_workers",
    "0",
    "--logging_steps",
    "1",
    "--save_total_limit",
    "20",
    "--stage_epochs",
    "1,1,1",
    "--report_to",
    "none",
    "--augment",
    "none",
    "--recipe",  # on random weights the default is fast (one stage): the tiny runs test the stages
    "staged",
]


def parameters_by_group(model) -> dict:
    return model.parameter_groups()



class Recorder(TrainerCallback):
    """Per optimizer step: each group's lr, the optimizer step count of a head tensor, and which groups changed."""

    def __init__(self):
        self.steps = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.before = {g: [p.detach().clone() for p in ps] for g, ps in parameters_by_group(model).items()}
        self.buffers_before = running_stats(model)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs = {group["group"]: group["lr"] for group in optimizer.param_groups if not group.get("batchnorm")}
        self.batchnorm_lrs = {group["group"]: group["lr"] for group in optimizer.param_groups if group.get("batchnorm")}

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        step = state.global_step - 1
        head = parameters_by_group(model)["head"][0]
        after = parameters_by_group(model)
        batchnorm = {id(p) for p in batchnorm_affine(model)}
        changed = {g: [not torch.equal(a, b) for a, b in zip(self.before[g], after[g], strict=True)] for g in GROUPS}
        self.steps.append(
            {
                "step": step,
                "stage": lr_scheduler.plan.stage_index(step),
                "lrs": self.lrs,
                "adam_step": float(optimizer.state[head]["step"]) if "step" in optimizer.state.get(head, {}) else None,
                "changed": {g: any(changed[g]) for g in GROUPS},
                "batchnorm_lrs": self.batchnorm_lrs,
                # which of the group's parameters changed: its BatchNorm scale and shift, and the others
                "batchnorm_changed": {g: any(c for c, p in zip(changed[g], after[g], strict=True) if id(p) in batchnorm)
                                      for g in GROUPS},
                "others_changed": {g: any(c for c, p in zip(changed[g], after[g], strict=True)
                                          if id(p) not in batchnorm) for g in GROUPS},
                "requires_grad": {g: all(p.requires_grad for p in after[g]) for g in GROUPS},
                "running_stats_changed": {
                    g: not torch.equal(self.buffers_before[g], now) for g, now in running_stats(model).items()
                },
            }
        )


def running_stats(model) -> dict[str, torch.Tensor]:
    """Every BatchNorm running mean and variance of each group, concatenated."""
    stats = {}
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            stats.setdefault(model.parameter_group(name), []).append(buffer.detach().flatten().clone())
    return {g: torch.cat(values) for g, values in stats.items()}


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the checkpoint of step N is written: a crash, not a clean stop."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PerturbRank(TrainerCallback):
    """Make one rank's head differ before the first stage-end check, as a DDP bug would."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if args.process_index == self.rank and state.global_step == 1:
            with torch.no_grad():
                model.classifier.bias.add_(1e-3)


def run(finetune_flags: list[str], kill_after_save: int | None = None, perturb_rank: int | None = None):
    model_args, data_args, stage_args, training_args = parse_arguments(TINY + finetune_flags)
    setup_logging(training_args)
    extra = [KillAfterSave(kill_after_save)] if kill_after_save is not None else []
    extra += [PerturbRank(perturb_rank)] if perturb_rank is not None else []
    recorder = Recorder()
    run, checkpoint = prepare_run(model_args, data_args, stage_args, training_args, extra_callbacks=[*extra, recorder])
    train_and_evaluate(run, checkpoint)
    return run, recorder


def main() -> None:
    record, rest = sys.argv[1], sys.argv[2:]
    options = {}
    while rest and rest[0] != "--":
        options[rest[0].lstrip("-")] = int(rest[1])
        rest = rest[2:]
    finished, recorder = run(rest[1:], options.get("kill_after_save"), options.get("perturb_rank"))
    rank = finished.trainer.args.process_index
    groups = parameters_by_group(finished.trainer.model)
    checksums = {g: float(sum(p.detach().double().sum() for p in ps)) for g, ps in groups.items()}
    Path(f"{record}.rank{rank}").write_text(
        json.dumps(
            {
                "steps": recorder.steps,
                "checksums": checksums,
                "world_size": finished.trainer.args.world_size,
                "metrics": finished.record.metrics,
            }
        )
    )


if __name__ == "__main__":
    main()
