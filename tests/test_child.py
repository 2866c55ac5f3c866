"""A session across a process boundary (how ZeroGPU runs a `spaces.GPU` handler): plain, picklable inputs
in, events streamed back, stopped from the parent, and the same student as the same session in-process."""

import pickle
import threading

import pytest
from safetensors.torch import load_file

from distill_core.child import session_in_child
from distill_core.errors import DistillError
from distill_core.session import StopSignal, run_session


def test_stop_signal_crosses_a_pickle():
    stop = StopSignal()
    copy = pickle.loads(pickle.dumps(stop))
    assert not copy.is_set()
    stop.set()
    assert copy.is_set()  # the same flag, seen through the copy
    copy.clear()
    assert not stop.is_set()


def test_a_session_in_a_child_process_stops_and_matches_one_in_process(tiny_config, tmp_path):
    config = tiny_config.with_overrides({"steps": 40, "eval_every": 5, "probe_every": 0, "checkpoint_every": 0})
    stop = StopSignal()
    streamed = []
    for event in session_in_child(config, tmp_path / "child", stop):
        streamed.append(event)
        if event["kind"] == "step" and event["step"] == 3:
            stop.set()  # from this process: the child stops after its current step
    final = streamed[-1]
    assert final["kind"] == "stopped", final
    stopped_at = final["summary"]["steps_done"]
    assert 3 <= stopped_at < 40
    assert [e["step"] for e in streamed if e["kind"] == "step"] == list(range(1, stopped_at + 1))  # all streamed

    here, local = [], threading.Event()
    for event in run_session(config, tmp_path / "here", local):
        here.append(event)
        if event["kind"] == "step" and event["step"] == stopped_at:
            local.set()
    assert [e["kind"] for e in here] == [e["kind"] for e in streamed]
    assert here[-1]["summary"]["steps_done"] == stopped_at
    assert here[-1]["summary"]["final_loss"] == final["summary"]["final_loss"]
    assert here[-1]["summary"]["after"] == final["summary"]["after"]
    child_student = load_file(tmp_path / "child" / "student" / "model.safetensors")
    local_student = load_file(tmp_path / "here" / "student" / "model.safetensors")
    assert child_student.keys() == local_student.keys()
    assert all(child_student[name].equal(local_student[name]) for name in child_student)


def test_bad_input_in_the_child_is_a_distill_error_here(tiny_config, tmp_path):
    with pytest.raises(DistillError, match="fewer than one block|too small"):
        list(session_in_child(tiny_config.with_overrides({"corpus_text": "hi"}), tmp_path / "bad", StopSignal()))
    assert not (tmp_path / "bad" / "student").exists()


def test_closing_the_stream_early_stops_the_child_and_keeps_its_student(tiny_config, tmp_path):
    config = tiny_config.with_overrides({"steps": 500, "eval_every": 0, "probe_every": 0, "checkpoint_every": 0})
    stop = StopSignal()
    events = session_in_child(config, tmp_path / "run", stop)
    for event in events:
        if event["kind"] == "step":
            break
    events.close()  # e.g. the browser went away: the child is asked to stop, and the parent waits for it
    assert stop.is_set()
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"stopped_early": true' in summary
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()
