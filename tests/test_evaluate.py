"""How much of the teacher a student kept: perplexity, agreement, KL, size and speed; generations."""

import pytest

from distill_core.data import pack, split_documents
from distill_core.errors import DistillError
from distill_core.evaluate import evaluate_models, generate, trade_sentence
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
