"""How much memory a distillation run needs, estimated before it starts, and how much the device has.

The estimate adds what training holds at its peak (the backward pass of a step):
- weights: the teacher's (bf16 or fp16 when the session computes in half precision on a GPU, else fp32) and the
  student's fp32 master weights;
- gradients (fp32) and AdamW's two moments (fp32) for the trainable parameters;
- activations the student keeps for backward: per trainable decoder layer and token, about
  8·hidden + 2·kv_width + 4·intermediate values (norm inputs and outputs, q/k/v, attention output,
  the gated MLP's four intermediate-wide tensors; SDPA keeps no seq x seq scores), at 2 bytes under
  bf16 or fp16 autocast and 4 in fp32. With gradient checkpointing only each layer's input is kept, plus one
  layer's activations while it is recomputed;
- logits: with the chunked loss, a handful of (chunk x vocabulary) fp32 tensors; without it, the
  teacher's and student's full (batch x seq x vocabulary) logits, the log-softmaxes and the
  gradient, about five fp32 copies.

It is an estimate (allocator fragmentation, the framework's workspace and the evaluation passes come
on top): the warning fires when it exceeds 90% of what the device has.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from distill_core.device import autocast_dtype
from distill_core.step import frozen_parameters

HEADROOM = 0.9
"""Warn when the estimate exceeds this share of the device's memory."""
LOGIT_COPIES_FULL = 5
"""fp32 (batch x seq x vocab) tensors alive at once without the chunked loss."""
LOGIT_COPIES_CHUNK = 6
"""fp32 (chunk x vocab) tensors alive at once with it."""


def _shape(config: Any) -> tuple[int, int, int, int, int]:
    """(layers, hidden, kv width, intermediate, vocab) of a transformers config."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", heads) * head_dim
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    return config.num_hidden_layers, hidden, kv, intermediate, config.vocab_size


def estimate_training_memory(teacher_config: Any, student_config: Any, teacher_params: int, student_params: int,
                             trainable_params: int, batch_size: int, seq_len: int, *, half: bool = False,
                             teacher_half: bool = False, chunk_tokens: int = 1024, frozen_layers: int = 0,
                             gradient_checkpointing: bool = False, teacher_loaded: bool = True) -> dict[str, float]:
    """Bytes per component and their total (see the module docstring for what each counts)."""
    layers, hidden, kv, intermediate, vocab = _shape(student_config)
    tokens = batch_size * seq_len
    act_bytes = 2 if half else 4
    per_layer = tokens * (8 * hidden + 2 * kv + 4 * intermediate) * act_bytes
    trained_layers = max(0, layers - frozen_layers)
    if gradient_checkpointing:
        activations = trained_layers * tokens * hidden * 4 + per_layer
    else:
        activations = trained_layers * per_layer
    if chunk_tokens > 0:
        logits = LOGIT_COPIES_CHUNK * min(chunk_tokens, tokens) * vocab * 4
    else:
        logits = LOGIT_COPIES_FULL * tokens * vocab * 4
    parts = {
        "teacher_weights": teacher_params * (2 if teacher_half else 4) if teacher_loaded else 0,
        "student_weights": student_params * 4,
        "gradients": trainable_params * 4,
        "optimizer": trainable_params * 8,
        "activations": activations,
        "logits": logits,
    }
    parts["total"] = sum(parts.values())
    return {name: float(value) for name, value in parts.items()}


def device_memory(device: torch.device) -> tuple[float, str]:
    """Bytes the device offers training and how that was measured: a GPU's total memory, or the
    memory the operating system reports available (MemAvailable) on CPU."""
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return float(total), f"{torch.cuda.get_device_name(device)} memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "physical RAM"


def fit_report(estimate: dict[str, float], device: torch.device) -> dict[str, Any]:
    """The estimate against the device: GB figures, whether it fits, and a warning with advice if not."""
    available, what = device_memory(device)
    gb = {name: round(value / 2**30, 3) for name, value in estimate.items()}
    fits = estimate["total"] <= HEADROOM * available
    report: dict[str, Any] = {"estimate_gb": gb, "device": str(device), "device_gb": round(available / 2**30, 2),
                              "device_memory": what, "fits": fits, "warning": None}
    if not fits:
        largest = max((k for k in estimate if k != "total"), key=estimate.get)
        report["warning"] = (
            f"this run needs about {gb['total']:.1f} GB ({largest.replace('_', ' ')} {gb[largest]:.1f} GB the most) "
            f"but the device has {report['device_gb']:.1f} GB ({what}): lower batch_size or seq_len, turn on "
            "gradient_checkpointing, keep loss_chunk_tokens on, or pick a smaller student")
    return report


def trainable_count(model: Any, config: Any) -> int:
    """Parameters a session with `config` trains (see `step.prepare_student`), without changing the model."""
    frozen = frozen_parameters(model, config)
    return sum(p.numel() for p in model.parameters() if id(p) not in frozen)  # parameters(): tied ones once


def session_fit(config: Any, teacher_config: Any, student_config: Any, teacher_params: int, student_params: int,
                trainable_params: int, device: torch.device, teacher_loaded: bool = True) -> dict[str, Any]:
    """`fit_report` for a session's config (its batch, length, precision and memory settings)."""
    half = autocast_dtype(config, device) in (torch.bfloat16, torch.float16)
    estimate = estimate_training_memory(
        teacher_config, student_config, teacher_params, student_params, trainable_params, config.batch_size,
        config.seq_len, half=half, teacher_half=half and device.type == "cuda", chunk_tokens=config.loss_chunk_tokens,
        frozen_layers=config.freeze_layers, gradient_checkpointing=config.gradient_checkpointing,
        teacher_loaded=teacher_loaded)
    report = fit_report(estimate, device)
    report["batch"] = [config.batch_size, config.seq_len]
    return report
