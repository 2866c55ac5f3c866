"""Soft targets across tokenizers: the teacher's and the student's next-token distributions live over
different vocabularies and different positions of the same text, so the ordinary KL does not apply. Two ways
across, each testable alone against a hand-computed value:

- `uld_loss`: Universal Logit Distillation (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the
  Universal Logit Distillation Loss for LLMs"). At the i-th position of each sequence, sort both
  distributions' probabilities in decreasing order, pad the shorter vocabulary with zeros and sum the absolute
  differences: a Wasserstein distance that needs no mapping between the vocabularies. Positions are aligned by
  their index, whatever text they cover.
- `span_aligned_loss`: in the manner of GOLD (TRL's GOLDTrainer, its extended ULD) and MinED (Wan et al. 2024):
  tokens are grouped by the bytes they cover (alignment.align_groups). For each group, each model's
  distribution over "what comes next" at the group's start, with the group's own text as one outcome (its
  first token's probability times the probabilities of the rest of the group's tokens: GOLD's merged
  probability) and every other token as the others. Tokens the two vocabularies share (alignment.
  vocabulary_match) are compared directly with the session's divergence (forward KL at T, times T^2); the
  rest by ULD's sorted distance. With one tokenizer on both sides every group is one token, every token is
  shared, and the loss is the ordinary soft-target loss.

Shapes: logits (b, t, vocab) of each model over its own tokens; masks (b, t) of positions that predict a real
next token; G aligned groups over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill_core.losses import divergence

LOG_ZERO = -1e4
"""A log-probability that stands for zero (exp underflows to 0 in fp32) but keeps gradients finite where a
true -inf would give 0 * inf = NaN."""


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ULD's distance between probability vectors p (..., n) and q (..., m): both sorted in decreasing order,
    the shorter padded with zeros, then sum_i |p_(i) - q_(i)| over the last dimension -> (...,).

    Past the shorter vector's m entries the longer one's values face zeros, so only its m largest need sorting
    (a top-m, not a sort of the whole vocabulary): sum_(i<m) |p_(i) - q_(i)| + (sum p - sum_(i<m) p_(i))."""
    if p.shape[-1] < q.shape[-1]:
        p, q = q, p
    m = q.shape[-1]
    top = p.topk(m, -1).values  # sorted, largest first
    q = q.sort(-1, descending=True).values
    return (top - q).abs().sum(-1) + (p.sum(-1) - top.sum(-1)).clamp_min(0)


def position_pairs(student_mask: torch.Tensor, teacher_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """ULD's alignment by position: in each sequence the i-th counted student position with the i-th counted
    teacher position, for i below the smaller count. Returns (rows, student positions, teacher positions)."""
    rows, s_pos, t_pos = [], [], []
    for row in range(student_mask.shape[0]):
        s = student_mask[row].nonzero().flatten()
        t = teacher_mask[row].nonzero().flatten()
        n = min(s.numel(), t.numel())
        rows.append(torch.full((n,), row, dtype=torch.long))
        s_pos.append(s[:n].cpu())
        t_pos.append(t[:n].cpu())
    return torch.cat(rows), torch.cat(s_pos), torch.cat(t_pos)


def uld_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_mask: torch.Tensor,
             teacher_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Universal Logit Distillation: the mean over position-aligned pairs of `sorted_l1` between the student's
    and the teacher's next-token probabilities at temperature T (the paper uses T = 1). No T^2: the distance
    is between probabilities, bounded by 2."""
    rows, s_pos, t_pos = position_pairs(student_mask, teacher_mask)
    if rows.numel() == 0:
        return student_logits.sum() * 0.0
    t = float(temperature)
    device = student_logits.device
    student_p = F.softmax(student_logits[rows.to(device), s_pos.to(device)].float() / t, -1)  # (n, Vs)
    teacher_p = F.softmax(teacher_logits[rows.to(device), t_pos.to(device)].float() / t, -1)  # (n, Vt)
    return sorted_l1(student_p, teacher_p).mean()


@dataclass
class AlignedSpans:
    """The groups of one batch that both models predict (each side's first token has a position before it):
    the batch row, and per side the group's first and last token (inclusive). Tensors of shape (G,)."""

    row: torch.Tensor
    teacher_first: torch.Tensor
    teacher_last: torch.Tensor
    student_first: torch.Tensor
    student_last: torch.Tensor

    def __len__(self) -> int:
        return int(self.row.numel())

    def to(self, device: torch.device) -> "AlignedSpans":
        return AlignedSpans(*(getattr(self, name).to(device) for name in
                              ("row", "teacher_first", "teacher_last", "student_first", "student_last")))


@dataclass
class SharedTokens:
    """The exact-match mapping as the loss uses it: matched ids of each side (the i-th with the i-th), and
    id -> index in the match (-1 when unmatched) over each output layer's width."""

    teacher_ids: torch.Tensor
    student_ids: torch.Tensor
    teacher_position: torch.Tensor
    student_position: torch.Tensor

    def to(self, device: torch.device) -> "SharedTokens":
        return SharedTokens(self.teacher_ids.to(device), self.student_ids.to(device),
                            self.teacher_position.to(device), self.student_position.to(device))


def group_distribution(logits: torch.Tensor, input_ids: torch.Tensor, row: torch.Tensor, first: torch.Tensor,
                       last: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One model's view of each group: its log-distribution (G, vocab) at the position before the group, and
    log c (G,), the log-probability of the rest of the group's tokens given its first (0 for a one-token group):
    sum over positions first..last-1 of log p(next token), from a cumulative sum over the sequence."""
    logits = logits.float() / float(temperature)
    next_logp = logits[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1) - logits[:, :-1].logsumexp(-1)  # (b, t-1)
    cumulative = F.pad(next_logp.cumsum(-1), (1, 0))  # (b, t): sum of next_logp before each position
    log_c = cumulative[row, last] - cumulative[row, first]
    return F.log_softmax(logits[row, first - 1], -1), log_c


def _side(logp: torch.Tensor, first_ids: torch.Tensor, log_c: torch.Tensor, shared_ids: torch.Tensor,
          excluded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One side's buckets for G groups: (kept (G, 1 + M) log-probabilities renormalised: the group's own text,
    then each shared token not excluded; rest (G, vocab + 1) probabilities of everything else, the last entry the
    mass of "the group's first token, then something other than the group")."""
    first_logp = logp.gather(-1, first_ids[:, None])  # (G, 1)
    event = first_logp + log_c[:, None]  # the group's text: GOLD's merged probability
    kept = torch.cat([event, logp[:, shared_ids].masked_fill(excluded, LOG_ZERO)], -1)  # (G, 1 + M)
    kept = kept - kept.logsumexp(-1, keepdim=True)
    in_rest = torch.ones_like(logp, dtype=torch.bool)
    in_rest[:, shared_ids] = excluded
    in_rest.scatter_(-1, first_ids[:, None], False)
    # log(1 - c), kept finite: where c is 1 (a one-token group) the bucket is empty
    strict = log_c < -1e-7
    diverged = torch.where(strict, torch.log(-torch.expm1(torch.where(strict, log_c, torch.full_like(log_c, -1.0)))),
                           torch.full_like(log_c, LOG_ZERO))
    rest = torch.cat([logp.exp().masked_fill(~in_rest, 0.0), (first_logp.squeeze(-1) + diverged).exp()[:, None]], -1)
    return kept, rest


def _excluded(shared: SharedTokens, teacher_first: torch.Tensor, student_first: torch.Tensor) -> torch.Tensor:
    """(G, M): the shared tokens each group's first tokens are (on either side), left out of the direct
    comparison on both sides (on its own side such a token is the group's text; on the other, an alternative)."""
    excluded = torch.zeros(teacher_first.numel(), shared.teacher_ids.numel(), dtype=torch.bool,
                           device=teacher_first.device)
    rows = torch.arange(teacher_first.numel(), device=teacher_first.device)
    for position in (shared.teacher_position[teacher_first], shared.student_position[student_first]):
        hit = position >= 0
        excluded[rows[hit], position[hit]] = True
    return excluded


@dataclass
class SpanTerms:
    """Per aligned group (G,): the direct term (the divergence over the group's text and the shared tokens, times
    T^2), ULD's sorted distance over the rest, and each model's most likely next token."""

    direct: torch.Tensor
    rest: torch.Tensor
    teacher_top: torch.Tensor
    student_top: torch.Tensor


def span_aligned_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_ids: torch.Tensor,
                       teacher_ids: torch.Tensor, spans: AlignedSpans, shared: SharedTokens, temperature: float = 1.0,
                       kind: str = "forward_kl", jsd_beta: float = 0.5, skew_alpha: float = 0.1) -> SpanTerms:
    """The terms of `span_aligned_loss`, group by group (the evaluation reads the direct term at T = 1 as the
    KL to the teacher across tokenizers, and the top tokens for agreement)."""
    device = student_logits.device
    spans, shared = spans.to(device), shared.to(device)
    t_first_ids = teacher_ids[spans.row, spans.teacher_first]
    s_first_ids = student_ids[spans.row, spans.student_first]
    excluded = _excluded(shared, t_first_ids, s_first_ids)
    with torch.no_grad():
        t_logp, t_log_c = group_distribution(teacher_logits, teacher_ids, spans.row, spans.teacher_first,
                                             spans.teacher_last, temperature)
        t_kept, t_rest = _side(t_logp, t_first_ids, t_log_c, shared.teacher_ids, excluded)
    s_logp, s_log_c = group_distribution(student_logits, student_ids, spans.row, spans.student_first,
                                         spans.student_last, temperature)
    s_kept, s_rest = _side(s_logp, s_first_ids, s_log_c, shared.student_ids, excluded)
    t = float(temperature)
    direct = divergence(t_kept, s_kept, kind, jsd_beta, skew_alpha) * (t * t)  # (G,)
    return SpanTerms(direct, sorted_l1(t_rest, s_rest), t_logp.argmax(-1), s_logp.detach().argmax(-1))


def span_aligned_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_ids: torch.Tensor,
                      teacher_ids: torch.Tensor, spans: AlignedSpans, shared: SharedTokens, temperature: float = 1.0,
                      kind: str = "forward_kl", jsd_beta: float = 0.5, skew_alpha: float = 0.1) -> torch.Tensor:
    """Span-aligned distillation, the mean over the aligned groups of
    T^2 D(teacher, student over the group's text and the shared tokens) + sorted_l1(the rest of each).
    D is the session's divergence (forward KL by default); both sides are renormalised over the shared buckets,
    and the mass outside them is compared by ULD's sorted distance."""
    if len(spans) == 0:
        return student_logits.sum() * 0.0
    terms = span_aligned_terms(student_logits, teacher_logits, student_ids, teacher_ids, spans, shared, temperature,
                               kind, jsd_beta, skew_alpha)
    return (terms.direct + terms.rest).mean()


def top1_agrees(terms: SpanTerms, shared: SharedTokens) -> torch.Tensor:
    """(G,) bool: the two models' most likely next tokens stand for the same bytes (a shared pair)."""
    shared = shared.to(terms.teacher_top.device)
    position = shared.teacher_position[terms.teacher_top]
    mapped = shared.student_ids[position.clamp_min(0)]
    return (position >= 0) & (mapped == terms.student_top)


def shared_tokens(teacher_ids: torch.Tensor, student_ids: torch.Tensor, teacher_width: int,
                  student_width: int) -> SharedTokens:
    """`SharedTokens` from matched id lists (alignment.VocabularyMatch's) and the two output widths."""
    tables = []
    for ids, width in ((teacher_ids, teacher_width), (student_ids, student_width)):
        table = torch.full((width,), -1, dtype=torch.long)
        keep = ids < width
        table[ids[keep]] = torch.arange(ids.numel())[keep]
        tables.append(table)
    keep = (teacher_ids < teacher_width) & (student_ids < student_width)
    return SharedTokens(teacher_ids, student_ids, *tables) if bool(keep.all()) else shared_tokens(
        teacher_ids[keep], student_ids[keep], teacher_width, student_width)

