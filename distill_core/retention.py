"""What the runs folder keeps: under the operator's cap on its total size (DISTILL_RUNS_CAP_MB), the oldest
finished runs go first, never

- a run that a session or sweep is still writing (runs.running: running.json of a live process),
- a shared run younger than DISTILL_SHARED_KEEP_HOURS (the class is still on its link),
- a run someone looked at within the idle time (DISTILL_IDLE_MINUTES: opened, or shown by a view).

`make_room` runs before every new run folder and after every session, so a Space's disk never fills with old
runs; `delete_run` removes one run on its owner's request (never through a share link).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from distill_core import hosting
from distill_core.errors import DistillError
from distill_core.paths import runs_dir
from distill_core.runs import RUN_ID, is_running, owner_token_opens, run_path
from distill_core.share import sharing

STARTING_GRACE_S = 600.0
"""A run folder without a summary that changed this recently is a session starting (its running.json not
written yet): kept."""
_LOOKED_AT: dict[str, float] = {}
"""Run folder (resolved) -> when a user last opened it or a view last showed it."""
_LOCK = threading.Lock()


def look_at(path: str | Path) -> None:
    """A user is looking at the run in `path` now: retention keeps it for the idle time from now."""
    with _LOCK:
        _LOOKED_AT[str(Path(path).resolve())] = time.time()


def in_view(now: float | None = None) -> set[str]:
    """The run folders (resolved) someone looked at within the idle time; older marks are forgotten."""
    now = time.time() if now is None else now
    horizon = now - hosting.idle_expiry_s()
    with _LOCK:
        for key in [key for key, seen in _LOOKED_AT.items() if seen < horizon]:
            del _LOOKED_AT[key]
        return set(_LOOKED_AT)


def folder_bytes(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks of every file under it)."""
    total = 0
    for file in path.rglob("*"):
        try:
            stat = file.lstat()
        except OSError:
            continue  # removed meanwhile
        total += stat.st_blocks * 512
    return total


def finished_at(path: Path) -> float:
    """When a run ended: its summary.json (a sweep: students.json) was written; else the folder's last change."""
    for name in ("summary.json", "students.json"):
        try:
            return (path / name).stat().st_mtime
        except OSError:
            continue
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def kept_because(path: Path, now: float, viewing: set[str]) -> str | None:
    """Why retention must keep the run in `path` ("running", "starting", "shared", "in view"), or None."""
    if is_running(path):
        return "running"
    if not any((path / name).exists() for name in ("summary.json", "students.json")) \
            and now - finished_at(path) < STARTING_GRACE_S:
        return "starting"
    record = sharing(path)
    if record is not None and now - float(record.get("shared_at") or 0) < hosting.shared_keep_s():
        return "shared"
    if str(path.resolve()) in viewing:
        return "in view"
    return None


def run_folders(folder: Path | None = None) -> list[Path]:
    folder = folder or runs_dir()
    return [p for p in folder.iterdir() if p.is_dir() and RUN_ID.fullmatch(p.name)] if folder.is_dir() else []


def make_room(extra_bytes: int = 0, cap: int | None = None, now: float | None = None) -> dict[str, Any]:
    """Remove the oldest finished runs that may go until the runs folder and `extra_bytes` more fit under `cap`
    (default: the operator's DISTILL_RUNS_CAP_MB, hosting.runs_cap_bytes). Returns the removed run ids, the ones
    kept over the cap with the reason, the folder's bytes after and the cap."""
    folder = runs_dir()
    cap = hosting.runs_cap_bytes(folder) if cap is None else cap
    now = time.time() if now is None else now
    viewing = in_view(now)
    sizes = {path: folder_bytes(path) for path in run_folders(folder)}
    total = sum(sizes.values())
    removed, kept = [], {}
    for path in sorted(sizes, key=finished_at):
        if total + extra_bytes <= cap:
            break
        reason = kept_because(path, now, viewing)
        if reason is not None:
            kept[path.name] = reason
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            total -= sizes[path]
            removed.append(path.name)
    return {"removed": removed, "kept": kept, "bytes": total, "cap": cap}


def delete_run(run_id: str, owner_token: str | None) -> None:
    """Remove one run on its owner's request: its own token only (a share link never deletes), never while a
    session still writes into it."""
    path = run_path(run_id)
    if not path.is_dir():
        raise DistillError(f"no run {path.name} here")
    if not owner_token_opens(path, owner_token):
        raise DistillError(f"only the owner of run {path.name} can delete it (its own token; a share link opens "
                           "a run read-only)")
    if is_running(path):
        raise DistillError(f"run {path.name} is still running: stop it first")
    shutil.rmtree(path)
    with _LOCK:
        _LOOKED_AT.pop(str(path.resolve()), None)
