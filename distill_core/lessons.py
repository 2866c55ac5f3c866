"""Guided lessons: assets/lessons/*.md. Each opens with a YAML front matter block that says what to compare,
machine-readable, then the lesson in Markdown (what to click, what to look for):

    ---
    title: Soft targets against hard labels
    setting:          # every recipe's: change the lesson's student, steps or corpus here, in one place
      student: layers:6
      steps: 40
    recipes:          # name: {preset, row, overrides} (recipes.py), in the order they run
      ce_only: {preset: quickstart, row: ce_only}
      soft_target: {preset: quickstart, row: soft_target}
    ---

Files sort by name (`01-soft-targets.md` first); a lesson's name is its file's stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distill_core.errors import DistillError
from distill_core.paths import LESSONS
from distill_core.recipes import MAX_RECIPES, MIN_RECIPES, check_definition, parse_setting, setting_text

FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n?(.*)\Z", re.S)


@dataclass(frozen=True)
class Lesson:
    name: str
    """The file's stem."""
    title: str
    setting: dict[str, Any]
    """Config fields every recipe of the lesson gets (the student, the steps, the corpus)."""
    recipes: dict[str, dict[str, Any]]
    """Recipe name -> definition (recipes.py), in the order they run."""
    text: str
    """The lesson in Markdown, after the front matter."""

    @property
    def setting_text(self) -> str:
        return setting_text(self.setting)


def parse_lesson(text: str, name: str) -> Lesson:
    """A lesson from its file's text: the front matter checked (a title, a setting of config fields, 2 to 4
    recipes, each a valid definition), the Markdown after it."""
    match = FRONT_MATTER.match(text)
    if match is None:
        raise DistillError(f"lesson {name}: it must open with a front matter block between two `---` lines")
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DistillError(f"lesson {name}: its front matter is not valid YAML: {exc}") from None
    if not isinstance(front, dict) or not isinstance(front.get("title"), str):
        raise DistillError(f"lesson {name}: its front matter needs a title")
    setting, recipes = front.get("setting") or {}, front.get("recipes")
    if not isinstance(setting, dict):
        raise DistillError(f"lesson {name}: its setting must be a mapping of config field: value")
    if not isinstance(recipes, dict) or not MIN_RECIPES <= len(recipes) <= MAX_RECIPES:
        raise DistillError(f"lesson {name}: it must name {MIN_RECIPES} to {MAX_RECIPES} recipes (a mapping of "
                           "name: {preset, row, overrides})")
    parse_setting(setting_text(setting))  # the setting reads back as the app's setting box shows it
    checked = {str(recipe): check_definition(str(recipe), definition) for recipe, definition in recipes.items()}
    return Lesson(name, front["title"], setting, checked, match.group(2).strip("\n"))


def lesson_names(folder: Path = LESSONS) -> list[str]:
    """The lessons' names, in order (their files' names sort them)."""
    return sorted(path.stem for path in folder.glob("*.md"))


def load_lesson(name: str, folder: Path = LESSONS) -> Lesson:
    if name not in lesson_names(folder):
        raise DistillError(f"unknown lesson {name!r}: choose one of {', '.join(lesson_names(folder)) or '(none)'}")
    return parse_lesson((folder / f"{name}.md").read_text(encoding="utf-8"), name)
