"""The first result's wall time: a session run as a user runs it (`python -m distill_core distill`, a process
of its own) from the command to summary.json, once cold (an empty cache: the teacher is converted and writes
its corpus) and once warm (the same cache), each split into the session's phases (`session.PHASES`:
conversion, corpus, training, evaluation, ...; `summary.json`'s `phases_s`). What `bench --end-to-end` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distill_core.errors import DistillError
from distill_core.paths import ROOT


def timed_session(config_path: str | Path, out_dir: Path, cache: Path, extra: list[str]) -> dict[str, Any]:
    """One session in its own process with `cache` as the cache folder: wall seconds from the command to
    summary.json, the phases' seconds, and the student's held-out figures."""
    command = [sys.executable, "-m", "distill_core", "distill", "--config", str(config_path), "--out", str(out_dir),
               *[arg for pair in extra for arg in ("--set", pair)]]
    env = {**os.environ, "DISTILL_STUDIO_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not (out_dir / "summary.json").is_file():
        raise DistillError(f"the session failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    phases = summary.get("phases_s", {})
    split = {name: phases.get(name, 0.0) for name in ("conversion", "corpus", "training", "evaluation")}
    split["other"] = round(wall - sum(split.values()), 2)  # start-up, loading, the student's build, saving
    return {"wall_s": round(wall, 2), "split_s": split, "phases_s": phases,
            "after": {key: summary["after"].get(key) for key in ("ppl", "kl_to_teacher", "top1_agreement")}}


def end_to_end(config_path: str | Path, extra: list[str] | None = None, cache: Path | None = None) -> dict[str, Any]:
    """The session of `config_path` (with `--set` pairs `extra`) cold, then warm; `cache` (default: a new
    temporary folder, removed after) must be empty for the cold figure to mean a fresh machine."""
    with tempfile.TemporaryDirectory(prefix="distill-e2e-") as scratch:
        cache = cache or Path(scratch) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        if any(cache.iterdir()):
            raise DistillError(f"the cache folder {cache} is not empty: a cold start needs an empty one")
        cold = timed_session(config_path, Path(scratch) / "cold", cache, extra or [])
        warm = timed_session(config_path, Path(scratch) / "warm", cache, extra or [])
    return {"config": str(config_path), "set": extra or [], "cold": cold, "warm": warm}
