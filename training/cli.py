"""The fine-tuning command: parse arguments, refuse bad ones early, run, write the output folder, push."""

import logging
import sys

import transformers
from transformers import HfArgumentParser

from training.arguments import FinetuneTrainingArguments, ModelArguments, StageArguments
from training.card import write_model_card
from training.data import DataArguments, DataError
from training.hub import HubError, check_push_access, push_folder
from training.inference import cbam_attention
from training.plots import denormalize, plot_attention, plot_confusion_matrix, plot_training
from training.run import RunResult, build_trainer, train_and_evaluate
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
    push = training_args.push_to_hub
    training_args.push_to_hub = False  # the finished folder is pushed once, below, never checkpoints mid-run
    try:
        if push and training_args.should_save:
            hub = (training_args.hub_model_id, training_args.hub_token, training_args.hub_private_repo)
            repo = check_push_access(*hub)
            logger.info("the Hub accepts pushes to %s", repo)
        trainer, data = build_trainer(model_args, data_args, stage_args, training_args)
    except (ValueError, HubError, FileNotFoundError) as error:  # bad flags, data or weights: said before training
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train_and_evaluate(trainer, data, training_args.resume_from_checkpoint)
    split = result.metrics["eval_split"]
    logger.info("final %s accuracy %.2f%% after %.0f s of training; model in %s", split,
                100 * result.metrics[f"{split}_accuracy"], result.train_seconds, result.output_dir)
    if not trainer.is_world_process_zero():
        return 0
    write_outputs(result, data, model_args, data_args, stage_args)
    if push:
        try:
            url = push_folder(result.output_dir, training_args.hub_model_id, training_args.hub_token)
        except Exception as error:  # the folder is complete on disk: nothing is lost
            print(f"error: the push to {training_args.hub_model_id} failed ({error}); the model is saved in "
                  f"{result.output_dir}: push it with `python scripts/push.py {result.output_dir} "
                  f"--hub_model_id {training_args.hub_model_id}`", file=sys.stderr)
            return 1
        logger.info("pushed to %s", url)
    return 0


def plot_attention_examples(model, data, split: str, out_dir, count: int = 4) -> list:
    """Attention maps of the first images of the evaluation split, for the model card."""
    model.eval()
    paths = []
    for index in range(min(count, len(data.splits[split]))):
        row = data.splits[split][index]
        image = denormalize(row["pixel_values"], data.image_mean, data.image_std)
        title = f"{split} image {index} ({data.label_names[row['labels']]})"
        paths.append(plot_attention(image, cbam_attention(model, row["pixel_values"]),
                                    out_dir / f"attention_{index}.png", title=title))
    return paths


def write_outputs(result: RunResult, data, model_args, data_args, stage_args) -> None:
    """Plots and the model card, beside the saved model."""
    trainer, metrics = result.trainer, result.metrics
    plots = result.output_dir / "plots"
    plot_training(trainer.state.log_history, trainer.schedule.first_epochs(), plots)
    split = metrics["eval_split"]
    plot_confusion_matrix(metrics[f"{split}_confusion_matrix"], data.label_names, plots / "confusion_matrix.png",
                          title=f"Confusion matrix ({split}, accuracy {100 * metrics[f'{split}_accuracy']:.2f}%)")
    attention = plot_attention_examples(trainer.model, data, split, plots)
    card = write_model_card(result.output_dir, model=trainer.model, trainer_args=trainer.args,
                            schedule=trainer.schedule, stage_args=stage_args, data_args=data_args,
                            model_args=model_args, data=data, metrics=metrics,
                            attention_maps=[str(path.relative_to(result.output_dir)) for path in attention])
    logger.info("plots in %s, model card %s", plots, card)
