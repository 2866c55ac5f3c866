"""A student against its teacher whatever their tokenizers: bits per byte of the same bytes for both, agreement and
KL over the aligned spans across tokenizers, and the same figures as evaluate.compare for one vocabulary."""

import pytest

from distill_core.bits_per_byte import heldout_text, model_bits_per_byte
from distill_core.config import DistillConfig
from distill_core.data import heldout_blocks, split_documents
from distill_core.evaluate import compare
from distill_core.fair_eval import (byte_trade_sentence, evaluate_each, evaluate_pair, held_out, output_width,
                                    reference, teacher_bpb)
from distill_core.models import load_teacher
from distill_core.students import derive_student
from tests.conftest import SAMPLE_TEXT

HELD_OUT = "The river ran past the mill.\n\nIn the spring the bees came back to the town, and the children counted them."


@pytest.fixture()
def pair_config(tiny_teacher_dir, tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text(HELD_OUT, encoding="utf-8")
    return DistillConfig(teacher=str(tiny_teacher_dir), eval_text=str(path), eval_max_tokens=40, seq_len=16)


def test_one_vocabulary_gives_compare_and_bits_per_byte(tiny_teacher_dir, pair_config):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    report = evaluate_pair(teacher, student, pair_config, speed=False)
    blocks = heldout_blocks(pair_config, teacher.tokenizer)
    plain = compare(teacher.model, student.model, blocks)
    assert report["student"]["ppl"] == pytest.approx(plain["student_ppl"]) and report["tokens"] == plain["tokens"]
    assert report["student"]["kl_to_teacher"] == pytest.approx(plain["kl_to_teacher"], rel=1e-5)
    text = heldout_text(pair_config, teacher.tokenizer)
    for side, loaded in (("teacher", teacher), ("student", student)):
        direct = model_bits_per_byte(loaded.model, teacher.tokenizer, text, pair_config.seq_len)["bits_per_byte"]
        assert report[side]["bits_per_byte"] == pytest.approx(direct)
    assert report["tokenizer_bridge"] == "none" and report["bytes"] == text.n_bytes


def test_across_tokenizers_both_score_the_same_bytes(tiny_teacher_dir, pair_config):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "fresh:layers=1,hidden=32,heads=2,vocab=bpe:400",
                             calibration=split_documents(SAMPLE_TEXT))
    assert len(student.tokenizer) == student.model.config.vocab_size == 400
    report = evaluate_pair(teacher, student, pair_config, speed=False)
    same_vocab = evaluate_pair(teacher, derive_student(teacher, "layers:2"), pair_config, speed=False)
    assert report["tokenizer_bridge"] == "span" and report["bytes"] == same_vocab["bytes"]
    assert report["teacher"]["bits_per_byte"] == pytest.approx(same_vocab["teacher"]["bits_per_byte"])
    assert report["teacher"]["ppl"] == pytest.approx(same_vocab["teacher"]["ppl"], rel=1e-5)  # its own blocks, whatever the pair (summed in another order)
    assert 0 <= report["student"]["top1_agreement"] <= 1 and report["student"]["kl_to_teacher"] > 0
    text = heldout_text(pair_config, teacher.tokenizer)
    direct = model_bits_per_byte(student.model, student.tokenizer, text, pair_config.seq_len)["bits_per_byte"]
    assert report["student"]["bits_per_byte"] == pytest.approx(direct)
    # per-token perplexity is per the student's own tokens: more tokens than the teacher's for the same bytes
    assert report["tokens"] > same_vocab["tokens"]


def test_the_teachers_bits_per_byte_is_kept_for_sessions_without_it(tiny_teacher_dir, pair_config, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    teacher = load_teacher(str(tiny_teacher_dir))
    held = held_out(pair_config, teacher.tokenizer, teacher.tokenizer, output_width(teacher.model),
                    output_width(teacher.model))
    assert teacher_bpb(None, held, "fingerprint") is None  # never measured
    measured = teacher_bpb(teacher.model, held, "fingerprint")
    assert teacher_bpb(None, held, "fingerprint") == pytest.approx(measured)
    assert teacher_bpb(None, held, "another teacher") is None
    assert len(reference(teacher.model, held)) == 1  # one batch of log-probabilities


def test_the_evaluate_tab_rows_and_the_trade_in_bytes(tiny_teacher_dir, pair_config):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "fresh:layers=1,hidden=32,heads=2,vocab=bpe:400",
                             calibration=split_documents(SAMPLE_TEXT))
    rows = dict(evaluate_each(teacher, {"student": (student.model, student.tokenizer)}, pair_config, speed_tokens=4))
    assert list(rows) == ["teacher", "student"] and rows["student"]["bridge"] == "span"
    assert all(row["bits_per_byte"] > 0 and row["tokens_per_s"] > 0 for row in rows.values())
    sentence = byte_trade_sentence(rows, "student")
    ratio = rows["student"]["bits_per_byte"] / rows["teacher"]["bits_per_byte"]
    assert f"{rows['student']['bits_per_byte']:.3f} bits per byte" in sentence and f"{ratio:.2f}x" in sentence
