"""Recipes to compare: named configs for one teacher/student pair, run one after another as a comparison
(`sweep.ablation`, which writes their rows to ablation.json, as `ablate` does).

A recipe is named by what it is:

- a preset, `preset:hinton` (assets/configs/hinton.yaml);
- a row of the technique ablation over the current knobs (`ce_only`, `soft_target`, `attention`, `fitnets`,
  `all`) or of the on-policy one (`on_policy_0.5`, `on_policy_1`), as `ablate` builds them;
- a definition, `{preset, row, overrides}` (a lesson's recipes, lessons.py) or `{config}` (the current knobs
  saved under a name): the preset (or the current knobs), then the row, then the overrides.

Every recipe of a comparison gets the same pair, data and setting (`shared`) before its own changes, so
that the rows differ only in what their names say.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from distill_core import hosting
from distill_core.config import DistillConfig
from distill_core.errors import DistillError, first_line
from distill_core.presets import preset_config, preset_names
from distill_core.sweep import ablation_rows, on_policy_rows

PRESET_PREFIX = "preset:"
MIN_RECIPES, MAX_RECIPES = 2, 4
"""A comparison runs two to four recipes (each a whole session, one after another)."""
DEFINITION_KEYS = {"preset", "row", "overrides", "config"}


def row_recipes(config: DistillConfig) -> dict[str, DistillConfig]:
    """The technique ablation's rows and the on-policy ablation's over `config`, by name (the on-policy
    ablation's `soft_target` has no on-policy steps, whatever `config` says)."""
    return {**dict(ablation_rows(config)), **dict(on_policy_rows(config))}


def builtin_recipes() -> list[str]:
    """The recipes every comparison may name: the ablation rows, then the presets (`preset:NAME`)."""
    return [*row_recipes(DistillConfig()), *(PRESET_PREFIX + name for name in preset_names())]


def check_definition(name: str, definition: Any) -> dict[str, Any]:
    """A recipe definition, checked: a mapping of `preset` (a preset's name), `row` (an ablation row's),
    `overrides` (config fields and values) or `config` (a whole config, alone)."""
    if not isinstance(definition, dict) or not definition:
        raise DistillError(f"recipe {name!r} must be a mapping of preset, row and overrides")
    unknown = sorted(set(definition) - DEFINITION_KEYS)
    if unknown:
        raise DistillError(f"recipe {name!r}: unknown key(s) {', '.join(unknown)} (use preset, row, overrides)")
    if "config" in definition and len(definition) > 1:
        raise DistillError(f"recipe {name!r}: a whole config stands alone (no preset, row or overrides with it)")
    preset, row = definition.get("preset"), definition.get("row")
    if preset is not None and preset not in preset_names():
        raise DistillError(f"recipe {name!r}: unknown preset {preset!r}: choose one of {', '.join(preset_names())}")
    rows = row_recipes(DistillConfig())
    if row is not None and row not in rows:
        raise DistillError(f"recipe {name!r}: unknown row {row!r}: choose one of {', '.join(rows)}")
    overrides = definition.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise DistillError(f"recipe {name!r}: overrides must be a mapping of config field: value")
    DistillConfig().with_overrides(overrides)  # unknown fields and bad values fail here, not mid-comparison
    return definition


def definition_of(name: str, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a recipe name means: its definition (a lesson's, or saved knobs), else a preset or an ablation row."""
    if name in definitions:
        return definitions[name]
    if name.startswith(PRESET_PREFIX) and name[len(PRESET_PREFIX):] in preset_names():
        return {"preset": name[len(PRESET_PREFIX):]}
    if name in row_recipes(DistillConfig()):
        return {"row": name}
    known = [*builtin_recipes(), *definitions]
    raise DistillError(f"unknown recipe {name!r}: choose among {', '.join(known)}")


def recipe_config(name: str, knobs: DistillConfig, shared: dict[str, Any],
                  definitions: dict[str, dict[str, Any]] | None = None) -> DistillConfig:
    """The config recipe `name` runs: its base (a whole saved config, its preset, or else the current `knobs`),
    with the comparison's `shared` pair, data and setting, then its ablation row, then its own overrides."""
    definition = definition_of(name, definitions or {})
    if "config" in definition:
        base = DistillConfig.from_dict(definition["config"])
    elif definition.get("preset"):
        base = preset_config(definition["preset"])
    else:
        base = knobs
    config = base.with_overrides(shared)
    if definition.get("row"):
        config = row_recipes(config)[definition["row"]]
    return config.with_overrides(definition.get("overrides") or {})


def comparison_rows(names: list[str], knobs: DistillConfig, shared: dict[str, Any],
                    definitions: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, DistillConfig]]:
    """The (name, config) rows of a comparison of 2 to 4 distinct recipes (`recipe_config` each), for
    `sweep.ablation`; every config is checked before the first session starts."""
    names = [str(n).strip() for n in names or [] if n and str(n).strip()]
    if not MIN_RECIPES <= len(names) <= MAX_RECIPES:
        raise DistillError(f"pick {MIN_RECIPES} to {MAX_RECIPES} recipes to compare, got {len(names)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DistillError(f"recipe {', '.join(repeated)} is picked twice: each recipe runs once")
    rows = [(name, recipe_config(name, knobs, shared, definitions)) for name in names]
    for name, config in rows:
        try:
            config.validate()
        except DistillError as exc:
            raise DistillError(f"recipe {name}: {exc}") from None
    return rows


def saved_recipe(config: DistillConfig) -> dict[str, Any]:
    """The definition of the current knobs saved under a name: the whole config."""
    return {"config": config.to_dict()}


def parse_setting(text: str | None) -> dict[str, Any]:
    """A comparison's setting, one `field=value` a line (values read as YAML: `steps=4`, `student=layers:6`),
    checked against the config's fields; blank lines and `#` comments are skipped."""
    setting: dict[str, Any] = {}
    for number, line in enumerate((text or "").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DistillError(f"setting line {number} ({line!r}) is not of the form field=value")
        field, value = (part.strip() for part in line.split("=", 1))
        try:
            setting[field] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            setting[field] = value
    DistillConfig().with_overrides(setting)  # unknown fields and bad values say so here
    return setting


def setting_text(setting: dict[str, Any]) -> str:
    """A setting as `parse_setting` reads it, one `field=value` a line."""
    return "\n".join(f"{field}={value}" for field, value in setting.items())


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A comparison's rows (ablation.json's), best first: by held-out perplexity, rows without one last."""
    def key(row: dict[str, Any]) -> tuple[bool, float]:
        ppl = row.get("ppl")
        finite = isinstance(ppl, (int, float)) and not isinstance(ppl, bool) and math.isfinite(ppl)
        return (not finite, ppl if finite else 0.0)
    return sorted(rows, key=key)


def read_comparison_rows(path: str | Path | None) -> list[dict[str, Any]]:
    """The rows of an ablation.json an earlier comparison wrote (the app's Compare recipes or `ablate`), checked:
    a readable JSON list of rows with a `name` each (in public mode only from the upload area)."""
    if not path:
        raise DistillError("no file: choose an ablation.json written by Compare recipes or `ablate`")
    hosting.check_readable(path, "comparison file")
    name = Path(path).name
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillError(f"{name} is not a readable JSON file: {first_line(exc)}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rows):
        raise DistillError(f"{name} must hold a list of rows with a `name` each, like the ablation.json that "
                           "Compare recipes and `ablate` write")
    return rows
