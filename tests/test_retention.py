"""Retention of the runs folder: over the cap the oldest finished runs go first; never a running run, a shared
run younger than the set age, a run someone looked at within the idle time, or one just starting; an owner
deletes their own run, never a visitor."""

import json
import os
import time
from pathlib import Path

import pytest

from distill_core import retention, share
from distill_core.errors import DistillError
from distill_core.runs import RUNNING_FILE, is_running, new_run, running


def fake_run(finished_s_ago: float, size: int = 100_000) -> tuple[Path, str]:
    """A finished run folder whose summary was written `finished_s_ago` seconds ago, holding `size` bytes."""
    path, token = new_run()
    (path / "student").mkdir()
    (path / "student" / "config.json").write_text("{}")
    (path / "student" / "weights").write_bytes(os.urandom(size))
    (path / "summary.json").write_text(json.dumps({"teacher_spec": "t", "student_spec": "s"}))
    stamp = time.time() - finished_s_ago
    os.utime(path / "summary.json", (stamp, stamp))
    return path, token


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(retention, "_LOOKED_AT", {})
    return tmp_path / "runs"


def test_the_oldest_finished_runs_go_first_until_the_folder_fits():
    old, _ = fake_run(3000)
    middle, _ = fake_run(2000)
    new, _ = fake_run(1000)
    one = retention.folder_bytes(new)
    report = retention.make_room(cap=int(2.5 * one))
    assert report["removed"] == [old.name] and report["bytes"] <= 2.5 * one and report["kept"] == {}
    assert not old.exists() and middle.exists() and new.exists()
    assert retention.make_room(cap=int(2.5 * one))["removed"] == []  # it fits: nothing more goes
    assert retention.make_room(cap=int(1.5 * one), extra_bytes=one)["removed"] == [middle.name, new.name]


def test_never_a_running_shared_looked_at_or_starting_run():
    live, _ = fake_run(5000)
    with running(live):
        assert is_running(live)
        shared, owner = fake_run(4000)
        share.share_run(shared.name, owner)
        looked, _ = fake_run(3000)
        retention.look_at(looked)
        starting, _ = new_run()  # no summary yet, just made
        old_share, old_owner = fake_run(2000)
        share.share_run(old_share.name, old_owner)
        record = json.loads((old_share / "share.json").read_text())
        record["shared_at"] -= 25 * 3600  # shared 25 hours ago: past the default 24
        (old_share / "share.json").write_text(json.dumps(record))
        report = retention.make_room(cap=0)
        assert report["removed"] == [old_share.name]
    assert report["kept"] == {live.name: "running", shared.name: "shared", looked.name: "in view",
                              starting.name: "starting"}
    assert not is_running(live) and retention.make_room(cap=0)["removed"] == [live.name]


def test_a_look_lasts_the_idle_time(monkeypatch):
    monkeypatch.setenv("DISTILL_IDLE_MINUTES", "1")
    looked, _ = fake_run(100)
    retention.look_at(looked)
    assert retention.in_view() == {str(looked.resolve())}
    assert retention.in_view(now=time.time() + 61) == set()
    assert retention.make_room(cap=0)["removed"] == [looked.name]


def test_a_marker_left_by_a_dead_process_does_not_count():
    path, _ = fake_run(10)
    (path / RUNNING_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "process": "x", "since": 0}))
    assert not is_running(path)
    (path / RUNNING_FILE).write_text(json.dumps({"pid": os.getpid(), "process": "an earlier app", "since": 0}))
    assert not is_running(path)  # this pid, but another incarnation of the app


def test_only_the_owner_deletes_and_never_while_it_runs():
    path, owner = fake_run(10)
    share_token = share.share_run(path.name, owner)
    with pytest.raises(DistillError, match="only the owner of run .* can delete it"):
        retention.delete_run(path.name, share_token)
    with running(path):
        with pytest.raises(DistillError, match="is still running"):
            retention.delete_run(path.name, owner)
    retention.delete_run(path.name, owner)
    assert not path.exists()
    with pytest.raises(DistillError, match="no run"):
        retention.delete_run(path.name, owner)
