"""The model card (README.md of the output folder), filled from the repository's model_card.md with the run's facts."""

import json
import platform
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from training.groups import parameters_by_group
from training.plots import epoch_entries

TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"


def hardware_name(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return f"{world_size} x {name}" if world_size > 1 else name


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU ({line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads)"
    return f"CPU ({platform.processor() or platform.machine()})"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def write_model_card(
    output_dir: str | Path,
    *,
    model,
    trainer_args,
    schedule,
    stage_args,
    data_args,
    model_args,
    data,
    metrics: dict,
    attention_maps: list[str] = (),
    template: Path = TEMPLATE,
) -> Path:
    """Fill model_card.md with this run's numbers and write README.md into the output folder."""
    output_dir = Path(output_dir)
    config = model.config
    split = metrics["eval_split"]
    dataset = data_args.source
    model_id = trainer_args.hub_model_id or output_dir.name
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    groups = parameters_by_group(model)
    stages = [
        {
            "index": i,
            "epochs": stage.epochs,
            "describe": stage.describe(),
            "trainable": f"{sum(p.numel() for g in stage.groups for p in groups[g]):,}",
        }
        for i, stage in enumerate(schedule.stages, start=1)
    ]
    epochs_table = [
        {
            "epoch": int(e["epoch"]),
            "stage": e["stage"],
            "train_accuracy": _percent(e["train_accuracy"]),
            "eval_accuracy": _percent(e["eval_accuracy"]),
            "train_loss": f"{e['train_loss']:.4f}",
            "eval_loss": f"{e['eval_loss']:.4f}",
        }
        for e in epoch_entries(history)
    ]
    accuracy = metrics[f"{split}_accuracy"]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "resnet", "cbam", "attention", "custom_code"],
        datasets=[dataset] if not Path(dataset).exists() else None,
        metrics=["accuracy"],
        model_name=model_id,
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type="accuracy",
                metric_value=accuracy,
            )
        ],
    )
    sizes = {name: len(s) for name, s in data.splits.items()}
    card = ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_id,
        model_id=model_id,
        dataset=dataset,
        eval_split=split,
        accuracy=_percent(accuracy),
        eval_loss=f"{metrics[f'{split}_loss']:.4f}",
        eval_size=f"{sizes[split]:,}",
        depths=config.depths,
        params=f"{sum(p.numel() for p in model.parameters()):,}",
        stem=config.stem,
        placement="each of layer1..layer4" if config.cbam_placement == "stage" else "every residual block",
        reduction=config.cbam_reduction,
        kernel=config.cbam_kernel_size,
        image_size=config.image_size,
        mean=tuple(round(v, 4) for v in config.image_mean),
        std=tuple(round(v, 4) for v in config.image_std),
        backbone_weights=_backbone(model_args),
        num_labels=config.num_labels,
        labels=", ".join(data.label_names),
        recipe=stage_args.stages_file or stage_args.recipe,
        bn_policy=stage_args.bn_policy,
        batch_size=trainer_args.per_device_train_batch_size,
        world_size=trainer_args.world_size,
        epochs=schedule.total_epochs,
        seed=trainer_args.seed,
        stages=stages,
        train_size=f"{sizes['train']:,}",
        validation_size=f"{sizes['validation']:,}",
        test_size=f"{sizes['test']:,}" if "test" in sizes else None,
        augment=data_args.augment,
        hardware=hardware_name(trainer_args.device, trainer_args.world_size),
        train_time=_duration(metrics["train_runtime"]),
        images_per_second=f"{metrics['train_samples_per_second']:,.0f}",
        epochs_table=epochs_table,
        per_class=[(name, _percent(value)) for name, value in metrics[f"{split}_per_class_accuracy"].items()],
        attention_maps=list(attention_maps),
    )
    path = output_dir / "README.md"
    card.save(path)
    return path


def _backbone(model_args) -> str:
    if model_args.model_name_or_path:
        return f"the fine-tuned model {model_args.model_name_or_path}"
    if model_args.backbone_weights.lower() == "none":
        return "none (random initialisation)"
    if model_args.backbone_weights == "torchvision":
        return "torchvision ImageNet weights (IMAGENET1K_V1); stem, CBAM and head new"
    return f"{model_args.backbone_weights}; stem (when its shape differs), CBAM and head new"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"
