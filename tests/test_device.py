"""Where a session computes and in which precision."""

import pytest
import torch

from distill_core.config import DistillConfig
from distill_core.device import autocast, autocast_dtype, resolve_device, teacher_dtype
from distill_core.errors import DistillError

CPU = torch.device("cpu")


def test_precision_on_the_cpu():
    assert autocast_dtype(DistillConfig(), CPU) is None  # auto: fp32 on a CPU (no bf16 units here)
    assert autocast_dtype(DistillConfig(precision="bf16"), CPU) == torch.bfloat16  # asked for: autocast anyway
    assert autocast_dtype(DistillConfig(precision="fp32"), CPU) is None
    # the frozen teacher is held in bf16 only on a GPU; on a CPU autocast casts on the fly
    assert teacher_dtype(DistillConfig(precision="bf16"), CPU) == torch.float32


def test_autocast_context():
    with autocast(CPU, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(CPU, None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(DistillError, match="no CUDA GPU is available"):
        resolve_device("cuda")
