"""Folders written beside their target and swapped in: a disk that fills half way leaves the previous
checkpoint or student whole and says so; students saved in the operator's precision."""

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill_core import resume, storage
from distill_core.errors import DistillError, describe_failure, is_disk_full
from distill_core.models import load_saved_model
from distill_core.session import run_session
from distill_core.storage import swapped_in, weights_to_save


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_folder_there_before(tmp_path):
    target = tmp_path / "checkpoint"
    with swapped_in(target, "the checkpoint of step 1") as tmp:
        (tmp / "state.json").write_text('{"step": 1}')
    with pytest.raises(DistillError, match=r"the disk is full: the checkpoint of step 2 could not be written to .*"
                                           r"\(what was there before is kept\)"):
        with swapped_in(target, "the checkpoint of step 2") as tmp:
            (tmp / "state.json").write_text('{"step": 2}')
            (tmp / "weights").write_bytes(b"\0" * 100)
            full_disk()
    assert json.loads((target / "state.json").read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # the half-written folder is gone
    with pytest.raises(ValueError, match="not about space"):  # another failure is raised as it is
        with swapped_in(target, "x"):
            raise ValueError("not about space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_what_libraries_say_when_the_disk_is_full_is_recognised():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    wrapped = RuntimeError("unexpected pos 576 vs 534")
    wrapped.__context__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped) and not is_disk_full(RuntimeError("unexpected pos 576 vs 534"))
    assert describe_failure(OSError(errno.ENOSPC, "x")).startswith("the disk is full: free space")


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tiny_config, tmp_path, monkeypatch):
    """A session checkpointing every 2 steps; the disk fills during the checkpoint of step 4 (safetensors has
    written part of a file): the session says so, goes on, and the checkpoint of step 2 stays loadable."""
    real, calls = resume.save_file, []

    def fills_on_the_second(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"\0" * 512)
            full_disk()
        return real(tensors, filename, metadata)

    monkeypatch.setattr(resume, "save_file", fills_on_the_second)
    out = tmp_path / "run"
    config = tiny_config.with_overrides({"steps": 5, "checkpoint_every": 2, "eval_every": 0, "probe_every": 0})
    messages = [e["message"] for e in run_session(config, out) if e["kind"] == "status" and "checkpoint" in e["message"]]
    assert any("checkpoint of step 2 written" in m for m in messages)
    failed = next(m for m in messages if "step 4" in m)
    assert "the disk is full" in failed and "the previous one is kept" in failed
    assert not (out / "checkpoint.tmp").exists()


def test_the_previous_checkpoint_stays_loadable_after_a_failed_save(tiny_config, tmp_path, monkeypatch):
    """Every save after the checkpoint of step 2 fills the disk; the run is interrupted at step 5 (killed): the
    checkpoint of step 2 is what `distill --resume` finds."""
    out = tmp_path / "run"
    config = tiny_config.with_overrides({"steps": 10, "checkpoint_every": 2, "eval_every": 0, "probe_every": 0})
    events = run_session(config, out)
    for event in events:
        if event["kind"] == "status" and "checkpoint of step 2 written" in event["message"]:
            monkeypatch.setattr(resume, "save_file", full_disk)  # every later save fills the disk
        if event["kind"] == "step" and event["step"] == 5:
            break
    events.close()
    checkpoint = resume.load(out)
    assert checkpoint.step == 2 and not (out / "checkpoint.tmp").exists()


def test_students_saved_in_half_precision_take_half_the_disk(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.with_overrides({"steps": 1, "eval_every": 0, "probe_every": 0})
    list(run_session(config, tmp_path / "fp32"))
    monkeypatch.setenv("DISTILL_SAVE_DTYPE", "bf16")
    list(run_session(config, tmp_path / "bf16"))
    size = lambda run: sum(p.stat().st_size for p in (run / "student").glob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "bf16") < 0.55 * size(tmp_path / "fp32")
    weights = load_file(str(next((tmp_path / "bf16" / "student").glob("*.safetensors"))))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    model = load_saved_model(tmp_path / "bf16" / "student")  # the views load it in fp32
    assert next(model.parameters()).dtype == torch.float32


def test_weights_to_save_convert_tied_weights_once(tiny_teacher_dir, monkeypatch):
    model = load_saved_model(tiny_teacher_dir)
    assert weights_to_save(model) is None  # fp32: saved as it is
    monkeypatch.setenv("DISTILL_SAVE_DTYPE", "fp16")
    state = weights_to_save(model)
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"] and state["lm_head.weight"].dtype == torch.float16
    monkeypatch.setenv("DISTILL_SAVE_DTYPE", "fp8")
    with pytest.raises(DistillError, match="DISTILL_SAVE_DTYPE must be one of fp32, bf16, fp16"):
        storage.save_dtype()
