"""The fine-tuning command: parse arguments, refuse bad ones early, run, write the output folder, push."""

import logging
import sys

import transformers
from transformers import HfArgumentParser

from training.arguments import FinetuneTrainingArguments, ModelArguments, StageArguments
from training.data import DataArguments, DataError
from training.run import build_trainer, train_and_evaluate
from training.stages import ScheduleError

logger = logging.getLogger("finetune")
ARGUMENTS = (ModelArguments, DataArguments, StageArguments, FinetuneTrainingArguments)


def parse(argv: list[str] | None = None):
    """Flags, or a single .json / .yaml file holding them all."""
    parser = HfArgumentParser(ARGUMENTS)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


def setup_logging(training_args: FinetuneTrainingArguments) -> None:
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity(logging.WARNING)


def finetune_main(argv: list[str] | None = None) -> int:
    try:
        model_args, data_args, stage_args, training_args = parse(argv)
    except (ScheduleError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(training_args)
    try:
        trainer, data = build_trainer(model_args, data_args, stage_args, training_args)
    except (ScheduleError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train_and_evaluate(trainer, data, training_args.resume_from_checkpoint)
    split = result.metrics["eval_split"]
    logger.info(
        "final %s accuracy %.2f%% after %.0f s of training; model in %s",
        split,
        100 * result.metrics[f"{split}_accuracy"],
        result.train_seconds,
        result.output_dir,
    )
    return 0
