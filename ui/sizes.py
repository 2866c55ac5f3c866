"""The Student size tab: several students distilled in turn with the Distill tab's recipe, then size against
quality (api_name `size_sweep`), or an earlier sweep's students.json plotted (api_name `size_plot`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import (DISTILLATION_QUEUE, DISTILLATIONS, PRIVATE, Inputs, UserSession, error_markdown, prose,
                       run_buttons, warn)
from ui.distill import SESSION, STATUS_INTERVAL_S, request_stop
from ui.knobs import recipe_config
from ui.runview import SWEEP_TABLE_HEADERS, SweepView, row_line, size_table
from ui.turns import sessions_in_turn, sessions_into

DEFAULT_SWEEP_SPECS = "layers:10, layers:15, layers:20"


def build_sizes(recipe: Inputs) -> Inputs:
    """The tab on the Distill tab's `recipe` (its student replaced by the specs here); returns the inputs of
    size_sweep by name."""
    gr.Markdown(prose("sizes", "intro"))
    with gr.Accordion("Learn: reading the size/quality plot", open=False):
        gr.Markdown(prose("sizes", "learn"))
    with gr.Row(equal_height=True):
        specs = gr.Textbox(DEFAULT_SWEEP_SPECS, label="Student specs",
                           info="Comma-, semicolon- or line-separated, e.g. layers:10, layers:0,5,9, "
                                "fresh:layers=4,hidden=256,heads=4", scale=3, elem_id="sweep-specs")
        with gr.Column(scale=1, min_width=220):
            sweep_btn = gr.Button("Compare sizes", variant="primary", elem_id="sweep-btn")
            stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="sweep-stop-btn")
    status_md = gr.Markdown("Press **Compare sizes** to start.", elem_id="sweep-status")
    size_plot = gr.Plot(visuals.size_quality_figure([]), show_label=False, elem_id="size-plot")
    size_rows = gr.Dataframe(headers=SWEEP_TABLE_HEADERS, value=[], label="Students", interactive=False, wrap=True,
                             elem_id="size-table")
    with gr.Accordion("Plot an earlier sweep (students.json)", open=False):
        sweep_file = gr.File(label="students.json from a run folder", file_types=[".json"], type="filepath",
                             elem_id="sweep-file")

    sweep = recipe.without(["student"]).plus({"specs": specs})
    sweep_btn.click(sweep.bind(sweep_in_turn), sweep.set,
                    [status_md, size_plot, size_rows, sweep_btn, stop_btn], api_name="size_sweep",
                    concurrency_limit=None, concurrency_id=DISTILLATION_QUEUE, show_progress="minimal",
                    show_progress_on=status_md)
    stop_btn.click(request_stop, recipe.components["user"], status_md, show_progress="hidden", **PRIVATE)
    sweep_file.upload(load_size_rows, sweep_file, [status_md, size_plot, size_rows], api_name="size_plot")
    return sweep


async def sweep_in_turn(sweep: Inputs, values: dict[Any, Any]):
    """Compare sizes and api_name `size_sweep`: the sweep waits for its turn in the app's fair queue as a Run
    does (its students count as that many sessions in the estimates), then streams as `run_size_sweep` does."""
    named = sweep.named(values)

    def plan() -> tuple[Any, int]:
        spec_list = api.parse_student_list(named.get("specs"))
        return recipe_config({**named, "student": spec_list[0]}), len(spec_list)

    async for update in sessions_in_turn(named.get("user") or UserSession(), plan,
                                         lambda: run_size_sweep(sweep, values), what="sweep"):
        yield update


def run_size_sweep(sweep: Inputs, values: dict[Any, Any]):
    """Distil each student in `specs` with the Distill tab's recipe and plot size against quality
    (api_name `size_sweep`; `values`: {component: value} of `sweep`'s inputs). Yields, in order: progress
    markdown, size/quality figure, table rows, Compare button, Stop button."""
    named = sweep.named(values)
    user = named.get("user") or UserSession()
    running, idle = run_buttons(True), run_buttons(False)
    try:
        spec_list = api.parse_student_list(named.get("specs"))
        config = recipe_config({**named, "student": spec_list[0]})
    except api.DistillError as exc:
        yield error_markdown(warn(exc)), gr.skip(), gr.skip(), *idle
        return

    out_dir = api.new_run_dir()
    view = SweepView(spec_list, config.steps, out_dir)
    yield from sessions_into(view, user, lambda: stream_sweep(config, spec_list, view, user, running), idle)


def stream_sweep(config: api.DistillConfig, spec_list: list[str], view: SweepView, user: UserSession,
                 running: tuple):
    """The engine's sweep events into `view`, yielding the tab's updates: every row, other events at most every
    STATUS_INTERVAL_S. Each student's session goes to the GPU as a Run does (ui.distill.SESSION: on ZeroGPU in
    slices), its steps on the training threads."""
    yield view.status_markdown(), view.figure(), view.table(), *running
    last_yield = time.monotonic()
    events = api.student_sweep(config, spec_list, str(view.out_dir), user.stop, session=SESSION)
    for event in api.training_steps(events):
        view.add(event)
        if user.ticket is not None:
            DISTILLATIONS.track(user.ticket, event)  # what the users waiting behind are told
        view.stop_requested = user.stop.is_set()
        now = time.monotonic()
        if event["kind"] == "row":
            last_yield = now
            yield view.status_markdown(), view.figure(), view.table(), *running
        elif event["kind"] != "step" or now - last_yield >= STATUS_INTERVAL_S:
            last_yield = now
            yield view.status_markdown(), gr.skip(), gr.skip(), *running


def load_size_rows(path: str | None) -> tuple[Any, Any, Any]:
    """Plot a students.json written by an earlier sweep (api_name `size_plot`). Returns progress markdown,
    figure, table rows."""
    try:
        rows = api.read_student_rows(path)
    except api.DistillError as exc:
        return error_markdown(warn(exc)), gr.skip(), gr.skip()
    note = f"Loaded {len(rows)} student{'s' if len(rows) != 1 else ''} from `{Path(path).name}`."
    return "\n\n".join([note, "\n".join(map(row_line, rows))]), visuals.size_quality_figure(rows), size_table(rows)
