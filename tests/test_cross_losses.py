"""Soft targets across tokenizers, each against a value computed by hand: ULD's sorted distance, and the
span-aligned loss (one merged span by hand; equal to the ordinary soft-target loss when both sides read the same
tokens)."""

import math

import pytest
import torch

from distill_core.cross_losses import (AlignedSpans, shared_tokens, sorted_l1, span_aligned_loss, span_aligned_terms,
                                       top1_agrees, uld_loss)
from distill_core.losses import DIVERGENCES, shift_for_next_token, soft_target_loss


def softmax(xs: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_sorted_l1_by_hand():
    p = torch.tensor([0.1, 0.7, 0.2])
    q = torch.tensor([0.5, 0.5])
    # sorted: 0.7 0.2 0.1 against 0.5 0.5 0 -> 0.2 + 0.3 + 0.1
    assert sorted_l1(p, q).item() == pytest.approx(0.6)
    assert sorted_l1(q, p).item() == pytest.approx(0.6)
    assert sorted_l1(p, p[[2, 0, 1]]).item() == pytest.approx(0.0)  # only the sorted values count


def test_uld_by_hand_positions_aligned_by_index():
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])  # 3 positions over 2 ids
    teacher = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [9.0, 0.0, 0.0]]])
    student_mask = torch.tensor([[1, 1, 0]])  # two counted positions
    teacher_mask = torch.tensor([[1, 1, 1, 0]])  # three: only the first two are paired
    expected = []
    for s, t in ((student[0, 0], teacher[0, 0]), (student[0, 1], teacher[0, 1])):
        ps = sorted(softmax(s.tolist(), 2.0), reverse=True) + [0.0]
        pt = sorted(softmax(t.tolist(), 2.0), reverse=True)
        expected.append(sum(abs(a - b) for a, b in zip(ps, pt)))
    got = uld_loss(student, teacher, student_mask, teacher_mask, temperature=2.0)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_span_aligned_loss_by_hand_on_a_merged_span():
    """Teacher ids {0: 'x', 1: 'y', 2: 'xy'}-like, student ids {0: 'x', 1: 'y', 2: 'z'}; shared: 0~0, 1~1. The
    teacher reads one token (id 2) where the student reads two (1, 1): one group, predicted from position 0."""
    teacher_logits = torch.tensor([[[0.5, -1.0, 1.5], [0.0, 0.0, 0.0]]])
    student_logits = torch.tensor([[[0.2, 1.0, -0.5], [0.3, 0.9, -1.2], [0.0, 0.0, 0.0]]])
    teacher_ids, student_ids = torch.tensor([[0, 2]]), torch.tensor([[0, 1, 1]])
    spans = AlignedSpans(torch.tensor([0]), torch.tensor([1]), torch.tensor([1]), torch.tensor([1]), torch.tensor([2]))
    shared = shared_tokens(torch.tensor([0, 1]), torch.tensor([0, 1]), 3, 3)
    got = span_aligned_loss(student_logits, teacher_logits, student_ids, teacher_ids, spans, shared)
    p = softmax([0.5, -1.0, 1.5])
    q = softmax([0.2, 1.0, -0.5])
    c = softmax([0.3, 0.9, -1.2])[1]  # the student's second token of the span, given its first
    # direct: the span's text (teacher: its token 2; student: token 1 then 1) and shared token 0; shared token 1 is
    # the student's first token, so it leaves the direct comparison on both sides
    kept_t = [p[2], p[0]]
    kept_s = [q[1] * c, q[0]]
    kept_t = [v / sum(kept_t) for v in kept_t]
    kept_s = [v / sum(kept_s) for v in kept_s]
    direct = sum(a * math.log(a / b) for a, b in zip(kept_t, kept_s))
    # the rest: teacher's token 1; student's token 2 and "1 then not 1"
    rest_t = [p[1]]
    rest_s = sorted([q[2], q[1] * (1 - c)], reverse=True)
    rest = abs(rest_t[0] - rest_s[0]) + rest_s[1]
    assert got.item() == pytest.approx(direct + rest, rel=1e-5)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_span_aligned_loss_is_the_ordinary_loss_for_one_tokenizer(kind, temperature):
    torch.manual_seed(0)
    b, t, vocab = 2, 7, 13
    teacher_logits, student_logits = 3 * torch.randn(b, t, vocab), torch.randn(b, t, vocab)
    ids = torch.randint(0, vocab, (b, t))
    attention = torch.ones(b, t, dtype=torch.long)
    attention[1, 5:] = 0  # padding in the second sequence
    _, mask = shift_for_next_token(ids, attention)
    rows, positions = attention[:, 1:].nonzero(as_tuple=True)
    first = positions + 1  # every real token but the first is a group of its own, predicted from the one before
    spans = AlignedSpans(rows, first, first, first, first)
    shared = shared_tokens(torch.arange(vocab), torch.arange(vocab), vocab, vocab)
    ordinary = soft_target_loss(student_logits, teacher_logits, temperature, mask, kind)
    bridged = span_aligned_loss(student_logits, teacher_logits, ids, ids, spans, shared, temperature, kind)
    assert bridged.item() == pytest.approx(ordinary.item(), rel=1e-5, abs=1e-6)


def test_gradients_are_finite_and_agreement_reads_the_shared_tokens():
    torch.manual_seed(1)
    student_logits = torch.randn(1, 4, 5, requires_grad=True)
    teacher_logits = torch.randn(1, 3, 6)
    spans = AlignedSpans(torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1, 2]),
                         torch.tensor([1, 3]))
    shared = shared_tokens(torch.tensor([0, 1, 2]), torch.tensor([4, 3, 0]), 6, 5)
    terms = span_aligned_terms(student_logits, teacher_logits, torch.tensor([[0, 1, 2, 3]]), torch.tensor([[1, 5, 2]]),
                               spans, shared)
    (terms.direct + terms.rest).mean().backward()
    assert torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0
    agrees = top1_agrees(terms, shared)
    for g in range(2):
        t_top, s_top = int(terms.teacher_top[g]), int(terms.student_top[g])
        expected = t_top in (0, 1, 2) and [4, 3, 0][t_top] == s_top
        assert bool(agrees[g]) == expected
