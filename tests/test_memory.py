"""The memory estimate: each setting moves the component it should, and a run that will not fit
is warned about in the compatibility report and before training."""

import json

import pytest
from transformers import LlamaConfig

from distill_core import memory
from distill_core.compat import compatibility_report
from distill_core.models import load_teacher
from distill_core.students import load_student
from distill_core.session import run_session

T360 = LlamaConfig(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                   num_attention_heads=15, num_key_value_heads=5)
S135 = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3)


def _estimate(**kwargs):
    args = dict(teacher_params=362_000_000, student_params=134_500_000, trainable_params=134_500_000,
                batch_size=16, seq_len=1024)
    args.update(kwargs)
    return memory.estimate_training_memory(T360, S135, **args)


def test_each_setting_moves_its_component():
    base = _estimate(chunk_tokens=0)
    assert base["total"] == pytest.approx(sum(v for k, v in base.items() if k != "total"))
    assert _estimate(chunk_tokens=0, batch_size=32)["activations"] == pytest.approx(2 * base["activations"])
    # full logits: five fp32 (16 x 1024 x 49152) tensors, 15 GB; chunked: a few (1024 x 49152) ones
    assert base["logits"] == pytest.approx(5 * 16 * 1024 * 49152 * 4)
    assert _estimate(chunk_tokens=1024)["logits"] < base["logits"] / 10
    assert _estimate(half=True)["activations"] == pytest.approx(base["activations"] / 2)
    assert _estimate(teacher_half=True)["teacher_weights"] == pytest.approx(base["teacher_weights"] / 2)
    assert _estimate(gradient_checkpointing=True)["activations"] < base["activations"] / 5
    assert _estimate(frozen_layers=15)["activations"] == pytest.approx(base["activations"] / 2)
    assert _estimate(teacher_loaded=False)["teacher_weights"] == 0
    assert _estimate(trainable_params=100)["optimizer"] == 800


def test_fit_report_warns_with_advice(monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device: (8 * 2**30, "test RAM"))
    report = memory.fit_report(_estimate(chunk_tokens=0), memory.torch.device("cpu"))
    assert not report["fits"] and report["device_gb"] == 8.0
    assert "(activations" in report["warning"] and "lower batch_size or seq_len" in report["warning"]
    small = memory.fit_report(_estimate(batch_size=1, seq_len=64, half=True), memory.torch.device("cpu"))
    assert small["fits"] and small["warning"] is None


def test_compatibility_report_and_session_warn_when_it_will_not_fit(tiny_teacher_dir, tiny_config, tmp_path,
                                                                    monkeypatch):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("layers:2", teacher)
    report = compatibility_report(teacher, student, tiny_config)
    assert report["memory"]["fits"] and report["memory"]["batch"] == [4, 32]
    # frozen embeddings: the trainable count leaves out the (tied) embedding matrix
    frozen = compatibility_report(teacher, student, tiny_config.with_overrides({"freeze_embeddings": True}))
    assert frozen["memory"]["estimate_gb"]["optimizer"] < report["memory"]["estimate_gb"]["optimizer"]

    monkeypatch.setattr(memory, "device_memory", lambda device: (1e5, "test RAM"))
    assert compatibility_report(teacher, student, tiny_config)["memory"]["warning"]
    events = list(run_session(tiny_config.with_overrides({"steps": 1}), tmp_path))
    warnings = [e for e in events if e["kind"] == "status" and e.get("warning")]
    assert len(warnings) == 1 and warnings[0]["message"].startswith("Warning: this run needs about")
    assert events[-1]["kind"] == "done"  # a warning, not a refusal
    assert json.loads((tmp_path / "summary.json").read_text())["memory_estimate_gb"] > 0
