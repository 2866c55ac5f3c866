"""Where a session computes and in which precision."""

import pytest
import torch

from distill_core.config import DistillConfig
from distill_core.device import autocast, autocast_dtype, needs_grad_scaler, resolve_device, teacher_dtype
from distill_core.errors import DistillError

CPU = torch.device("cpu")


@pytest.mark.parametrize("has_bf16, dtype", [(False, None), (True, torch.bfloat16)])
def test_auto_precision_on_the_cpu_follows_its_bf16_instructions(monkeypatch, has_bf16, dtype):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert autocast_dtype(DistillConfig(), CPU) == dtype
    assert teacher_dtype(DistillConfig(), CPU) == torch.float32  # the teacher stays fp32 on a CPU either way


def test_precision_on_the_cpu():
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


def fake_gpu(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers (emulation)
    return torch.device("cuda")


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
                         ids=["T4", "V100", "A100", "H100"])
def test_auto_precision_follows_the_compute_capability(monkeypatch, capability, dtype):
    gpu = fake_gpu(monkeypatch, capability)
    config = DistillConfig()
    assert autocast_dtype(config, gpu) == dtype and teacher_dtype(config, gpu) == dtype
    assert needs_grad_scaler(autocast_dtype(config, gpu)) == (dtype == torch.float16)
    assert autocast_dtype(DistillConfig(precision="fp32"), gpu) is None
    assert teacher_dtype(DistillConfig(precision="fp32"), gpu) == torch.float32


def test_bf16_on_a_gpu_without_native_bf16_is_refused(monkeypatch):
    gpu = fake_gpu(monkeypatch, (7, 5))
    with pytest.raises(DistillError, match=r"compute capability 7\.5\) has no native bf16; use auto \(fp16"):
        autocast_dtype(DistillConfig(precision="bf16"), gpu)
    assert autocast_dtype(DistillConfig(precision="fp16"), gpu) == torch.float16
