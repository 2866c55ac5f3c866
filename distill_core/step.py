"""One distillation step, readable top to bottom (`DistillStep.__call__`): the teacher's targets, the
student's outputs, the loss terms, then the update. Also what a session sets up once for all its steps:
which student parameters train (`prepare_student`) and, for a student whose first layers are frozen
copies of the teacher's, the shared prefix (`SharedPrefix`).

Shapes: b sequences of t tokens; vocab the vocabulary; width a model's hidden size.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from distill_core.attention import attention_maps_from
from distill_core.config import DistillConfig
from distill_core.data import Blocks
from distill_core.device import autocast, autocast_dtype, needs_grad_scaler
from distill_core.distributed import all_processes
from distill_core.errors import DistillError
from distill_core.losses import (FitNetsProjection, OutputHead, TopKTargets, attention_transfer_loss,
                                 chunked_distillation_loss, distillation_loss, fitnets_loss, shift_for_next_token)
from distill_core.models import LoadedModel, compile_layers, decoder_layers


def frozen_parameters(model: Any, config: DistillConfig) -> set[int]:
    """ids of the parameters a session with `config` keeps fixed: with freeze_embeddings the
    (teacher-copied) input embeddings and output layer (tied in SmolLM2: one 49152 x 576 matrix),
    and every parameter of the first `freeze_layers` decoder layers."""
    frozen = set()
    if config.freeze_embeddings:
        frozen |= {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    for layer in list(decoder_layers(model))[: config.freeze_layers]:
        frozen |= {id(p) for p in layer.parameters()}
    return frozen


def prepare_student(student: LoadedModel, config: DistillConfig) -> list[torch.nn.Parameter]:
    """Set which parameters train (all but `frozen_parameters`), switch on activation checkpointing and
    compilation when asked, and return the trainable parameters."""
    model = student.model
    model.train()
    layers = decoder_layers(model)
    if config.freeze_layers >= len(layers):
        raise DistillError(f"freeze_layers={config.freeze_layers} would freeze all {len(layers)} student layers")
    frozen = frozen_parameters(model, config)
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if config.compile:
        compile_layers(model)
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(trainable: list[torch.nn.Parameter], config: DistillConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with torch's fused kernel where it has one."""
    return torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay,
                             fused=fused_adamw(device))


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW's fused kernel serves `device`. On the CPU it takes a 70 M-parameter update from
    0.116 s to 0.045 s (2 cores), the same arithmetic in one pass instead of a loop of small ops."""
    return device.type in ("cuda", "cpu")


SHARED_PREFIX_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-3}
"""Relative tolerance of the shared-prefix check by the teacher's dtype (both paths computed in it)."""


class SharedPrefix:
    """Exact compute sharing for a `layers:` student whose first K layers are frozen copies of the
    teacher's first K layers (and whose embeddings are frozen copies too): its hidden state after K
    layers *is* the teacher's hidden_states[K], so each step runs only the student's upper layers
    on it. Enabled only after a check that both paths give the same logits."""

    def __init__(self, student: LoadedModel, k: int):
        self.model, self.k = student.model, k
        self.residual_dtype = next(student.model.parameters()).dtype  # the student's master weights' dtype
        layers = decoder_layers(self.model)
        self.parent, self.attr = next(
            (module, name) for module in self.model.modules() for name, child in module.named_children() if child is layers
        )

    @classmethod
    def create(cls, teacher: LoadedModel, student: LoadedModel, config: DistillConfig, probe: Blocks) -> "SharedPrefix | None":
        k = config.freeze_layers
        kept = student.layers_kept
        if not (k and config.freeze_embeddings and kept and kept[:k] == list(range(k))):
            return None
        prefix = cls(student, k)
        # The check runs in the teacher's dtype: a teacher held in bf16 (on a GPU) hands over states rounded to
        # bf16, which an fp32 student's own prefix never equals to fp32 precision; a bf16 twin of the student
        # does, exactly, when its first K layers are the teacher's.
        dtype = next(teacher.model.parameters()).dtype
        twin = prefix if dtype == prefix.residual_dtype else cls(
            LoadedModel(copy.deepcopy(student.model).to(dtype), None, student.spec, student.source, kept), k)
        device = student.model.device
        ids, attn = probe.input_ids[:1].to(device), probe.attention_mask[:1].to(device)
        with torch.no_grad():
            hidden = teacher.model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[k]
            full = twin.model(input_ids=ids, attention_mask=attn).logits.float()
            shared = twin.upper(hidden, attn).float()
        tolerance = SHARED_PREFIX_TOLERANCE.get(dtype, 1e-4)
        atol = 1e-4 if dtype == torch.float32 else tolerance * float(full.abs().max())
        return prefix if torch.allclose(full, shared, atol=atol, rtol=tolerance) else None

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, final_hidden: bool = False) -> torch.Tensor:
        """From the hidden state (b, t, width) entering the student's layer K: its logits (b, t, vocab), or
        with `final_hidden` its last hidden states (b, t, width) before the output layer."""
        layers = getattr(self.parent, self.attr)
        config = self.model.config
        n = config.num_hidden_layers
        setattr(self.parent, self.attr, torch.nn.ModuleList(list(layers)[self.k :]))
        config.num_hidden_layers = n - self.k
        model = self.model.base_model if final_hidden else self.model
        try:
            out = model(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False)
        finally:
            setattr(self.parent, self.attr, layers)
            config.num_hidden_layers = n
        return out.last_hidden_state if final_hidden else out.logits


@dataclass
class TeacherTargets:
    """What the student is trained toward on one batch."""

    distribution: Any
    """The teacher's next-token distribution: its logits (b, t, vocab); or its last hidden states (b, t,
    width) with its output layer, for the chunked loss; or its cached top-k (`TopKTargets`)."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    """Every layer's output, (b, t, width) each (FitNets, the shared prefix)."""
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)
    """Mapped teacher layer -> its attention maps (b, heads, t, t) (attention transfer)."""


@dataclass
class StudentOutputs:
    final: torch.Tensor
    """Logits (b, t, vocab), or last hidden states (b, t, width) for the chunked loss."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)


def _maps_if(enabled: bool, model: Any, layers: list[int]) -> Any:
    """attention_maps_from(model, layers) when attention transfer is on, else nothing."""
    return attention_maps_from(model, layers) if enabled else contextlib.nullcontext()


def uses_chunked_loss(config: DistillConfig, teacher: LoadedModel | None, student: LoadedModel,
                      cached_targets: bool) -> bool:
    """Whether the step scores chunk by chunk from hidden states (both output layers plain linear)."""
    return (config.loss_chunk_tokens > 0 and OutputHead.supported(student.model)
            and (cached_targets or OutputHead.supported(teacher.model)))


class DistillStep:
    """One optimizer step of distillation with a session's settings: `step(batch)` returns the loss terms
    (floats), or None, with no update, when the loss or the gradient is not finite.

    `student_forward` is the module the student's forward goes through (the DDP wrapper under accelerate
    launch; default the student itself); `after_backward()`, when given, runs right after backward
    (averages the gradients DDP does not see)."""

    def __init__(self, config: DistillConfig, teacher: LoadedModel | None, student: LoadedModel,
                 optimizer: torch.optim.Optimizer, *, layer_pairs: list[tuple[int, int]] | None = None,
                 projection: FitNetsProjection | None = None, shared_prefix: SharedPrefix | None = None,
                 student_forward: torch.nn.Module | None = None, after_backward: Callable[[], None] | None = None):
        self.config, self.teacher, self.student, self.optimizer = config, teacher, student, optimizer
        self.pairs, self.projection, self.shared_prefix = layer_pairs or [], projection, shared_prefix
        self.student_forward, self.after_backward = student_forward, after_backward
        self.device = next(student.model.parameters()).device
        self.dtype = autocast_dtype(config, self.device)
        self.attention = config.attention_weight > 0
        self.vocab_rows: int | None = None  # tokenizer_bridge's shared_ids: distil over the first rows only
        # fp16 (GPUs without native bf16): the loss is scaled for backward so small gradients do not underflow
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_grad_scaler(self.dtype) else None

    def __call__(self, batch: Blocks, cached: TopKTargets | None = None,
                 continuation: torch.Tensor | None = None) -> dict[str, float] | None:
        """One step on `batch`; `cached`: the teacher's top-k instead of its forward pass. `continuation` (b, t)
        makes it an on-policy step: 1 at the positions whose next token the student wrote (its rollout), which
        alone count, scored by `on_policy_divergence` without hard labels (GKD, Agarwal et al. 2024)."""
        input_ids = batch.input_ids.to(self.device)  # (b, t)
        attention_mask = batch.attention_mask.to(self.device)  # (b, t)
        labels, mask = shift_for_next_token(input_ids, attention_mask)  # next tokens, positions that count
        if continuation is not None:  # the prompt's positions and the padding do not count
            mask = mask * continuation.to(self.device, mask.dtype)
        # under DDP the student's forward must go through its wrapper, which returns full logits
        chunked = self.student_forward is None and uses_chunked_loss(self.config, self.teacher, self.student,
                                                                     cached is not None)
        with autocast(self.device, self.dtype):
            teacher = self.teacher_targets(input_ids, attention_mask, cached, chunked)  # 1. what to learn
            student = self.student_outputs(input_ids, attention_mask, teacher, chunked)  # 2. what it says
            total, terms = self.loss_terms(teacher, student, labels, mask, attention_mask, chunked,
                                           on_policy=continuation is not None)  # 3. how far
        return self.update(total, terms)

    def teacher_targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cached: TopKTargets | None,
                        chunked: bool) -> TeacherTargets:
        """The teacher's forward pass without gradients, or its cached top-k (no teacher at all)."""
        if cached is not None:
            return TeacherTargets(cached)
        model = self.teacher.model
        want_hidden = self.projection is not None or self.shared_prefix is not None
        layers = sorted({t for _, t in self.pairs})
        with torch.inference_mode(not (want_hidden or self.attention)), torch.no_grad(), \
                _maps_if(self.attention, model, layers):
            out = (model.base_model if chunked else model)(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden,
                output_attentions=self.attention, use_cache=False)
        distribution = ((out.last_hidden_state, OutputHead(model, self.vocab_rows)) if chunked
                        else out.logits[..., :self.vocab_rows])
        return TeacherTargets(distribution, out.hidden_states, dict(zip(layers, out.attentions or ())))

    def student_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, teacher: TeacherTargets,
                        chunked: bool) -> StudentOutputs:
        """The student's forward pass (its upper layers only, on the teacher's states, with a shared prefix)."""
        if self.shared_prefix is not None:
            entering = teacher.hidden_states[self.shared_prefix.k]  # (b, t, width) entering layer K
            # in the student's own residual dtype (a bf16 teacher's states join fp32 master weights)
            entering = entering.to(self.shared_prefix.residual_dtype)
            return StudentOutputs(self.shared_prefix.upper(entering, attention_mask, chunked))
        want_hidden = self.projection is not None
        layers = sorted({s for s, _ in self.pairs})
        model = self.student.model.base_model if chunked else (self.student_forward or self.student.model)
        with _maps_if(self.attention, self.student.model, layers):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden,
                        output_attentions=self.attention, use_cache=False)
        final = out.last_hidden_state if chunked else out.logits[..., :self.vocab_rows]
        return StudentOutputs(final, out.hidden_states, dict(zip(layers, out.attentions or ())))

    def loss_terms(self, teacher: TeacherTargets, student: StudentOutputs, labels: torch.Tensor, mask: torch.Tensor,
                   attention_mask: torch.Tensor, chunked: bool, on_policy: bool = False
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """alpha * soft targets + (1 - alpha) * hard labels, plus the weighted layer-wise terms. On an on-policy
        batch the soft-target term alone (alpha 1), with `on_policy_divergence`: its labels are the student's own
        samples, and cross-entropy on them would teach the student its own mistakes."""
        c = self.config
        kind, alpha = (c.on_policy_divergence, 1.0) if on_policy else (c.divergence, c.kd_weight)
        if chunked:
            loss = chunked_distillation_loss(student.final, OutputHead(self.student.model, self.vocab_rows),
                                             teacher.distribution, labels, mask, c.temperature, alpha, kind, c.top_k,
                                             c.jsd_beta, c.skew_alpha, c.loss_chunk_tokens)
        else:
            loss = distillation_loss(student.final, teacher.distribution, labels, mask, c.temperature, alpha,
                                     kind, c.top_k, c.jsd_beta, c.skew_alpha)
        total, terms = loss.total, dict(loss.terms)
        if on_policy:  # its own term in the logs (another divergence, on other text); no hard labels
            terms = {"on_policy_kd_loss": terms["kd_loss"]}
        if self.projection is not None:  # FitNets: hidden_states[i + 1] is the output of layer i
            hint = fitnets_loss([student.hidden_states[s + 1] for s, _ in self.pairs],
                                [teacher.hidden_states[t + 1] for _, t in self.pairs],
                                self.projection, c.hidden_loss, mask)
            total, terms["fitnets_loss"] = total + c.hidden_weight * hint, hint
        if self.attention:
            transfer = attention_transfer_loss([student.attentions[s] for s, _ in self.pairs],
                                               [teacher.attentions[t] for _, t in self.pairs],
                                               c.attention_loss, attention_mask)
            total, terms["attention_loss"] = total + c.attention_weight * transfer, transfer
        return total, terms

    def update(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """Backward, clip the global gradient norm, AdamW step; nothing when the loss or gradient is not finite
        (with fp16's gradient scaler an overflowing gradient skips the update and lowers the scale instead:
        the session goes on)."""
        optimizer, scaler = self.optimizer, self.scaler
        if not all_processes(torch.isfinite(total)):  # under DDP: skipped in every process or in none
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(total) if scaler is not None else total).backward()
        if self.after_backward is not None:
            self.after_backward()
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the gradients overflowed
            scaler.update()
        elif not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            return None
        else:
            optimizer.step()
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}, "grad_norm": grad_norm.item()}
