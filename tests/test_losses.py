"""The losses, each against a value computed by hand (or against the plain computation it speeds up)."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill_core.losses import (DIVERGENCES, FitNetsProjection, OutputHead, attention_transfer_loss,
                                 chunked_distillation_loss, distillation_loss, divergence, fitnets_loss, hard_label_ce,
                                 shift_for_next_token, soft_target_kl, soft_target_loss, student_buckets, teacher_topk,
                                 topk_buckets, topk_log_probs)


def kl_by_hand(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax(xs: list[float], t: float) -> list[float]:
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_identical_logits_give_zero():
    logits = torch.randn(2, 5, 11)
    assert soft_target_kl(logits, logits.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_hand_computation_with_t_squared(temperature):
    teacher = [2.0, 1.0, 0.1]
    student = [0.5, 1.5, -1.0]
    expected = kl_by_hand(softmax(teacher, temperature), softmax(student, temperature)) * temperature**2
    got = soft_target_kl(torch.tensor([[student]]), torch.tensor([[teacher]]), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_t_squared_keeps_gradient_scale():
    """Hinton et al.: without T^2 the soft-target gradients shrink roughly as 1/T^2 for large T."""
    torch.manual_seed(0)
    teacher = torch.randn(1, 4, 50)
    grads = {}
    for t in (1.0, 8.0):
        student = torch.randn(1, 4, 50, generator=torch.Generator().manual_seed(1)).requires_grad_()
        soft_target_kl(student, teacher, t).backward()
        grads[t] = student.grad.norm().item()
    unscaled_ratio = grads[8.0] / 64 / grads[1.0]
    assert unscaled_ratio < 0.05  # without T^2 the gradient would almost vanish
    assert 0.05 < grads[8.0] / grads[1.0] < 20  # with it, it stays the same order of magnitude


def test_padding_is_masked():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    mask = torch.tensor([[1, 1, 0, 0]])
    masked = soft_target_kl(student, teacher, 2.0, mask)
    changed_student = student.clone()
    changed_student[0, 2:] = 100 * torch.randn(2, 7)  # garbage at padded positions
    assert soft_target_kl(changed_student, teacher, 2.0, mask).item() == pytest.approx(masked.item(), rel=1e-6)
    first_two = soft_target_kl(student[:, :2], teacher[:, :2], 2.0)
    assert masked.item() == pytest.approx(first_two.item(), rel=1e-6)


def test_hard_label_ce_and_mix():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])
    labels = torch.tensor([[0, 1]])
    expected_ce = (-math.log(softmax([2, 0, 0], 1)[0]) - math.log(softmax([0, 3, 0], 1)[1])) / 2
    assert hard_label_ce(logits, labels).item() == pytest.approx(expected_ce, rel=1e-6)
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    out = distillation_loss(logits, teacher, labels, None, temperature=2.0, kd_weight=0.25)
    kd = soft_target_kl(logits, teacher, 2.0)
    assert out.total.item() == pytest.approx(0.25 * kd.item() + 0.75 * expected_ce, rel=1e-6)
    assert set(out.terms) == {"kd_loss", "ce_loss"}


def test_gradient_check():
    torch.manual_seed(0)
    student = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.autograd.gradcheck(lambda s: soft_target_kl(s, teacher, 2.0, mask), (student,))


def test_shift_for_next_token():
    ids = torch.tensor([[5, 6, 7, 0]])
    attn = torch.tensor([[1, 1, 1, 0]])
    labels, mask = shift_for_next_token(ids, attn)
    assert labels.tolist() == [[6, 7, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0]]


# ---- divergences and top-k dark knowledge ------------------------------------------------------

P = [0.7, 0.2, 0.1]
Q = [0.4, 0.4, 0.2]


def by_hand(kind: str, p: list[float], q: list[float], beta: float = 0.5, alpha: float = 0.1) -> float:
    if kind == "forward_kl":
        return kl_by_hand(p, q)
    if kind == "reverse_kl":
        return kl_by_hand(q, p)
    if kind == "jsd":
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
        return beta * kl_by_hand(p, m) + (1 - beta) * kl_by_hand(q, m)
    m = [alpha * a + (1 - alpha) * b for a, b in zip(p, q)]
    return kl_by_hand(p, m)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergences_match_hand_computation(kind):
    log_p, log_q = torch.tensor(P).log(), torch.tensor(Q).log()
    got = divergence(log_p, log_q, kind, jsd_beta=0.3, skew_alpha=0.2).item()
    assert got == pytest.approx(by_hand(kind, P, Q, beta=0.3, alpha=0.2), rel=1e-5)
    assert divergence(log_p, log_p, kind).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergence_loss_t_squared_and_masking(kind):
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    mask = torch.tensor([[1, 0, 1]])
    t = 3.0
    p = [F_softmax_row(teacher[0, i] / t) for i in range(3)]
    q = [F_softmax_row(student[0, i] / t) for i in range(3)]
    expected = (by_hand(kind, p[0], q[0]) + by_hand(kind, p[2], q[2])) / 2 * t * t
    got = soft_target_loss(student, teacher, t, mask, kind).item()
    assert got == pytest.approx(expected, rel=1e-4)


def F_softmax_row(row: torch.Tensor) -> list[float]:
    return softmax(row.tolist(), 1.0)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergence_gradients(kind):
    torch.manual_seed(1)
    student = torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, 2, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: soft_target_loss(s, teacher, 2.0, None, kind, top_k=0), (student,))
    assert torch.autograd.gradcheck(lambda s: soft_target_loss(s, teacher, 2.0, None, kind, top_k=2), (student,))


def test_topk_buckets_sum_to_one_and_keep_the_teacher_ranking():
    torch.manual_seed(0)
    teacher_logp = torch.randn(2, 4, 50).log_softmax(-1)
    student_logp = torch.randn(2, 4, 50).log_softmax(-1)
    t_buckets, s_buckets = topk_buckets(teacher_logp, student_logp, k=5)
    assert t_buckets.shape == (2, 4, 6)
    assert torch.allclose(t_buckets.exp().sum(-1), torch.ones(2, 4), atol=1e-6)
    assert torch.allclose(s_buckets.exp().sum(-1), torch.ones(2, 4), atol=1e-6)
    top = teacher_logp.topk(5, -1).values
    assert torch.allclose(t_buckets[..., :5], top)


def test_topk_by_hand():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    q = torch.tensor([0.25, 0.25, 0.25, 0.25]).log()
    t_b, s_b = topk_buckets(p, q, k=2)
    assert t_b.exp().tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert s_b.exp().tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert divergence(t_b, s_b).item() == pytest.approx(kl_by_hand([0.5, 0.3, 0.2], [0.25, 0.25, 0.5]), rel=1e-6)


def test_truncated_topk_equals_the_topk_taken_at_once():
    torch.manual_seed(0)
    logp = torch.randn(3, 7, 40).log_softmax(-1)
    kept, direct = teacher_topk(logp, 16).truncate(5), teacher_topk(logp, 5)
    assert torch.equal(kept.indices, direct.indices) and torch.allclose(kept.logp, direct.logp)
    assert torch.allclose(kept.tail, direct.tail, atol=1e-6)
    whole = teacher_topk(logp, 16)
    assert whole.truncate(0) is whole and whole.truncate(16) is whole


def test_topk_log_probs_equal_the_buckets_of_the_log_softmax_with_the_same_gradients():
    """The one-pass bucketing (its backward written by hand) against log_softmax + student_buckets, and
    gradcheck of that backward, with a label inside the top-k and the others outside."""
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 40, dtype=torch.float64, requires_grad=True)
    indices = torch.randn(2, 5, 40).topk(6, -1).indices
    labels = torch.randint(0, 40, (2, 5))
    labels[0, 0] = indices[0, 0, 2]
    buckets, label_logp = topk_log_probs(logits, indices, labels)
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(buckets, student_buckets(logp, indices), atol=1e-12)
    assert torch.allclose(label_logp, logp.gather(-1, labels[..., None]).squeeze(-1), atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: topk_log_probs(z, indices, labels), (logits,))
    assert torch.autograd.gradcheck(lambda z: topk_log_probs(z, indices)[0], (logits,))
    whole = torch.arange(40).expand(2, 5, 40)  # k = vocabulary: no tail bucket (log 0)
    assert torch.equal(topk_log_probs(logits, whole)[0], student_buckets(logp, whole))


def test_topk_log_probs_of_a_tail_with_no_mass_pass_a_finite_gradient():
    logits = torch.tensor([[1.0, 2.0, float("-inf"), float("-inf")]], dtype=torch.float64, requires_grad=True)
    buckets, _ = topk_log_probs(logits, torch.tensor([[1, 0]]))
    assert buckets[0, -1].item() == float("-inf")
    buckets[:, :2].sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 2:].eq(0).all()


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_topk_equals_full_when_k_is_vocab(kind):
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    full = soft_target_loss(student, teacher, 2.0, None, kind, top_k=0)
    assert soft_target_loss(student, teacher, 2.0, None, kind, top_k=11).item() == pytest.approx(full.item(), rel=1e-5)
    assert soft_target_loss(student, teacher, 2.0, None, kind, top_k=3).item() != pytest.approx(full.item(), rel=1e-3)


# ---- FitNets ---------------------------------------------------------------------------------------


def test_fitnets_projection_shapes_and_identity_start():
    projection = FitNetsProjection(n_pairs=3, student_width=8, teacher_width=12)
    assert len(projection.maps) == 3 and projection.maps[0].weight.shape == (12, 8)
    assert projection(1, torch.randn(2, 5, 8)).shape == (2, 5, 12)
    same = FitNetsProjection(1, 6, 6)
    h = torch.randn(2, 3, 6)
    assert torch.equal(same(0, h), h)
    assert fitnets_loss([h], [h.clone()], same).item() == pytest.approx(0.0, abs=1e-7)
    assert fitnets_loss([h], [h.clone()], same, "cosine").item() == pytest.approx(0.0, abs=1e-6)


def test_fitnets_by_hand_and_masking():
    projection = FitNetsProjection(1, 2, 2)  # identity
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [0.0, 2.0]]])
    # position 0: ((1-0)^2 + (0-1)^2) / 2 = 1; position 1: 0
    assert fitnets_loss([student], [teacher], projection, "mse").item() == pytest.approx(0.5)
    assert fitnets_loss([student], [teacher], projection, "mse", torch.tensor([[1, 0]])).item() == pytest.approx(1.0)
    # cosine: position 0 orthogonal (1 - 0), position 1 parallel (1 - 1)
    assert fitnets_loss([student], [teacher], projection, "cosine").item() == pytest.approx(0.5)
    two_pairs = FitNetsProjection(2, 2, 2)
    assert fitnets_loss([student, student], [teacher, student], two_pairs).item() == pytest.approx(0.25)


def test_fitnets_gradients_reach_student_and_projection():
    torch.manual_seed(0)
    projection = FitNetsProjection(1, 3, 4).double()
    student = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, 2, 4, dtype=torch.float64)
    for kind in ("mse", "cosine"):
        assert torch.autograd.gradcheck(lambda s: fitnets_loss([s], [teacher], projection, kind), (student,))
    fitnets_loss([student], [teacher], projection).backward()
    assert projection.maps[0].weight.grad is not None and projection.maps[0].weight.grad.abs().sum() > 0


# ---- attention transfer ------------------------------------------------------------------------------


def causal_maps(batch: int, heads: int, seq: int, seed: int) -> torch.Tensor:
    scores = torch.randn(batch, heads, seq, seq, generator=torch.Generator().manual_seed(seed))
    scores = scores.masked_fill(torch.ones(seq, seq).triu(1).bool(), float("-inf"))
    return scores.softmax(-1)  # (batch, heads, seq, seq), rows sum to 1


def test_attention_transfer_zero_for_identical_maps():
    maps = causal_maps(2, 3, 5, 0)
    for kind in ("kl", "mse"):
        assert attention_transfer_loss([maps], [maps.clone()], kind).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_by_hand_with_different_head_counts():
    # teacher: 2 heads whose average row is [0.5, 0.5]; student: 1 head with row [0.8, 0.2]
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    student = torch.tensor([[[[1.0, 0.0], [0.8, 0.2]]]])  # (1, 1, 2, 2)
    # query 0: both [1, 0] -> 0; query 1: teacher [0.5, 0.5] vs student [0.8, 0.2]
    kl_row1 = kl_by_hand([0.5, 0.5], [0.8, 0.2])
    assert attention_transfer_loss([student], [teacher], "kl").item() == pytest.approx(kl_row1 / 2, rel=1e-5)
    mse_row1 = ((0.5 - 0.8) ** 2 + (0.5 - 0.2) ** 2) / 2
    assert attention_transfer_loss([student], [teacher], "mse").item() == pytest.approx(mse_row1 / 2, rel=1e-5)
    # masking the second query leaves only the identical first row
    assert attention_transfer_loss([student], [teacher], "kl", torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_gradients():
    teacher = causal_maps(1, 2, 4, 1).double()
    scores = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    causal = torch.ones(4, 4).triu(1).bool()

    def loss(s, kind):
        return attention_transfer_loss([s.masked_fill(causal, float("-inf")).softmax(-1)], [teacher], kind)

    for kind in ("kl", "mse"):
        assert torch.autograd.gradcheck(lambda s: loss(s, kind), (scores,))


def _tiny_pair(student_width=32, teacher_width=48, bias=False):
    torch.manual_seed(0)
    base = dict(vocab_size=101, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=not bias)
    student = LlamaForCausalLM(LlamaConfig(hidden_size=student_width, **base)).double()
    teacher = LlamaForCausalLM(LlamaConfig(hidden_size=teacher_width, **base)).double()
    if bias:  # an untied head with a bias, as some architectures have
        student.lm_head = torch.nn.Linear(student_width, 101, bias=True).double()
    return student, teacher


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("top_k, cached, t", [(0, False, 2.0), (7, False, 2.0), (7, True, 2.0), (7, True, 1.0)],
                         ids=["full", "top7", "cached-top7", "cached-top7-T1"])  # T1: both terms from one pass
def test_chunked_loss_equals_the_full_logits_loss(kind, top_k, cached, t):
    student, teacher = _tiny_pair(bias=kind == "jsd")
    ids = torch.randint(0, 101, (3, 9), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    attn[1, 6:] = 0  # padding must not count
    labels, mask = shift_for_next_token(ids, attn)
    t_logits = teacher(input_ids=ids, attention_mask=attn).logits.detach()
    targets = teacher_topk(torch.log_softmax(t_logits / t, -1), top_k) if cached else t_logits

    reference = distillation_loss(student(input_ids=ids, attention_mask=attn).logits, targets, labels, mask, t, 0.7,
                                  kind, 0 if cached else top_k)
    reference.total.backward()
    expected = {name: p.grad.clone() for name, p in student.named_parameters()}
    student.zero_grad()

    hidden = student.model(input_ids=ids, attention_mask=attn).last_hidden_state
    t_hidden = teacher.model(input_ids=ids, attention_mask=attn).last_hidden_state.detach()
    chunked = chunked_distillation_loss(hidden, OutputHead(student), targets if cached else (t_hidden, OutputHead(teacher)),
                                        labels, mask, t, 0.7, kind, 0 if cached else top_k, chunk_tokens=5)
    chunked.total.backward()
    assert torch.allclose(chunked.total, reference.total, rtol=1e-12, atol=1e-12)
    for term in ("kd_loss", "ce_loss"):
        assert torch.allclose(chunked.terms[term], reference.terms[term], rtol=1e-12, atol=1e-12)
    for name, p in student.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-10, atol=1e-13), name


def test_chunked_loss_with_a_frozen_head_and_no_counted_position():
    student, teacher = _tiny_pair()
    student.lm_head.weight.requires_grad_(False)  # tied: the embeddings are frozen too
    ids = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(2))
    labels, mask = shift_for_next_token(ids, torch.ones_like(ids))
    hidden = student.model(input_ids=ids).last_hidden_state
    t_hidden = teacher.model(input_ids=ids).last_hidden_state.detach()
    loss = chunked_distillation_loss(hidden, OutputHead(student), (t_hidden, OutputHead(teacher)), labels, mask, 1.0, 0.5)
    loss.total.backward()
    assert student.lm_head.weight.grad is None
    assert student.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    nothing = torch.zeros_like(mask)
    empty = chunked_distillation_loss(student.model(input_ids=ids).last_hidden_state, OutputHead(student),
                                      (t_hidden, OutputHead(teacher)), labels, nothing, 1.0, 0.5)
    assert empty.total.item() == 0.0
    empty.total.backward()  # still a graph: no error


def test_chunked_loss_gives_each_gradient_in_its_parameters_dtype():
    """bf16 weights (no fp32 master copy): the head's gradients, summed over chunks in fp32, come back bf16."""
    student, teacher = _tiny_pair(bias=True)
    student, teacher = student.to(torch.bfloat16), teacher.to(torch.bfloat16)
    ids = torch.randint(0, 101, (2, 7), generator=torch.Generator().manual_seed(7))
    labels, mask = shift_for_next_token(ids, torch.ones_like(ids))
    hidden = student.model(input_ids=ids).last_hidden_state
    t_hidden = teacher.model(input_ids=ids).last_hidden_state.detach()
    loss = chunked_distillation_loss(hidden, OutputHead(student), (t_hidden, OutputHead(teacher)), labels, mask,
                                     2.0, 0.5, chunk_tokens=4)
    loss.total.backward()
    assert student.lm_head.weight.grad.dtype == torch.bfloat16 and student.lm_head.bias.grad.dtype == torch.bfloat16
    assert torch.isfinite(student.lm_head.bias.grad.float()).all() and student.lm_head.bias.grad.abs().sum() > 0
