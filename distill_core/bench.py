"""Time the engine's distillation step against a plain reference loop, in one run, same shapes and data.

The reference is what a first distillation script does: HF forward passes of teacher and student,
full-vocabulary logits in fp32, `F.kl_div` on temperature-softened log-probabilities (T^2 scaled)
mixed with cross-entropy, every student parameter trained with AdamW. The engine runs the session's
own step (`step.DistillStep`) with the config's settings (frozen teacher-copied embeddings, the shared
frozen prefix, top-k targets without a teacher forward pass where the session has them: from the teacher
cache, or captured while the teacher wrote the corpus). The reference always runs the teacher.

On a GPU the reference runs under the session's autocast dtype (bf16 from compute capability 8.0, fp16
below) with fused AdamW and the teacher held in that dtype, as the engine holds it (a fair plain loop:
neither side wins by a cast); the engine with its GPU path (the teacher in inference mode, autocast, the
chunked output-layer loss, fused AdamW), and once more with `compile` (each decoder layer
torch.compiled). Liger-Kernel is not wired in. The reference's full logits (about five fp32 copies of
batch x length x vocabulary) decide the batch: when the estimate does not fit the card, both loops run the
largest batch that does, and the result says so.

Each variant: a warm-up step (excluded; with compile it also compiles), then `repeats` timed steps;
the median step time gives tokens/s. Peak memory: on a GPU the peak of allocated memory during the
variant's steps (weights, optimizer state, activations, logits: everything live); on CPU the process's
resident memory sampled during the variant's steps, above what it was before they started (so the
models' weights, loaded before, are left out). MFU (GPU): model FLOPs per token (2 x teacher
parameters for its forward + 6 x student parameters for forward and backward) x tokens/s over the
card's dense peak in the autocast dtype.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from distill_core.config import DistillConfig
from distill_core.data import Blocks
from distill_core.device import autocast, autocast_dtype, resolve_device, teacher_dtype
from distill_core.errors import DistillError
from distill_core.losses import shift_for_next_token, teacher_topk
from distill_core.memory import session_fit
from distill_core.models import MODELS, LoadedModel, compile_layers, count_parameters
from distill_core.step import DistillStep, SharedPrefix, fused_adamw, make_optimizer, prepare_student
from distill_core.students import load_student
from distill_core.teacher_corpus import CAPTURE_TOP_K, captured_targets_blocked


class PeakMemory:
    """Peak memory while the block runs (MB): on a GPU all allocated memory at its peak, on CPU the
    resident memory's peak above its level at the start."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
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
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.running = False
            self.sampler.join()
            self.peak_mb = (max(self.peak, self._rss()) - self.start) / 2**20


def _time_steps(step: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, list[float]]:
    """The warm-up step's seconds (allocator, kernels, optimizer state; with compile, the compilation) and
    the `repeats` timed steps' seconds."""
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warmup = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return warmup, times


def reference_step(teacher: Any, student: Any, optimizer: torch.optim.Optimizer, batch: Blocks,
                   temperature: float, kd_weight: float, autocast_to: torch.dtype | None = None) -> float:
    """One step of the plain loop (see the module docstring)."""
    ids, attn = batch.input_ids.to(student.device), batch.attention_mask.to(student.device)
    labels, mask = shift_for_next_token(ids, attn)
    with autocast(student.device, autocast_to):
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


SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # SmolLM2-360M and SmolLM2-135M (their config.json values), random weights: speed needs only the shapes
    "smollm2-360m>135m": (
        dict(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
             num_key_value_heads=5, tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0),
        dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0),
    ),
    # for tests: the same code path in seconds
    "tiny": (
        dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=True),
        dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=True),
    ),
}
"""Teacher and student shapes the bench can build from configs (`--shapes`)."""

GPU_DEFAULTS = {"batch_size": 16, "seq_len": 1024, "temperature": 2.0, "kd_weight": 0.5, "freeze_embeddings": False}
"""What `bench` sets on a GPU over the config unless told otherwise: the 360M -> 135M comparison's batch
(16 x 1024 tokens), forward KL at T = 2 mixed with CE, every student parameter trained (like the reference)."""

PEAK_FLOPS = {
    "H200": {"bf16": 989.4e12, "fp16": 989.4e12}, "H100 PCIe": {"bf16": 756.0e12, "fp16": 756.0e12},
    "H100": {"bf16": 989.4e12, "fp16": 989.4e12}, "A100": {"bf16": 312.0e12, "fp16": 312.0e12},
    "L4": {"bf16": 121.0e12, "fp16": 121.0e12}, "A10G": {"bf16": 125.0e12, "fp16": 125.0e12},
    "T4": {"fp16": 65.0e12}, "V100": {"fp16": 125.0e12},
}
"""Dense tensor-core peak by GPU name and dtype (vendor datasheets, without sparsity), for MFU. The T4 and
the V100 have no bf16 tensor cores (the session computes in fp16 there)."""


def peak_flops(device_name: str, dtype: str = "bf16") -> float | None:
    """The card's dense peak in `dtype` (bf16, fp16), None for an unknown card or a dtype it lacks."""
    for name, flops in PEAK_FLOPS.items():  # most specific first (H100 PCIe before H100)
        if name in device_name:
            return flops.get(dtype)
    return None


def reference_batch(config: DistillConfig, teacher: LoadedModel, student: LoadedModel, device: torch.device) -> int:
    """The largest batch (the config's, or halved until it fits) at which the reference loop's memory
    estimate fits the device: full logits, every student parameter trained."""
    plain = config.with_overrides({"loss_chunk_tokens": 0, "freeze_embeddings": False, "freeze_layers": 0})
    params = (count_parameters(teacher.model), count_parameters(student.model))
    batch = config.batch_size
    while batch > 1:
        report = session_fit(plain.with_overrides({"batch_size": batch}), teacher.model.config, student.model.config,
                             *params, params[1], device)
        if report["fits"]:
            break
        batch //= 2
    return batch


def build_shapes(name: str, device: torch.device, seed: int = 0) -> tuple[LoadedModel, Callable[[], LoadedModel]]:
    """A random-weight teacher of the named shapes, and a factory of fresh students."""
    if name not in SHAPES:
        raise DistillError(f"unknown --shapes {name!r}; choose one of {', '.join(SHAPES)}")
    teacher_kwargs, student_kwargs = SHAPES[name]
    torch.manual_seed(seed)
    teacher = LoadedModel(LlamaForCausalLM(LlamaConfig(**teacher_kwargs)).to(device), None, f"{name} teacher",
                          "random weights")

    def student() -> LoadedModel:
        torch.manual_seed(seed + 1)
        return LoadedModel(LlamaForCausalLM(LlamaConfig(**student_kwargs)).to(device), None, f"{name} student",
                           "random weights")

    return teacher, student


def engine_teacher(teacher: LoadedModel, config: DistillConfig, device: torch.device) -> LoadedModel:
    """The teacher as a session holds it (models.ModelCache): eval, no gradients, in the session's teacher
    dtype, its layers compiled when asked; a copy, so the reference loop's teacher stays as it was."""
    model = copy.deepcopy(teacher.model).to(device=device, dtype=teacher_dtype(config, device))
    model.eval().requires_grad_(False)
    if config.compile:
        compile_layers(model)
    return LoadedModel(model, teacher.tokenizer, teacher.spec, teacher.source, teacher.layers_kept)


def precomputed_targets(config: DistillConfig) -> str:
    """Where a session with `config` reads its soft targets without a teacher forward pass per step: "teacher
    cache", "captured while the teacher wrote the corpus", or "" (the teacher runs at every step)."""
    if config.teacher_cache:
        return "teacher cache"
    if config.corpus == "teacher-generated" and not captured_targets_blocked(config):
        return "captured while the teacher wrote the corpus"
    return ""


def engine_step(teacher: LoadedModel, student: LoadedModel, config: DistillConfig, batch: Blocks,
                device: torch.device) -> Callable[[], Any]:
    """The session's own training step (`step.DistillStep`) with the config's settings on `batch`, ready
    to call: the student's trainable parameters set, AdamW, the teacher cache's targets (computed here,
    as the cache would hold them) and the shared prefix when the config has them. `teacher` as a session
    holds it (`engine_teacher`)."""
    optimizer = make_optimizer(prepare_student(student, config), config, device)
    targets = None
    source = precomputed_targets(config)
    if source:  # what the cache or the teacher-written corpus holds: the teacher's top-k, computed beforehand
        k = config.top_k if source == "teacher cache" else min(config.top_k or CAPTURE_TOP_K, CAPTURE_TOP_K)
        with torch.no_grad():
            ids, attn = batch.input_ids.to(device), batch.attention_mask.to(device)
            logits = teacher.model(input_ids=ids, attention_mask=attn).logits
            targets = teacher_topk(torch.log_softmax(logits.float() / config.temperature, -1), k)
    shared = None if targets is not None else SharedPrefix.create(teacher, student, config, batch)
    step = DistillStep(config, teacher, student, optimizer, shared_prefix=shared)
    return lambda: step(batch, targets)


def _engine_variant(held: LoadedModel, make_student: Callable[[], LoadedModel], config: DistillConfig,
                    batch: Blocks, device: torch.device, repeats: int) -> dict[str, float]:
    """`engine_step` on a fresh student: its row (median step, warm-up and peak memory). `held` is the
    teacher as the session holds it; a compiled variant gets its own compiled copy."""
    teacher = engine_teacher(held, config, device) if config.compile else held
    step = engine_step(teacher, make_student(), config, batch, device)
    with PeakMemory(device) as mem:
        warmup, times = _time_steps(step, repeats, device)
    return {"step_s": statistics.median(times), "warmup_s": warmup, "peak_mb": mem.peak_mb}


def _reference_variant(held: LoadedModel, make_student: Callable[[], LoadedModel], config: DistillConfig,
                       batch: Blocks, device: torch.device, repeats: int) -> tuple[dict[str, float], int]:
    """The plain loop on a fresh student, every parameter trained (the session's autocast on a GPU, its
    teacher held in the same dtype as the engine's): its row, and the student's parameters."""
    student = make_student().model
    student.train()
    student.requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, fused=fused_adamw(device))
    dtype = autocast_dtype(config, device)
    with PeakMemory(device) as memory:
        warmup, times = _time_steps(lambda: reference_step(held.model, student, optimizer, batch, config.temperature,
                                                           config.kd_weight, dtype), repeats, device)
    row = {"step_s": statistics.median(times), "warmup_s": warmup, "peak_mb": memory.peak_mb}
    return row, count_parameters(student)  # the student goes when this returns


def _models(config: DistillConfig, shapes: str | None, device: torch.device,
            seed: int) -> tuple[LoadedModel, Callable[[], LoadedModel]]:
    """The teacher (fp32 on the device) and a factory of fresh students: random-weight models of the named
    shapes, or the config's pair."""
    if shapes:
        return build_shapes(shapes, device, seed)
    teacher = MODELS.teacher(config.teacher, device)  # the views' teacher on the CPU, a copy elsewhere

    def make_student() -> LoadedModel:
        student = load_student(config.student, teacher, seed=config.seed)
        if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():  # the plain loop reads one vocabulary
            raise DistillError(f"bench times a pair that reads the same tokens; {config.student!r} has a tokenizer of "
                               "its own (its sessions go through a tokenizer bridge)")
        student.model.to(device)
        return student
    return teacher, make_student


def run_bench(config: DistillConfig, repeats: int = 5, seed: int = 0, shapes: str | None = None,
              compile_variant: bool = False) -> dict[str, Any]:
    """The reference loop and the engine (and on a GPU, or with `compile_variant` anywhere, the engine with
    compiled layers) on one random batch of the config's shapes; returns the measured figures. `shapes`
    builds random-weight models of the named shapes (`SHAPES`) instead of loading the config's pair."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    teacher, make_student = _models(config, shapes, device, seed)
    asked = config.batch_size
    config = config.with_overrides({"batch_size": reference_batch(config, teacher, make_student(), device)})
    ids = torch.randint(0, teacher.model.config.vocab_size, (config.batch_size, config.seq_len),
                        generator=torch.Generator().manual_seed(seed))
    batch = Blocks(ids, torch.ones_like(ids))
    held = engine_teacher(teacher, config.with_overrides({"compile": False}), device)  # the session's dtype
    reference, student_params = _reference_variant(held, make_student, config, batch, device, repeats)
    rows = {"reference": reference}
    variants = {"engine": config}
    if (device.type == "cuda" or compile_variant) and not config.compile:
        variants["engine+compile"] = config.with_overrides({"compile": True})
    for name, variant in variants.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows[name] = _engine_variant(held, make_student, variant, batch, device, repeats)
    return _report(config, shapes, device, rows, (count_parameters(teacher.model), student_params), asked, repeats)


def _report(config: DistillConfig, shapes: str | None, device: torch.device, rows: dict[str, dict[str, Any]],
            params: tuple[int, int], asked_batch: int, repeats: int) -> dict[str, Any]:
    """The bench's figures: per loop tokens/s, model TFLOP/s and MFU, and the engine against the reference."""
    teacher_params, student_params = params
    dtype = autocast_dtype(config, device)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    # model FLOPs per token: teacher forward 2P, student forward + backward 6P (the engine runs no teacher
    # when it reads the teacher cache; the reference always does)
    flops_per_token = {name: 6 * student_params + (0 if name != "reference" and precomputed_targets(config)
                                                   else 2 * teacher_params) for name in rows}
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    peak = peak_flops(device_name, precision) if device.type == "cuda" else None
    tokens = config.batch_size * config.seq_len
    for name, row in rows.items():
        row["tokens_per_s"] = tokens / row["step_s"]
        row["tflops"] = row["tokens_per_s"] * flops_per_token[name] / 1e12
        row["mfu"] = row["tokens_per_s"] * flops_per_token[name] / peak if peak else None
    ref, engine = rows["reference"], rows["engine"]
    return {
        "device": device_name, "precision": precision,
        "teacher": f"shapes {shapes}" if shapes else config.teacher,
        "student": f"shapes {shapes}" if shapes else config.student,
        "teacher_params": teacher_params, "student_params": student_params,
        "batch": [config.batch_size, config.seq_len],
        "batch_note": (None if config.batch_size == asked_batch else f"batch {asked_batch} does not fit the reference "
                       f"loop's full logits on this device: both loops ran batch {config.batch_size}"),
        "engine_settings": {"precision": precision, "loss_chunk_tokens": config.loss_chunk_tokens,
                            "freeze_embeddings": config.freeze_embeddings, "freeze_layers": config.freeze_layers,
                            "teacher_cache": config.teacher_cache, "top_k": config.top_k,
                            "soft_targets": precomputed_targets(config) or "teacher forward pass at every step",
                            "gradient_checkpointing": config.gradient_checkpointing, "compile": config.compile},
        "rows": rows, "flops_per_token": flops_per_token,
        "reference_step_s": ref["step_s"], "engine_step_s": engine["step_s"],
        "reference_tokens_per_s": ref["tokens_per_s"], "engine_tokens_per_s": engine["tokens_per_s"],
        "speedup": ref["step_s"] / engine["step_s"],
        "reference_peak_mb": ref["peak_mb"], "engine_peak_mb": engine["peak_mb"],
        "memory_ratio": engine["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else float("nan"),
        "engine_mfu": engine["mfu"], "reference_mfu": ref["mfu"], "repeats": repeats,
        "compile": compile_payoff(rows, config.steps),
    }


def compile_payoff(rows: dict[str, dict[str, Any]], steps: int) -> dict[str, Any] | None:
    """What compiling costs (its warm-up over the plain engine's) and saves per step, the steps after which it
    has paid for itself, and whether a session of `steps` gets there (None without a compiled row)."""
    if "engine+compile" not in rows:
        return None
    compiled, plain = rows["engine+compile"], rows["engine"]
    cost = compiled["warmup_s"] - plain["warmup_s"]
    saving = plain["step_s"] - compiled["step_s"]
    break_even = cost / saving if saving > 0 else None
    return {"compile_s": round(cost, 2), "saving_per_step_s": round(saving, 4),
            "break_even_steps": math.ceil(break_even) if break_even is not None else None,
            "pays_within_session": break_even is not None and break_even < steps, "session_steps": steps}
