"""What the machine and the launch offer, read once and only here: the CPU (name, bf16 support, usable cores), the
GPU, and the process counts that `accelerate launch` / torchrun put in the environment."""

import contextlib
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # native bf16 dot products: autocast is about 2x faster here


@dataclass(frozen=True)
class Launch:
    """How many processes this run has in all and on this machine (1 and 1 without a launcher)."""

    world_size: int
    local_world_size: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@cache
def launch() -> Launch:
    return Launch(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    path = Path("/proc/cpuinfo")
    fields = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def cpu_has_bf16() -> bool:
    return bool(CPU_BF16_FLAGS & set(_cpuinfo().get("flags", "").split()))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers() -> int:
    """DataLoader workers per process: the cores this process may use, less one for the training loop itself."""
    return max(1, min(8, usable_cores() // launch().local_world_size - 1))


def bf16_is_fast(use_cpu: bool = False) -> bool:
    """bf16 autocast where the device computes bf16 natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX. (torch's
    own check counts emulated bf16 by default: a T4 or V100 "supports" bf16 at a fraction of fp16's speed.)"""
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_bf16()


def default_precision(use_cpu: bool = False) -> str:
    """The mixed precision to train in by default: bf16 where it is native; fp16 (with loss scaling) on a CUDA GPU
    without it (T4, V100, P100: tensor cores compute fp16); fp32 ("no") elsewhere, as fp16 is no faster on a CPU."""
    if bf16_is_fast(use_cpu):
        return "bf16"
    return "fp16" if torch.cuda.is_available() and not use_cpu else "no"


def device_name(device: torch.device, world_size: int = 1) -> str:
    """E.g. 'NVIDIA H200' or 'CPU (AMD EPYC 9B14, 2 threads)', prefixed by the process count under DDP."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        model = _cpuinfo().get("model name") or platform.processor() or platform.machine()
        name = f"CPU ({model}, {torch.get_num_threads()} threads)"
    return f"{world_size} x {name}" if world_size > 1 else name


PRECISION_NAMES = {"bf16": "bf16 autocast", "fp16": "fp16 autocast with loss scaling", "no": "fp32"}


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors now: the GPU's free memory, or on a CPU the memory the machine has available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def mixed_precision(bf16: bool, fp16: bool) -> str:
    """The --bf16 / --fp16 pair as one name: bf16, fp16 or no (fp32), as Accelerate names it."""
    return "bf16" if bf16 else "fp16" if fp16 else "no"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, mixed: str) -> contextlib.AbstractContextManager:
    """torch.autocast for a precision name (mixed_precision's): bf16, fp16, or no (fp32: no autocast)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[mixed]) if mixed in AUTOCAST_DTYPES \
        else contextlib.nullcontext()


def precision(bf16: bool, fp16: bool) -> str:
    """How training computes, in words: 'bf16 autocast', 'fp16 autocast with loss scaling' or 'fp32'."""
    return PRECISION_NAMES[mixed_precision(bf16, fp16)]


def describe(bf16: bool, fp16: bool, channels_last: bool, device: torch.device) -> str:
    return f"{device.type}, {precision(bf16, fp16)}, {'channels_last' if channels_last else 'NCHW'}"


def configure_threads() -> int:
    """The CPU threads of this process: under `accelerate launch` on a machine without GPUs, its share of the cores
    (cores / processes on this machine), since accelerate exports OMP_NUM_THREADS=1 to every child unless told
    otherwise. Any other OMP_NUM_THREADS, and plain `python`, keep torch's own choice. Returns the count."""
    accelerate_default = "ACCELERATE_MIXED_PRECISION" in os.environ and os.environ.get("OMP_NUM_THREADS") == "1"
    if accelerate_default and not torch.cuda.is_available():
        torch.set_num_threads(max(1, usable_cores() // launch().local_world_size))
    return torch.get_num_threads()
