import math

import pytest
import torch

from distill_core.losses import distillation_loss, hard_label_ce, shift_for_next_token, soft_target_kl


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
