"""The app's handlers, called directly (no browser) on a tiny config-built teacher."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

import app
from tests.conftest import SAMPLE_TEXT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")  # gr.Warning outside a UI

STATUS, LOSS, PROBE, SUMMARY, RUN_BTN, STOP_BTN = range(6)


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def ui_values(teacher_dir: Path, **changes):
    """The Distill tab's inputs, in run_distillation's order, for a seconds-long session."""
    values = dict(teacher=str(teacher_dir), student="layers:1", steps=3, batch_size=4, seq_len=32,
                  learning_rate=3e-3, temperature=2.0, kd_weight=0.9, freeze_layers=0,
                  corpus_choice=app.CORPUS_PASTE, upload=None, pasted=SAMPLE_TEXT)
    values.update(changes)
    return values


def drain(generator) -> list[tuple]:
    return [tuple(outputs) for outputs in generator]


@pytest.fixture(scope="module")
def finished_session(tiny_teacher_dir, tmp_path_factory):
    """One tiny session run through the handler; its user state and every yielded output."""
    with pytest.MonkeyPatch.context() as mp:
        runs = tmp_path_factory.mktemp("runs")
        mp.setenv("DISTILL_STUDIO_RUNS", str(runs))
        user = app.UserSession()
        outputs = drain(app.run_distillation(**ui_values(tiny_teacher_dir), user=user))
    return user, outputs, runs


# ---- Setup -----------------------------------------------------------------------------------

def test_compatibility_shows_report(tiny_teacher_dir):
    markdown, report = app.check_compatibility(str(tiny_teacher_dir), "layers:2")
    assert report["teacher"]["layers"] == 4 and report["student"]["layers"] == 2
    assert "| layers | 4 | 2 |" in markdown
    assert "same vocabulary ✓" in markdown
    assert "keeps teacher layers" in markdown  # the derivation note


@pytest.mark.parametrize("teacher_spec, student_spec, expected", [
    ("smollm2-999", "layers:20", "smollm2-999"),
    (None, "layers:1", "empty"),
    ("TINY", "layers:99", "more layers than the teacher has"),
    ("TINY", "fresh:layers=2,hidden=30,heads=4", "divisible"),
])
def test_compatibility_bad_spec_gives_message(tiny_teacher_dir, teacher_spec, student_spec, expected):
    teacher_spec = str(tiny_teacher_dir) if teacher_spec == "TINY" else teacher_spec
    markdown, report = app.check_compatibility(teacher_spec, student_spec)
    assert report is None
    assert markdown.startswith("**Error:**") and expected in markdown


# ---- Distill ---------------------------------------------------------------------------------

def test_config_from_ui_applies_values_over_quickstart(tiny_teacher_dir):
    values = ui_values(tiny_teacher_dir, steps=7.0, corpus_choice=app.CORPUS_GENERATED)
    config = app.config_from_ui(**values)
    assert config.steps == 7 and isinstance(config.steps, int)
    assert config.corpus == "teacher-generated" and config.corpus_text == ""
    assert config.eval_every == app.quickstart_config().eval_every  # untouched fields keep the YAML's value


def test_run_session_streams_progress_and_ends_with_summary(finished_session):
    user, outputs, runs = finished_session
    statuses = [o[STATUS] for o in outputs]
    assert statuses[0].startswith("**Step 0/3**")
    final = outputs[-1]
    assert final[STATUS].startswith("**Done:** 3/3 steps")
    summary = final[SUMMARY]
    assert "### Before / after (3/3 steps" in summary
    for row in ("held-out perplexity", "top-1 agreement", "KL(teacher ‖ student)", "parameters"):
        assert row in summary
    loss_fig = final[LOSS]
    assert isinstance(loss_fig, go.Figure)
    total = next(t for t in loss_fig.data if t.name == "total")
    assert list(total.x) == [1, 2, 3]
    assert final[PROBE]["visible"] is True and isinstance(final[PROBE]["value"], go.Figure)
    assert final[RUN_BTN]["interactive"] is True and final[STOP_BTN]["interactive"] is False
    # the run folder is named in the message and holds the saved student
    out_dir = Path(user.last_run["out_dir"])
    assert out_dir.parent == runs and (out_dir / "student" / "config.json").is_file()
    assert out_dir.name in final[STATUS]


def test_run_session_stop_saves_the_student(tiny_teacher_dir, monkeypatch):
    monkeypatch.setattr(app, "STATUS_INTERVAL_S", 0.0)  # yield every step
    user = app.UserSession()
    generator = app.run_distillation(**ui_values(tiny_teacher_dir, steps=200), user=user)
    outputs = []
    for output in generator:
        outputs.append(output)
        if output[STATUS].startswith("**Step 1/200**"):
            # the engine is paused at its step-1 event: it sees the flag before step 2
            assert app.request_stop(user).startswith("**Stop requested:**")
    final = outputs[-1]
    assert final[STATUS].startswith("**Stopped** at step 1/200")
    assert "### Before / after (1/200 steps" in final[SUMMARY]
    assert (Path(user.last_run["out_dir"]) / "student" / "config.json").is_file()


@pytest.mark.parametrize("changes, expected", [
    ({"steps": "abc"}, "steps must be an int, got 'abc'"),
    ({"learning_rate": None}, "learning_rate is empty: enter a number"),
    ({"kd_weight": 1.5}, "kd_weight must be between 0 and 1"),
    ({"pasted": "   "}, "pasted text is empty"),
    ({"corpus_choice": app.CORPUS_UPLOAD}, "no file uploaded"),
    ({"student": "layers:99"}, "more layers than the teacher has"),
])
def test_run_session_bad_input_shows_message(tiny_teacher_dir, runs_in_tmp, changes, expected):
    outputs = drain(app.run_distillation(**ui_values(tiny_teacher_dir, **changes), user=app.UserSession()))
    final = outputs[-1]
    assert final[STATUS].startswith("**Error:**") and expected in final[STATUS]
    assert final[RUN_BTN]["interactive"] is True
    assert not runs_in_tmp.exists() or not any(runs_in_tmp.iterdir())  # a failed start leaves no run folder


@pytest.mark.parametrize("content, expected", [(b"", "is empty"), (b"\x00\x01binary\x00", "looks binary")])
def test_run_session_bad_upload_shows_message(tiny_teacher_dir, tmp_path, content, expected):
    upload = tmp_path / "corpus.txt"
    upload.write_bytes(content)
    values = ui_values(tiny_teacher_dir, corpus_choice=app.CORPUS_UPLOAD, upload=str(upload))
    final = drain(app.run_distillation(**values, user=app.UserSession()))[-1]
    assert final[STATUS].startswith("**Error:**") and expected in final[STATUS]


# ---- Dark knowledge --------------------------------------------------------------------------

def test_dark_knowledge_before_any_session(tiny_teacher_dir):
    tokens, note, bars, stats, strip = app.probe_dark_knowledge(
        "I ate an apple", -1, 2.0, 5, str(tiny_teacher_dir), "layers:1", app.UserSession())
    assert "No distillation session has run" in note
    assert [t.name for t in bars.data] == ["teacher", "student (before)"]
    assert all(t.type == "bar" for t in bars.data)
    assert strip.data[0].type == "heatmap" and list(strip.data[0].y) == ["student (before)"]
    assert "| teacher |" in stats and "| student (before) |" in stats
    assert "<code" in tokens and "apple" in tokens


def test_dark_knowledge_after_a_session(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    tokens, note, bars, stats, strip = app.probe_dark_knowledge(
        "I ate an apple", 1, 4.0, 5, str(tiny_teacher_dir), "layers:1", user)
    assert [t.name for t in bars.data] == ["teacher", "student (before)", "student (after)"]
    assert list(strip.data[0].y) == ["student (before)", "student (after)"]
    assert "Student (after) is the last session's student" in note
    assert "Position 1 of" in note and "rank of actual next token" in stats
    # another pair than the session's: no trained student, and the note says why
    _, note, bars, _, _ = app.probe_dark_knowledge("I ate an", -1, 2.0, 5, str(tiny_teacher_dir), "layers:2", user)
    assert len(bars.data) == 2 and "not the pair picked in Setup" in note


@pytest.mark.parametrize("text, position, expected", [
    ("", -1, "probe text is empty"),
    ("I ate an", 99, "outside the text"),
    ("I ate an", "abc", "position must be an integer"),
])
def test_dark_knowledge_bad_input_shows_message(tiny_teacher_dir, text, position, expected):
    tokens, note, bars, stats, strip = app.probe_dark_knowledge(
        text, position, 2.0, 5, str(tiny_teacher_dir), "layers:1", app.UserSession())
    assert note.startswith("**Error:**") and expected in note
    assert bars is None and strip is None
