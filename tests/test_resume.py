"""Stop and resume: training checkpoints (written atomically) and a resumed run that reaches the same
result as an uninterrupted one with the same seed.

Tolerance: on the CPU the resumed run repeats the uninterrupted one's arithmetic exactly (same
weights, optimizer moments, schedule, batch order and random states), so losses and the final
evaluation are compared with rel=1e-6 and, in practice, are equal to the last bit (asserted too)."""

import json
import shutil
import threading

import pytest
import torch

from distill_core import resume as checkpoints
from distill_core.errors import DistillError
from distill_core.session import run_session

REL = 1e-6


def run_all(config, out, stop=None, resume=False):
    return list(run_session(config, out, stop, resume=resume))


def run_stopping_at(config, out, stop_step, resume=False):
    """Run until the step event `stop_step`, then set the stop event from the event loop."""
    stop = threading.Event()
    events = []
    for event in run_session(config, out, stop, resume=resume):
        events.append(event)
        if event["kind"] == "step" and event["step"] == stop_step:
            stop.set()
    return events


def step_lines(path):
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["kind"] == "step"]


def logged_steps(path):
    return [m["step"] for m in step_lines(path)]


def step_losses(path):
    return {m["step"]: m["loss"] for m in step_lines(path)}


@pytest.fixture(scope="module")
def config(tiny_teacher_dir):
    """tiny_config's session, 10 steps: cosine schedule, eval at 4 and 8, periodic checkpoints at 3 and 6."""
    from distill_core.config import DistillConfig
    from tests.conftest import SAMPLE_TEXT

    return DistillConfig(
        teacher=str(tiny_teacher_dir), student="layers:2", corpus_text=SAMPLE_TEXT, steps=10, batch_size=4,
        seq_len=32, learning_rate=3e-3, warmup_steps=1, eval_every=4, probe_every=0, eval_max_tokens=128,
        freeze_embeddings=False, seed=0, checkpoint_every=3,
    )


@pytest.fixture(scope="module")
def full(config, tmp_path_factory):
    """The uninterrupted run: (its folder, its events)."""
    out = tmp_path_factory.mktemp("full")
    events = run_all(config, out)
    assert events[-1]["kind"] == "done"
    assert not (out / "checkpoint").exists()  # a completed run leaves no checkpoint
    return out, events


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(config, full, tmp_path):
    full_dir, full = full

    out = tmp_path / "stopped"
    first = run_stopping_at(config, out, 5)  # not on a checkpoint_every multiple: the stop writes its own
    assert first[-1]["kind"] == "stopped" and first[-1]["summary"]["steps_done"] == 5
    assert first[-1]["summary"]["checkpoint"] == str(out / "checkpoint")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 5

    second = run_all(config, out, resume=True)
    assert second[-1]["kind"] == "done"
    assert [e["step"] for e in second if e["kind"] == "step"] == [6, 7, 8, 9, 10]
    a, b = full[-1]["summary"], second[-1]["summary"]
    assert b["resumed_from_step"] == 5 and a["resumed_from_step"] is None
    assert b["steps_done"] == 10 and not b["stopped_early"] and b["checkpoint"] is None
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=REL)
    for key in ("ppl", "top1_agreement", "kl_to_teacher"):
        assert b["after"][key] == pytest.approx(a["after"][key], rel=REL)
    assert b["before"] == a["before"]
    # bit for bit on the CPU
    assert b["final_loss"] == a["final_loss"] and b["after"] == a["after"]
    from safetensors.torch import load_file

    full_weights = load_file(full_dir / "student" / "model.safetensors")
    resumed_weights = load_file(out / "student" / "model.safetensors")
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)

    # metrics.jsonl: the earlier lines kept, every step once, the same losses as the uninterrupted run
    assert logged_steps(out) == list(range(1, 11))
    assert step_losses(out) == pytest.approx(step_losses(full_dir), rel=REL)
    assert not (out / "checkpoint").exists()
    with pytest.raises(DistillError, match="already finished"):
        run_all(config, out, resume=True)


def test_resume_after_a_kill_drops_steps_logged_after_the_checkpoint(config, full, tmp_path):
    """A process killed at step 5 leaves the periodic checkpoint of step 3 and metrics up to step 5:
    the resumed run continues at 3 and logs 4 and 5 once."""
    full_dir, full = full
    out = tmp_path / "killed"
    events = []
    for event in run_session(config, out):
        events.append(event)
        if event["kind"] == "step" and event["step"] == 5:
            break  # the generator is abandoned: nothing after step 5 runs, like a kill
    events.clear()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "step", "step": 6, "lo')  # a line torn by the kill
    second = run_all(config, out, resume=True)
    assert second[-1]["summary"]["resumed_from_step"] == 3
    assert logged_steps(out) == list(range(1, 11))
    assert step_losses(out) == pytest.approx(step_losses(full_dir), rel=REL)
    assert second[-1]["summary"]["after"] == full[-1]["summary"]["after"]


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = checkpoints.torch.save
    calls = {"n": 0}

    def failing_second_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 6: its folder is half written when this fails
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", failing_second_save)
    events = run_stopping_at(config, out, 7)
    monkeypatch.undo()
    messages = [e.get("message", "") for e in events if e["kind"] == "status"]
    assert any("checkpoint of step 3 written" in m for m in messages)
    assert any("checkpoint of step 6 could not be written" in m and "previous one is kept" in m for m in messages)
    # the stop at 7 wrote a good one; now make it look like a write of step 7 died inside its swap
    assert checkpoints.load(out).step == 7
    good = checkpoints.load(out).state
    (out / "checkpoint").rename(out / "checkpoint.old")
    (out / "checkpoint.tmp").mkdir()
    (out / "checkpoint.tmp" / "trainable.safetensors").write_bytes(b"torn")  # a torn newer write, no state.json
    assert checkpoints.load(out).state == good
    second = run_all(config, out, resume=True)
    assert second[-1]["kind"] == "done" and second[-1]["summary"]["resumed_from_step"] == 7
    assert logged_steps(out) == list(range(1, 11))


def test_a_leftover_temporary_folder_does_not_replace_a_good_checkpoint(config, tmp_path):
    out = tmp_path / "run"
    run_stopping_at(config, out, 2)
    tmp = out / "checkpoint.tmp"
    shutil.copytree(out / "checkpoint", tmp)
    (tmp / "state.json").unlink()  # a write that died before its last file
    assert checkpoints.load(out).step == 2
    # the next write (the periodic one of step 3) replaces the leftover and swaps in cleanly
    events = run_stopping_at(config.with_overrides({"checkpoint_every": 1}), out, 3, resume=True)
    assert events[-1]["kind"] == "stopped"
    assert checkpoints.load(out).step == 3
    assert not tmp.exists() and not (out / "checkpoint.old").exists()
    # a new (not resumed) run in the folder drops the old run's checkpoint as it starts
    fresh = run_session(config, out)
    next(fresh)
    assert not (out / "checkpoint").exists()
    fresh.close()


def test_clear_errors(config, tmp_path):
    with pytest.raises(DistillError, match="no checkpoint in"):
        run_all(config, tmp_path / "empty", resume=True)
    out = tmp_path / "run"
    run_stopping_at(config, out, 2)
    state = torch.load(out / "checkpoint" / "training_state.pt", weights_only=True)  # no pickled objects
    assert {"optimizer", "scheduler", "rng"} <= set(state) and state["scheduler"]["last_epoch"] == 2
    with pytest.raises(DistillError, match=r"differs from the checkpoint's in learning_rate"):
        run_all(config.with_overrides({"learning_rate": 1e-3}), out, resume=True)
    with pytest.raises(DistillError, match=r"differs from the checkpoint's in steps"):
        run_all(config.with_overrides({"steps": 20}), out, resume=True)
    with pytest.raises(DistillError, match="does not fit this student"):
        # a student change that slips past the config check (e.g. an edited checkpoint) is caught by shapes
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        state["config"]["freeze_layers"] = 1
        (out / "checkpoint" / "state.json").write_text(json.dumps(state))
        run_all(config.with_overrides({"freeze_layers": 1}), out, resume=True)
    (out / "checkpoint" / "training_state.pt").unlink()
    with pytest.raises(DistillError, match="incomplete or damaged"):
        run_all(config, out, resume=True)
    # harmless fields may change
    run = tmp_path / "run2"
    run_stopping_at(config, run, 2)
    events = run_all(config.with_overrides({"eval_every": 0, "log_every": 2}), run, resume=True)
    assert events[-1]["kind"] == "done"
    assert [e["step"] for e in events if e["kind"] == "step"] == [4, 6, 8, 10]
