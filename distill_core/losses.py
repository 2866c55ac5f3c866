"""Distillation losses: one function per technique, each testable alone against a hand-computed value.

Shapes: logits are (batch, seq, vocab); `mask` is (batch, seq) with 1 where a position counts
(a real token whose next token is known) and 0 for padding. Losses are means over counted
positions, so padding never changes their value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits to fp32 (softmax over a 49k vocabulary needs it); fp64 stays fp64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (batch, seq) tensor over positions where mask is 1."""
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl")
"""Divergences between the softened teacher (p) and student (q) distributions."""


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension from log-probabilities; entries with p = 0 add 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def divergence(
    teacher_logp: torch.Tensor,
    student_logp: torch.Tensor,
    kind: str = "forward_kl",
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
    """Per-position divergence between teacher p and student q, from log-probabilities (..., n).

    - forward_kl: KL(p || q), mass-covering; the classic soft-target loss (Hinton et al. 2015).
    - reverse_kl: KL(q || p), mode-seeking (MiniLLM, Gu et al. 2024).
    - jsd: generalized Jensen-Shannon, beta KL(p || m) + (1 - beta) KL(q || m) with
      m = beta p + (1 - beta) q (GKD, Agarwal et al. 2024); beta = 0.5 is the usual JSD.
    - skew_kl: KL(p || alpha p + (1 - alpha) q) (DistiLLM, Ko et al. 2024); alpha = 0 is forward KL.
    """
    if kind == "forward_kl":
        return kl_divergence(teacher_logp, student_logp)
    if kind == "reverse_kl":
        return kl_divergence(student_logp, teacher_logp)
    if kind == "jsd":
        beta = float(jsd_beta)
        mixture = torch.logaddexp(teacher_logp + math.log(beta), student_logp + math.log1p(-beta))
        return beta * kl_divergence(teacher_logp, mixture) + (1 - beta) * kl_divergence(student_logp, mixture)
    if kind == "skew_kl":
        alpha = float(skew_alpha)
        if alpha == 0:
            return kl_divergence(teacher_logp, student_logp)
        mixture = torch.logaddexp(teacher_logp + math.log(alpha), student_logp + math.log1p(-alpha))
        return kl_divergence(teacher_logp, mixture)
    raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


@dataclass
class TopKTargets:
    """The teacher's softened distribution kept as its top-k tokens plus a tail bucket: what the
    teacher cache stores per position, enough for every top-k divergence without the teacher.

    indices: (..., k) token ids, most likely first; logp: (..., k) their log-probabilities at the
    temperature; tail: (..., 1) log of the remaining mass (-inf when k covers the vocabulary).
    """

    indices: torch.Tensor
    logp: torch.Tensor
    tail: torch.Tensor

    def buckets(self) -> torch.Tensor:
        """(..., k + 1) log-probabilities: the k tokens, then the tail bucket."""
        return torch.cat([self.logp, self.tail], -1)

    def truncate(self, k: int) -> "TopKTargets":
        """The top k of these (k < kept), the rest folded into the tail bucket; themselves when k is 0 or not less."""
        if k <= 0 or k >= self.indices.shape[-1]:
            return self
        tail = torch.logaddexp(self.tail, self.logp[..., k:].logsumexp(-1, keepdim=True))
        return TopKTargets(self.indices[..., :k], self.logp[..., :k], tail)

    def take(self, key: "torch.Tensor | slice") -> "TopKTargets":
        """The same targets at the positions `key` selects (a boolean mask over the leading
        dimensions, or a slice of the first)."""
        return TopKTargets(self.indices[key], self.logp[key], self.tail[key])


def teacher_topk(teacher_logp: torch.Tensor, k: int) -> TopKTargets:
    """Top-k of the teacher's log-probabilities (..., vocab) and the log-mass of the rest."""
    vocab = teacher_logp.shape[-1]
    k = min(int(k), vocab)
    top = teacher_logp.topk(k, dim=-1)  # (..., k)
    if k == vocab:
        tail = torch.full_like(top.values[..., :1], float("-inf"))
    else:
        in_top = torch.zeros_like(teacher_logp, dtype=torch.bool).scatter_(-1, top.indices, True)
        # log of the mass outside the top-k, as a log-sum-exp over the remaining tokens (stable)
        tail = teacher_logp.masked_fill(in_top, float("-inf")).logsumexp(-1, keepdim=True)
    return TopKTargets(top.indices, top.values, tail)


def student_buckets(student_logp: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The student's log-probabilities (..., vocab) gathered into the teacher's k tokens plus one
    tail bucket holding the student's mass outside them: (..., k + 1), sums to 1 in prob space."""
    top = student_logp.gather(-1, indices)
    if indices.shape[-1] == student_logp.shape[-1]:
        return torch.cat([top, torch.full_like(top[..., :1], float("-inf"))], -1)
    in_top = torch.zeros_like(student_logp, dtype=torch.bool).scatter_(-1, indices, True)
    tail = student_logp.masked_fill(in_top, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([top, tail], -1)


class _TopKLogProbs(torch.autograd.Function):
    """`student_buckets(log_softmax(logits), indices)` and, optionally, the log-probability of each row's
    label, in one pass over the vocabulary with the backward written out: with g the incoming gradient of
    the k + 1 buckets and G its sum (plus the labels' gradient), d/dz_v is g_v - q_v G for a top-k token
    and q_v (g_tail / q_tail - G) for the rest (plus the label's own term). Autograd through log_softmax,
    scatter, masked_fill and logsumexp makes six (vocab)-sized passes more per chunk: on a CPU step
    of the quickstart the loss took 0.5 s of its 2.4 s, now 0.14 s. The tail is summed from probabilities
    (no cancellation), so it matches the reference to float rounding."""

    @staticmethod
    def forward(ctx, logits, indices, labels):  # noqa: D401 - autograd API
        lse = logits.logsumexp(-1, keepdim=True)
        q = (logits - lse).exp_()  # (n, vocab), kept for backward with the top-k zeroed
        top = logits.gather(-1, indices) - lse
        q.scatter_(-1, indices, 0.0)
        tail = q.sum(-1, keepdim=True).log()
        label = (logits.gather(-1, labels[:, None]) - lse).squeeze(-1) if labels is not None else None
        ctx.save_for_backward(q, indices, top, tail, labels if labels is not None else indices[:, :0])
        ctx.has_labels = labels is not None
        return torch.cat([top, tail], -1), label

    @staticmethod
    def backward(ctx, grad_buckets, grad_label):
        q, indices, top, tail, labels = ctx.saved_tensors
        total = grad_buckets.sum(-1, keepdim=True)
        if ctx.has_labels and grad_label is not None:
            total = total + grad_label[:, None]
        g_tail = grad_buckets[:, -1:]
        # a tail of no mass has no gradient to pass (and 0/0 would be nan)
        per_tail = torch.where(tail > float("-inf"), g_tail * (-tail).exp(), torch.zeros_like(tail))
        grad = q * (per_tail - total)
        grad.scatter_(-1, indices, grad_buckets[:, :-1] - top.exp() * total)
        if ctx.has_labels and grad_label is not None:
            grad.scatter_add_(-1, labels[:, None], grad_label[:, None])
        return grad, None, None


def topk_log_probs(logits: torch.Tensor, indices: torch.Tensor,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The student's distribution in the teacher's k tokens plus one tail bucket, (..., k + 1) log-probabilities
    (`student_buckets` of its log_softmax), and the log-probability of `labels` (...,) when given (None
    otherwise), from logits (..., vocab) in at least fp32."""
    lead = logits.shape[:-1]
    if indices.shape[-1] >= logits.shape[-1]:  # k covers the vocabulary: no tail
        logp = F.log_softmax(logits, dim=-1)
        label = logp.gather(-1, labels[..., None]).squeeze(-1) if labels is not None else None
        return student_buckets(logp, indices), label
    flat_labels = labels.reshape(-1) if labels is not None else None
    buckets, label = _TopKLogProbs.apply(logits.reshape(-1, logits.shape[-1]), indices.reshape(-1, indices.shape[-1]),
                                         flat_labels)
    return buckets.view(*lead, -1), (label.view(lead) if label is not None else None)


def topk_buckets(teacher_logp: torch.Tensor, student_logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark knowledge restricted to the teacher's top-k: both distributions over k + 1 buckets,
    the teacher's k most likely tokens and one tail bucket holding the rest of each model's mass.

    Returns log-probabilities (..., k + 1) for teacher and student; each sums to 1 (in prob space).
    With k = vocab the tail is empty (log 0) and any divergence equals the full-vocabulary one.
    """
    targets = teacher_topk(teacher_logp, k)
    return targets.buckets(), student_buckets(student_logp, targets.indices)


def soft_target_per_position(
    student_logits: torch.Tensor,
    teacher_logits: "torch.Tensor | TopKTargets",
    temperature: float = 1.0,
    kind: str = "forward_kl",
    top_k: int = 0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
    """T^2 D(p_T, q_T) at every position (...,): the terms `soft_target_loss` averages."""
    t = float(temperature)
    if isinstance(teacher_logits, TopKTargets):  # from the teacher cache, already at temperature T
        student_logp = topk_log_probs(_upcast(student_logits) / t, teacher_logits.indices)[0]  # (..., k + 1)
        teacher_logp = teacher_logits.buckets().to(student_logp.dtype)
    else:
        # (..., vocab) log-probabilities at temperature T
        student_logp = F.log_softmax(_upcast(student_logits) / t, dim=-1)
        teacher_logp = F.log_softmax(_upcast(teacher_logits) / t, dim=-1)
        if top_k:
            teacher_logp, student_logp = topk_buckets(teacher_logp, student_logp, top_k)  # (..., k + 1)
    return divergence(teacher_logp, student_logp, kind, jsd_beta, skew_alpha) * (t * t)


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: "torch.Tensor | TopKTargets",
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    kind: str = "forward_kl",
    top_k: int = 0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
    """Soft-target distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
    Neural Network"): a divergence between the teacher's and the student's distributions softened
    at temperature T, multiplied by T^2 so that its gradients keep the same magnitude as the
    hard-label term's when T changes (the gradient of the softened KL scales as 1/T^2).

    With the default forward KL, per position: T^2 * sum_v p_T(v) (log p_T(v) - log q_T(v)),
    p_T = softmax(teacher / T). `top_k` > 0 compares only the teacher's top-k tokens plus one tail
    bucket (`topk_buckets`); `teacher_logits` may also be `TopKTargets` (the teacher cache's
    top-k at this temperature), which gives the same value as top_k = k on the live logits.
    Computed in at least fp32 whatever the logits' dtype.
    """
    per_position = soft_target_per_position(student_logits, teacher_logits, temperature, kind, top_k, jsd_beta,
                                            skew_alpha)  # (batch, seq)
    return _masked_mean(per_position, mask)


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 KL(p_T || q_T) over the full vocabulary: the classic soft-target loss."""
    return soft_target_loss(student_logits, teacher_logits, temperature, mask)


def hard_label_ce(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the student's (T = 1) prediction against the next token actually in the data."""
    per_position = F.cross_entropy(
        _upcast(student_logits).flatten(0, 1), labels.flatten(), reduction="none"
    ).view_as(labels)
    return _masked_mean(per_position, mask)


@dataclass
class LossTerms:
    """The total training loss and each term, for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: "torch.Tensor | TopKTargets", labels: torch.Tensor,
                      mask: torch.Tensor | None, temperature: float, kd_weight: float, divergence_kind: str = "forward_kl",
                      top_k: int = 0, jsd_beta: float = 0.5, skew_alpha: float = 0.1) -> LossTerms:
    """alpha * T^2 D(p_T, q_T) + (1 - alpha) * CE(labels, q_1): the mix of Hinton et al. 2015."""
    kd = soft_target_loss(student_logits, teacher_logits, temperature, mask, divergence_kind, top_k, jsd_beta, skew_alpha)
    ce = hard_label_ce(student_logits, labels, mask)
    total = kd_weight * kd + (1.0 - kd_weight) * ce
    return LossTerms(total, {"kd_loss": kd, "ce_loss": ce})


class OutputHead:
    """A model's output layer as (weight, bias): logits = hidden @ weight.T + bias. Only plain
    linear heads qualify (no logit soft-capping or scaling, which some architectures add). `rows`: only the
    first rows (the ids both output layers have, tokenizer_bridge's `shared_ids`); None: all of them."""

    def __init__(self, model: torch.nn.Module, rows: int | None = None):
        head = model.get_output_embeddings()
        self.weight = head.weight[:rows]
        self.bias = head.bias[:rows] if head.bias is not None else None

    @staticmethod
    def supported(model: torch.nn.Module) -> bool:
        config = model.config
        head = model.get_output_embeddings()
        return (isinstance(head, torch.nn.Linear)
                and not getattr(config, "final_logit_softcapping", None)
                and getattr(config, "logit_scale", None) in (None, 1, 1.0))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, self.bias)


class _ChunkedHeadLoss(torch.autograd.Function):
    """The loss of a linear output head, computed `chunk` positions at a time: each chunk's logits
    (chunk, vocab) are made, scored, differentiated and dropped before the next, so the (n, vocab)
    logits of the whole batch never exist (the idea of Liger-Kernel's fused linear losses, Hsu et
    al. 2024, written with torch autograd for any loss of the logits). The gradients of the hidden
    states and of the head are computed in the forward pass and scaled by the incoming gradient in
    backward, so nothing is recomputed.

    loss_of_logits(logits (m, vocab), start, end) -> (total, *terms): sums over the chunk's
    positions; the result is each summed over chunks and divided by n.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, loss_of_logits, chunk):  # noqa: D401 - autograd API
        n = hidden.shape[0]
        wants = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if wants[0] else None
        # the head's gradient is summed over chunks in at least fp32
        grad_weight = torch.zeros_like(weight, dtype=_at_least_fp32(weight.dtype)) if wants[1] else None
        grad_bias = torch.zeros_like(bias, dtype=_at_least_fp32(bias.dtype)) if wants[2] else None
        sums = None
        with torch.enable_grad():
            w = weight.detach().requires_grad_(wants[1])
            b = bias.detach().requires_grad_(wants[2]) if bias is not None else None
            for start in range(0, n, chunk):
                end = min(n, start + chunk)
                h = hidden[start:end].detach().requires_grad_(wants[0])
                results = loss_of_logits(F.linear(h, w, b), start, end)
                total = results[0] / n
                inputs = [x for x, want in ((h, wants[0]), (w, wants[1]), (b, wants[2])) if want]
                if inputs:
                    grads = iter(torch.autograd.grad(total, inputs))
                    if wants[0]:
                        grad_hidden[start:end] = next(grads)
                    if wants[1]:
                        grad_weight += next(grads)
                    if wants[2]:
                        grad_bias += next(grads)
                values = torch.stack([r.detach().to(_at_least_fp32(r.dtype)) for r in results])
                sums = values if sums is None else sums + values
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
        ctx.wants, ctx.dtypes = wants, (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        outputs = tuple(sums / n)
        ctx.mark_non_differentiable(*outputs[1:])
        return outputs

    @staticmethod
    def backward(ctx, grad_total, *_):
        saved = iter(ctx.saved_tensors)
        # each gradient in its input's dtype (the head's were summed in at least fp32)
        grads = [(next(saved) * grad_total).to(dtype) if want else None for want, dtype in zip(ctx.wants, ctx.dtypes)]
        return (*grads, None, None)


def chunked_distillation_loss(student_hidden: torch.Tensor, student_head: OutputHead,
                              teacher: "tuple[torch.Tensor, OutputHead] | TopKTargets", labels: torch.Tensor,
                              mask: torch.Tensor, temperature: float, kd_weight: float,
                              divergence_kind: str = "forward_kl", top_k: int = 0, jsd_beta: float = 0.5,
                              skew_alpha: float = 0.1, chunk_tokens: int = 1024) -> LossTerms:
    """`distillation_loss` from the models' last hidden states instead of their logits, over the
    counted positions `chunk_tokens` at a time (see `_ChunkedHeadLoss`): equal to it up to float
    rounding, at a peak memory of one chunk's logits instead of the batch's.

    student_hidden: (batch, seq, width) after the final norm; teacher: its last hidden states
    (batch, seq, teacher_width) with its head, or its cached top-k targets (batch, seq, k).
    """
    keep = mask.bool()  # (batch, seq)
    hidden = student_hidden[keep]  # (n, width)
    target = labels[keep]  # (n,)
    if isinstance(teacher, TopKTargets):
        cached = teacher.take(keep)
        teacher_logits_of = cached.take
    else:
        teacher_hidden, teacher_head = teacher[0][keep].detach(), teacher[1]

        def teacher_logits_of(rows: slice) -> torch.Tensor:
            with torch.no_grad():
                return teacher_head.logits(teacher_hidden[rows])

    t, alpha = float(temperature), float(kd_weight)

    def loss_of_logits(logits: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, ...]:
        rows = slice(start, end)
        targets = teacher_logits_of(rows)
        if isinstance(targets, TopKTargets) and t == 1.0:  # at T = 1 one pass over the vocabulary serves both terms
            buckets, label_logp = topk_log_probs(_upcast(logits), targets.indices, target[rows])
            kd = divergence(targets.buckets().to(buckets.dtype), buckets, divergence_kind, jsd_beta, skew_alpha).sum()
            ce = -label_logp.sum()
        else:
            kd = soft_target_per_position(logits, targets, t, divergence_kind, top_k, jsd_beta, skew_alpha).sum()
            ce = F.cross_entropy(_upcast(logits), target[rows], reduction="sum")
        return alpha * kd + (1.0 - alpha) * ce, kd, ce

    if hidden.shape[0] == 0:  # nothing counted: a zero loss that still reaches every parameter
        zero = student_hidden.sum() * 0.0
        return LossTerms(zero, {"kd_loss": zero.detach(), "ce_loss": zero.detach()})
    weight, bias = student_head.weight, student_head.bias
    total, kd, ce = _ChunkedHeadLoss.apply(hidden, weight, bias, loss_of_logits, max(1, int(chunk_tokens)))
    return LossTerms(total, {"kd_loss": kd, "ce_loss": ce})


ATTENTION_LOSSES = ("kl", "mse")


def attention_transfer_loss(
    student_maps: list[torch.Tensor],
    teacher_maps: list[torch.Tensor],
    kind: str = "kl",
    query_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention transfer for transformers (the attention-distribution loss of TinyBERT, Jiao et al.
    2020, and MiniLM, Wang et al. 2020): the student's attention maps match the teacher's on mapped
    layers. Maps are averaged over heads first, so teacher and student may have different head
    counts.

    student_maps[i]: (batch, student_heads, seq, seq); teacher_maps[i]: (batch, teacher_heads, seq, seq).
    kl: KL(teacher row || student row) summed over keys (each query row is a distribution);
    mse: mean squared difference over keys. Averaged over real query positions (query_mask (batch, seq))
    and over the pairs.
    """
    if not student_maps:
        raise ValueError("attention_transfer_loss needs at least one layer pair")
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    for s_map, t_map in zip(student_maps, teacher_maps):
        student_rows = _upcast(s_map).mean(1)  # (batch, seq, seq)
        teacher_rows = _upcast(t_map).mean(1)
        if kind == "kl":
            log_student = student_rows.clamp_min(1e-12).log()
            log_teacher = teacher_rows.clamp_min(1e-12).log()
            per_query = torch.where(teacher_rows > 0, teacher_rows * (log_teacher - log_student),
                                    torch.zeros_like(teacher_rows)).sum(-1)
        elif kind == "mse":
            per_query = (student_rows - teacher_rows).pow(2).mean(-1)
        else:
            raise ValueError(f"unknown attention loss {kind!r}; choose one of {', '.join(ATTENTION_LOSSES)}")
        total = total + _masked_mean(per_query, query_mask)
    return total / len(student_maps)


HIDDEN_LOSSES = ("mse", "cosine")


class FitNetsProjection(torch.nn.Module):
    """FitNets regressors (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"): one learned
    linear map per mapped layer pair, from the student's width to the teacher's, trained with the
    student. Initialised to the identity when the widths agree (a derived student starts with its
    copied layers' own states); it is part of the run, never of the exported student."""

    def __init__(self, n_pairs: int, student_width: int, teacher_width: int):
        super().__init__()
        self.maps = torch.nn.ModuleList(
            torch.nn.Linear(student_width, teacher_width, bias=False) for _ in range(n_pairs)
        )
        if student_width == teacher_width:
            for linear in self.maps:
                torch.nn.init.eye_(linear.weight)

    def forward(self, index: int, student_hidden: torch.Tensor) -> torch.Tensor:
        return self.maps[index](student_hidden)


def fitnets_loss(
    student_hidden: list[torch.Tensor],
    teacher_hidden: list[torch.Tensor],
    projection: FitNetsProjection,
    kind: str = "mse",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hint loss between mapped hidden states, averaged over the pairs.

    student_hidden[i]: (batch, seq, student_width); teacher_hidden[i]: (batch, seq, teacher_width).
    mse: mean squared error per position (over the teacher's width); cosine: 1 - cosine similarity.
    Padding positions are masked.
    """
    if not student_hidden:
        raise ValueError("fitnets_loss needs at least one layer pair")
    total = student_hidden[0].new_zeros(())
    for index, (s_h, t_h) in enumerate(zip(student_hidden, teacher_hidden)):
        projected = projection(index, _upcast(s_h))  # (batch, seq, teacher_width)
        target = _upcast(t_h)
        if kind == "mse":
            per_position = (projected - target).pow(2).mean(-1)
        elif kind == "cosine":
            per_position = 1.0 - F.cosine_similarity(projected, target, dim=-1)
        else:
            raise ValueError(f"unknown hidden loss {kind!r}; choose one of {', '.join(HIDDEN_LOSSES)}")
        total = total + _masked_mean(per_position, mask)
    return total / len(student_hidden)


def shared_rows(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two log-distributions (..., vocab) over output layers of different widths but the same tokens at the
    ids both have (tokenizer_bridge's `shared_ids`): both cut to those ids and renormalised over them; the same
    tensors when the widths agree."""
    if teacher_logp.shape[-1] == student_logp.shape[-1]:
        return teacher_logp, student_logp
    rows = min(teacher_logp.shape[-1], student_logp.shape[-1])
    return teacher_logp[..., :rows].log_softmax(-1), student_logp[..., :rows].log_softmax(-1)


def shift_for_next_token(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token labels and the mask of positions that have one.

    Position i predicts token i+1; the last position and padded positions do not count.
    Returns labels (batch, seq) and mask (batch, seq).
    """
    labels = torch.zeros_like(input_ids)
    labels[:, :-1] = input_ids[:, 1:]
    mask = torch.zeros_like(attention_mask)
    mask[:, :-1] = attention_mask[:, :-1] * attention_mask[:, 1:]
    return labels, mask


@torch.no_grad()
def next_token_nll(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[float, int]:
    """The summed next-token cross-entropy of `model` on one batch, and the number of positions counted (to
    average over batches): what a perplexity is computed from."""
    labels, mask = shift_for_next_token(input_ids, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    return float((nll * mask).sum()), int(mask.sum())
