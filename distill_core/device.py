"""Where a session computes and in what precision: the device a config asks for, and the autocast dtype
its GPU or CPU computes natively.

- bf16 autocast on compute capability 8.0 and above (Ampere, Ada, Hopper: native bf16 tensor cores);
- fp16 autocast with a gradient scaler below it (a T4 or V100: `torch.cuda.is_bf16_supported()` says yes
  there, by emulation, which is several times slower than fp16);
- bf16 autocast on a CPU with bf16 instructions (AVX512-BF16 or AMX: oneDNN's bf16 matrix products run
  2-3 times as fast as fp32 there), fp32 on other CPUs (bf16 would be emulated: memory saved, time lost).
Evaluation always scores in fp32; only training steps (and the teacher writing its corpus) autocast.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from distill_core.config import DistillConfig
from distill_core.errors import DistillError

NATIVE_BF16 = (8, 0)
"""The CUDA compute capability from which bf16 runs on tensor cores (Ampere)."""
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else the CPU), `cpu` or `cuda` as a torch device."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: a CUDA GPU of compute capability 8.0 or more, or a CPU
    with AVX512-BF16 or AMX (torch's own checks, which its compiler uses to pick bf16 kernels)."""
    if device.type == "cuda":
        return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16
    return device.type == "cpu" and cpu_bf16()


def cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX tiles)."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def autocast_dtype(config: DistillConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a session (see `DistillConfig.precision`), or None for fp32."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        if device.type == "cuda" and not native_bf16(device):
            major, minor = torch.cuda.get_device_capability(device)
            raise DistillError(f"precision bf16 was asked for but this GPU (compute capability {major}.{minor}) has "
                               "no native bf16; use auto (fp16 there) or fp32")
        return torch.bfloat16
    if config.precision == "fp16":
        return torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if native_bf16(device) else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if native_bf16(device) else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16's narrow range underflows small gradients: the loss is scaled up for backward (bf16 has fp32's range)."""
    return dtype == torch.float16


def teacher_dtype(config: DistillConfig, device: torch.device) -> torch.dtype:
    """The dtype the frozen teacher is held in: the autocast dtype on a GPU (half the memory, no per-step
    weight casts), else fp32 (on a CPU autocast casts on the fly where it is on)."""
    dtype = autocast_dtype(config, device)
    return dtype if dtype is not None and device.type == "cuda" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast in `dtype` on the device's type, or nothing when dtype is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
