"""Where a session computes and in what precision: the device a config asks for, and bf16 autocast
where it pays (a CUDA GPU with native bf16) or where it is asked for."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from distill_core.config import DistillConfig
from distill_core.errors import DistillError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else the CPU), `cpu` or `cuda` as a torch device."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(config: DistillConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when the session computes in bf16 (see `DistillConfig.precision`), else None (fp32)."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DistillError("precision bf16 was asked for but this GPU does not support bf16; use fp32")
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def teacher_dtype(config: DistillConfig, device: torch.device) -> torch.dtype:
    """The dtype the frozen teacher is held in: bf16 when the session computes in bf16 on a GPU (half the
    memory, no per-step weight casts), else fp32 (autocast casts on the fly where it is on)."""
    bf16 = autocast_dtype(config, device) == torch.bfloat16
    return torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast in `dtype` on the device's type, or nothing when dtype is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
