"""What a finished run writes beside its saved model: the plots, attention maps of a few evaluation images, the
model card (README.md) and the demo's Space folder, all from one record of the run's facts held in memory: made by
`run_record` from the run's configuration (training/run_config.py) and flags, completed by training with its
results."""

import json
import logging
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from training.arguments import FinetuneTrainingArguments, ModelArguments, StageArguments
from training.batches import describe_mixing
from training.callbacks import trained_parameter_count
from training.checkpoints import RUN_DATA
from training.data import DataArguments, ImageData
from training.hub import base_model
from training.inference import save_attention_map
from training.plots import epoch_entries, plot_confusion_matrix, plot_training
from training.run_config import RunConfig
from training.space import write_space
from training.stages import Schedule

logger = logging.getLogger(__name__)
TEMPLATE = resources.files("training") / "model_card.md"
ATTENTION_EXAMPLES = 4
FRAMEWORKS = ("resnet-cbam", "transformers", "torch", "torchvision", "accelerate", "datasets")  # the card lists them


@dataclass
class RunRecord:
    """The facts of one run that its card and plots report: set up before training, completed after it."""

    output_dir: Path
    model_id: str
    dataset: str  # what it was read from (a Hub id or a path here)
    dataset_name: str  # how the card names it: a Hub id, or a local folder's name
    dataset_on_hub: bool
    recipe: str  # a recipe's name, or the --stages_file given (in the run's identity as given)
    schedule: Schedule
    bn_policy: str
    augment: str
    backbone: str  # where the weights came from, from the backbone import's own report
    base_model: str | None  # the Hub model they are (training/hub.py's base_model), or None
    license: str  # the card's license (--license)
    optimizer: str
    label_smoothing: float
    max_grad_norm: float
    batch_size: int
    world_size: int
    seed: int
    hardware: str
    precision: str  # training/hardware.py's words: 'bf16 autocast', 'fp16 autocast with loss scaling', 'fp32'
    split_sizes: dict[str, int]
    label_names: list[str]
    architecture: dict  # the model config's fields that shape the network
    gradient_accumulation_steps: int = 1
    best_model: dict = field(default_factory=dict)  # --load_best_model_at_end, --early_stopping_patience ({}: off)
    mixing: str = ""  # MixUp / CutMix of the training batches ("": none)
    defaults: list[str] = field(default_factory=list)  # the defaults chosen from the data and weights, with reasons
    source_split_sizes: dict[str, int] = field(default_factory=dict)  # before --max_train/eval_samples
    ema_decay: float = 0.0  # 0: no average of the weights
    tta: str = "none"  # of every evaluation
    changes_on_resume: list[str] = field(default_factory=list)  # accepted with --allow_changed_run
    finished_from: str | None = None  # the checkpoint an interrupted finish was completed from
    log_history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """The facts that define the run: a checkpoint resumed with other values would not continue it."""
        return {
            "recipe": self.recipe, "schedule": [asdict(stage) for stage in self.schedule.stages],
            "model": self.architecture, "dataset": self.dataset, "split_sizes": self.split_sizes,
            "labels": self.label_names, "augment": self.augment, "bn_policy": self.bn_policy,
            "optimizer": self.optimizer, "label_smoothing": self.label_smoothing,
            "ema_decay": self.ema_decay, "max_grad_norm": self.max_grad_norm,
            "batch_size": self.batch_size, "world_size": self.world_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps, "seed": self.seed,
            # absent when off, as before they existed: older runs' checkpoints still resume
            **({"best_model": self.best_model} if self.best_model else {}),
            **({"mixing": self.mixing} if self.mixing else {}),
            **({"train_bn": True} if self.schedule.train_bn else {}),
        }

    @property
    def eval_split(self) -> str:
        return self.metrics["eval_split"]

    @property
    def recipe_name(self) -> str:
        """How the card names the recipe: its name, or a stages file by its file name, never its path here."""
        return Path(self.recipe).name if self.recipe.endswith(".json") else self.recipe

    def images(self, split: str) -> str:
        """How many images of a split a figure is on, saying when they are a subset: '64 of the 500 test images'."""
        used, of = self.split_sizes[split], self.source_split_sizes.get(split, self.split_sizes[split])
        flag = "--max_train_samples" if split == "train" else "--max_eval_samples"
        return f"{used:,} {split} images" if used == of else f"{used:,} of the {of:,} {split} images ({flag})"


def write_run_data(output_dir: Path, data_args, seed: int, eval_split: str) -> None:
    """The data the run was trained and evaluated on, so that `scripts/evaluate_model.py --model RUN` with no data
    flag evaluates it again on the same split."""
    facts = {"data": data_args.selection(), "seed": seed, "eval_split": eval_split}
    (output_dir / RUN_DATA).write_text(json.dumps(facts, indent=2))


def read_run_data(model: str) -> dict | None:
    """What write_run_data wrote in a run folder, or None (a Hub id, or a folder from elsewhere)."""
    path = Path(model) / RUN_DATA
    return json.loads(path.read_text()) if path.is_file() else None


def write_run_outputs(record: RunRecord, model, data: ImageData) -> Path:
    """plots/ (curves, loss, confusion matrix, attention maps) and README.md in the output folder."""
    plots, split = record.output_dir / "plots", record.eval_split
    plot_training(record.log_history, record.schedule.first_epochs(), plots)
    accuracy = record.metrics[f"{split}_accuracy"]
    plot_confusion_matrix(record.metrics[f"{split}_confusion_matrix"], record.label_names,
                          plots / "confusion_matrix.png", title=f"Confusion matrix ({split}, accuracy {accuracy:.2%})")
    attention_maps = []
    examples = ATTENTION_EXAMPLES if model.cbam_names else 0  # a plain ResNet (cbam_placement none) has none
    for index in range(min(examples, len(data.splits[split]))):
        row = data.splits[split][index]
        path = save_attention_map(model, row["pixel_values"], data.image_mean, data.image_std,
                                  plots / f"attention_{index}.png",
                                  title=f"{split} image {index} ({data.label_names[row['labels']]})")
        attention_maps.append(str(path.relative_to(record.output_dir)))
    card = write_model_card(record, model, attention_maps)
    space = write_space(record.output_dir, data, record.model_id, record.dataset_name, hub_model="/" in record.model_id)
    logger.info("plots in %s, model card %s, demo Space in %s", plots, card, space)
    return card


def write_model_card(record: RunRecord, model, attention_maps: list[str] = ()) -> Path:
    """Fill the model card template with the run's facts and write README.md into the output folder."""
    split, metrics, config = record.eval_split, record.metrics, model.config
    accuracy = metrics[f"{split}_accuracy"]
    card_data = ModelCardData(
        base_model=record.base_model,
        base_model_relation="finetune" if record.base_model else None,
        license=record.license,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "resnet", "cbam", "attention", "custom_code"],
        datasets=[record.dataset] if record.dataset_on_hub else None,
        metrics=["accuracy"],
        model_name=record.model_id,
        eval_results=[EvalResult(task_type="image-classification", dataset_type=record.dataset,
                                 dataset_name=record.dataset, dataset_split=split, metric_type="accuracy",
                                 metric_value=accuracy)] if record.dataset_on_hub else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=TEMPLATE.read_text(),
        run=record,
        config=config,
        model_name=record.model_id,
        model_id=record.model_id,
        eval_split=split,
        accuracy=f"{accuracy:.2%}",
        eval_loss=f"{metrics[f'{split}_loss']:.4f}",
        params=f"{sum(p.numel() for p in model.parameters()):,}",
        mean=tuple(round(v, 4) for v in config.image_mean),
        std=tuple(round(v, 4) for v in config.image_std),
        stages=[(stage, trained_parameter_count(model, stage, record.schedule.train_bn))
                for stage in record.schedule.stages],
        epochs=epoch_entries(record.log_history),
        per_class=[(name, f"{value:.2%}") for name, value in metrics[f"{split}_per_class_accuracy"].items()],
        train_time=_duration(metrics["train_runtime"]),
        images_per_second=f"{metrics['train_samples_per_second']:,.0f}",
        attention_maps=list(attention_maps),
        versions={name: _version(name) for name in FRAMEWORKS},
    )
    path = record.output_dir / "README.md"
    card.save(path)
    return path


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def run_record(config: RunConfig, data: ImageData, model_args: ModelArguments, data_args: DataArguments,
               stage_args: StageArguments, training_args: FinetuneTrainingArguments) -> RunRecord:
    """The record of the run (its identity, the card's facts), from its configuration and flags; training
    completes it with the metrics."""
    return RunRecord(
        output_dir=Path(training_args.output_dir),
        model_id=training_args.hub_model_id or Path(training_args.output_dir).name,
        dataset=data_args.source,
        dataset_name=data_args.display_name,
        dataset_on_hub=data_args.from_hub,
        recipe=stage_args.stages_file or config.recipe.name,
        schedule=config.schedule,
        bn_policy=stage_args.bn_policy,
        augment=data.augmentation,
        defaults=list(config.defaults),
        backbone=config.weights,
        base_model=base_model(model_args.backbone_weights, config.architecture["depths"],
                              model_args.model_name_or_path, config.architecture["layer_type"]),
        license=training_args.license,
        optimizer=training_args.optimizer.describe(),
        label_smoothing=training_args.label_smoothing_factor,
        ema_decay=training_args.ema_decay,
        tta=training_args.tta,
        max_grad_norm=training_args.max_grad_norm,
        batch_size=training_args.per_device_train_batch_size,
        world_size=training_args.world_size,
        seed=training_args.seed,
        hardware=config.hardware,
        precision=config.precision,
        split_sizes={name: len(split) for name, split in data.splits.items()},
        source_split_sizes=data.source_sizes,
        label_names=data.label_names,
        architecture=dict(config.architecture),
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        best_model=best_model_setting(training_args),
        mixing=describe_mixing(training_args.mixup_alpha, training_args.cutmix_alpha),
    )


def best_model_setting(args: FinetuneTrainingArguments) -> dict:
    """--load_best_model_at_end and --early_stopping_patience, for the run's identity and card ({}: neither)."""
    if not (args.load_best_model_at_end or args.early_stopping_patience):
        return {}
    return {"metric": f"validation {args.metric_for_best_model}", "keep_best": args.load_best_model_at_end,
            "patience": args.early_stopping_patience}
