"""The learning-rate range test for one stage of a recipe, on your data and backbone: the rate to give that stage.

    python scripts/lr_find.py --dataset_name ../shared/datasets/cifar10 --stage 1
    python scripts/lr_find.py --train_dir photos/train --validation_dir photos/val --stage 3 --num_steps 200

Every scripts/finetune.py flag chooses the data, model, weights, recipe, batch, optimizer and precision as for
training; the flags below choose the test. The lr rises exponentially from --start_lr to --end_lr over --num_steps
steps (the stage's highest rate; its other groups in the proportions of its rates), on the groups that stage
trains, until the smoothed training loss passes 4x its lowest. Prints the suggestion (a tenth of the rate of the
lowest loss) and the steepest descent, and draws the curve in --plot. Nothing is saved but the plot (a given
--output_dir is not written to).
"""

import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from training.arguments import build_schedule, parse_arguments
from training.cli import setup_logging
from training.hardware import configure_threads
from training.lr_find import range_test
from training.plots import plot_lr_find
from training.run import build_run
from training.script_args import check_at_least, check_output_file, flags_given

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


def main(argv: list[str] | None = None) -> int:
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
    print(f"the recipe gives this stage {max(schedule.stages[args.stage - 1].lrs.values()):g}; to try the "
          f"suggestion: --stage_lrs with it in place {args.stage}")
    path = plot_lr_find(test.lrs, test.losses, {"suggested": test.suggestion, "steepest": test.steepest}, args.plot,
                        title=f"lr range test, stage {test.stage} ({', '.join(test.groups)})")
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
