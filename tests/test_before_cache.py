"""The student's measurements before training, read back by a later session of the same student and texts."""

import json

import torch

from distill_core import before_cache, fair_eval, session
from distill_core.session import run_session


def _summary(config, out):
    events = list(run_session(config, out))
    return json.loads((out / "summary.json").read_text()), events


def _counted(monkeypatch):
    """Counts the student's measurements on the held-out text (once before training, once after)."""
    calls = []
    monkeypatch.setattr(session, "compare_student",
                        lambda *args, **kwargs: calls.append(1) or fair_eval.compare_student(*args, **kwargs))
    return calls


def test_a_second_session_of_the_same_student_reads_its_before_figures_and_trains_alike(tiny_config, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("DISTILL_BEFORE_CACHE", "1")
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    calls = _counted(monkeypatch)
    config = tiny_config.with_overrides({"sample_eval_tokens": 8, "steps": 4})
    first, first_events = _summary(config, tmp_path / "first")
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "before").glob("*.json"))) == 1
    second, events = _summary(config.with_overrides({"learning_rate": 1e-3}), tmp_path / "second")
    assert len(calls) == 3  # only after training
    assert second["before"] == first["before"] and second["real_text"]["before"] == first["real_text"]["before"]
    assert second["before"]["sample_nll"] is not None  # the teacher-scored measure came back too
    step0 = [e["held_out_ppl"] for e in events if e["kind"] == "eval" and e["step"] == 0]
    assert step0 == [e["held_out_ppl"] for e in first_events if e["kind"] == "eval" and e["step"] == 0]
    assert any("read from the cache" in e.get("message", "") for e in events if e["kind"] == "status")
    assert second["after"] != first["after"]  # another learning rate: trained, not read back


def test_another_student_or_other_texts_are_measured_afresh(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_BEFORE_CACHE", "1")
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    calls = _counted(monkeypatch)
    config = tiny_config.with_overrides({"steps": 1})
    for index, change in enumerate(({}, {"student": "layers:3"}, {"eval_max_tokens": 96}, {"seed": 1}, {})):
        _summary(config.with_overrides(change), tmp_path / f"run{index}")
    # the seed changes the split of the corpus (its validation blocks); only the last session repeats the first
    assert len(list((tmp_path / "cache" / "before").glob("*.json"))) == 4
    assert len(calls) == 4 * 2 + 1


def test_the_weights_digest_sees_one_changed_value_and_the_switch_turns_the_cache_off(monkeypatch):
    model = torch.nn.Linear(3, 2)
    before = before_cache.weights_digest(model)
    with torch.no_grad():
        model.weight[1, 2] += 1e-6
    assert before_cache.weights_digest(model) != before
    assert before_cache.weights_digest(model.to(torch.bfloat16)) != before_cache.weights_digest(model.float())
    monkeypatch.setenv("DISTILL_BEFORE_CACHE", "0")
    assert not before_cache.enabled()
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", "/proc/cannot/write")
    before_cache.store("x", {"a": 1})  # a cache that cannot be written is only slower
    assert before_cache.load("x") is None
