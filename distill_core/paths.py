"""Where Distill Studio keeps things: the project's assets, the cache of converted models and generated
data, and the run folders. The lowest layer: every other module may ask it, it asks nobody."""

from __future__ import annotations

import os
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
"""Prompts, held-out texts, preset configs and the app's Learn prose, all written for this project."""
CONFIGS = ASSETS / "configs"
"""The preset configs (quickstart.yaml first)."""
LESSONS = ASSETS / "lessons"
"""The guided lessons: recipes to compare, what to click and what to look for (lessons.py)."""


def cache_dir() -> Path:
    """Where converted models and generated corpora are kept (DISTILL_STUDIO_CACHE overrides)."""
    root = os.environ.get("DISTILL_STUDIO_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "distill_studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` whole: into a temporary file beside it (named for this process and thread, so two
    writers never share one), then renamed over it. A reader finds the old file or the new one, never half of
    one; a write that fails leaves the old file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def runs_dir() -> Path:
    """Where each session gets its own folder (DISTILL_STUDIO_RUNS overrides `runs/` of the project)."""
    return Path(os.environ.get("DISTILL_STUDIO_RUNS") or ROOT / "runs")


def project_path(path: str | Path) -> Path:
    """A file a config names: as given (absolute, or relative to the working folder when it is there), else
    relative to the project's root, as `DistillConfig.portable` writes the project's own files (so a config
    saved here runs from another checkout, or from another working folder)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    rooted = ROOT / given
    return rooted if rooted.exists() else given


def relative_to_project(path: str) -> str:
    """`path` relative to the project's root when it lies inside it (assets/prompts.txt), else as given (an empty
    field, "no file", stays empty)."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except (ValueError, OSError):
        return path
