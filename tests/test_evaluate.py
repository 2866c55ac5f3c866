"""How much of the teacher a student kept: perplexity, agreement, KL, size and speed; generations."""

import pytest

from distill_core.data import pack, split_documents
from distill_core.errors import DistillError
from distill_core.evaluate import (compare, evaluate_each, evaluate_models, generate, generate_each, speed_conditions,
                                   trade_sentence)
from distill_core.models import load_teacher
from distill_core.students import derive_student

TEXT = "For breakfast I ate an apple, then I went to school and the teacher asked about the river."


def test_generate_greedy_is_deterministic_and_sampling_follows_the_seed(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    greedy = [generate(teacher.model, teacher.tokenizer, "The river", 8) for _ in range(2)]
    assert greedy[0]["text"] == greedy[1]["text"] and greedy[0]["new_tokens"] == 8
    assert greedy[0]["tokens_per_s"] > 0
    a, b, c = (generate(teacher.model, teacher.tokenizer, "The river", 12, sample=True, seed=s, temperature=1.5)
               for s in (3, 3, 4))
    assert a["text"] == b["text"] and a["text"] != c["text"]
    with pytest.raises(DistillError, match="empty"):
        generate(teacher.model, teacher.tokenizer, "  ", 8)


def test_evaluate_models_and_the_trade_sentence(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    blocks = pack(teacher.tokenizer, split_documents(TEXT * 4), 16, max_tokens=64, pad_last=True)
    rows = evaluate_models(teacher.model, {"student": student.model}, teacher.tokenizer, blocks, speed_tokens=4)
    assert set(rows) == {"teacher", "student"}
    assert rows["student"]["params"] < rows["teacher"]["params"]
    assert rows["student"]["size_bytes"] < rows["teacher"]["size_bytes"]
    assert all(r["tokens_per_s"] > 0 for r in rows.values())
    sentence = trade_sentence(rows, "student")
    kept = rows["teacher"]["ppl"] / rows["student"]["ppl"]
    assert f"{kept:.0%}" in sentence and "fewer parameters" in sentence and "speed" in sentence


def test_evaluate_each_yields_each_model_as_it_finishes_the_teacher_first(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    students = {"small": derive_student(teacher, "layers:1").model, "large": derive_student(teacher, "layers:3").model}
    blocks = pack(teacher.tokenizer, split_documents(TEXT * 4), 16, max_tokens=64, pad_last=True)
    each = evaluate_each(teacher.model, students, teacher.tokenizer, blocks, speed_tokens=4)
    name, row = next(each)  # the teacher's row arrives before any student is measured
    assert name == "teacher" and row["top1_agreement"] == 1.0 and row["kl_to_teacher"] == 0.0
    assert row["tokens_per_s"] > 0
    # its perplexity, from the reference alone, is the one a comparison computes
    assert row["ppl"] == pytest.approx(compare(teacher.model, students["small"], blocks)["teacher_ppl"], rel=1e-6)
    rest = list(each)
    assert [n for n, _ in rest] == ["small", "large"]
    assert all(set(r) == set(row) for _, r in rest)
    # evaluate_models collects the same rows, the teacher first
    rows = evaluate_models(teacher.model, students, teacher.tokenizer, blocks, speed=False)
    assert list(rows) == ["teacher", "small", "large"] and "tokens_per_s" not in rows["small"]
    assert rows["small"]["ppl"] == pytest.approx(rest[0][1]["ppl"])


def test_evaluate_each_reports_the_real_text_next_to_the_held_out_text(tiny_teacher_dir):
    from pathlib import Path

    from distill_core.config import DistillConfig
    from distill_core.data import real_text_blocks
    from distill_core.evaluate import real_text_report

    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2").model
    blocks = pack(teacher.tokenizer, split_documents(TEXT * 4), 16, max_tokens=64, pad_last=True)
    fixture = Path(__file__).parent / "fixtures" / "gettysburg.txt"
    config = DistillConfig(teacher=str(tiny_teacher_dir), real_text=str(fixture), seq_len=16, eval_max_tokens=96)
    real = real_text_blocks(config, teacher.tokenizer)
    assert real.scored_tokens <= 96 and real.scored_tokens > 64
    rows = evaluate_models(teacher.model, {"student": student}, teacher.tokenizer, blocks, speed=False, real_blocks=real)
    assert rows["teacher"]["real_kl_to_teacher"] == 0.0
    expected = compare(teacher.model, student, real)
    assert rows["student"]["real_ppl"] == pytest.approx(expected["student_ppl"])
    assert rows["teacher"]["real_ppl"] == pytest.approx(expected["teacher_ppl"])
    assert rows["student"]["real_ppl"] != pytest.approx(rows["student"]["ppl"])  # another text, another figure
    report = real_text_report(teacher.model, student, teacher.tokenizer, config)
    assert report["student"]["ppl"] == pytest.approx(expected["student_ppl"]) and report["tokens"] == expected["tokens"]
    assert real_text_report(teacher.model, student, teacher.tokenizer, config.with_overrides({"real_text": ""})) is None
    missing = real_text_report(teacher.model, student, teacher.tokenizer,
                               config.with_overrides({"real_text": str(fixture.with_name("absent.txt"))}))
    assert "not found" in missing["note"]


def test_generate_each_yields_greedy_and_sampled_per_model(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:1")
    each = generate_each({"teacher": teacher.model, "student": student.model}, teacher.tokenizer, "The river", 5, seed=2)
    name, runs = next(each)
    assert name == "teacher" and set(runs) == {"greedy", "sampled"}
    assert runs["sampled"]["text"] == generate(teacher.model, teacher.tokenizer, "The river", 5, sample=True,
                                               seed=2)["text"]
    assert [n for n, _ in each] == ["student"]


def test_speed_conditions_name_this_machine(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    assert speed_conditions(teacher.model).startswith("this machine (")
    assert "CPU thread" in speed_conditions(teacher.model)
