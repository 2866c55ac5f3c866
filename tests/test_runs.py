"""Run folders: a token per run, the finished runs a machine keeps, opening one again."""

import json

import pytest

from distill_core.errors import DistillError
from distill_core.runs import finished_runs, new_run, open_run, run_events
from distill_core.session import run_session


@pytest.fixture()
def finished(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    out, token = new_run()
    events = list(run_session(tiny_config.with_overrides({"steps": 2, "eval_every": 1, "probe_every": 1}), out))
    assert events[-1]["kind"] == "done"
    return out, token


def test_a_run_opens_with_its_token_only(finished):
    out, token = finished
    run = open_run(out.name, token)
    assert run["out_dir"] == str(out) and run["student"] == "layers:2"
    assert [p["step"] for p in run["probes"]] == [0, 1, 2]  # the probe snapshots, from metrics.jsonl
    assert token not in (out / "access.json").read_text()  # only its digest is kept
    with pytest.raises(DistillError, match="the token does not open run"):
        open_run(out.name, "guess")
    with pytest.raises(DistillError, match="the token does not open run"):
        open_run(out.name, None)
    assert open_run(out.name, None, need_token=False)["out_dir"] == str(out)  # one's own machine
    with pytest.raises(DistillError, match="is not a run id"):
        open_run("../../etc", token)
    with pytest.raises(DistillError, match="no finished run"):
        open_run("20000101-000000-abcdef", token)


def test_finished_runs_are_listed_newest_first(finished, tmp_path):
    out, _ = finished
    unfinished, _ = new_run()  # a run that saved no student is not listed
    rows = finished_runs()
    assert [row["id"] for row in rows] == [out.name] and rows[0]["ppl"] > 0 and unfinished.is_dir()


def test_run_events_skip_a_torn_line(finished):
    out, _ = finished
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "step", "st')
    kinds = [event["kind"] for event in run_events(out)]
    assert kinds.count("step") == 2 and kinds.count("probe") == 3 and "eval" in kinds
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 2
