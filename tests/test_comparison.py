"""What the inspection views compare (the teacher, the student before and after), and the rule that keeps
them honest: no session changes the teacher the views share."""

import torch

from distill_core import comparison, device, session
from distill_core.comparison import AFTER, BEFORE, Comparison
from distill_core.models import MODELS, load_teacher
from distill_core.session import run_session


def snapshot(model):
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_untouched(teacher, before):
    after = teacher.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit-identical
    assert {t.dtype for t in after.values()} == {torch.float32}
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_a_bf16_session_leaves_the_views_teacher_as_it_was(tiny_config, tmp_path):
    views = Comparison(tiny_config.teacher, "layers:2").teacher
    before = snapshot(views.model)
    events = list(run_session(tiny_config.with_overrides({"precision": "bf16", "steps": 3}), tmp_path / "run"))
    assert events[-1]["kind"] == "done"
    assert load_teacher(tiny_config.teacher) is views  # the shared entry, still the same object
    assert_untouched(views, before)


def test_a_session_that_holds_its_teacher_in_bf16_gets_its_own_copy(tiny_config, tmp_path, monkeypatch):
    """On a GPU the session holds the teacher in bf16 (device.teacher_dtype); forced here on the CPU, the
    session must get a bf16 copy from the cache while the views keep the fp32 original."""
    views = load_teacher(tiny_config.teacher)
    before = snapshot(views.model)
    monkeypatch.setattr(session, "teacher_dtype", lambda config, dev: torch.bfloat16)
    events = list(run_session(tiny_config.with_overrides({"precision": "bf16", "steps": 3}), tmp_path / "run"))
    assert events[-1]["kind"] == "done"
    held = MODELS.teacher(tiny_config.teacher, "cpu", torch.bfloat16)
    assert held.model is not views.model and next(held.model.parameters()).dtype == torch.bfloat16
    assert_untouched(views, before)
    assert device.teacher_dtype(tiny_config, torch.device("cpu")) == torch.float32  # the real rule on a CPU


def test_before_any_session_the_views_show_the_untrained_student(tiny_config):
    models = Comparison(tiny_config.teacher, "layers:0,3")
    assert models.status == "no-run" and models.after is None and list(models.students) == [BEFORE]
    assert models.layer_pairs() == [(0, 0), (1, 3)]  # the pair's `auto` map: the kept layers
    assert Comparison(tiny_config.teacher, "layers:0,3").before is models.before  # built once, shared


def test_after_a_session_the_views_show_its_student_and_where_it_started(tiny_config, tmp_path):
    out = tmp_path / "run"
    events = list(run_session(tiny_config.with_overrides({"steps": 2}), out))
    last_run = {"out_dir": str(out), "teacher": tiny_config.teacher, "student": tiny_config.student}
    models = Comparison(f" {tiny_config.teacher} ", tiny_config.student, last_run)
    assert models.status == "run" and list(models.students) == [BEFORE, AFTER]
    assert models.before_spec == "layers:2" and models.config.steps == 2
    assert models.layer_pairs() == [tuple(p) for p in events[-1]["summary"]["layer_map"]]
    trained = torch.tensor([[1, 2, 3]])
    assert not torch.equal(models.after(input_ids=trained).logits, models.before.model(input_ids=trained).logits)
    assert comparison.trained_student(out) is models.after  # loaded once for every user
    projection, why = models.projection(models.layer_pairs())
    assert projection is None and "no FitNets projection" in why
    other = Comparison(tiny_config.teacher, "layers:1", last_run)
    assert other.status == "other-pair" and other.after is None
