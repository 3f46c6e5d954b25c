"""The learning-rate range test (Leslie Smith's, as fastai's `lr_find`): train a fresh copy of the run's model on
the groups one stage trains, the lr rising exponentially at every step, until the loss diverges; the rate to use is
read off the curve. Nothing is saved: the model is built for the test and dropped."""

import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import torch

from training.arguments import build_schedule, parse_arguments
from training.callbacks import batchnorm_affine, freeze_for_stage, trained_parameter_count
from training.cli import setup_logging
from training.hardware import autocast, configure_threads, mixed_precision
from training.plots import plot_lr_find
from training.run import Run, build_run
from training.script_args import check_at_least, check_output_file, flags_given

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
    peak = stage.rate
    mixed = mixed_precision(args.bf16, args.fp16)
    scaler = torch.amp.GradScaler(args.device.type, enabled=mixed == "fp16")
    model.train()
    lrs, losses, average, ended = [], [], 0.0, f"after {steps} steps"
    batches = _forever(trainer.get_train_dataloader())
    for step in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr * stage.peak_lr(group["group"], group.get("batchnorm", False)) / peak
        inputs = trainer.model_inputs(next(batches), train=True)
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


# Fine-tuning flags about what a run keeps, evaluates or publishes: refused here rather than silently ignored
UNUSED = ("--push_to_hub", "--hub_strategy", "--resume_from_checkpoint", "--export_onnx", "--load_best_model_at_end",
          "--early_stopping_patience", "--ema_decay", "--tta", "--overwrite_output_dir")


@dataclass
class LrFindArguments:
    stage: int = field(default=1, metadata={"help": "The stage of the recipe to test (1-based): its groups train."})
    start_lr: float = field(default=1e-7, metadata={"help": "The first rate tried."})
    end_lr: float = field(default=10.0, metadata={"help": "The last rate tried (the test stops sooner if the loss "
                          "diverges)."})
    num_steps: int = field(default=100, metadata={"help": "Steps of the test (one batch each)."})
    plot: str = field(default="lr_find.png", metadata={"help": "Where the loss-against-lr curve is drawn."})

    def __post_init__(self):
        check_at_least(self, stage=1, num_steps=2)
        if not 0 < self.start_lr < self.end_lr:
            raise ValueError(f"the lr range must increase from a positive --start_lr: got --start_lr {self.start_lr:g} "
                             f"and --end_lr {self.end_lr:g}")


def lr_find_main(argv: list[str] | None = None) -> int:
    """scripts/lr_find.py: 0; 2 for bad flags, data or weights; 1 when the loss diverged at once."""
    scratch = tempfile.mkdtemp(prefix="lr_find-")  # the Trainer's output_dir: nothing is written to yours
    argv = sys.argv[1:] if argv is None else argv
    try:
        unused = flags_given(argv, UNUSED)
        if unused:
            raise ValueError(f"{', '.join(unused)}: no effect on the range test (it trains a copy of the model for a "
                             "few steps and keeps nothing); leave it out")
        args, model_args, data_args, stage_args, training_args = parse_arguments(
            [*argv, "--report_to", "none", "--output_dir", scratch], extra=(LrFindArguments,),
            description="The learning-rate range test for one stage (its flags first); every scripts/finetune.py "
                        "flag chooses the data, model, weights, recipe, batch, optimizer and precision, as for "
                        "training (--output_dir is not written to: nothing is saved but --plot).")
        check_output_file("--plot", args.plot, ".png")
        schedule = build_schedule(model_args, stage_args, training_args)
        if args.stage > len(schedule.stages):
            raise ValueError(f"--stage {args.stage}: the recipe has {len(schedule.stages)} stage(s)")
    except ValueError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(training_args)
    configure_threads()
    try:
        run = build_run(model_args, data_args, stage_args, training_args)
    except (ValueError, FileNotFoundError) as error:
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        test = range_test(run, args.stage - 1, args.start_lr, args.end_lr, args.num_steps)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(test.losses) < 3:
        print(f"error: the loss diverged within {len(test.losses) + 1} steps ({test.ended}): start lower "
              "(--start_lr)", file=sys.stderr)
        return 1
    print(f"stage {test.stage} of {len(schedule.stages)}: {', '.join(test.groups)} ({test.trainable:,} parameters), "
          f"{training_args.optimizer.describe()}; {len(test.losses)} steps from {args.start_lr:g}, {test.ended}")
    print(f"lowest smoothed loss {min(test.losses):.4f} at lr {test.minimum:.3g}")
    print(f"suggested lr: {test.suggestion:.3g} (a tenth of that, fastai's lr_min); steepest descent at "
          f"{test.steepest:.3g}")
    print(f"the recipe gives this stage {schedule.stages[args.stage - 1].rate:g}; to try the "
          f"suggestion: --stage_lrs with it in place {args.stage}")
    path = plot_lr_find(test.lrs, test.losses, {"suggested": test.suggestion, "steepest": test.steepest}, args.plot,
                        title=f"lr range test, stage {test.stage} ({', '.join(test.groups)})")
    print(f"plot: {path}")
    return 0
