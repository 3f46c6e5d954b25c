"""The fine-tuning command: parse arguments, refuse bad ones early, run, write the output folder, push."""

import logging
import sys

import transformers

from training.arguments import FinetuneTrainingArguments, parse_arguments
from training.hardware import configure_threads
from training.hub import HubError, check_push_access, push_folder
from training.outputs import write_run_outputs
from training.run import prepare_run, train_and_evaluate
from training.trainer import DivergenceError

logger = logging.getLogger("finetune")


def setup_logging(training_args: FinetuneTrainingArguments | None = None) -> None:
    """Log lines with the time on stdout: INFO on the process that logs (every process without training_args)."""
    level = logging.INFO if training_args is None or training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity(logging.WARNING)


def finetune_main(argv: list[str] | None = None) -> int:
    try:
        model_args, data_args, stage_args, training_args = parse_arguments(argv)
    except ValueError as error:  # every argument dataclass checks itself (ScheduleError and DataError included)
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(training_args)
    logger.info("%d CPU threads per process", configure_threads())
    push = training_args.push_to_hub
    training_args.push_to_hub = False  # the finished folder is pushed once, below, never checkpoints mid-run
    try:
        if push and training_args.should_save:
            hub = (training_args.hub_model_id, training_args.hub_token, training_args.hub_private_repo)
            logger.info("the Hub accepts pushes to %s", check_push_access(*hub))
        run, checkpoint = prepare_run(model_args, data_args, stage_args, training_args)
    except (ValueError, HubError, FileNotFoundError) as error:  # bad flags, data or weights: said before training
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        record = train_and_evaluate(run, checkpoint)
    except DivergenceError as error:  # no final model, card or push for a diverged run
        print(f"error: {error}", file=sys.stderr)
        return 1
    split = record.eval_split
    logger.info("final %s accuracy %.2f%% after %.0f s of training; model in %s", split,
                100 * record.metrics[f"{split}_accuracy"], record.metrics["train_wall_seconds"], record.output_dir)
    if not run.trainer.is_world_process_zero():
        return 0
    write_run_outputs(record, run.trainer.model, run.data)
    if push:
        try:
            url = push_folder(record.output_dir, training_args.hub_model_id, training_args.hub_token)
        except Exception as error:  # the folder is complete on disk: nothing is lost
            print(f"error: the push to {training_args.hub_model_id} failed ({error}); the model is saved in "
                  f"{record.output_dir}: push it with `python scripts/push.py {record.output_dir} "
                  f"--hub_model_id {training_args.hub_model_id}`", file=sys.stderr)
            return 1
        logger.info("pushed to %s", url)
    return 0
