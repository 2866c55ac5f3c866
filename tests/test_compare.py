"""The Compare recipes tab: two tiny recipes through the app's handler and through its API (gradio_client), Stop,
the lessons picker, a saved recipe, bad input, and an earlier ablation.json plotted."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import served_app
from tests.test_app import drain, tabs, ui_values, values_of
from ui import compare
from ui.common import UserSession

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")  # gr.Warning outside a UI

STATUS, PLOT, TABLE, COMPARE_BTN, STOP_BTN = range(5)
TINY = "steps=2\neval_every=1\nprobe_every=0\nsample_eval_tokens=4\nreal_text=tests/fixtures/gettysburg.txt"
"""The setting of the tiny comparisons: two steps, an evaluation after each (a curve of three points), a short
teacher-scored sample of the student's own text, a short real text."""
QUICK = "steps=3\neval_every=0\nprobe_every=0\nsample_eval_tokens=0\nreal_text="
"""Fewer measurements, where they are not the point."""


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def compare_values(teacher_dir, recipes=("ce_only", "soft_target"), setting=TINY, lesson=compare.NO_LESSON,
                   user=None, **changes):
    """`compare`'s inputs by name: the Distill tab's (a tiny pair, pasted text) plus the picks."""
    named = {**ui_values(teacher_dir, **changes), "recipes": list(recipes), "setting": setting, "lesson": lesson,
             "user": user or UserSession()}
    return values_of(tabs().compare, named)


def run_comparison(teacher_dir, **kwargs):
    return compare.run_comparison(tabs().compare, compare_values(teacher_dir, **kwargs))


def test_compare_two_tiny_recipes_through_the_handler(tiny_teacher_dir, runs_in_tmp):
    outputs = drain(run_comparison(tiny_teacher_dir))
    final = outputs[-1]
    assert final[STATUS].startswith("**Done:** 2/2 recipes."), final[STATUS]
    assert final[COMPARE_BTN]["interactive"] is True and final[STOP_BTN]["interactive"] is False
    assert any("**Recipe 2/2 `soft_target`**" in o[STATUS] for o in outputs)
    (run_dir,) = runs_in_tmp.iterdir()
    rows = json.loads((run_dir / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["ce_only", "soft_target"]
    assert all(r["error"] is None and r["steps"] == 2 and r["ppl"] > 0 and r["sample_nll"] > 0 and r["real_ppl"] > 0
               for r in rows)
    assert rows[0]["ppl_before"] == rows[1]["ppl_before"]  # the same student, text and seed
    configs = {r["name"]: yaml.safe_load((run_dir / r["name"] / "config.yaml").read_text()) for r in rows}
    assert configs["ce_only"]["kd_weight"] == 0 and configs["soft_target"]["kd_weight"] > 0
    assert {c["teacher"] for c in configs.values()} == {str(tiny_teacher_dir)}  # the Setup pair
    # the table ranks both rows by held-out perplexity; the curves share one figure, one line per recipe
    best_first = sorted(rows, key=lambda r: r["ppl"])
    assert [line[:2] for line in final[TABLE]] == [["1", best_first[0]["name"]], ["2", best_first[1]["name"]]]
    traces = {t.name: t for t in final[PLOT].data}
    assert set(traces) == {"ce_only", "soft_target", "teacher"}
    assert list(traces["ce_only"].x) == [0, 1, 2] and traces["ce_only"].y[-1] == pytest.approx(rows[0]["ppl"])


def test_stop_keeps_the_finished_rows(tiny_teacher_dir, runs_in_tmp):
    """Stop while the second recipe runs: the first row stays, the second is kept, marked stopped."""
    user = UserSession()
    outputs = []
    for output in run_comparison(tiny_teacher_dir, user=user, setting=QUICK):
        outputs.append(output)
        status = str(output[STATUS])
        if "**Recipe 2/2" in status and "Starting the next recipe" not in status:  # its session has begun
            user.stop.set()
    final = outputs[-1]
    assert final[STATUS].startswith("**Stopped:** 2/2 recipes."), final[STATUS]
    (run_dir,) = runs_in_tmp.iterdir()
    rows = json.loads((run_dir / "ablation.json").read_text())
    assert [r["stopped_early"] for r in rows] == [False, True] and rows[0]["steps"] == 3 and rows[1]["steps"] < 3
    assert {line[1]: line[-1] for line in final[TABLE]}["soft_target"] == "stopped"
    assert not user.running and not user.stop.is_set()


@pytest.mark.parametrize("changes, expected", [
    (dict(recipes=["ce_only"]), "pick 2 to 4 recipes to compare, got 1"),
    (dict(setting="stepz=3"), "unknown config field"),
    (dict(recipes=["ce_only", "T4"]), "unknown recipe 'T4'"),
])
def test_bad_input_says_so_and_runs_nothing(tiny_teacher_dir, runs_in_tmp, changes, expected):
    final = drain(run_comparison(tiny_teacher_dir, **changes))[-1]
    assert final[STATUS].startswith("**Error:**") and expected in final[STATUS]
    assert final[COMPARE_BTN]["interactive"] is True
    assert not runs_in_tmp.exists() or not any(runs_in_tmp.iterdir())


def test_the_lessons_picker_loads_recipes_setting_and_text():
    text, picker, setting = compare.load_lesson("01-soft-targets", UserSession())
    assert text.startswith("## Soft targets against hard labels") and "Compare" in text
    assert picker["value"] == ["ce_only", "soft_target"] and "ce_only" in picker["choices"]
    assert "steps=" in setting and "student=" in setting
    _, picker, _ = compare.load_lesson("02-temperature", UserSession())
    assert picker["value"] == ["T1", "T2", "T4"] and {"T1", "T4"} <= set(picker["choices"])


def test_a_lessons_recipes_and_a_saved_recipe_resolve_in_the_plan(tiny_teacher_dir):
    user = UserSession()
    named = {**ui_values(tiny_teacher_dir, seed=5), "saved_name": "mine", "recipes": ["T1"],
             "lesson": "02-temperature", "user": user}
    status, picker = compare.save_named(named)
    assert "**mine**" in status and picker["value"] == ["T1", "mine"] and "mine" in picker["choices"]
    assert compare.save_named({**named, "saved_name": "ce_only"})[0].startswith("**Error:** ce_only is a built-in")
    plan = dict(compare.comparison_plan({**named, "recipes": ["T4", "mine"], "setting": "steps=2"}))
    assert plan["T4"].temperature == 4.0 and plan["mine"].seed == 5
    assert plan["T4"].teacher == plan["mine"].teacher == str(tiny_teacher_dir) and plan["T4"].steps == 2


def test_load_an_earlier_ablation_json(tmp_path):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps([{"name": "ce_only", "ppl_before": 90.0, "ppl": 40.0, "steps": 20, "teacher_ppl": 9.0},
                                {"name": "soft_target", "ppl_before": 90.0, "ppl": 30.0, "steps": 20},
                                {"name": "all", "ppl": None, "error": "out of memory"}]))
    note, fig, table = compare.load_comparison(str(path))
    assert note.startswith("Loaded 3 recipes")
    assert [t.name for t in fig.data] == ["ce_only", "soft_target", "all", "teacher"]
    assert [line[1] for line in table] == ["soft_target", "ce_only", "all"] and table[2][-1] == "out of memory"
    note, _, _ = compare.load_comparison(None)
    assert note.startswith("**Error:** no file")


def test_compare_through_the_api(tiny_teacher_dir, tmp_path):
    """gradio_client drives /compare on a served app (two tiny recipes), then /compare_plot on its ablation.json."""
    from gradio_client import Client, handle_file

    runs = tmp_path / "served-runs"
    with served_app(runs) as url:
        client = Client(url, verbose=False)
        endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert {"/compare", "/compare_plot", "/lesson", "/save_recipe"} <= set(endpoints)
        named = {**ui_values(tiny_teacher_dir), "recipes": ["ce_only", "soft_target"], "setting": QUICK,
                 "lesson": compare.NO_LESSON}
        arguments = tabs().compare.api_arguments(endpoints["/compare"]["parameters"], named)
        status, _plot, table, *_ = client.predict(*arguments, api_name="/compare")
        assert status.startswith("**Done:** 2/2 recipes."), status
        assert sorted(line[1] for line in table["data"]) == ["ce_only", "soft_target"]
        (run_dir,) = [p for p in runs.iterdir() if (p / "ablation.json").is_file()]
        rows = json.loads((run_dir / "ablation.json").read_text())
        assert [r["name"] for r in rows] == ["ce_only", "soft_target"] and all(r["ppl"] > 0 for r in rows)
        note, _plot, table = client.predict(handle_file(str(run_dir / "ablation.json")), api_name="/compare_plot")
        assert note.startswith("Loaded 2 recipes") and len(table["data"]) == 2
