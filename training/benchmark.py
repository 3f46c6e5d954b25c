"""Throughput of the pieces of a training run, measured in one process on the same model, batch and data.

All paths train every parameter (recipe `full`), so they do the same work per image.
"""

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import PrinterCallback, TrainerCallback, default_data_collator

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import FinetuneTrainingArguments, ModelArguments, StageArguments
from training.data import DataArguments
from training.defaults import multiply_adds
from training.hardware import autocast, mixed_precision, precision
from training.images import upright_rgb
from training.run import build_run
from training.synthetic import hub_layout_folder, random_dataset


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, device, batch_size: int, mixed: str, channels_last: bool, fused: bool | None = None):
    """One training step of `model` on a fixed random batch already on the device, as a function: forward under
    the autocast of `mixed` (bf16, fp16 or no), backward, Adam (through a GradScaler with fp16, as training has)."""
    model = model.to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    size = model.config.image_size
    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, model.config.num_labels, (batch_size,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    scaler = torch.amp.GradScaler(device.type, enabled=mixed == "fp16")

    def step() -> None:
        with autocast(device, mixed):
            loss = model(x, labels=y).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_throughput(model, device, batch_size: int, steps: int, warmup: int, mixed: str, channels_last: bool,
                    fused: bool | None = None) -> float:
    """Images/s of train_step's step (forward + backward + Adam on tensors already on the device)."""
    step = train_step(model, device, batch_size, mixed, channels_last, fused)
    for index in range(warmup + steps):
        if index == warmup:
            _sync(device)
            started = time.perf_counter()
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - started)


# Kinds of op, for where a step's time goes: the first pattern an op's name contains decides (aten names, CPU and GPU)
OP_KINDS = (
    ("optimizer", ("adam", "_foreach", "sgd")),
    ("convolution", ("conv",)),
    ("batch norm", ("batch_norm",)),
    ("matmul (CBAM MLP, head)", ("addmm", "mm", "linear")),
    ("relu", ("relu", "threshold_backward")),
    ("pooling and reductions (CBAM)", ("pool", "amax", "max", "mean", "sum", "cat")),
    ("sigmoid, gates, residual adds", ("sigmoid", "mul", "add", "div", "sub")),
    ("casts and copies", ("copy", "_to_", "clone", "contiguous", "empty", "fill", "zero")),
)


def _op_kind(name: str) -> str:
    name = name.lower()
    return next((kind for kind, words in OP_KINDS if any(word in name for word in words)), "other")


def step_profile(model, device, batch_size: int, steps: int, mixed: str, channels_last: bool) -> dict:
    """Where a training step's time goes (forward, backward, fused Adam: step_throughput's step), from
    torch.profiler over `steps` steps after two warm-up steps: the self time of every op (CPU time; on a GPU, the
    kernels' device time), summed by kind (OP_KINDS), in ms per step, with the heaviest ops."""
    from torch.profiler import ProfilerActivity, profile

    # the profiler's own log lines (profiler_start/stop, and a failed GPU probe on a machine without one) are not
    # the benchmark's output; kineto reads the level when the profiler first starts, and a level set by hand wins
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    step = train_step(model, device, batch_size, mixed, channels_last, fused=True)
    for _ in range(2):
        step()
    _sync(device)
    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        _sync(device)
    by_kind, ops = {}, []
    for event in profiler.key_averages():
        microseconds = event.self_device_time_total if gpu else event.self_cpu_time_total
        if microseconds <= 0:
            continue
        kind = _op_kind(event.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + microseconds / 1000 / steps
        ops.append((event.key, microseconds / 1000 / steps))
    total = sum(by_kind.values())
    return {
        "ms_per_step": total,
        "by_kind": {kind: ms for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1])},
        "top_ops": dict(sorted(ops, key=lambda item: -item[1])[:8]),
    }


def loader_throughput(loader, batches: int, device_data=None, device=None) -> float:
    """Images/s of the data path alone, after its first batch (worker start-up): decode, transform and collate in
    the DataLoader, or, with device-resident data, the gather and kornia augmentation on the device."""
    iterator = iter(loader)
    next(iterator)
    _sync(device)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        if device_data is not None:
            batch = device_data.inputs({k: v.to(device) for k, v in batch.items()}, train=True)
        seen += len(batch["labels"])
    _sync(device)
    return seen / (time.perf_counter() - started)


def plain_loop_throughput(train_split, config: ResNetCBAMConfig, device, steps: int, warmup: int,
                          batch_size: int = 64) -> float:
    """The tutorial's loop: fp32, NCHW, a DataLoader with default settings (no workers), Adam; data included."""
    model = ResNetCBAMForImageClassification(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(train_split, batch_size=batch_size, shuffle=True, collate_fn=default_data_collator)
    iterator = iter(loader)
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        batch = next(iterator)
        loss = model(batch["pixel_values"].to(device), labels=batch["labels"].to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - started)


class _StepTimer(TrainerCallback):
    """Wall time from the first step after warm-up to the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.seconds = warmup, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup and self.started is None:
            _sync(args.device)
            self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        _sync(args.device)
        self.seconds = time.perf_counter() - self.started


def decode_throughput(files: list[Path], draft: int | None = None) -> float:
    """Images/s of decoding image files to RGB in this process; with `draft`, JPEGs are decoded reduced (PIL's
    draft mode: 1/2, 1/4 or 1/8 scale, never below `draft` px on either side)."""
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (draft, draft))
            upright_rgb(image)  # as training decodes
    return len(files) / (time.perf_counter() - started)


@contextmanager
def short_on_purpose():
    """The benchmark trains a few steps of noise on purpose: the warnings meant for real runs (a run too short to
    learn, an accuracy about chance) stay out of its output."""
    loggers = [logging.getLogger(name) for name in ("training.trainer", "training.callbacks")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_benchmark(dataset: str | None, steps: int, warmup: int, eval_images: int, batch_size: int = 64,
                  train_dir: str | None = None, profile_steps: int = 0, architecture: str = "resnet18",
                  **speed) -> dict:
    """Every figure of the benchmark, measured in this process, in sequence. `speed` holds the training arguments
    under test (bf16, fp16, channels_last, data_on_device, torch_compile); None keeps the project's default. With
    `train_dir` (a folder of photos), the run is the photos' default (224 px, the ImageNet stem) and the JPEG decode
    is measured at full size and in draft mode."""
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        if train_dir is not None:
            source = "uoft-cs/cifar10"  # unused: the image folder is the data
        elif dataset is None:
            images = (steps + warmup + 2) * batch_size + eval_images
            names = [f"class_{i}" for i in range(10)]
            source = str(hub_layout_folder(workdir / "synthetic", {"train": random_dataset(-(-images // 10), names)}))
        else:
            source = dataset
        data_args = DataArguments(dataset_name=source, train_dir=train_dir,
                                  max_train_samples=(steps + warmup) * batch_size, max_eval_samples=eval_images,
                                  validation_split=str(eval_images))
        training_args = FinetuneTrainingArguments(
            output_dir=str(workdir / "out"), num_train_epochs=1, per_device_train_batch_size=batch_size,
            eval_strategy="no", save_strategy="no", logging_steps=100_000, report_to="none", disable_tqdm=True,
            **{name: value for name, value in speed.items() if value is not None},
        )
        timer = _StepTimer(warmup)
        run = build_run(ModelArguments(backbone_weights="none", architecture=architecture), data_args,
                        StageArguments(recipe="full"),
                        training_args, extra_callbacks=[timer])
        trainer, args, device = run.trainer, run.trainer.args, run.trainer.args.device
        config = trainer.model.config
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": precision(args.bf16, args.fp16),
            "channels_last": bool(args.channels_last),
            "data_on_device": trainer.device_data is not None,
            "batch_size": batch_size,
            "torch_version": torch.__version__,
            "steps": steps,
            "dataset": train_dir or dataset or "synthetic 32x32",
            "architecture": architecture,
            "parameters": f"{trainer.model.num_parameters():,}",
            "image_size": config.image_size,
            "multiply_adds_g": round(multiply_adds(config, config.image_size) / 1e9, 2),
            "stem": config.stem,
            "loader_workers": 0 if trainer.device_data else args.dataloader_num_workers,
        }
        if train_dir is not None:
            files = sorted(path for path in Path(train_dir).rglob("*.jp*g"))
            result["decode_img_s"] = decode_throughput(files)
            result["decode_draft_img_s"] = decode_throughput(files, draft=round(config.image_size / config.crop_pct))
        fresh = ResNetCBAMForImageClassification(config)
        mixed = mixed_precision(args.bf16, args.fp16)
        result["step_img_s"] = step_throughput(fresh, device, batch_size, steps, warmup, mixed,
                                               args.channels_last, fused=True)
        result["step_fp32_img_s"] = step_throughput(ResNetCBAMForImageClassification(config), device, batch_size,
                                                    steps, warmup, mixed="no", channels_last=False)
        if profile_steps:
            result["profile"] = step_profile(ResNetCBAMForImageClassification(config), device, batch_size,
                                             profile_steps, mixed, args.channels_last)
        result["data_img_s"] = loader_throughput(trainer.get_train_dataloader(), steps, trainer.device_data, device)
        result["plain_loop_img_s"] = plain_loop_throughput(run.data.splits["train"], config, device, steps, warmup,
                                                           batch_size)
        trainer.remove_callback(PrinterCallback)  # the Trainer's log dicts: the benchmark prints its own table
        with short_on_purpose():
            trainer.train()
            metrics = trainer.evaluate()
        result["trainer_img_s"] = steps * batch_size * args.world_size / timer.seconds
        result["speedup_vs_plain"] = result["trainer_img_s"] / result["plain_loop_img_s"]
        result["eval_img_s"] = metrics["eval_samples_per_second"]
        return result
