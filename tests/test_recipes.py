"""Recipes to compare: what each name means, the shared pair and setting, the checks before a comparison, the
ranking, and an earlier ablation.json read back."""

from __future__ import annotations

import json

import pytest

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.presets import preset_config
from distill_core.recipes import (MAX_RECIPES, builtin_recipes, check_definition, comparison_rows, parse_setting,
                                  ranked, read_comparison_rows, recipe_config, saved_recipe, setting_text)

PAIR = {"teacher": "smollm2-135m", "student": "layers:6"}


def test_builtin_recipes_are_the_ablation_rows_then_the_presets():
    names = builtin_recipes()
    assert names[:7] == ["ce_only", "soft_target", "attention", "fitnets", "all", "on_policy_0.5", "on_policy_1"]
    assert "preset:quickstart" in names and "preset:fitnets" in names  # a preset and a row may share a word


def test_a_row_recipe_is_the_ablation_row_over_the_knobs_with_the_shared_pair_and_setting():
    knobs = preset_config("quickstart").with_overrides({"temperature": 3.0, "attention_weight": 0.5})
    ce = recipe_config("ce_only", knobs, {**PAIR, "steps": 4})
    soft = recipe_config("soft_target", knobs, {**PAIR, "steps": 4})
    assert (ce.kd_weight, soft.kd_weight) == (0.0, knobs.kd_weight)
    assert ce.attention_weight == soft.attention_weight == 0.0  # the ablation's soft targets: no layer-wise term
    assert ce.temperature == soft.temperature == 3.0 and ce.steps == soft.steps == 4
    assert (ce.teacher, ce.student) == ("smollm2-135m", "layers:6")
    assert recipe_config("attention", knobs, PAIR).attention_weight == 0.5


def test_a_preset_recipe_is_the_preset_not_the_knobs():
    knobs = preset_config("quickstart").with_overrides({"temperature": 7.0})
    hinton = recipe_config("preset:hinton", knobs, PAIR)
    assert hinton.temperature == preset_config("hinton").temperature == 2.0 and hinton.student == "layers:6"


def test_a_definition_applies_preset_then_shared_then_row_then_overrides():
    definitions = {"T4": {"preset": "hinton", "overrides": {"temperature": 4.0}},
                   "soft": {"preset": "on-policy", "row": "soft_target"},
                   "mine": saved_recipe(preset_config("quickstart").with_overrides({"seed": 11}))}
    knobs = DistillConfig()
    t4 = recipe_config("T4", knobs, {**PAIR, "temperature": 1.0}, definitions)
    assert t4.temperature == 4.0 and t4.kd_weight == preset_config("hinton").kd_weight
    soft = recipe_config("soft", knobs, PAIR, definitions)
    assert soft.on_policy_fraction == 0.0 and preset_config("on-policy").on_policy_fraction == 0.5
    assert recipe_config("mine", knobs, PAIR, definitions).seed == 11


def test_comparison_rows_checks_the_picks():
    knobs = DistillConfig()
    rows = comparison_rows(["soft_target", " ce_only "], knobs, PAIR)
    assert [name for name, _ in rows] == ["soft_target", "ce_only"]  # the order picked
    with pytest.raises(DistillError, match="pick 2 to 4 recipes to compare, got 1"):
        comparison_rows(["ce_only"], knobs, PAIR)
    with pytest.raises(DistillError, match="got 5"):
        comparison_rows(builtin_recipes()[:MAX_RECIPES + 1], knobs, PAIR)
    with pytest.raises(DistillError, match="ce_only is picked twice"):
        comparison_rows(["ce_only", "ce_only"], knobs, PAIR)
    with pytest.raises(DistillError, match="unknown recipe 'nope'"):
        comparison_rows(["ce_only", "nope"], knobs, PAIR)
    with pytest.raises(DistillError, match="steps"):
        comparison_rows(["ce_only", "soft_target"], knobs, {**PAIR, "steps": -1})


@pytest.mark.parametrize("definition, expected", [
    ({"preset": "nope"}, "unknown preset 'nope'"),
    ({"row": "nope"}, "unknown row 'nope'"),
    ({"recipe": "x"}, "unknown key"),
    ({"overrides": {"tempreature": 2}}, "unknown config field"),
    ({"overrides": [1]}, "overrides must be a mapping"),
    ({"config": {}, "row": "ce_only"}, "a whole config stands alone"),
    ("ce_only", "must be a mapping"),
])
def test_bad_definitions_say_what_is_wrong(definition, expected):
    with pytest.raises(DistillError, match=expected):
        check_definition("r", definition)


def test_setting_reads_field_value_lines():
    setting = parse_setting("steps=4\n\n# a comment\nstudent = layers:0,5,9  # kept\ntemperature=2.5")
    assert setting == {"steps": 4, "student": "layers:0,5,9", "temperature": 2.5}
    assert parse_setting(setting_text(setting)) == setting
    assert parse_setting("") == {} and parse_setting(None) == {}
    with pytest.raises(DistillError, match="line 1 .* field=value"):
        parse_setting("steps 4")
    with pytest.raises(DistillError, match="unknown config field"):
        parse_setting("stepz=4")


def test_ranked_puts_the_lowest_perplexity_first_and_failures_last():
    rows = [{"name": "a", "ppl": 30.0}, {"name": "b", "ppl": None, "error": "x"}, {"name": "c", "ppl": 20.0},
            {"name": "d", "ppl": float("nan")}]
    assert [r["name"] for r in ranked(rows)] == ["c", "a", "b", "d"]


def test_read_comparison_rows(tmp_path):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps([{"name": "ce_only", "ppl": 3.0}]))
    assert read_comparison_rows(str(path)) == [{"name": "ce_only", "ppl": 3.0}]
    path.write_text(json.dumps([{"spec": "layers:1"}]))
    with pytest.raises(DistillError, match="rows with a `name` each"):
        read_comparison_rows(str(path))
    path.write_text("{nope")
    with pytest.raises(DistillError, match="not a readable JSON file"):
        read_comparison_rows(str(path))
    with pytest.raises(DistillError, match="no file"):
        read_comparison_rows(None)
