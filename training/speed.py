"""Which fast settings the hardware supports: bf16 autocast (fp32 master weights) and channels_last."""

from functools import cache
from pathlib import Path

import torch

CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # native bf16 dot products: autocast is about 2x faster here


@cache
def cpu_has_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    return bool(CPU_BF16_FLAGS & set(flags))


def bf16_is_fast(use_cpu: bool = False) -> bool:
    """bf16 autocast where the device computes bf16 natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX."""
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def describe(bf16: bool, channels_last: bool, device: torch.device) -> str:
    return f"{device.type}, {'bf16 autocast' if bf16 else 'fp32'}, {'channels_last' if channels_last else 'NCHW'}"
