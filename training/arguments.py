"""Command-line arguments of the fine-tuning script, as dataclasses for HfArgumentParser."""

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from training.speed import bf16_is_fast


def default_num_workers() -> int:
    """DataLoader workers per process: the cores this process may use, less one for the training loop itself."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cores // processes - 1))


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from a saved ResNetCBAM (folder or Hub id) instead of a new model."}
    )
    depths: str = field(default="2,2,2,2", metadata={"help": "Blocks per stage: 2,2,2,2 (ResNet18), 3,4,6,3 (34)."})
    stem: str = field(default="cifar", metadata={"help": "cifar (3x3 stride 1, no max-pool) or imagenet."})
    cbam_placement: str = field(default="stage", metadata={"help": "stage (after layer1..4, the seed) or block."})
    cbam_reduction: int = field(default=16, metadata={"help": "Channel-attention MLP reduction ratio."})
    cbam_kernel_size: int = field(default=7, metadata={"help": "Spatial-attention kernel size."})
    backbone_weights: str = field(
        default="torchvision",
        metadata={"help": "torchvision (ImageNet), a timm Hub id, a .safetensors/.pth file, or none."},
    )


@dataclass
class StageArguments:
    recipe: str = field(default="staged", metadata={"help": "staged (default), seed-exact, or full (one stage)."})
    stage_epochs: str | None = field(default=None, metadata={"help": "Stage lengths in epochs, e.g. 5,15,30."})
    stage_lrs: str | None = field(default=None, metadata={"help": "One lr per stage, e.g. 1e-3,1e-4,1e-5."})
    stages_file: str | None = field(default=None, metadata={"help": "A JSON list of stages (overrides recipe)."})
    bn_policy: str = field(
        default="train", metadata={"help": "train (frozen groups' BatchNorm statistics update, as the seed) or frozen."}
    )
    scale_lr_with_batch: bool = field(
        default=False, metadata={"help": "Multiply every stage's lr by (global batch / 64): the linear scaling rule "
                                 "for running the recipe at a larger batch."}
    )


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """TrainingArguments with the seed recipe's defaults (batch 64, no clipping, evaluation and a save per epoch)."""

    output_dir: str = field(default="outputs/resnet-cbam", metadata={"help": "Where checkpoints and the model go."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Default: the sum of the stage lengths; if given, it must equal it."}
    )
    per_device_train_batch_size: int = 64
    per_device_eval_batch_size: int = 256
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 (the seed): none."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: epoch (default), steps, no."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint: epoch, steps, no."})
    save_total_limit: int | None = 2
    logging_steps: float = 100
    remove_unused_columns: bool = False  # the image column must reach the set_transform
    dataloader_num_workers: int = field(default_factory=default_num_workers)
    dataloader_persistent_workers: bool = True
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast with fp32 master weights. Default: on where the hardware "
                                "computes bf16 natively (Ampere+ GPUs, CPUs with AVX512-BF16 or AMX)."}
    )
    channels_last: bool | None = field(
        default=None, metadata={"help": "channels_last memory format. Default: on with bf16 or on a GPU."}
    )
    data_on_device: bool | None = field(
        default=None, metadata={"help": "Decode small images (<= 64x64) once into a tensor on the training device "
                                "and augment there with kornia: no PIL work per step. Default: on for such images."}
    )

    def __post_init__(self):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            self.use_cpu = True  # launched as DDP on a machine without GPUs: CPU processes over gloo (MULTI_CPU)
        if self.dataloader_num_workers == 0:
            self.dataloader_persistent_workers = False  # torch refuses persistent workers without workers
        self.dataloader_pin_memory = self.dataloader_pin_memory and torch.cuda.is_available()
        gpu = torch.cuda.is_available() and not self.use_cpu
        if self.bf16 is None:
            self.bf16 = bf16_is_fast(self.use_cpu)
        if self.bf16 and not gpu:
            self.use_cpu = True  # the Trainer only takes bf16 on a CPU when told the CPU is the device
        if self.channels_last is None:
            self.channels_last = self.bf16 or gpu
        super().__post_init__()
