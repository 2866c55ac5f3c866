"""Distillation losses: one function per technique, each testable alone against a hand-computed value.

Shapes: logits are (batch, seq, vocab); `mask` is (batch, seq) with 1 where a position counts
(a real token whose next token is known) and 0 for padding. Losses are means over counted
positions, so padding never changes their value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits to fp32 (softmax over a 49k vocabulary needs it); fp64 stays fp64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (batch, seq) tensor over positions where mask is 1."""
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-target distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
    Neural Network"): KL(p_T || q_T) between the teacher's and the student's distributions softened
    at temperature T, multiplied by T^2 so that its gradients keep the same magnitude as the
    hard-label term's when T changes (the gradient of the softened KL scales as 1/T^2).

    Per position: T^2 * sum_v p_T(v) (log p_T(v) - log q_T(v)), p_T = softmax(teacher / T).
    Computed in at least fp32 whatever the logits' dtype.
    """
    t = float(temperature)
    # (batch, seq, vocab) log-probabilities at temperature T
    student_logp = F.log_softmax(_upcast(student_logits) / t, dim=-1)
    teacher_logp = F.log_softmax(_upcast(teacher_logits) / t, dim=-1)
    # (batch, seq): KL per position; teacher probabilities that are exactly 0 contribute 0.
    per_position = F.kl_div(student_logp, teacher_logp, log_target=True, reduction="none").sum(-1)
    return _masked_mean(per_position, mask) * (t * t)


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


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    temperature: float,
    kd_weight: float,
) -> LossTerms:
    """alpha * T^2 KL(p_T || q_T) + (1 - alpha) * CE(labels, q_1): the mix of Hinton et al. 2015."""
    kd = soft_target_kl(student_logits, teacher_logits, temperature, mask)
    ce = hard_label_ce(student_logits, labels, mask)
    total = kd_weight * kd + (1.0 - kd_weight) * ce
    return LossTerms(total, {"kd_loss": kd, "ce_loss": ce})


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
