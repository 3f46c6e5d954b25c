"""One fine-tuning run from parsed arguments: schedule, data, model, Trainer, final evaluation and the output folder.

Everything that can be wrong with the arguments or the data is checked before the first training step.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback, default_data_collator
from transformers.trainer_utils import get_last_checkpoint

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training import stages as stage_schedule
from training.arguments import FinetuneTrainingArguments, ModelArguments, StageArguments
from training.callbacks import ChanceLevelWarning, RankConsistencyCallback, StageCallback
from training.data import DataArguments, ImageData, load_image_data
from training.device_data import DeviceData, supports_device_data
from training.metrics import classification_metrics, compute_accuracy
from training.speed import describe
from training.trainer import StagedTrainer

logger = logging.getLogger(__name__)
SEED_BATCH = 64


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict
    train_seconds: float
    trainer: StagedTrainer


def build_schedule(args: StageArguments, num_train_epochs: float | None) -> stage_schedule.Schedule:
    """The validated schedule of the arguments; a ScheduleError says what is wrong before anything loads."""
    if args.stages_file:
        schedule = stage_schedule.from_json(args.stages_file)
    else:
        full_epochs = int(num_train_epochs) if num_train_epochs else 50
        schedule = stage_schedule.recipe(args.recipe, full_epochs=full_epochs)
    epochs = _numbers(args.stage_epochs, int, "--stage_epochs")
    lrs = _numbers(args.stage_lrs, float, "--stage_lrs")
    return stage_schedule.override(schedule, epochs, lrs).validate(num_train_epochs)


def _numbers(text: str | None, kind, flag: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(value) for value in text.split(",")]
    except ValueError as error:
        raise stage_schedule.ScheduleError(f"{flag}: {error}") from error


def architecture(args: ModelArguments) -> dict:
    """The config fields of the model flags, checked by building a config from them (ValueError naming the field)."""
    try:
        depths = [int(d) for d in args.depths.split(",")]
    except ValueError as error:
        raise ValueError(f"--depths must be four integers such as 2,2,2,2, got {args.depths!r}") from error
    fields = dict(depths=depths, stem=args.stem, cbam_placement=args.cbam_placement,
                  cbam_reduction=args.cbam_reduction, cbam_kernel_size=args.cbam_kernel_size)
    ResNetCBAMConfig(**fields)
    return fields


def build_model(args: ModelArguments, data: ImageData) -> ResNetCBAMForImageClassification:
    """A model sized for the data (labels, image size, normalisation), with the requested backbone weights."""
    data_fields = dict(
        id2label=data.id2label,
        label2id=data.label2id,
        image_size=data.image_size,
        image_mean=list(data.image_mean),
        image_std=list(data.image_std),
    )
    if args.model_name_or_path:
        return ResNetCBAMForImageClassification.from_pretrained(
            args.model_name_or_path, ignore_mismatched_sizes=True, **data_fields
        )
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(**architecture(args), **data_fields))
    if args.backbone_weights.lower() != "none":
        logger.info("%s", model.load_backbone_weights(args.backbone_weights))
    return model


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    stage_args: StageArguments,
    training_args: FinetuneTrainingArguments,
    extra_callbacks: list[TrainerCallback] = (),
) -> tuple[StagedTrainer, ImageData]:
    """Validate everything, then load data and model and assemble the Trainer (nothing trained yet)."""
    if training_args.max_steps > 0:
        raise stage_schedule.ScheduleError(
            "stages are in epochs: use --stage_epochs or --num_train_epochs, not --max_steps"
        )
    schedule = build_schedule(stage_args, training_args.num_train_epochs)
    training_args.num_train_epochs = schedule.total_epochs
    if stage_args.scale_lr_with_batch:
        batch = training_args.per_device_train_batch_size * training_args.world_size
        schedule = stage_schedule.scale_lrs(schedule, batch * training_args.gradient_accumulation_steps / SEED_BATCH)
    stage_callback = StageCallback(schedule, stage_args.bn_policy)
    architecture(model_args)  # a mistyped model flag fails here, before the data loads
    with training_args.main_process_first(desc="loading the dataset"):
        data = load_image_data(data_args, seed=training_args.seed)
    torch.manual_seed(training_args.seed)  # the new modules' initialisation is reproducible
    model = build_model(model_args, data)
    model.requires_grad_(True)  # DDP only all-reduces what requires grad when it wraps the model
    if training_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if training_args.data_on_device is None:  # auto: small images are decoded once, wherever training runs
        training_args.data_on_device = supports_device_data(data)
    device_data = DeviceData(data, data_args.augment) if training_args.data_on_device else None
    if device_data:  # the loader only carries indices: workers would add latency, not throughput
        training_args.dataloader_num_workers, training_args.dataloader_persistent_workers = 0, False
    splits = trainer_splits(data, device_data)
    logger.info("speed settings: %s%s", describe(training_args.bf16, training_args.channels_last, training_args.device),
                ", data on the device" if device_data else f", {training_args.dataloader_num_workers} loader workers")
    trainer = StagedTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=default_data_collator,
        compute_metrics=compute_accuracy,
        callbacks=[*extra_callbacks, stage_callback, RankConsistencyCallback(schedule), ChanceLevelWarning()],
        schedule=schedule,
        stage_callback=stage_callback,
        device_data=device_data,
    )
    return trainer, data


def trainer_splits(data: ImageData, device_data: DeviceData | None) -> dict:
    """What the Trainer iterates: index splits over device-resident images, else the transformed datasets."""
    return device_data.splits if device_data else data.splits


def resolve_checkpoint(resume: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint last` takes the newest checkpoint in output_dir."""
    if resume != "last":
        return resume
    checkpoint = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if checkpoint is None:
        raise FileNotFoundError(f"--resume_from_checkpoint last: no checkpoint in {output_dir}")
    return checkpoint


def train_and_evaluate(trainer: StagedTrainer, data: ImageData, resume: str | None = None) -> RunResult:
    """Train, save the final model, and evaluate it on the test split (validation when there is none)."""
    args = trainer.args
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resolve_checkpoint(resume, args.output_dir))
    train_seconds = time.perf_counter() - started
    trainer.save_model(args.output_dir)
    trainer.save_state()
    split = data.eval_split
    prediction = trainer.predict(trainer_splits(data, trainer.device_data)[split], metric_key_prefix=split)
    final = classification_metrics().compute(
        predictions=prediction.predictions.argmax(-1),
        references=prediction.label_ids,
        num_classes=len(data.label_names),
    )
    metrics = {
        **train_output.metrics,
        f"{split}_loss": prediction.metrics[f"{split}_loss"],
        f"{split}_accuracy": final["accuracy"],
        f"{split}_per_class_accuracy": dict(zip(data.label_names, final["per_class_accuracy"], strict=True)),
        f"{split}_confusion_matrix": final["confusion_matrix"],
        "eval_split": split,
        "label_names": data.label_names,
        "train_wall_seconds": train_seconds,
    }
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics, combined=False)
    return RunResult(Path(args.output_dir), metrics, train_seconds, trainer)
