"""Time the engine's distillation step against a plain reference loop, in one run, same shapes and data.

The reference is what a first distillation script does: HF forward passes of teacher and student,
full-vocabulary logits in fp32, `F.kl_div` on temperature-softened log-probabilities (T^2 scaled)
mixed with cross-entropy, every student parameter trained with AdamW. The engine runs
`session._train_step` with the config's settings (frozen teacher-copied embeddings, the shared
frozen prefix, top-k targets from the teacher cache when the config asks for them).

Each variant: a warm-up step (excluded), then `repeats` timed steps; the median step time gives
tokens/s. Peak memory: CUDA max allocated on a GPU, else the process's resident memory sampled
during the variant's steps, above what it was before the variant started.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from distill_core.checkpoints import load_student, load_teacher
from distill_core.config import DistillConfig
from distill_core.data import Blocks
from distill_core.losses import shift_for_next_token, teacher_topk


class PeakMemory:
    """Peak memory above the starting point while the block runs (MB)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self._rss()
            self.peak = self.start
            self.running = True
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        else:
            self.running = False
            self.sampler.join()
            self.peak_mb = (max(self.peak, self._rss()) - self.start) / 2**20


def _time_steps(step: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    step()  # warm-up: allocator, kernels, optimizer state
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def reference_step(teacher: Any, student: Any, optimizer: torch.optim.Optimizer, batch: Blocks,
                   temperature: float, kd_weight: float) -> float:
    """One step of the plain loop (see the module docstring)."""
    ids, attn = batch.input_ids.to(student.device), batch.attention_mask.to(student.device)
    labels, mask = shift_for_next_token(ids, attn)
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=attn).logits.float()
    s_logits = student(input_ids=ids, attention_mask=attn).logits.float()
    m = mask.bool()
    t = temperature
    kd = F.kl_div(F.log_softmax(s_logits[m] / t, -1), F.log_softmax(t_logits[m] / t, -1), log_target=True,
                  reduction="batchmean") * t * t
    ce = F.cross_entropy(s_logits[m], labels[m])
    loss = kd_weight * kd + (1 - kd_weight) * ce
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_bench(config: DistillConfig, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Both loops on one random batch of the config's shapes; returns the measured figures."""
    from distill_core.session import SharedPrefix, _prepare_trainable, _train_step, resolve_device

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    teacher = load_teacher(config.teacher)
    teacher.model.to(device)
    vocab = teacher.model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (config.batch_size, config.seq_len), generator=generator)
    batch = Blocks(ids, torch.ones_like(ids))
    tokens = batch.n_tokens

    # reference: every parameter of a fresh copy of the student trained, full logits, F.kl_div
    ref_student = load_student(config.student, teacher, seed=config.seed).model.to(device)
    ref_student.train()
    for p in ref_student.parameters():
        p.requires_grad_(True)
    ref_opt = torch.optim.AdamW(ref_student.parameters(), lr=config.learning_rate)
    with PeakMemory(device) as ref_mem:
        ref_times = _time_steps(lambda: reference_step(teacher.model, ref_student, ref_opt, batch,
                                                       config.temperature, config.kd_weight), repeats, device)
    del ref_student, ref_opt

    # engine: the session's own step with the config's settings
    student = load_student(config.student, teacher, seed=config.seed)
    student.model.to(device)
    trainable = _prepare_trainable(student, config)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, fused=device.type == "cuda")
    targets = None
    if config.teacher_cache:  # what the cache holds: the teacher's top-k at T, computed beforehand
        with torch.no_grad():
            logits = teacher.model(input_ids=ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
            targets = teacher_topk(torch.log_softmax(logits.float() / config.temperature, -1), config.top_k)
    shared = None if targets is not None else SharedPrefix.create(teacher, student, config, batch)
    with PeakMemory(device) as engine_mem:
        engine_times = _time_steps(lambda: _train_step(teacher, student, batch, config, optimizer, device, shared,
                                                       targets=targets), repeats, device)
    ref_s, engine_s = statistics.median(ref_times), statistics.median(engine_times)
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "teacher": config.teacher, "student": config.student,
        "batch": [config.batch_size, config.seq_len],
        "engine_settings": {"freeze_embeddings": config.freeze_embeddings, "freeze_layers": config.freeze_layers,
                            "shared_prefix": shared is not None, "teacher_cache": targets is not None,
                            "top_k": config.top_k},
        "reference_step_s": ref_s, "engine_step_s": engine_s,
        "reference_tokens_per_s": tokens / ref_s, "engine_tokens_per_s": tokens / engine_s,
        "speedup": ref_s / engine_s,
        "reference_peak_mb": ref_mem.peak_mb, "engine_peak_mb": engine_mem.peak_mb,
        "memory_ratio": engine_mem.peak_mb / ref_mem.peak_mb if ref_mem.peak_mb > 0 else float("nan"),
        "repeats": repeats,
    }
