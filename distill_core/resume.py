"""Training checkpoints of a session (OUT/checkpoint) and what `distill --resume OUT` checks.

A checkpoint holds everything the loop needs to continue as if it had never stopped:

    OUT/checkpoint/
      trainable.safetensors   the student's trainable parameters, by name (frozen ones are rebuilt
                              from the config: the same spec and seed give the same weights)
      projection.safetensors  the FitNets projection, when the run has one
      training_state.pt       optimizer and learning-rate schedule state, fp16's loss scale, torch (CPU
                              and CUDA) random states: tensors, numbers and strings only, read with
                              weights_only=True
      state.json              step, last loss, the run's config, the evaluation before training, the
                              trainable parameters' shapes, Python's and numpy's random states;
                              written last, so a folder without it is incomplete

The data position is the step itself (`data.batch_indices(..., start=step)` rebuilds it).

It is written into OUT/checkpoint.tmp and then swapped in (checkpoint -> checkpoint.old,
checkpoint.tmp -> checkpoint, checkpoint.old removed; storage.swapped_in): a write that fails or is killed
half way leaves the previous checkpoint whole, as OUT/checkpoint or, inside the swap, as OUT/checkpoint.old,
which `load` falls back to; a full disk removes the half-written folder and says so.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill_core.config import PATH_FIELDS, RESUME_FIELDS, DistillConfig
from distill_core.errors import DistillError
from distill_core.paths import relative_to_project, write_text_atomic
from distill_core.storage import swapped_in

DIRNAME = "checkpoint"
FORMAT = 1

_FILES = ("trainable.safetensors", "training_state.pt", "state.json")


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python random states, as saved in a checkpoint."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy": [int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for index, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, index)
    pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def trainable_named(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@dataclass
class Checkpoint:
    """A checkpoint read back by `load`."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def restore(self, model: torch.nn.Module, projection: torch.nn.Module | None,
                optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Load the trainable weights, the projection, the optimizer and the schedule."""
        params = trainable_named(model)
        expected = {name: list(p.shape) for name, p in params.items()}
        if expected != self.state["trainable"]:
            missing = sorted(set(self.state["trainable"]) ^ set(expected)) or sorted(
                n for n in expected if expected[n] != self.state["trainable"].get(n))
            raise DistillError(f"the checkpoint in {self.path} does not fit this student: its trainable parameters "
                               f"differ ({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}); was the student "
                               "spec or the freezing changed?")
        weights = load_file(str(self.path / "trainable.safetensors"))
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
            if projection is not None:
                file = self.path / "projection.safetensors"
                if not file.is_file():
                    raise DistillError(f"the checkpoint in {self.path} has no FitNets projection but this run has one")
                projection.load_state_dict(load_file(str(file)))
        saved = self._training_state()
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])

    def restore_scaler(self, scaler: Any) -> None:
        """fp16's loss scale, as it was at the checkpoint (a checkpoint of another precision has none)."""
        saved = self._training_state().get("scaler")
        if saved:
            scaler.load_state_dict(saved)

    def restore_rng(self) -> None:
        saved = self._training_state()
        set_rng_state({**saved["rng"], "numpy": self.state["numpy_rng"], "python": self.state["python_rng"]})

    def _training_state(self) -> dict[str, Any]:
        try:
            return torch.load(self.path / "training_state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged or foreign file: never unpickled beyond tensors and plain values
            raise DistillError(f"the checkpoint's training state {self.path / 'training_state.pt'} cannot be read "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def save(out: Path, *, step: int, last_loss: float, config: DistillConfig, model: torch.nn.Module,
         projection: torch.nn.Module | None, optimizer: torch.optim.Optimizer, scheduler: Any,
         rng: dict[str, Any], before: dict[str, Any], extra: dict[str, Any] | None = None, scaler: Any = None) -> Path:
    """Write OUT/checkpoint atomically (see the module docstring); returns its path."""
    params = trainable_named(model)
    with swapped_in(out / DIRNAME, f"the checkpoint of step {step}") as tmp:
        save_file({name: p.detach().to("cpu").contiguous() for name, p in params.items()},
                  str(tmp / "trainable.safetensors"))
        if projection is not None:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in projection.state_dict().items()},
                      str(tmp / "projection.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": {"torch": rng["torch"], "cuda": rng["cuda"], "numpy_keys": rng["numpy_keys"]}},
                   tmp / "training_state.pt")
        state = {
            "format": FORMAT,
            "step": step,
            "steps": config.steps,
            "last_loss": last_loss,
            "config": config.portable().to_dict(),
            "before": before,
            "trainable": {name: list(p.shape) for name, p in params.items()},
            "numpy_rng": rng["numpy"],
            "python_rng": rng["python"],
            **(extra or {}),
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")  # last: marks the folder complete
    return out / DIRNAME


def remove(out: Path) -> None:
    """Delete OUT/checkpoint (and leftovers of an interrupted write): the session completed."""
    for name in (DIRNAME, DIRNAME + ".tmp", DIRNAME + ".old"):
        shutil.rmtree(out / name, ignore_errors=True)


def _read(path: Path) -> dict[str, Any] | None:
    """state.json of a complete checkpoint folder, else None."""
    if not all((path / name).is_file() for name in _FILES):
        return None
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("step"), int):
        return None
    return state


def load(out: Path) -> Checkpoint:
    """The checkpoint of session folder OUT: OUT/checkpoint, or OUT/checkpoint.old when a write was
    interrupted inside its swap. Raises DistillError when there is none or it is incomplete."""
    for name in (DIRNAME, DIRNAME + ".old"):
        state = _read(out / name)
        if state is not None:
            return Checkpoint(out / name, state)
    if (out / DIRNAME).exists():
        raise DistillError(f"the checkpoint in {out / DIRNAME} is incomplete or damaged (it needs "
                           f"{', '.join(_FILES)}); it cannot be resumed")
    raise DistillError(f"no checkpoint in {out}: {out / DIRNAME} is missing (a session writes one every "
                       "checkpoint_every steps and when it stops or fails)")


def check_resumable(out: Path, config: DistillConfig) -> Checkpoint:
    """The checkpoint to resume in OUT for `config`, or a DistillError that says why there is none:
    the run already finished, there is no (complete) checkpoint, or the config changed a field
    outside RESUME_FIELDS."""
    summary_path = out / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError:
            summary = {}
        if isinstance(summary, dict) and summary.get("stopped_early") is False and not summary.get("error"):
            raise DistillError(f"the run in {out} already finished ({summary.get('steps_done')} of "
                               f"{summary.get('steps')} steps); there is nothing to resume")
    checkpoint = load(out)
    saved = {name: relative_to_project(value) if name in PATH_FIELDS and isinstance(value, str) else value
             for name, value in checkpoint.state.get("config", {}).items()}  # older checkpoints hold absolute paths
    current = config.portable().to_dict()
    changed = [name for name in current if name not in RESUME_FIELDS and saved.get(name, current[name]) != current[name]]
    if changed:
        detail = ", ".join(f"{name} ({saved[name]!r} -> {current[name]!r})" for name in changed[:4])
        raise DistillError(f"the config differs from the checkpoint's in {detail}: a resumed run must train the same "
                           f"way; only {', '.join(RESUME_FIELDS)} may change")
    if checkpoint.step > config.steps:
        raise DistillError(f"the checkpoint is at step {checkpoint.step}, past the run's {config.steps} steps")
    return checkpoint


def trim_metrics(path: Path, step: int) -> None:
    """Keep the lines of OUT/metrics.jsonl logged up to `step` (a run killed after its last checkpoint
    logged steps that the resumed run will log again), drop a torn last line; rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and int(event.get("step", 0)) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
