"""Sessions in the trackio tracker: config, step and eval metrics and the summary read back from trackio's own
store; a failing tracker does not stop a session; the off switch; a sweep's rows grouped."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
import trackio
from trackio.run import Run
from trackio.sqlite_storage import SQLiteStorage

from distill_core import tracking
from distill_core.session import run_in_slices, run_session


@pytest.fixture()
def tracked(monkeypatch, tmp_path):
    """Tracking on, into a project of this test's own (the store is the suite's TRACKIO_DIR, a temp folder)."""
    name = "t-" + "".join(c for c in tmp_path.name if c.isalnum())
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setenv(tracking.PROJECT_VARIABLE, name)
    return name


def runs_of(project):
    """The project's runs by name (none when trackio has no such project yet)."""
    if project not in SQLiteStorage.get_projects():
        return {}
    return {run.name: run for run in trackio.Api().runs(project)}


def test_the_store_is_the_suites_temp_folder_not_the_operators():
    assert tracking.tracker_dir().name.startswith("distill-trackio-")  # tests/conftest.py
    assert SQLiteStorage.get_project_db_path("x").parent == tracking.tracker_dir()


def test_a_session_logs_its_config_steps_evaluations_and_summary(tiny_config, tmp_path, tracked):
    events = list(run_session(tiny_config, tmp_path / "run-a"))
    assert events[-1]["kind"] == "done"
    assert not [e for e in events if e.get("warning") and "trackio" in e["warning"]]
    runs = runs_of(tracked)
    assert list(runs) == ["run-a"]
    config = runs["run-a"].config
    assert config["student"] == "layers:2" and config["steps"] == 12 and config["seed"] == 0
    assert config["out_dir"] == str(tmp_path / "run-a")
    assert config["corpus_text"].startswith(tiny_config.corpus_text[:120]) and "characters)" in config["corpus_text"]

    logs = SQLiteStorage.get_logs(tracked, run="run-a")
    steps = {e["step"]: e for e in events if e["kind"] == "step"}
    logged_steps = {log["step"]: log for log in logs if "train/loss" in log}
    assert sorted(logged_steps) == sorted(steps) and len(steps) == 12
    for step, event in steps.items():
        assert logged_steps[step]["train/loss"] == pytest.approx(event["loss"])
        assert logged_steps[step]["train/lr"] == pytest.approx(event["lr"])
        assert logged_steps[step]["train/tokens_per_s"] == pytest.approx(event["tokens_per_s"])

    evals = [e for e in events if e["kind"] == "eval"]
    logged_evals = {log["step"]: log for log in logs if "eval/held_out_ppl" in log}
    assert sorted(logged_evals) == [e["step"] for e in evals] == [0, 4, 8, 12]
    for event in evals:
        assert logged_evals[event["step"]]["eval/held_out_ppl"] == pytest.approx(event["held_out_ppl"])
    final = logged_evals[12]  # the evaluations before and after also compare with the teacher
    assert final["eval/top1_agreement"] == pytest.approx(evals[-1]["top1_agreement"])
    assert final["eval/kl_to_teacher"] == pytest.approx(evals[-1]["kl_to_teacher"])

    summary = events[-1]["summary"]
    logged_summary = [log for log in logs if "summary/after_ppl" in log]
    assert len(logged_summary) == 1
    assert logged_summary[0]["summary/after_ppl"] == pytest.approx(summary["after"]["ppl"])
    assert logged_summary[0]["summary/before_kl_to_teacher"] == pytest.approx(summary["before"]["kl_to_teacher"])
    assert logged_summary[0]["summary/wall_s"] == pytest.approx(summary["wall_s"])


def test_a_failing_tracker_gives_one_warning_and_the_session_goes_on(tiny_config, tmp_path, tracked, monkeypatch):
    def broken(self, metrics, step=None):
        raise OSError("disk full")

    monkeypatch.setattr(Run, "log", broken)
    events = list(run_session(tiny_config, tmp_path / "run-b"))
    assert events[-1]["kind"] == "done" and events[-1]["summary"]["steps_done"] == 12
    warnings = [e for e in events if e.get("warning") and "trackio" in e["warning"]]
    assert len(warnings) == 1 and "disk full" in warnings[0]["message"]
    assert (tmp_path / "run-b" / "summary.json").exists()


def test_a_tracker_that_cannot_start_does_not_stop_the_session(tiny_config, tmp_path, tracked, monkeypatch):
    class NoTrackio:
        @staticmethod
        def init(**kwargs):
            raise RuntimeError("no store")

    monkeypatch.setattr(tracking, "_trackio", lambda: NoTrackio)
    events = list(run_session(tiny_config.with_overrides(["steps=3"]), tmp_path / "run-c"))
    assert events[-1]["kind"] == "done"
    warnings = [e for e in events if e.get("warning") and "trackio" in e["warning"]]
    assert len(warnings) == 1 and "no store" in warnings[0]["message"]


def test_the_off_switch_logs_nothing(tiny_config, tmp_path, tracked, monkeypatch):
    monkeypatch.setenv(tracking.SWITCH, "0")
    assert not tracking.tracking_enabled()
    events = list(run_session(tiny_config.with_overrides(["steps=3"]), tmp_path / "run-d"))
    assert events[-1]["kind"] == "done"
    assert runs_of(tracked) == {}
    monkeypatch.setenv(tracking.SWITCH, "1")  # the same session, on: one run
    list(run_session(tiny_config.with_overrides(["steps=3"]), tmp_path / "run-d"))
    assert list(runs_of(tracked)) == ["run-d"]


def test_a_session_in_slices_is_one_run(tiny_config, tmp_path, tracked):
    config = tiny_config.with_overrides(["steps=4", "eval_every=0", "probe_every=0", "checkpoint_every=0"])
    events = list(run_in_slices(config, tmp_path / "sliced", threading.Event(), time_limit_s=1e-3))
    assert sum(e["kind"] == "paused" for e in events) >= 1 and events[-1]["kind"] == "done"
    assert list(runs_of(tracked)) == ["sliced"]
    logs = SQLiteStorage.get_logs(tracked, run="sliced")
    assert sorted(log["step"] for log in logs if "train/loss" in log) == [1, 2, 3, 4]


def test_a_sweeps_rows_are_grouped_under_its_folder(tmp_path):
    assert tracking.run_identity(tmp_path / "plain") == ("plain", None)
    assert tracking.run_identity(None) == (None, None)
    sweep = tmp_path / "abl-1"
    sweep.mkdir()
    (sweep / "ablation.json").write_text(json.dumps([]))
    assert tracking.run_identity(sweep / "ce_only") == ("abl-1/ce_only", "abl-1")


def test_only_finite_numbers_go_to_the_tracker():
    metrics, step = tracking.metrics_of({"kind": "step", "step": 3, "steps": 9, "elapsed_s": 1.0, "phase": "training",
                                         "loss": 2.5, "kd": float("nan"), "lr": 1e-3, "tokens_per_s": 10,
                                         "eta_s": 4.0, "note": "x", "flag": True})
    assert step == 3 and metrics == {"train/loss": 2.5, "train/lr": 1e-3, "train/tokens_per_s": 10.0}
    assert tracking.metrics_of({"kind": "status", "message": "hi"}) == ({}, None)


def test_the_dashboard_serves_the_project(tracked):
    url = tracking.start_dashboard()
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"?project={tracked}")
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    assert tracking.start_dashboard() == url  # once per process
