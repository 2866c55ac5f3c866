"""Export a finished run: the student as a zip of its self-contained folder (save_pretrained weights, the
tokenizer, the model card README.md, summary.json, config.yaml), in fp32 or in half precision (bf16 or
fp16: half the download), and the YAML config that reproduces the run through the CLI (`distill --config`)."""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from distill_core.errors import DistillError
from distill_core.models import load_saved_model

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""The precisions an export's weights can have (the session trains and saves fp32 master weights)."""
FILE_MODE = 0o644
"""rw-r--r--: every file of an export is readable by whoever unpacks it."""


def safe_filename(name: str, default: str = "student") -> str:
    """A file name without directories or odd characters (no path traversal): letters, digits, . _ -."""
    base = Path(str(name)).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
    return base[:80] or default


def export_student(run_dir: str | Path, dest_dir: str | Path, name: str | None = None, dtype: str = "fp32") -> Path:
    """Zip RUN/student into DEST/NAME.zip with its weights in `dtype` (bf16, fp16 or fp32); returns the zip's
    path. The archive unpacks to a folder that `AutoModelForCausalLM.from_pretrained` loads, every file
    rw-r--r--."""
    run = Path(run_dir)
    student = run / "student"
    if not (student / "config.json").is_file():
        raise DistillError(f"no saved student in {run}: run a session first")
    if dtype not in EXPORT_DTYPES:
        raise DistillError(f"export precision must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(name or f"{run.name}-student")
    target = dest / f"{stem}.zip"
    tmp = target.with_name(target.name + ".tmp")
    with tempfile.TemporaryDirectory(dir=dest) as scratch:
        folder = student if dtype == "fp32" else _in_precision(student, EXPORT_DTYPES[dtype], Path(scratch))
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # weights do not compress
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    entry = zipfile.ZipInfo.from_file(file, str(Path(stem) / file.relative_to(folder)))
                    entry.external_attr = (0o100000 | FILE_MODE) << 16  # a regular file, rw-r--r--
                    with file.open("rb") as data, archive.open(entry, "w") as out:
                        shutil.copyfileobj(data, out, 1 << 20)
    tmp.replace(target)
    return target


def _in_precision(student: Path, dtype: torch.dtype, scratch: Path) -> Path:
    """A copy of the student folder with its weights in `dtype` (the other files as they are)."""
    folder = scratch / "student"
    load_saved_model(student).to(dtype).save_pretrained(folder)
    for file in student.iterdir():
        if file.is_file() and not (folder / file.name).exists():
            shutil.copy2(file, folder / file.name)  # tokenizer, model card, summary, config
    return folder


def export_config(run_dir: str | Path) -> Path:
    """RUN/config.yaml: `python -m distill_core distill --config RUN/config.yaml --out DIR` reruns it."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DistillError(f"no config.yaml in {run_dir}: run a session first")
    return path


def export_run(run_dir: str | Path, dest_dir: str | Path, dtype: str = "bf16") -> tuple[Path, Path]:
    """A finished run, ready to download: DEST/<run>-student.zip (`export_student`, half precision unless
    told otherwise) and DEST/<run>-config.yaml, the config that reruns it (`distill --config`)."""
    run = Path(run_dir)
    archive = export_student(run, dest_dir, name=f"{run.name}-student", dtype=dtype)
    config = Path(dest_dir) / f"{safe_filename(run.name + '-config', 'config')}.yaml"
    shutil.copyfile(export_config(run), config)
    return archive, config
