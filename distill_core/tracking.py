"""Every session in a local trackio project, so that a class can compare all of a day's runs in a real
tracker (trackio's dashboard) instead of noting numbers by hand.

A session's run gets the config as its run config, each step's loss terms, learning rate and tokens/s
(`train/...`), each evaluation's held-out perplexity, top-1 agreement and KL to the teacher (`eval/...`) and
the final summary (`summary/...`). A size sweep or an `ablate` comparison is one session per row, so one
tracker run per row, grouped under the sweep's folder name.

The store is trackio's own (SQLite files) in `tracker_dir()`: `runs/trackio` of the project unless
`TRACKIO_DIR` says otherwise. Offline, no account: nothing here talks to the hub. Tracking never breaks a
session: a failure to log becomes one warning, and the session goes on untracked. `DISTILL_TRACKING=0`
turns it off; `DISTILL_TRACKIO_PROJECT` names the project (default `distill-studio`)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

from distill_core.paths import runs_dir

SWITCH = "DISTILL_TRACKING"
"""Set to 0, off, false or no to log nothing to the tracker."""
PROJECT_VARIABLE = "DISTILL_TRACKIO_PROJECT"
DEFAULT_PROJECT = "distill-studio"
SWEEP_FILES = ("students.json", "ablation.json")
"""A folder holding one of these is a size sweep or a comparison: its sessions are grouped under its name."""
STEP_SKIP = ("kind", "elapsed_s", "phase", "step", "steps", "eta_s")
"""Step-event fields that are bookkeeping, not metrics."""
LONGEST_VALUE = 120
"""Characters of a config value the tracker keeps (a pasted corpus is a config value)."""
EVAL_KEYS = ("held_out_ppl", "held_out_loss", "held_out_bpb", "val_ppl", "val_loss", "teacher_ppl", "teacher_bpb",
             "top1_agreement", "kl_to_teacher")


def tracking_enabled() -> bool:
    """Whether sessions log to the tracker (on unless `DISTILL_TRACKING` is 0/off/false/no)."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def tracking_project() -> str:
    return os.environ.get(PROJECT_VARIABLE, "").strip() or DEFAULT_PROJECT


def tracker_dir() -> Path:
    """Where trackio keeps its SQLite store: `TRACKIO_DIR`, else the runs folder's `trackio/`."""
    return Path(os.environ.get("TRACKIO_DIR") or runs_dir() / "trackio")


def dashboard_command() -> str:
    """The shell command that opens trackio's dashboard on this project's store."""
    return f"TRACKIO_DIR={tracker_dir()} trackio show --project {tracking_project()}"


_DASHBOARD: dict[str, str] = {}
_DASHBOARD_LOCK = threading.Lock()


def start_dashboard(host: str = "127.0.0.1") -> str:
    """trackio's dashboard for this project, served from this process on a free port next to the app's (once;
    later calls return the same address). Returns its URL."""
    with _DASHBOARD_LOCK:
        if "url" not in _DASHBOARD:
            with contextlib.redirect_stdout(sys.stderr):
                _, local_url, _, _ = _trackio().show(project=tracking_project(), open_browser=False,
                                                     block_thread=False, host=host)
            _DASHBOARD["url"] = f"{local_url.rstrip('/')}/?project={tracking_project()}"
        return _DASHBOARD["url"]


def _trackio() -> Any:
    """trackio, its store pointed at `tracker_dir()` first (trackio reads TRACKIO_DIR once, when imported)."""
    os.environ.setdefault("TRACKIO_DIR", str(tracker_dir()))
    import trackio  # noqa: PLC0415 (third-party, imported only when a session is tracked)

    return trackio


def run_identity(out_dir: str | Path | None) -> tuple[str | None, str | None]:
    """(run name, group) for a session in `out_dir`: a sweep's rows are `<sweep>/<row>` in group `<sweep>`,
    any other session is named after its folder; without a folder trackio names it."""
    if out_dir is None:
        return None, None
    out = Path(out_dir)
    if any((out.parent / name).exists() for name in SWEEP_FILES):
        return f"{out.parent.name}/{out.name}", out.parent.name
    return out.name, None


def run_config(config: Any, out_dir: str | Path | None) -> dict[str, Any]:
    """The session's config as the run's config, and its folder; a pasted corpus is cut to its first words
    (the dashboard's table shows values, not documents)."""
    values = {**config.to_dict(), "out_dir": str(out_dir) if out_dir is not None else None}
    for key, value in values.items():
        if isinstance(value, str) and len(value) > LONGEST_VALUE:
            values[key] = f"{value[:LONGEST_VALUE]}… ({len(value)} characters)"
    return values


def _numbers(values: dict[str, Any], keys: Any, prefix: str) -> dict[str, float]:
    """The finite numbers among `values[keys]`, named `prefix/key` (trackio's dashboard groups by prefix)."""
    picked = {}
    for key in keys:
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            picked[f"{prefix}/{key}"] = float(value)
    return picked


def metrics_of(event: dict[str, Any]) -> tuple[dict[str, float], int | None]:
    """What a session event puts in the tracker, and at which step (nothing for the other kinds)."""
    kind = event.get("kind")
    if kind == "step":
        return _numbers(event, [k for k in event if k not in STEP_SKIP], "train"), event["step"]
    if kind == "eval":
        return _numbers(event, EVAL_KEYS, "eval"), event["step"]
    if kind in ("done", "stopped", "error") and isinstance(event.get("summary"), dict):
        summary = event["summary"]
        flat = {"wall_s": summary.get("wall_s"), "train_s": summary.get("train_s"),
                "final_loss": summary.get("final_loss"), "steps_done": summary.get("steps_done"),
                **{f"before_{k}": v for k, v in (summary.get("before") or {}).items()},
                **{f"after_{k}": v for k, v in (summary.get("after") or {}).items()}}
        return _numbers(flat, flat, "summary"), summary.get("steps_done")
    return {}, None


class SessionTracker:
    """One session's run in the tracker. `log(event)` returns a warning the first time tracking fails
    (after which it logs nothing more); it never raises."""

    def __init__(self, config: Any, out_dir: str | Path | None, resume: bool = False, main: bool = True):
        self.run: Any = None
        self.warning: str | None = None
        self._warned = False
        if not (main and tracking_enabled()):
            return
        name, group = run_identity(out_dir)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # trackio's chatter; stdout is the CLI's JSON
                self.run = _trackio().init(
                    project=tracking_project(), name=name, group=group,
                    config=run_config(config, out_dir),
                    resume="allow" if resume and name else "never", embed=False,
                    auto_log_cpu=False, auto_log_gpu=False)
        except Exception as exc:  # tracking never breaks a session
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.run = None
        self.warning = f"Tracking is off for this session: trackio failed ({type(exc).__name__}: {exc})"

    def log(self, event: dict[str, Any]) -> str | None:
        if self.run is not None:
            metrics, step = metrics_of(event)
            if metrics:
                try:
                    self.run.log(metrics, step=step)
                except Exception as exc:
                    self._fail(exc)
        if self.warning is not None and not self._warned:
            self._warned = True
            return self.warning
        return None

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            with contextlib.redirect_stdout(sys.stderr):
                self.run.finish()
        except Exception as exc:
            self._fail(exc)
        self.run = None
