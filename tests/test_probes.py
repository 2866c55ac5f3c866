"""The side-by-side probes: dark knowledge, attention maps and entropies, CKA's invariances, similarity."""

import math

import numpy as np
import pytest
import torch

from distill_core.errors import DistillError
from distill_core.losses import FitNetsProjection
from distill_core.models import load_teacher
from distill_core.probes import (attention_probe, cka_matrix, dark_knowledge, linear_cka, next_token_snapshot,
                                 similarity_probe)
from distill_core.students import derive_student


def test_dark_knowledge_shapes_and_values(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    same = derive_student(teacher, "layers:4")  # all layers: the teacher's own function
    result = dark_knowledge(teacher, {"student": student.model, "copy": same.model}, "I ate an apple today", 2, 2.0, k=5)
    n = len(result["tokens"])
    assert result["position"] == 2 and result["actual"] is not None
    assert all(len(p) == len(result["candidates"]) for p in result["probs"].values())
    assert 5 <= len(result["candidates"]) <= 11
    assert result["actual"] in result["candidates"]
    assert len(result["kl"]["student"]) == n and math.isnan(result["kl"]["student"][-1])
    assert np.nanmax(np.abs(result["kl"]["copy"])) < 1e-4  # same function -> zero KL
    assert np.nanmin(result["kl"]["student"]) >= -1e-6
    assert result["actual_rank"]["teacher"] == result["actual_rank"]["copy"]
    assert result["entropy"]["teacher"] == pytest.approx(result["entropy"]["copy"], abs=1e-4)


def test_temperature_flattens(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    cold = dark_knowledge(teacher, {}, "The river", -1, 0.5)
    hot = dark_knowledge(teacher, {}, "The river", -1, 5.0)
    assert hot["entropy"]["teacher"] > cold["entropy"]["teacher"]
    assert cold["actual"] is None


def test_bad_probe_inputs(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    with pytest.raises(DistillError, match="empty"):
        dark_knowledge(teacher, {}, "   ", -1, 1.0)
    with pytest.raises(DistillError, match="outside the text"):
        dark_knowledge(teacher, {}, "hello", 99, 1.0)
    with pytest.raises(DistillError, match="temperature"):
        dark_knowledge(teacher, {}, "hello", -1, 0.0)


def test_snapshot_shows_the_teachers_and_the_students_own_top_choices(tiny_teacher_dir):
    import torch

    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    snap = next_token_snapshot(teacher, student, "I ate an", 2.0, k=4)
    ids = teacher.tokenizer("I ate an", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        s = student.model(input_ids=ids).logits[0, -1]
    own = {teacher.tokenizer.decode([int(i)]) for i in s.topk(4).indices}
    assert own <= set(snap["candidates"])  # the student's own top-4, whatever the teacher thinks of them
    assert 4 <= len(snap["candidates"]) <= 8
    assert snap["teacher_probs"][:4] == sorted(snap["teacher_probs"], reverse=True)[:4]  # the teacher's top-4 first
    assert snap["kl_last"] >= 0


def test_snapshot_kl_is_the_kl_at_the_last_position(tiny_teacher_dir):
    import torch

    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    snap = next_token_snapshot(teacher, student, "I ate an", 2.0)
    ids = teacher.tokenizer("I ate an", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        t = torch.log_softmax(teacher.model(input_ids=ids).logits[0, -1] / 2.0, -1)
        s = torch.log_softmax(student.model(input_ids=ids).logits[0, -1] / 2.0, -1)
    assert snap["kl_last"] == pytest.approx(float((t.exp() * (t - s)).sum()), rel=1e-4)


TEXT = "For breakfast I ate an apple, then I went to school and the teacher asked about the river."


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 12, generator=g, dtype=torch.float64)
    y = torch.randn(50, 20, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x * 7.5, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    # not invariant to an arbitrary (non-orthogonal) linear map
    a = torch.randn(12, 12, generator=g, dtype=torch.float64) + 3 * torch.eye(12, dtype=torch.float64)
    a[:, 0] *= 50
    assert linear_cka(x @ a, y) != pytest.approx(base, rel=1e-3)


def test_cka_matrix_equals_pairwise_linear_cka():
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(30, 8, generator=g) for _ in range(3)]
    ys = [torch.randn(30, 5, generator=g), xs[1] * 2]
    matrix = cka_matrix(xs, ys)
    assert matrix.shape == (3, 2)
    assert np.allclose(matrix, [[linear_cka(x, y) for y in ys] for x in xs])
    assert matrix[1, 1] == pytest.approx(1.0)
    with pytest.raises(DistillError, match="same examples"):
        linear_cka(xs[0], torch.randn(29, 8))


def test_attention_probe_on_tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    result = attention_probe(teacher, {"student (before)": student.model}, TEXT)
    t = len(result["tokens"])
    assert result["maps"]["teacher"].shape == (4, 4, t, t)
    assert result["maps"]["student (before)"].shape == (2, 4, t, t)
    maps = result["maps"]["teacher"]
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5)  # each query row is a distribution
    assert np.all(np.triu(maps[0, 0], k=1) == 0)  # causal: no attention to later tokens
    # the derived student keeps teacher layers 0 and 3 (first and last): identical maps there
    assert np.allclose(result["maps"]["student (before)"][0], maps[0], atol=1e-5)
    entropy = result["entropy"]["teacher"]
    assert entropy.shape == (4, 4) and np.all((entropy >= 0) & (entropy <= 1 + 1e-6))


def test_similarity_probe_on_tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    pairs = [(0, 0), (1, 3)]
    result = similarity_probe(teacher, {"student": student.model}, TEXT, pairs, FitNetsProjection(2, 64, 64))
    assert result["cka"]["student"].shape == (4, 2)
    # copied layer 0 with the identical input: identical states -> CKA 1, cosine 1 (identity projection)
    assert result["pair_cka"]["student"][0] == pytest.approx(1.0, abs=1e-6)
    assert result["pair_cosine"]["student"][0] == pytest.approx(1.0, abs=1e-5)
    assert result["n_tokens"] == len(teacher.tokenizer(TEXT, add_special_tokens=False)["input_ids"]) - 1
    with pytest.raises(DistillError, match="at least 4 tokens"):
        similarity_probe(teacher, {"student": student.model}, "Hi")


