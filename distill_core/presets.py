"""The preset recipes: the YAML files in assets/configs/, quickstart first. Each file's first comment
line says what it is (the app's preset picker shows it)."""

from __future__ import annotations

from pathlib import Path

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.paths import CONFIGS

QUICKSTART = "quickstart"
PRESET_ORDER = (QUICKSTART, "hinton", "dark-knowledge-topk", "attention-transfer", "fitnets", "all-combined")
"""How presets are ordered; other YAML files in assets/configs/ follow, by name."""


def preset_names() -> list[str]:
    """The YAML files in assets/configs/, by stem: PRESET_ORDER first (quickstart leads), then the rest by name."""
    stems = sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    return [name for name in PRESET_ORDER if name in stems] + [name for name in stems if name not in PRESET_ORDER]


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise DistillError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return CONFIGS / f"{name}.yaml"


def preset_description(name: str) -> str:
    """What a preset is: the first comment line of its YAML file, as a sentence (a trailing colon becomes a period)."""
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip().rstrip(":").strip()
            return text if not text or text.endswith(".") else text + "."
    return ""


def preset_config(name: str | None = None) -> DistillConfig:
    """The preset's config (quickstart when none is picked)."""
    return DistillConfig.from_yaml(preset_path(name or QUICKSTART))
