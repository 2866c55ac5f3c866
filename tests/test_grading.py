"""The teacher grades a model's own words: the positions that count, the teacher's NLL and the reverse KL of a
model's samples (by hand from both models' logits), the teacher's own samples as the floor, and one prompt's
continuations graded token by token, reproducible from the seed."""

import math

import pytest
import torch

from distill_core.errors import DistillError
from distill_core.grading import (continuation_mask, grade_continuations, graded_row, own_text_report, sample,
                                  sample_measure, score_samples)
from distill_core.models import load_teacher
from distill_core.sampling import Samples
from distill_core.students import load_student


@pytest.fixture(scope="module")
def pair(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    return teacher, load_student("layers:2", teacher, seed=0)


def test_the_continuation_mask_marks_the_positions_of_written_tokens():
    samples = Samples(torch.zeros(2, 7, dtype=torch.long), lengths=[6, 4], prompt_lengths=[2, 3])
    assert continuation_mask(samples).tolist() == [[0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0]]


def test_the_teachers_scores_of_a_models_samples_by_hand(pair):
    teacher, student = pair
    tok = teacher.tokenizer
    prompts = [tok("The river", add_special_tokens=False)["input_ids"], tok("A cat sat on", add_special_tokens=False)["input_ids"]]
    samples = sample(student.model, tok, prompts, 5, seed=3)
    scored = score_samples(teacher.model, samples, student.model)
    expected_logp, expected_kl, expected_entropy, cross_entropy = [], [], [], []
    with torch.no_grad():
        for row in range(2):
            ids = samples.row(row)[None]
            t = teacher.model(input_ids=ids).logits[0].log_softmax(-1)
            s = student.model(input_ids=ids).logits[0].log_softmax(-1)
            for i in range(samples.prompt_lengths[row], samples.lengths[row]):  # each written token
                expected_logp.append(float(t[i - 1, ids[0, i]]))
                expected_kl.append(float((s[i - 1].exp() * (s[i - 1] - t[i - 1])).sum()))
                expected_entropy.append(float(-(s[i - 1].exp() * s[i - 1]).sum()))
                cross_entropy.append(float(-(s[i - 1].exp() * t[i - 1]).sum()))
    assert scored["teacher_logp"].tolist() == pytest.approx(expected_logp, abs=1e-4)
    assert scored["reverse_kl"].tolist() == pytest.approx(expected_kl, abs=1e-4)
    assert scored["entropy"].tolist() == pytest.approx(expected_entropy, abs=1e-4)
    # reverse KL = the teacher's cross-entropy under the model - the model's entropy
    assert [c - h for c, h in zip(cross_entropy, expected_entropy)] == pytest.approx(expected_kl, abs=1e-4)
    measured = sample_measure(teacher.model, student.model, tok, prompts, 5, seed=3)
    assert measured["nll"] == pytest.approx(-sum(expected_logp) / len(expected_logp), rel=1e-5)
    assert measured["reverse_kl"] == pytest.approx(sum(expected_kl) / len(expected_kl), rel=1e-4)
    assert measured["tokens"] == len(expected_logp) == samples.new_tokens
    assert measured["entropy"] == pytest.approx(sum(expected_entropy) / len(expected_entropy), rel=1e-4)


def test_the_teachers_own_samples_are_the_floor(pair):
    teacher, student = pair
    tok = teacher.tokenizer
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in ("The river", "In the morning", "She said")]
    report = own_text_report(teacher.model, student.model, tok, prompts, 8, seed=0)
    floor = sample_measure(teacher.model, teacher.model, tok, prompts, 8, seed=0)
    assert report["teacher"]["sample_nll"] == floor["nll"] and floor["reverse_kl"] == 0.0
    # the untrained student writes text the (peaked) teacher finds less likely than its own
    assert report["student"]["sample_nll"] > report["teacher"]["sample_nll"]
    assert report["student"]["sample_reverse_kl"] > 0 and report["student"]["sample_entropy"] > 0
    assert floor["entropy"] is None


def test_a_graded_row_token_by_token(pair):
    teacher, student = pair
    tok = teacher.tokenizer
    samples = sample(student.model, tok, [tok("Once upon a time", add_special_tokens=False)["input_ids"]], 6, seed=1)
    row = graded_row(teacher.model, student.model, tok, samples, 0, top=3)
    start, ids = samples.prompt_lengths[0], samples.row(0)
    with torch.no_grad():
        t = teacher.model(input_ids=ids[None]).logits[0].softmax(-1)
        s = student.model(input_ids=ids[None]).logits[0].softmax(-1)
    assert row["prompt"] == "Once upon a time" and len(row["tokens"]) == samples.lengths[0] - start
    for j, i in enumerate(range(start, samples.lengths[0])):
        assert row["tokens"][j] == tok.decode([int(ids[i])])
        assert row["teacher_prob"][j] == pytest.approx(float(t[i - 1, ids[i]]), rel=1e-4)
        assert row["model_prob"][j] == pytest.approx(float(s[i - 1, ids[i]]), rel=1e-4)
        top = t[i - 1].topk(3)
        assert [p for _, p in row["teacher_top"][j]] == pytest.approx(top.values.tolist(), rel=1e-4)
        assert [c for c, _ in row["teacher_top"][j]] == [tok.decode([int(k)]) for k in top.indices]
    n = len(row["tokens"])
    assert row["mean_nll"] == pytest.approx(-sum(math.log(p) for p in row["teacher_prob"]) / n, rel=1e-4)
    assert row["mean_reverse_kl"] == pytest.approx(sum(row["reverse_kl"]) / n, rel=1e-5)


def test_grade_continuations_is_reproducible_and_the_teacher_grades_itself(pair):
    teacher, student = pair
    result = grade_continuations(teacher.model, {"student (before)": student.model}, teacher.tokenizer,
                                 "The baker opened the oven and", new_tokens=6, seed=5)
    assert list(result["rows"]) == ["student (before)", "teacher"]
    again = grade_continuations(teacher.model, {"student (before)": student.model}, teacher.tokenizer,
                                "The baker opened the oven and", new_tokens=6, seed=5)
    assert again["rows"] == result["rows"]
    own = result["rows"]["teacher"]
    assert own["mean_reverse_kl"] == 0.0 and own["teacher_prob"] == pytest.approx(own["model_prob"])
    with pytest.raises(DistillError, match="new tokens"):
        grade_continuations(teacher.model, {}, teacher.tokenizer, "x", new_tokens=0)
    with pytest.raises(DistillError, match="empty"):
        grade_continuations(teacher.model, {}, teacher.tokenizer, "   ")


def test_the_teachers_floor_is_measured_once_per_teacher_and_settings(pair, tmp_path, monkeypatch):
    from distill_core import grading

    teacher, _ = pair
    tok = teacher.tokenizer
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    prompts = [tok("The river", add_special_tokens=False)["input_ids"]]
    first = grading.teacher_floor(teacher.model, "tiny:cpu:fp32", tok, prompts, 6, seed=0)
    assert first == sample_measure(teacher.model, teacher.model, tok, prompts, 6, seed=0)["nll"]

    def no_sampling(*args, **kwargs):
        raise AssertionError("cached: no sampling")

    monkeypatch.setattr(grading, "sample_measure", no_sampling)
    assert grading.teacher_floor(teacher.model, "tiny:cpu:fp32", tok, prompts, 6, seed=0) == first
    with pytest.raises(AssertionError, match="no sampling"):  # other settings: measured again
        grading.teacher_floor(teacher.model, "tiny:cpu:fp32", tok, prompts, 6, seed=1)
