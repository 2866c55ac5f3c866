"""The Compare recipes tab: two to four recipes (presets, ablation rows, a lesson's, or the current knobs saved
under a name) distilled one after another for the Setup pair, their held-out curves on one set of axes, a table
that ranks them (api_name `compare`; the rows are the ablation.json that `ablate` writes), an earlier
ablation.json plotted (api_name `compare_plot`), and the guided lessons (assets/lessons/, api_name `lesson`),
each of which loads its recipes and setting here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import (DISTILLATION_QUEUE, DISTILLATIONS, PRIVATE, Inputs, UserSession, error_markdown, fmt_number,
                       fmt_seconds, item_progress, prose, run_buttons, shown_path, warn)
from ui.distill import SESSION, STATUS_INTERVAL_S, request_stop
from ui.knobs import data_overrides, recipe_config
from ui.turns import sessions_in_turn, sessions_into

COMPARE_TABLE_HEADERS = ["rank", "recipe", "held-out ppl", "bits/byte", "top-1 agreement", "KL to teacher",
                         "teacher's NLL of its text", "real-text ppl", "steps", "wall time", "note"]
DEFAULT_RECIPES = ["ce_only", "soft_target"]
NO_LESSON = "(no lesson)"


def build_compare(recipe: Inputs) -> Inputs:
    """The tab on the Distill tab's `recipe` (its knobs are the base of the ablation rows, its pair and data are
    every recipe's); returns the inputs of `compare` by name."""
    gr.Markdown(prose("compare", "intro"))
    with gr.Row(equal_height=True):
        lesson = gr.Dropdown([NO_LESSON, *api.lesson_names()], value=NO_LESSON, label="Lesson (assets/lessons/)",
                             scale=1, elem_id="lesson-picker")
        with gr.Column(scale=3):
            lesson_md = gr.Markdown("Pick a lesson to load its recipes and setting here, or pick recipes yourself.",
                                    elem_id="lesson-text")
    with gr.Row(equal_height=True):
        recipes = gr.Dropdown(recipe_choices({}), value=DEFAULT_RECIPES, multiselect=True,
                              max_choices=api.MAX_RECIPES, label="Recipes", scale=3, elem_id="compare-recipes",
                              info="Two to four. ce_only … on_policy_1: the ablation rows over the Distill tab's knobs; "
                                   "preset:NAME: a preset; a lesson's and your saved recipes by their names")
        setting = gr.Textbox("", lines=3, label="Setting for every recipe", scale=2, elem_id="compare-setting",
                             info="One field=value a line, e.g. steps=40 or student=layers:6 (a lesson fills it in)")
        with gr.Column(scale=1, min_width=200):
            compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare-stop-btn")
    with gr.Accordion("Save the Distill tab's knobs as a recipe", open=False):
        with gr.Row(equal_height=True):
            saved_name = gr.Textbox(label="Recipe name", placeholder="e.g. my-T4", scale=3, elem_id="recipe-name")
            save_btn = gr.Button("Save as a recipe", scale=1, elem_id="save-recipe-btn")
    status_md = gr.Markdown("Press **Compare** to start.", elem_id="compare-status")
    plot = gr.Plot(visuals.recipe_curves({}), show_label=False, elem_id="compare-plot")
    table = gr.Dataframe(headers=COMPARE_TABLE_HEADERS, value=[], label="Recipes, best first", interactive=False,
                         wrap=True, elem_id="compare-table")
    with gr.Accordion("Plot an earlier comparison (ablation.json)", open=False):
        upload = gr.File(label="ablation.json from a run folder (Compare recipes or `ablate`)", file_types=[".json"],
                         type="filepath", elem_id="compare-file")

    user = recipe.components["user"]
    compare = recipe.plus({"recipes": recipes, "setting": setting, "lesson": lesson})
    compare_btn.click(compare.bind(compare_in_turn), compare.set, [status_md, plot, table, compare_btn, stop_btn],
                      api_name="compare", concurrency_limit=None, concurrency_id=DISTILLATION_QUEUE,
                      show_progress="minimal", show_progress_on=status_md)
    stop_btn.click(request_stop, user, status_md, show_progress="hidden", **PRIVATE)
    lesson.input(load_lesson, [lesson, user], [lesson_md, recipes, setting], api_name="lesson", show_progress="hidden")
    save = recipe.plus({"saved_name": saved_name, "recipes": recipes, "lesson": lesson})
    save_btn.click(save.bind(save_recipe), save.set, [status_md, recipes], api_name="save_recipe",
                   show_progress="hidden")
    upload.upload(load_comparison, upload, [status_md, plot, table], api_name="compare_plot")
    return compare


def recipe_choices(definitions: dict[str, Any]) -> list[str]:
    """The picker's recipes: the ablation rows and presets, then a lesson's and the saved ones."""
    builtin = api.builtin_recipes()
    return builtin + [name for name in definitions if name not in builtin]


def definitions_of(lesson: str | None, user: UserSession) -> dict[str, dict[str, Any]]:
    """The recipes a name may mean besides the built-in ones: the picked lesson's, then this user's saved ones."""
    lesson_recipes = api.load_lesson(lesson).recipes if lesson and lesson != NO_LESSON else {}
    return {**lesson_recipes, **user.recipes}


def load_lesson(name: str | None, user: UserSession | None = None) -> tuple[Any, Any, Any]:
    """The Lessons picker (api_name `lesson`): the lesson's text, its recipes picked (and added to the picker's
    choices) and its setting in the setting box. Returns lesson markdown, recipes picker update, setting."""
    user = user or UserSession()
    if not name or name == NO_LESSON:
        return ("Pick a lesson to load its recipes and setting here, or pick recipes yourself.",
                gr.update(choices=recipe_choices(user.recipes)), gr.skip())
    try:
        lesson = api.load_lesson(name)
    except api.DistillError as exc:
        return error_markdown(warn(exc)), gr.skip(), gr.skip()
    choices = recipe_choices({**lesson.recipes, **user.recipes})
    return (f"## {lesson.title}\n\n{lesson.text}", gr.update(choices=choices, value=list(lesson.recipes)),
            lesson.setting_text)


def save_recipe(save: Inputs, values: dict[Any, Any]) -> tuple[str, Any]:
    """Save the Distill tab's knobs (and pair and data) under a name, for this browser session (api_name
    `save_recipe`; `values`: {component: value} of `save`'s inputs). Returns status markdown, picker update."""
    return save_named(save.named(values))


def save_named(named: dict[str, Any]) -> tuple[str, Any]:
    """`save_recipe` on its inputs by name: the recipe joins the picked ones when there is room."""
    user = named.get("user") or UserSession()
    name = (named.get("saved_name") or "").strip()
    try:
        if not name:
            raise api.DistillError("give the recipe a name")
        if name in api.builtin_recipes():
            raise api.DistillError(f"{name} is a built-in recipe's name: choose another")
        user.recipes[name] = api.saved_recipe(recipe_config(named))
        known = definitions_of(named.get("lesson"), user)
    except api.DistillError as exc:
        return error_markdown(warn(exc)), gr.skip()
    picked = [r for r in (named.get("recipes") or []) if r != name]
    picked += [name] if len(picked) < api.MAX_RECIPES else []
    return (f"Saved the Distill tab's knobs as the recipe **{name}**.",
            gr.update(choices=recipe_choices(known), value=picked))


def comparison_plan(named: dict[str, Any]) -> list[tuple[str, api.DistillConfig]]:
    """The (name, config) rows the picked recipes run: each with the Setup pair, the Distill tab's data section
    and the setting box; the ablation rows over the Distill tab's knobs."""
    user = named.get("user") or UserSession()
    shared = {name: named[name] or "" for name in ("teacher", "student") if name in named}
    shared.update(data_overrides(named))
    shared.update(api.parse_setting(named.get("setting")))
    return api.comparison_rows(list(named.get("recipes") or []), recipe_config(named), shared,
                               definitions_of(named.get("lesson"), user))


async def compare_in_turn(compare: Inputs, values: dict[Any, Any]):
    """Compare and api_name `compare`: the comparison waits for its turn in the app's fair queue as a Run does
    (its recipes count as that many sessions in the estimates), then streams as `run_comparison` does."""
    named = compare.named(values)

    def plan() -> tuple[Any, int]:
        rows = comparison_plan(named)
        return rows[0][1], len(rows)

    async for update in sessions_in_turn(named.get("user") or UserSession(), plan,
                                         lambda: run_comparison(compare, values), what="comparison"):
        yield update


def run_comparison(compare: Inputs, values: dict[Any, Any]):
    """Distil each picked recipe in turn (the engine's `ablation` over the plan's rows) and stream the curves
    and the ranking (`values`: {component: value} of `compare`'s inputs). Yields, in order: progress markdown,
    curves figure, table rows, Compare button, Stop button."""
    named = compare.named(values)
    user = named.get("user") or UserSession()
    running, idle = run_buttons(True), run_buttons(False)
    try:
        plan = comparison_plan(named)
    except api.DistillError as exc:
        yield error_markdown(warn(exc)), gr.skip(), gr.skip(), *idle
        return
    out_dir = api.new_run_dir()
    view = CompareView([name for name, _ in plan], out_dir)
    yield from sessions_into(view, user, lambda: stream_comparison(plan, view, user, running), idle)


def stream_comparison(plan: list[tuple[str, api.DistillConfig]], view: "CompareView", user: UserSession,
                      running: tuple):
    """The engine's comparison events into `view`, yielding the tab's updates: every evaluation and row, other
    events at most every STATUS_INTERVAL_S. Each recipe's session goes to the GPU as a Run does (ui.distill.SESSION),
    its steps on the training threads; each logs to the tracker, grouped under the comparison's folder."""
    yield view.status_markdown(), view.figure(), view.table(), *running
    last_yield = time.monotonic()
    events = api.ablation(plan[0][1], str(view.out_dir), plan, stop=user.stop, session=SESSION)
    for event in api.training_steps(events):
        view.add(event)
        if user.ticket is not None:
            DISTILLATIONS.track(user.ticket, event)  # what the users waiting behind are told
        view.stop_requested = user.stop.is_set()
        now = time.monotonic()
        if event["kind"] in ("row", "eval"):
            last_yield = now
            yield view.status_markdown(), view.figure(), view.table(), *running
        elif event["kind"] != "step" or now - last_yield >= STATUS_INTERVAL_S:
            last_yield = now
            yield view.status_markdown(), gr.skip(), gr.skip(), *running


class CompareView:
    """What the tab shows of one streaming comparison, built from its events: each recipe's held-out
    perplexity at every evaluation, its row when it ends."""

    def __init__(self, names: list[str], out_dir: Path) -> None:
        self.names, self.out_dir = names, out_dir
        self.curves: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        self.rows: list[dict[str, Any]] = []
        self.teacher_ppl: float | None = None
        self.current: str | None = None
        self.last_step: dict[str, Any] | None = None
        self.message = "Starting …"
        self.failure: str | None = None
        self.ended = False
        self.stop_requested = False

    def add(self, event: dict[str, Any]) -> None:
        kind, name = event["kind"], event.get("ablation")
        if kind == "row":
            self.rows.append(event["row"])
            self.current, self.last_step, self.message = None, None, "Starting the next recipe …"
            return
        self.current = name or self.current
        if kind == "eval" and name in self.curves:
            self.curves[name].append((event["step"], event.get("held_out_ppl")))
            self.teacher_ppl = event.get("teacher_ppl", self.teacher_ppl)
        elif kind == "step":
            self.last_step = event
        elif kind in ("status", api.PAUSED):
            self.message = event["message"]

    def status_markdown(self) -> str:
        n, done = len(self.names), len(self.rows)
        lines: list[str] = []
        if self.failure:
            lines.append(error_markdown(self.failure))
        if self.ended:
            results = self.out_dir / "ablation.json"
            saved = f" Rows saved to `{shown_path(results)}`." if results.is_file() and self.rows else ""
            verb = "Stopped" if self.stop_requested else ("Ended" if self.failure else "Done")
            lines.append(f"**{verb}:** {done}/{n} recipes.{saved}")
        else:
            lines += item_progress(self, "recipe", self.names, "?")
        lines.append(f"Run folder: `{shown_path(self.out_dir)}` (one folder per recipe; each session is in the run "
                     "history)")
        return "  \n".join(lines)

    def figure(self) -> Any:
        return visuals.recipe_curves(self.curves, self.teacher_ppl)

    def table(self) -> list[list[str]]:
        return comparison_table(self.rows)


def comparison_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """A comparison's rows, best first (held-out perplexity), as table rows (COMPARE_TABLE_HEADERS)."""
    pct = lambda v: "—" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"  # noqa: E731
    table = []
    for rank, r in enumerate(api.ranked(rows), 1):
        note = r.get("error") or ("stopped" if r.get("stopped_early") else "")
        table.append([str(rank), str(r.get("name", "?")), fmt_number(r.get("ppl"), 2),
                      fmt_number(r.get("bits_per_byte"), 4), pct(r.get("top1_agreement")),
                      fmt_number(r.get("kl_to_teacher")), fmt_number(r.get("sample_nll")),
                      fmt_number(r.get("real_ppl"), 2), str(r.get("steps", "—")), fmt_seconds(r.get("wall_s")),
                      str(note)])
    return table


def load_comparison(path: str | None) -> tuple[Any, Any, Any]:
    """Plot an ablation.json written by an earlier comparison or `ablate` (api_name `compare_plot`): each
    recipe's perplexity before and after, and the ranking. Returns progress markdown, figure, table rows."""
    try:
        rows = api.read_comparison_rows(path)
    except api.DistillError as exc:
        return error_markdown(warn(exc)), gr.skip(), gr.skip()
    teacher = next((r["teacher_ppl"] for r in rows if isinstance(r.get("teacher_ppl"), (int, float))), None)
    note = (f"Loaded {len(rows)} recipe{'s' if len(rows) != 1 else ''} from `{Path(path).name}`: each line joins a "
            "recipe's held-out perplexity before distillation (step 0) to its perplexity after (the file keeps no "
            "curve in between).")
    return note, visuals.recipe_curves(visuals.rows_to_curves(rows), teacher), comparison_table(rows)
