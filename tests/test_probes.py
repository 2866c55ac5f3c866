import math

import numpy as np
import pytest

from distill_core.checkpoints import derive_student, load_teacher
from distill_core.errors import DistillError
from distill_core.probes import dark_knowledge, next_token_snapshot


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


def test_snapshot(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    snap = next_token_snapshot(teacher, derive_student(teacher, "layers:2"), "I ate an", 2.0, k=4)
    assert len(snap["candidates"]) == 4
    assert snap["teacher_probs"] == sorted(snap["teacher_probs"], reverse=True)
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
