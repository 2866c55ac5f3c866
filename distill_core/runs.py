"""Run folders: a fresh one per session with the token that opens it again, the finished runs a machine
keeps, and opening an earlier run (its inspection views, its export) from its folder after a page reload.

    runs/<YYYYmmdd-HHMMSS>-<6 hex>/
      access.json     the sha256 of the run's token (the token itself stays with whoever started the run)
      running.json    while a session or sweep writes into the folder: which process (`running`)
      share.json      when its owner shared it: the sha256 of the share token (share.py)
      config.yaml, metrics.jsonl, summary.json, student/   (session.py)

A browser keeps its runs' tokens (the app's browser-side state) and presents one to open the run again; on a
public host only a run's token opens it, so one visitor never sees another's runs unless given the token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.paths import runs_dir

RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
"""What a run folder's name looks like (and all an id may be: no paths)."""
ACCESS_FILE = "access.json"
RUNNING_FILE = "running.json"
PROCESS = secrets.token_hex(8)
"""This process's own id in running.json: a restarted app may get the pid its previous run had."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digest_matches(expected: Any, token: str | None) -> bool:
    """Whether `token` hashes to the stored digest `expected` (compared in constant time)."""
    return isinstance(expected, str) and hmac.compare_digest(expected, token_digest(token or ""))


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object from a run folder, or {} when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_path(run_id: str) -> Path:
    """The folder of a run id (checked: an id names a folder of the runs folder, never a path)."""
    run_id = (run_id or "").strip()
    if not RUN_ID.fullmatch(run_id):
        raise DistillError(f"{run_id!r} is not a run id (like 20261201-114030-9e43ea)")
    return runs_dir() / run_id


def owner_token_opens(path: Path, token: str | None) -> bool:
    """Whether `token` is the token the run in `path` was started with."""
    return digest_matches(read_json(path / ACCESS_FILE).get("token_sha256"), token)


@contextlib.contextmanager
def running(path: str | Path) -> Iterator[None]:
    """Mark the run folder `path` as written into by this process while the block runs (running.json):
    retention never removes it meanwhile."""
    marker = Path(path) / RUNNING_FILE
    marker.write_text(json.dumps({"pid": os.getpid(), "process": PROCESS, "since": time.time()}), encoding="utf-8")
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def is_running(path: Path) -> bool:
    """Whether a live process still writes into the run folder `path` (a marker left by a process that died, or
    by an earlier app with this pid, does not count)."""
    marker = read_json(path / RUNNING_FILE)
    pid = marker.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return marker.get("process") == PROCESS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def new_run() -> tuple[Path, str]:
    """A fresh folder for one session or sweep, runs/<timestamp>-<random id>/, and its token."""
    path = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    token = secrets.token_urlsafe(16)
    (path / ACCESS_FILE).write_text(json.dumps({"token_sha256": token_digest(token)}), encoding="utf-8")
    return path, token


def run_summary(out_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's summary.json, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_config(out_dir: str | Path) -> DistillConfig | None:
    """A run folder's config.yaml, or None when it cannot be read."""
    try:
        return DistillConfig.from_yaml(Path(out_dir) / "config.yaml")
    except (OSError, DistillError, ValueError, TypeError):
        return None


def run_events(out_dir: str | Path, kinds: tuple[str, ...] = ("step", "eval", "probe")) -> list[dict[str, Any]]:
    """The events a session logged in metrics.jsonl (steps, evaluations, probe snapshots), in order."""
    events = []
    try:
        lines = (Path(out_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(event, dict) and event.get("kind") in kinds:
            events.append(event)
    return events


def finished_runs(limit: int = 50) -> list[dict[str, Any]]:
    """The runs in the runs folder whose student was saved, newest first: id, teacher, student, steps done
    and asked, held-out perplexity after."""
    rows = []
    folder = runs_dir()
    for path in sorted(folder.iterdir(), reverse=True) if folder.is_dir() else []:
        summary = run_summary(path) if RUN_ID.fullmatch(path.name) else None
        if summary is None or not (path / "student" / "config.json").is_file():
            continue
        rows.append({"id": path.name, "teacher": summary.get("teacher_spec"), "student": summary.get("student_spec"),
                     "steps_done": summary.get("steps_done"), "steps": summary.get("steps"),
                     "ppl": (summary.get("after") or {}).get("ppl")})
        if len(rows) == limit:
            break
    return rows


def open_run(run_id: str, token: str | None, need_token: bool = True) -> dict[str, Any]:
    """An earlier finished run as the views need it (`out_dir`, `teacher`, `student`, `probes`): its id must
    name a run folder with a saved student, and (with `need_token`) its token must match."""
    path = run_path(run_id)
    run_id = path.name
    summary = run_summary(path)
    if summary is None or not (path / "student" / "config.json").is_file():
        raise DistillError(f"no finished run {run_id} here (the runs folder holds no saved student by that id)")
    if need_token and not owner_token_opens(path, token):
        raise DistillError(f"the token does not open run {run_id}: only the browser that ran it, or whoever "
                           "it gave the token to, can open it")
    return {"out_dir": str(path), "teacher": summary.get("teacher_spec") or "", "student": summary.get("student_spec") or "",
            "probes": run_events(path, ("probe",))}
