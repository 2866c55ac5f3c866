"""Dark knowledge across tokenizers: candidates by the text they stand for, each student asked where it has read
the same text, and the ordinary probe when the tokens are the same."""

import math

import pytest

from distill_core.bridged_probes import bridged_dark_knowledge, pair_dark_knowledge, pair_snapshot
from distill_core.data import split_documents
from distill_core.models import LoadedModel, load_teacher
from distill_core.probes import dark_knowledge, next_token_snapshot
from distill_core.students import derive_student
from tests.conftest import SAMPLE_TEXT

TEXT = "For breakfast I ate an apple and a banana."


def test_one_tokenizer_is_the_ordinary_probe(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    students = {"student": (student.model, student.tokenizer)}
    ordinary = dark_knowledge(teacher, {"student": student.model}, TEXT, 4, 2.0, 5)
    routed = pair_dark_knowledge(teacher, students, TEXT, 4, 2.0, 5)
    assert routed["kl"]["student"][:-1] == ordinary["kl"]["student"][:-1]  # (the last is NaN in both)
    assert {k: v for k, v in routed.items() if k != "kl"} == {k: v for k, v in ordinary.items() if k != "kl"}
    bridged = bridged_dark_knowledge(teacher, students, TEXT, 4, 2.0, 5)  # the bridge itself, on one tokenizer
    assert bridged["candidates"] == ordinary["candidates"] and bridged["actual"] == ordinary["actual"]
    for name in ("teacher", "student"):
        assert bridged["probs"][name] == pytest.approx(ordinary["probs"][name], rel=1e-5)
    # every token is shared, so the bucket KL is the full KL at each position
    assert bridged["kl"]["student"][:-1] == pytest.approx(ordinary["kl"]["student"][:-1], rel=1e-4, abs=1e-6)
    assert pair_snapshot(teacher, student, TEXT, 1.0) == next_token_snapshot(teacher, student, TEXT, 1.0)


def test_across_tokenizers_the_candidates_are_shared_strings(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "fresh:layers=1,hidden=32,heads=2,vocab=bpe:400",
                             calibration=split_documents(SAMPLE_TEXT))
    students = {"student": (student.model, student.tokenizer)}
    result = pair_dark_knowledge(teacher, students, TEXT, 1, 1.0, 8)  # after "For breakfast"
    assert result["bridged"] and result["tokens"][1] == " breakfast"
    at = result["student_positions"]["student"]
    student_tokens = student.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert student.tokenizer.decode(student_tokens[: at + 1]) == "For breakfast"  # the same text read
    assert len(result["candidates"]) == len(set(result["candidates"])) >= 8
    assert sum(result["probs"]["teacher"]) <= 1 + 1e-6 and sum(result["probs"]["student"]) <= 1 + 1e-6
    # a candidate the student's 400 tokens do not have gets 0 and is listed as missing
    for candidate, p in zip(result["candidates"], result["probs"]["student"]):
        assert (candidate in result["missing"]["student"]) == (p == 0.0)
    strip = result["kl"]["student"]
    assert math.isnan(strip[-1]) and any(math.isfinite(v) for v in strip)
    snapshot = pair_snapshot(teacher, LoadedModel(student.model, student.tokenizer, "s", "t"), TEXT, 1.0)
    assert len(snapshot["candidates"]) == len(snapshot["teacher_probs"]) == len(snapshot["student_probs"])
    assert math.isfinite(snapshot["kl_last"])  # both have read the whole text at its end
