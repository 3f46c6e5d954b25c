"""One fine-tuning run from parsed arguments: schedule, data, model, Trainer, final evaluation and the saved model.

Everything that can be wrong with the arguments or the data is checked before the first training step.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback, default_data_collator

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import (
    FinetuneTrainingArguments,
    ModelArguments,
    StageArguments,
    build_schedule,
    chosen_recipe,
)
from training.backbones import BackboneWeights, load_backbone_weights, read_backbone_weights
from training.batches import describe_mixing
from training.callbacks import (
    BestOfWholeRun,
    ChanceLevelCallback,
    EarlyStopping,
    RankConsistencyCallback,
    StageCallback,
)
from training.checkpoints import (
    RunFactsCallback,
    check_output_dir,
    check_resume,
    clear_output_dir,
    is_at_end,
    resolve_checkpoint,
    writing,
)
from training.data import DataArguments, ImageData, labels_of, load_image_data
from training.defaults import (
    architecture_from_weights,
    check_training_memory,
    resolve_architecture,
    wants_pretrained_stem,
    warn_costly_stem,
)
from training.device_data import DeviceData
from training.ema import EMACallback
from training.hardware import describe
from training.hub import HUB_CHECKPOINT, fetch_checkpoint
from training.images import DataError
from training.inference import check_saved_model
from training.metrics import classification_metrics, compute_accuracy
from training.outputs import RunRecord, run_record
from training.plots import accuracy_over_time
from training.recipes import Recipe
from training.run_config import RunConfig, resolve_run
from training.trainer import StagedTrainer
from training.transforms import POLICIES

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """A Trainer ready to train, its data, the run's configuration, and the record that training completes."""

    trainer: StagedTrainer
    data: ImageData
    record: RunRecord
    config: RunConfig


def build_model(args: ModelArguments, data: ImageData, recipe: Recipe, given: dict, weights: BackboneWeights | None,
                from_weights: list[str]) -> tuple[ResNetCBAMForImageClassification, str, list[str]]:
    """A model sized for the data (labels, image size, normalisation) with the requested weights, a sentence
    saying where its weights came from (the backbone import's own report), and the architecture defaults chosen
    (`given`: the architecture flags, completed from the `weights` for the reasons `from_weights`; the rest from
    training/defaults.py), each with its reason."""
    data_fields = dict(
        id2label=data.id2label,
        label2id=data.label2id,
        image_size=data.image_size,
        crop_pct=data.crop_pct,
        image_mean=list(data.image_mean),
        image_std=list(data.image_std),
    )
    if args.model_name_or_path:
        model, loading = ResNetCBAMForImageClassification.from_pretrained(
            args.model_name_or_path, ignore_mismatched_sizes=True, output_loading_info=True, **data_fields
        )
        missing = loading["missing_keys"]
        if missing:
            raise ValueError(f"--model_name_or_path {args.model_name_or_path}: no weights for {sorted(missing)[0]} "
                             f"(and {len(missing) - 1} more tensors): the saved model does not fit its own config")
        return model, f"the saved model {args.model_name_or_path}", []
    architecture, chosen = resolve_architecture(given, data.preset, recipe, weights is not None)
    config = ResNetCBAMConfig(**architecture, **data_fields)
    warn_costly_stem(config)
    model = ResNetCBAMForImageClassification(config)
    if weights is None:
        return model, "random (no pretrained weights)", chosen
    report = load_backbone_weights(model, weights)
    if Path(report.source).exists():  # the card names a local file by its name, never by where it is here
        report = dataclasses.replace(report, source=f"the local file {Path(report.source).name}")
    return model, str(report), [*from_weights, *chosen]


def read_run_weights(args: ModelArguments) -> BackboneWeights | None:
    """The backbone weights a new model starts from, read once (None: random weights, or a saved model); torchvision's
    file is the one of the architecture the flags name."""
    if not args.pretrained_backbone:
        return None
    given = args.config_fields
    return read_backbone_weights(args.backbone_weights, **{name: given[name] for name in ("layer_type", "depths")
                                                          if name in given})


def build_run(
    model_args: ModelArguments,
    data_args: DataArguments,
    stage_args: StageArguments,
    training_args: FinetuneTrainingArguments,
    extra_callbacks: list[TrainerCallback] = (),
    checkpoint: Path | None = None,
) -> Run:
    """A run assembled, nothing trained yet, in five steps: the flags' recipe and schedule (checked before anything
    loads), the backbone weights (which complete the architecture flags left out), the data, the model, then the
    configuration they decide and the Trainer built from it. `checkpoint`:
    the one training will resume from (the EMA of the weights continues from it)."""
    recipe, why = chosen_recipe(model_args, stage_args)
    schedule = build_schedule(model_args, stage_args, training_args, recipe)
    backbone = read_run_weights(model_args)
    given, from_weights = architecture_from_weights(model_args.config_fields, backbone)
    data = load_run_data(model_args, data_args, training_args, recipe, given.get("stem"))
    torch.manual_seed(training_args.seed)  # the new modules' initialisation is reproducible
    model, weights, chosen = build_model(model_args, data, recipe, given, backbone, from_weights)
    check_training_memory(model.config, training_args.per_device_train_batch_size, training_args.device,
                          training_args.bf16 or training_args.fp16)
    config = resolve_run(model_args, stage_args, training_args, recipe=recipe, why=why, schedule=schedule,
                         data=data, model=model, weights=weights, chosen=chosen)
    log_config(config, data, training_args)
    record = run_record(config, data, model_args, data_args, stage_args, training_args)
    trainer = build_trainer(config, model, data, stage_args, training_args, record, extra_callbacks, checkpoint)
    return Run(trainer, data, record, config)


def build_trainer(config: RunConfig, model: ResNetCBAMForImageClassification, data: ImageData,
                  stage_args: StageArguments, training_args: FinetuneTrainingArguments, record: RunRecord,
                  extra_callbacks: list[TrainerCallback], checkpoint: Path | None) -> StagedTrainer:
    """The Trainer of the configuration: its arguments derived from it, the data where it decided, the stage and
    safety callbacks (`extra_callbacks` first), the EMA continuing from `checkpoint`."""
    model.requires_grad_(True)  # DDP only all-reduces what requires grad when it wraps the model
    if training_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer_args = config.trainer_arguments(training_args)
    device_data = DeviceData(data) if config.data_on_device else None
    splits = trainer_splits(data, device_data)
    ema = [EMACallback(training_args.ema_decay, checkpoint)] if training_args.ema_decay else []
    patience = training_args.early_stopping_patience
    stopping = [EarlyStopping(patience, training_args.metric_for_best_model, training_args.greater_is_better)] \
        if patience else []
    best = [BestOfWholeRun(checkpoint)] if training_args.load_best_model_at_end and checkpoint else []
    return StagedTrainer(
        model=model,
        args=trainer_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=default_data_collator,
        compute_metrics=compute_accuracy,
        callbacks=[*extra_callbacks, StageCallback(stage_args.bn_policy), RankConsistencyCallback(),
                   ChanceLevelCallback(_label_counts(data, "validation"), data.label_names), *ema, *stopping, *best,
                   RunFactsCallback(record.identity())],  # facts last: complete
        schedule=config.schedule,
        device_data=device_data,
    )


def load_run_data(model_args: ModelArguments, data_args: DataArguments, training_args: FinetuneTrainingArguments,
                  recipe: Recipe, stem: str | None) -> ImageData:
    """The dataset, its splits and transforms, sized for the weights (CIFAR-sized images upsampled for a
    pretrained ImageNet stem: defaults.wants_pretrained_stem; `stem`: given, or the weights', else None)."""
    if training_args.data_on_device and data_args.augment in POLICIES:
        raise DataError(f"--augment {data_args.augment} is torchvision's policy on PIL images, in the DataLoader: it "
                        "has no device-resident version; leave out --data_on_device true")
    with training_args.main_process_first(desc="loading the dataset"):
        return load_image_data(data_args, seed=training_args.seed, pretrained_stem=wants_pretrained_stem(
            model_args.pretrained_backbone, recipe, stem))


def log_config(config: RunConfig, data: ImageData, training_args: FinetuneTrainingArguments) -> None:
    """The run as decided, in the log: its input, each default and why, the speed settings, the optimizer."""
    logger.info("input: %s", config.defaults[0])
    for choice in config.defaults[1:]:
        logger.info("default: %s", choice)
    for warning in config.warnings:
        logger.warning("%s", warning)
    if not config.data_on_device and training_args.data_on_device is None and data.augment in POLICIES:
        logger.info("augment %s: torchvision's policy on PIL images in the DataLoader workers (the device-resident "
                    "path has no such policy)", data.augment)
    logger.info("speed settings: %s%s", describe(training_args.bf16, training_args.fp16, training_args.channels_last,
                                                   training_args.device),
                ", data on the device" if config.data_on_device else f", {config.loader_workers} loader workers")
    logger.info("optimizer: %s", training_args.optimizer.describe())
    mixing = describe_mixing(training_args.mixup_alpha, training_args.cutmix_alpha)
    if mixing:
        logger.info("batch mixing: %s of the training batches, against soft targets; train_accuracy counts each "
                    "mixed image's dominant class", mixing)


def prepare_run(
    model_args: ModelArguments,
    data_args: DataArguments,
    stage_args: StageArguments,
    training_args: FinetuneTrainingArguments,
    extra_callbacks: list[TrainerCallback] = (),
) -> tuple[Run, Path | None]:
    """Everything before training, cheapest checks first: the output folder and the checkpoint to resume, then
    data, model and Trainer, then whether the checkpoint continues this very run. A previous run that
    --overwrite_output_dir replaces is deleted last, once everything else has succeeded."""
    resume, output_dir = training_args.resume_from_checkpoint, Path(training_args.output_dir)
    data_paths = tuple(path for path in (data_args.train_dir, data_args.validation_dir, data_args.dataset_name)
                       if path and Path(path).exists())
    to_delete = check_output_dir(output_dir, training_args.overwrite_output_dir, resume, data_paths)
    if resume and resume.startswith(HUB_CHECKPOINT):  # pushed by a run with --hub_strategy checkpoint
        resume = str(fetch_checkpoint(resume, training_args.hub_token))
    checkpoint = resolve_checkpoint(resume, output_dir)
    if checkpoint is not None and checkpoint.resolve().parent != output_dir.resolve():
        logger.warning("resuming from %s, a checkpoint of another folder: the run continues into %s", checkpoint,
                       output_dir)
    if model_args.model_name_or_path:
        check_saved_model(model_args.model_name_or_path, "--model_name_or_path")
    run = build_run(model_args, data_args, stage_args, training_args, extra_callbacks, checkpoint)
    if checkpoint is not None:
        run.record.changes_on_resume = check_resume(checkpoint, run.record.identity(), training_args.allow_changed_run,
                                                    output_dir)
        if is_at_end(checkpoint):
            run.record.finished_from = checkpoint.name
            logger.warning("%s is the end of the run's training, but %s lacks some of its final outputs (an "
                           "interrupted finish): writing them from it, without training", checkpoint, output_dir)
    for change in run.record.changes_on_resume:
        logger.warning("--allow_changed_run: resuming %s although %s", checkpoint, change)
    if to_delete and run.trainer.is_world_process_zero():
        clear_output_dir(training_args.output_dir, to_delete)
    return run, checkpoint


def kept_epoch(trainer: StagedTrainer) -> dict | None:
    """With --load_best_model_at_end, the evaluation whose checkpoint the Trainer loaded at the end (the last
    epoch's, when that was the best): its epoch, step, checkpoint and watched value; None without it."""
    state, args = trainer.state, trainer.args
    if not args.load_best_model_at_end or state.best_model_checkpoint is None:
        return None
    checkpoint = Path(state.best_model_checkpoint)  # on disk: BestOfWholeRun chose it among those of a resume
    key = f"eval_{args.metric_for_best_model}"
    entry = next(e for e in state.log_history if key in e and e["step"] == state.best_global_step)
    return {"epoch": entry["epoch"], "step": entry["step"], "checkpoint": checkpoint.name,
            "metric": f"validation {args.metric_for_best_model}", "value": entry[key]}


def _label_counts(data: ImageData, split: str) -> list[int]:
    return np.bincount(labels_of(data.splits[split], data.label_column), minlength=len(data.label_names)).tolist()


def trainer_splits(data: ImageData, device_data: DeviceData | None) -> dict:
    """What the Trainer iterates: index splits over device-resident images, else the transformed datasets."""
    return device_data.splits if device_data else data.splits


def train_and_evaluate(run: Run, checkpoint: Path | None = None) -> RunRecord:
    """Train (from `checkpoint` when given), save the final model, evaluate it on the test split (validation when
    there is none), and complete the run's record with the metrics and the log history."""
    trainer, data, record = run.trainer, run.data, run.record
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started
    if checkpoint is not None and (logged := accuracy_over_time(trainer.state.log_history)):
        # resumed, or only finished: the run's time is that of its logged epochs, every session's, not this one's
        train_seconds = logged[-1][1]
        images = len(trainer.train_dataset) * trainer.state.epoch
        train_output.metrics.update(train_runtime=train_seconds, train_samples_per_second=images / train_seconds)
    kept = kept_epoch(trainer)  # the Trainer has loaded that checkpoint's weights
    if kept:
        best = Path(trainer.state.best_model_checkpoint)
        trainer.state.best_model_checkpoint = kept["checkpoint"]  # its name, not this machine's path
        logger.info("kept the model of epoch %g (%s): the best %s, %.4f", kept["epoch"], kept["checkpoint"],
                    kept["metric"], kept["value"])
    if trainer.ema is not None:  # the averaged weights are the model from here on: saved, evaluated, shown
        if kept:
            trainer.ema.load(best)  # that epoch's average
        trainer.ema.copy_to(trainer.model)
    with writing("the final model", trainer.args.output_dir):
        trainer.save_model(trainer.args.output_dir)
        trainer.save_state()
    split = data.eval_split
    prediction = trainer.predict(trainer_splits(data, trainer.device_data)[split], metric_key_prefix=split)
    final = classification_metrics().compute(
        predictions=prediction.predictions.argmax(-1),
        references=prediction.label_ids,
        num_classes=len(data.label_names),
    )
    record.metrics = {
        **train_output.metrics,
        f"{split}_loss": prediction.metrics[f"{split}_loss"],
        f"{split}_accuracy": final["accuracy"],
        f"{split}_per_class_accuracy": dict(zip(data.label_names, final["per_class_accuracy"], strict=True)),
        f"{split}_confusion_matrix": final["confusion_matrix"],
        "eval_split": split,
        "split_sizes": record.split_sizes,
        "source_split_sizes": record.source_split_sizes,
        f"{split}_images": record.images(split),
        "label_names": data.label_names,
        "train_wall_seconds": train_seconds,
        "trained_epochs": trainer.state.epoch,
        "kept_epoch": kept,
    }
    record.log_history = trainer.state.log_history
    if trainer.is_world_process_zero():
        with writing("all_results.json", trainer.args.output_dir):
            trainer.save_metrics("all", record.metrics, combined=False)
    return record
