"""Export a finished run: the student as a zip of its save_pretrained directory (with tokenizer),
and the YAML config that reproduces the run through the CLI (`distill --config`)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from distill_core.errors import DistillError


def safe_filename(name: str, default: str = "student") -> str:
    """A file name without directories or odd characters (no path traversal): letters, digits, . _ -."""
    base = Path(str(name)).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
    return base[:80] or default


def export_student(run_dir: str | Path, dest_dir: str | Path, name: str | None = None) -> Path:
    """Zip RUN/student (config, weights, tokenizer) into DEST/NAME.zip; returns the zip's path.
    The archive unpacks to a folder that `AutoModelForCausalLM.from_pretrained` loads."""
    run = Path(run_dir)
    student = run / "student"
    if not (student / "config.json").is_file():
        raise DistillError(f"no saved student in {run}: run a session first")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(name or f"{run.name}-student")
    target = dest / f"{stem}.zip"
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # weights do not compress
        for file in sorted(student.rglob("*")):
            if file.is_file():
                archive.write(file, Path(stem) / file.relative_to(student))
    tmp.replace(target)
    return target


def export_config(run_dir: str | Path) -> Path:
    """RUN/config.yaml: `python -m distill_core distill --config RUN/config.yaml --out DIR` reruns it."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DistillError(f"no config.yaml in {run_dir}: run a session first")
    return path


def export_run(run_dir: str | Path, dest_dir: str | Path) -> tuple[Path, Path]:
    """A finished run, ready to download: DEST/<run>-student.zip (`export_student`) and DEST/<run>-config.yaml,
    the config that reruns it (`distill --config`). Returns both paths."""
    run = Path(run_dir)
    archive = export_student(run, dest_dir, name=f"{run.name}-student")
    config = Path(dest_dir) / f"{safe_filename(run.name + '-config', 'config')}.yaml"
    shutil.copyfile(export_config(run), config)
    return archive, config
