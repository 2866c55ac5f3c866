"""The Distill tab: a preset, the knobs (generated from DistillConfig, ui/knobs.py), the training text
(ui/data.py), then Run: one session streamed as status, loss curves, a probe snapshot and the before/after
summary; Stop; Export of the last session's student. API names: preset, layer_map, run_session, stop,
export (and augment_preview, from ui/data.py)."""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

import visuals
from distill_core import api
from ui.common import (DISTILLATION_QUEUE, DISTILLATIONS, PRIVATE, SESSION_GPU_S, Inputs, UserSession, error_markdown,
                       one_line, pairs_text, prose, run_buttons, shown_path, touch, view_error, warn)
from ui.data import build_data_section
from ui.knobs import KNOB_FIELDS, recipe_config, technique_knobs, training_knobs
from ui.runs import EarlierRuns, Results, build_earlier_runs, build_share, remember
from ui.runview import RunView
from ui.setup import Pair
from ui.turns import LEFT_QUEUE_NOTE, in_turn, join

SESSION_ON_GPU = api.gpu(SESSION_GPU_S)(api.run_session)
"""One GPU call of the engine's session: on a ZeroGPU Space `spaces.GPU` (or, with DISTILL_ZEROGPU_EMULATION=1,
its emulation), the identity elsewhere. Only the engine generator crosses into ZeroGPU's worker, with plain,
picklable inputs (config, folder, StopSignal); the handler and the user's state stay in the app's process."""
SESSION = api.sliced(SESSION_ON_GPU, SESSION_GPU_S)
"""A whole session: on ZeroGPU in GPU calls of at most the call's duration, each resuming the last one's
checkpoint (api.run_in_slices); elsewhere one call."""
PLOT_INTERVAL_S = 1.0
"""Re-render the loss curves at most this often while a session streams (plus on evals and at the end)."""
STATUS_INTERVAL_S = 0.2
"""Send step-only updates at most this often (tiny models step far faster than a browser redraws)."""
EXPORT_PRECISIONS = ["bf16", "fp16", "fp32"]
NOTHING_TO_STOP = "Nothing is running or waiting in this browser session, so there is nothing to stop."
NOT_YOURS = ("the run open here was shared with you read-only: its owner did not allow exporting its student (run a "
             "session of your own to export one)")


@dataclass
class DistillTab:
    recipe: Inputs
    """The inputs of run_session by name: the pair, the preset, every knob, the data section, the user."""
    preview: Inputs
    """The inputs of augment_preview by name."""
    earlier: EarlierRuns
    """The browser's earlier runs (reopened when the page loads)."""


def build_distill(pair: Pair, user: gr.State, memory: gr.BrowserState) -> DistillTab:
    defaults = api.preset_config()
    pair_md = gr.Markdown(pair_markdown(pair.teacher.value, pair.student.value, ""), elem_id="pair-note")
    with gr.Accordion("Learn: what a session does, and what to look for", open=False):
        gr.Markdown(prose("distill", "learn"))
    with gr.Row(equal_height=True):
        preset = gr.Dropdown(api.preset_names(), value=api.QUICKSTART, label="Preset (assets/configs/)", scale=1,
                             elem_id="preset")
        preset_md = gr.Markdown(preset_markdown(api.QUICKSTART, api.preset_description(api.QUICKSTART)),
                                elem_id="preset-note")
    recipe = Inputs(dict(user=user, teacher=pair.teacher, student=pair.student, preset=preset))
    recipe = recipe.plus(training_knobs(defaults))
    data, preview = build_data_section(defaults, recipe)
    with gr.Accordion("Techniques", open=True, elem_id="techniques"):
        techniques, columns = technique_knobs(defaults)
        with columns[-1]:  # under the layer map: the pairs it resolves to
            layer_map_md = gr.Markdown(layer_map_if_known(pair.teacher.value, pair.student.value, defaults.layer_map),
                                       elem_id="layer-map-pairs")
    recipe = recipe.plus(data.components).plus(techniques)
    with gr.Row():
        run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
        stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn")
    results = Results(gr.Markdown("Press **Run** to start a session.", elem_id="run-status"),
                      gr.Plot(visuals.loss_curves([]), label="Loss curves", show_label=False, elem_id="loss-plot"),
                      gr.Plot(label="Probe snapshot", show_label=False, visible=False, elem_id="probe-plot"),
                      gr.Markdown(elem_id="run-summary"))
    rollout = gr.Plot(label="The student's last rollout", show_label=False, visible=False, elem_id="rollout-plot")
    build_export(user)
    build_share(user)
    earlier = build_earlier_runs(user, memory, results, pair)
    build_history()

    layer_map = recipe.components["layer_map"]
    known_map = dict(fn=layer_map_if_known, inputs=[pair.teacher, pair.student, layer_map], outputs=layer_map_md,
                     show_progress="hidden", **PRIVATE)
    pair.check.then(**known_map)
    note = dict(fn=pair_markdown, inputs=[pair.teacher, pair.student, pair.warnings], outputs=pair_md,
                show_progress="hidden", **PRIVATE)
    pair.warnings.change(**note)
    for picker in (pair.teacher, pair.student):
        picker.change(**note)
        picker.change(**known_map)
    preset.input(apply_preset, preset, [*(recipe.components[f] for f in KNOB_FIELDS), preset_md], api_name="preset",
                 show_progress="hidden")
    layer_map.change(layer_map_markdown, [pair.teacher, pair.student, layer_map], layer_map_md, api_name="layer_map",
                     show_progress="minimal")
    run_btn.click(recipe.bind(run_in_turn), recipe.set, [*results.outputs(), run_btn, stop_btn, rollout],
                  api_name="run_session", concurrency_limit=None, concurrency_id=DISTILLATION_QUEUE,
                  show_progress="minimal", show_progress_on=results.status  # the place in the queue: the status line
                  ).then(remember, [user, earlier.memory], [earlier.memory, earlier.picker], show_progress="hidden",
                         **PRIVATE)  # the browser keeps its runs across reloads
    stop_btn.click(request_stop, user, results.status, api_name="stop", show_progress="hidden")
    return DistillTab(recipe, preview, earlier)


def build_export(user: gr.State) -> None:
    """Export: the last session's student as a zip (weights in the picked precision) and its config."""
    with gr.Column(variant="panel", elem_id="export-section"):
        gr.Markdown(prose("distill", "export"), padding=True)
        with gr.Row():
            dtype = gr.Radio(EXPORT_PRECISIONS, value="bf16", label="Weights", scale=2, elem_id="export-dtype",
                             info="bf16 or fp16: half the download of fp32 (the session trains in fp32)")
            export_btn = gr.Button("Export the student", variant="primary", scale=1, elem_id="export-btn")
        with gr.Row():
            export_zip = gr.File(label="Student (.zip)", interactive=False, elem_id="export-zip")
            export_yaml = gr.File(label="Config (.yaml)", interactive=False, elem_id="export-config")
        export_md = gr.Markdown(elem_id="export-note", padding=True)
    export_btn.click(export_run, [dtype, user], [export_md, export_zip, export_yaml], api_name="export")


def build_history() -> None:
    """Run history: every session, size sweep and comparison in trackio's dashboard, to compare a day's runs."""
    with gr.Accordion("Run history: every run in a tracker (trackio)", open=False, elem_id="history"):
        gr.Markdown(history_markdown(), elem_id="history-note", padding=True)
        open_btn = gr.Button("Open the run history", elem_id="history-btn",
                             interactive=api.tracking_enabled() and not api.public_mode())
        link = gr.Markdown(elem_id="history-link", padding=True)
    open_btn.click(open_history, None, link, api_name="run_history", show_progress="minimal")


def history_markdown() -> str:
    """Where the tracker is and how to open it (or why it is off)."""
    if not api.tracking_enabled():
        return "Run history is off on this server (`DISTILL_TRACKING=0`)."
    where = (f"Every session, size sweep and comparison logs its config and its curves, step by step, to the "
             f"local trackio project `{api.tracking_project()}`: compare all of today's runs there, side by side.")
    if api.public_mode():
        return f"{where} On a Space, the operator shares the dashboard (README, *Run history*)."
    return (f"{where} **Open the run history** starts trackio's dashboard on another port of this machine; from a "
            f"shell: `{api.dashboard_command()}`.")


def open_history() -> str:
    """Start trackio's dashboard (once per server) and link to it."""
    if not api.tracking_enabled() or api.public_mode():
        return error_markdown("the run history's dashboard is not served from this app here")
    try:
        url = api.start_dashboard()
    except Exception as exc:  # the tracker is extra: say what went wrong, the app goes on
        return error_markdown(f"trackio's dashboard did not start: {api.first_line(exc)}")
    return f"Run history: [{url}]({url}) (trackio's dashboard: pick runs, compare their curves; a sweep is a group)."


def pair_markdown(teacher: str, student: str, warnings: str) -> str:
    """The pair the session will use, with Setup's warning about a spec the engine would refuse."""
    pair = f"Teacher `{teacher or '—'}` → student `{student or '—'}` (change them in the **Setup** tab)."
    return f"{pair}  \n{warnings}" if warnings else pair


# ---------------------------------------------------------------------------------------
# presets and the layer map
# ---------------------------------------------------------------------------------------
def preset_markdown(name: str, description: str) -> str:
    return (f"**{name}:** {description}  \n*Fills every knob below from `assets/configs/{name}.yaml`; "
            "the teacher, the student (Setup) and the corpus stay as picked.*")


def apply_preset(name: str) -> tuple[Any, ...]:
    """Every knob's value in the preset `name` (api_name `preset`), in KNOBS order, then the preset's
    description. Teacher, student and corpus stay as picked."""
    try:
        config = api.preset_config(name)
        description = api.preset_description(name)
    except api.DistillError as exc:
        return (*[gr.skip()] * len(KNOB_FIELDS), error_markdown(warn(exc)))
    return (*[getattr(config, field) for field in KNOB_FIELDS], preset_markdown(name, description))


def layer_map_markdown(teacher_spec: str, student_spec: str, spec: str, load: bool = True) -> str:
    """The student:teacher layer pairs `spec` resolves to for the pair picked in Setup (api_name `layer_map`);
    the engine's message for a spec that cannot work. Without `load`, only for a pair already checked or loaded."""
    try:
        resolved = api.layer_pairs_for(teacher_spec, student_spec, spec, load)
    except api.DistillError as exc:
        return error_markdown(str(exc))
    except Exception as exc:  # e.g. out of memory while loading the pair
        return error_markdown(one_line(exc))
    if resolved is None:
        return ("The resolved layer pairs show here once the pair is checked in **Setup** "
                "(or when you edit the layer map).")
    pairs, n_student, n_teacher = resolved
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"  # noqa: E731
    return (f"**{plural(len(pairs), 'layer pair')}** (student:teacher; the student has {plural(n_student, 'layer')}, "
            f"the teacher {n_teacher}): {pairs_text(pairs)}  \n"
            "Used by attention transfer and FitNets hints when their weight is above 0.")


def layer_map_if_known(teacher_spec: str, student_spec: str, spec: str) -> str:
    """layer_map_markdown without loading a pair (for pair changes: loading waits for a check or an edit)."""
    return layer_map_markdown(teacher_spec, student_spec, spec, load=False)


# ---------------------------------------------------------------------------------------
# the streaming session
# ---------------------------------------------------------------------------------------
async def run_in_turn(recipe: Inputs, values: dict[Any, Any]):
    """The Run button and api_name `run_session`: the session waits for its turn in the app's fair queue (one
    place per browser; its status line says its place and the estimated wait), then streams as
    `run_distillation` does. A config the engine refuses is refused before it takes a place."""
    named = recipe.named(values)
    user = named.get("user") or UserSession()
    running, idle = run_buttons(True), run_buttons(False)
    try:
        config = recipe_config(named)
        ticket = join(user, config)
    except api.DistillError as exc:
        yield error_markdown(warn(exc)), gr.skip(), gr.skip(), "", *idle, gr.skip()
        return
    waiting = lambda status: (status, gr.skip(), gr.skip(), gr.skip(), *running, gr.skip())  # noqa: E731
    async for update in in_turn(user, ticket, waiting, lambda: run_distillation(recipe, values)):
        yield update
    if ticket.cancelled:
        yield LEFT_QUEUE_NOTE, gr.skip(), gr.skip(), gr.skip(), *idle, gr.skip()


def run_distillation(recipe: Inputs, values: dict[Any, Any]):
    """Stream one session (called in turn by `run_in_turn`; `values`: {component: value} of `recipe`'s inputs).
    Yields, in order: status markdown, loss curves, probe snapshot, summary markdown, Run button, Stop button, the
    last on-policy rollout graded by the teacher."""
    named = recipe.named(values)
    user = named.get("user") or UserSession()
    running, idle = run_buttons(True), run_buttons(False)
    try:
        config = recipe_config(named)
        # a pair already checked: a bad layer map fails now, not after the first evaluation
        api.layer_pairs_for(config.teacher, config.student, config.layer_map, load=False)
    except api.DistillError as exc:
        yield error_markdown(warn(exc)), gr.skip(), gr.skip(), "", *idle, gr.skip()
        return

    out_dir, token = api.new_run()
    view = RunView(config, out_dir)
    user.stop.clear()
    user.running = True
    try:
        with api.running(out_dir):  # retention never removes it meanwhile
            yield (view.status_markdown(), view.loss_figure(), gr.update(visible=False), "", *running,
                   gr.update(visible=False))
            yield from stream_session(config, view, user, running)
    finally:
        user.running = False
        user.stop.clear()
    ended(config, view, user, token)
    probe = gr.update(value=view.probe_figure(), visible=True) if view.last_probe else gr.skip()
    rollout = gr.update(value=view.rollout_figure(), visible=True) if view.last_rollout else gr.skip()
    yield view.status_markdown(), view.loss_figure(), probe, view.summary_markdown(), *idle, rollout


def ended(config: api.DistillConfig, view: RunView, user: UserSession, token: str) -> None:
    """After a session: its run becomes this user's (the views and Export show it), the queue learns its speed,
    and the runs folder is brought under its cap. A folder with nothing saved goes, unless it holds a checkpoint
    (a save that failed for a full disk leaves the last one, which `distill --resume` continues)."""
    out_dir = view.out_dir
    summary = api.run_summary(out_dir)
    DISTILLATIONS.learn(summary, config.batch_size * config.seq_len)
    if (out_dir / "student").is_dir():
        user.last_run = {"out_dir": str(out_dir), "teacher": config.teacher, "student": config.student,
                         "probes": view.probes, "role": api.OWNER, "allow_export": True}
        user.runs.append({"id": out_dir.name, "token": token, "teacher": config.teacher, "student": config.student})
        api.look_at(out_dir)
    elif (out_dir / "checkpoint").is_dir():
        view.kept_checkpoint = True
    elif view.final is None:
        shutil.rmtree(out_dir, ignore_errors=True)  # failed or stopped before training: nothing worth keeping
    api.make_room()


def stream_session(config: api.DistillConfig, view: RunView, user: UserSession, running: tuple):
    """The engine's session events into `view`, yielding the Distill tab's updates as they come (at most every
    STATUS_INTERVAL_S for steps, the curves at most every PLOT_INTERVAL_S). A Stop before the training loop
    (loading, writing the corpus, the first evaluation) ends the session at the engine's next event without
    training or saving anything; once training runs, the engine stops after the current step and saves the
    student. Failures end up in `view` (the app stays up)."""
    last_plot = last_yield = time.monotonic()
    events = api.training_steps(SESSION(config, str(view.out_dir), user.stop))  # on the training threads
    try:
        for event in events:
            if user.ticket is not None:
                DISTILLATIONS.track(user.ticket, event)  # what the users waiting behind are told
            if user.stop.is_set() and not view.training and not event.get("training"):
                events.close()  # still loading, preparing or evaluating: end it here
                view.stopped_before_training = True
                return
            view.add(event)
            view.stop_requested = user.stop.is_set()
            if view.finished:
                continue  # the last event: let the engine's generator finish, then show everything below
            now = time.monotonic()
            new_eval = event["kind"] == "eval"
            if event["kind"] == "step" and now - last_yield < STATUS_INTERVAL_S:
                continue
            plot = gr.skip()
            if event["kind"] in ("step", "eval") and (new_eval or now - last_plot >= PLOT_INTERVAL_S):
                plot, last_plot = view.loss_figure(), now
            probe = gr.update(value=view.probe_figure(), visible=True) if event["kind"] == "probe" else gr.skip()
            rollout = gr.update(value=view.rollout_figure(), visible=True) if event["kind"] == "rollout" else gr.skip()
            last_yield = now
            yield view.status_markdown(), plot, probe, gr.skip(), *running, rollout
    except Exception as exc:  # the engine's message, or one line (e.g. out of memory): the app stays up
        view.fail(warn(exc))


def request_stop(user: UserSession | None = None) -> str:
    """Ask this user's running session or sweep to stop after the current step (api_name `stop`); the engine
    then evaluates and saves the student (before the first step: nothing is trained or saved). A session still
    waiting in the queue leaves it. Only this user's own session; nothing happens when none runs or waits."""
    if user is not None and not user.running and DISTILLATIONS.cancel(user.id):
        gr.Info("Taken out of the queue: your session will not start.")
        return LEFT_QUEUE_NOTE
    if user is None or not user.running:
        return NOTHING_TO_STOP
    user.stop.set()
    gr.Info("Stopping after the current step; the student will be evaluated and saved (before training has "
            "started: the session just ends).")
    return ("**Stop requested:** finishing the current step, then evaluating and saving the student (before "
            "training has started, the session just ends, with nothing saved) …")


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------
def exports_root() -> Path:
    """Where exports are written: inside Gradio's file cache, so that it serves them without a copy."""
    return Path(get_upload_folder()) / "distill-studio-exports"


def export_run(dtype: str = "bf16", user: UserSession | None = None):
    """The last session's student as a zip (its self-contained folder: weights in `dtype`, tokenizer, model
    card, summary, config) and the YAML config that reruns it through the CLI (api_name `export`). Returns
    note markdown, the zip's path, the config's path."""
    user = user if user is not None else UserSession()
    try:
        touch(user)
        if user.last_run is None:
            raise api.DistillError("no session has finished in this browser session yet: run one in **Distill** "
                                   "first, then export its student")
        if not user.last_run.get("allow_export", True):
            raise api.DistillError(NOT_YOURS)
        run = Path(user.last_run["out_dir"])
        dest = exports_root() / secrets.token_hex(8)
        zip_path, config_path = api.export_run(run, dest, dtype or "bf16")
    except Exception as exc:
        return view_error(exc), None, None
    if user.export_dir is not None and user.export_dir != dest:
        shutil.rmtree(user.export_dir, ignore_errors=True)  # one export per user on disk
    user.export_dir = dest
    note = (f"Exported the student of `{shown_path(run)}` in {dtype} ({zip_path.stat().st_size / 2**20:,.1f} MiB). "
            "Unzip it and load "
            f"the folder with `AutoModelForCausalLM.from_pretrained(\"{zip_path.stem}\")` (with the tokenizer, the model card "
            "README.md, summary.json and config.yaml); "
            f"`python -m distill_core distill --config {config_path.name} --out runs/again` reruns the session.")
    return note, str(zip_path), str(config_path)
