"""The guided lessons: every bundled lesson parses and its recipes resolve; a bad lesson says what is wrong."""

from __future__ import annotations

import pytest

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.lessons import lesson_names, load_lesson, parse_lesson
from distill_core.recipes import comparison_rows, parse_setting

GOOD = """---
title: A lesson
setting:
  steps: 4
recipes:
  ce_only: {preset: quickstart, row: ce_only}
  warm: {preset: hinton, overrides: {temperature: 4.0}}
---
# What to do

Press Compare.
"""


def test_the_bundled_lessons_parse_and_resolve():
    names = lesson_names()
    assert len(names) >= 3 and names == sorted(names)
    for name in names:
        lesson = load_lesson(name)
        assert lesson.title and "Compare" in lesson.text
        assert "---" not in lesson.text.splitlines()[0]  # the front matter is not shown
        rows = comparison_rows(list(lesson.recipes), DistillConfig(), parse_setting(lesson.setting_text),
                               lesson.recipes)
        assert [name for name, _ in rows] == list(lesson.recipes)
        # figures are measured, never written by hand: a lesson marks the place of each figure not measured yet,
        # and says where a figure in it was measured
        assert "<!-- measured:" in lesson.text or "Measured here" in lesson.text


def test_the_soft_target_lesson_keeps_its_setting_in_one_place():
    lesson = load_lesson("01-soft-targets")
    assert list(lesson.recipes) == ["ce_only", "soft_target"]
    assert {"student", "steps"} <= set(lesson.setting)
    rows = dict(comparison_rows(list(lesson.recipes), DistillConfig(), lesson.setting, lesson.recipes))
    assert rows["ce_only"].kd_weight == 0.0 and rows["soft_target"].kd_weight > 0
    for config in rows.values():  # the setting reaches every recipe
        assert (config.student, config.steps) == (lesson.setting["student"], lesson.setting["steps"])


def test_parse_lesson_reads_front_matter_and_text():
    lesson = parse_lesson(GOOD, "x")
    assert (lesson.name, lesson.title, lesson.setting) == ("x", "A lesson", {"steps": 4})
    assert list(lesson.recipes) == ["ce_only", "warm"] and lesson.setting_text == "steps=4"
    assert lesson.text.startswith("# What to do")


@pytest.mark.parametrize("text, expected", [
    ("# no front matter", "must open with a front matter block"),
    ("---\ntitle: [\n---\n", "not valid YAML"),
    ("---\nrecipes: {}\n---\n", "needs a title"),
    ("---\ntitle: t\nrecipes:\n  a: {row: ce_only}\n---\n", "2 to 4 recipes"),
    ("---\ntitle: t\nsetting: [1]\nrecipes:\n  a: {row: ce_only}\n  b: {row: all}\n---\n", "setting must be"),
    ("---\ntitle: t\nsetting: {stepz: 1}\nrecipes:\n  a: {row: ce_only}\n  b: {row: all}\n---\n", "stepz"),
    ("---\ntitle: t\nrecipes:\n  a: {row: ce_only}\n  b: {row: nope}\n---\n", "recipe 'b': unknown row"),
])
def test_a_bad_lesson_says_what_is_wrong(text, expected):
    with pytest.raises(DistillError, match=expected):
        parse_lesson(text, "bad")


def test_an_unknown_lesson_names_the_known_ones(tmp_path):
    (tmp_path / "01-a.md").write_text(GOOD)
    assert lesson_names(tmp_path) == ["01-a"]
    with pytest.raises(DistillError, match="unknown lesson 'b': choose one of 01-a"):
        load_lesson("b", tmp_path)
