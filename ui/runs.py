"""The Distill tab's Earlier runs: runs survive a page reload. The browser keeps its finished runs (id and
token, in its localStorage: `gr.BrowserState`); on load the page reopens the last one, and the picker opens
any of them again: the views and Export then show its student. On a machine of one's own the picker lists
every finished run of the runs folder; on a public host only this browser's runs, each opened by its token.
API: `open_run` (a run id and its token), `my_runs` (this session's runs with their tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from distill_core import api
from ui.common import PRIVATE, UserSession, error_markdown, fmt_number, prose, warn
from ui.runview import RunView

MEMORY_KEY = "distill-studio-runs"
"""The localStorage key of the browser's runs."""
KEPT_RUNS = 20
"""A browser remembers at most this many runs (the newest)."""


@dataclass
class Results:
    """The Distill tab's result components an opened run fills: status, loss curves, probe, summary."""

    status: Any
    loss: Any
    probe: Any
    summary: Any

    def outputs(self) -> list[Any]:
        return [self.status, self.loss, self.probe, self.summary]


@dataclass
class EarlierRuns:
    memory: Any
    """The browser's runs (gr.BrowserState)."""
    picker: Any
    outputs: list[Any]
    """What opening a run updates: the results, the note, the picker."""


def browser_memory() -> gr.BrowserState:
    """The browser's runs, kept in its localStorage. Made at the page's top level: a state inside a tab that
    is not shown yet is not read back from the browser when the page loads."""
    return gr.BrowserState([], storage_key=MEMORY_KEY, secret=api.browser_secret())


def build_earlier_runs(user: gr.State, memory: gr.BrowserState, results: Results, pair: Any) -> EarlierRuns:
    """The Earlier runs section; opening a run also sets Setup's pair (`pair`) to the run's, so every view
    compares its models."""
    with gr.Accordion("Earlier runs", open=False, elem_id="earlier-runs"):
        gr.Markdown(prose("distill", "earlier"))
        with gr.Row(equal_height=True):
            picker = gr.Dropdown([], value=None, label="Earlier run", allow_custom_value=True, scale=3,
                                 elem_id="earlier-run")
            open_btn = gr.Button("Open", scale=1, elem_id="open-run-btn")
        note = gr.Markdown(elem_id="earlier-note")
        token = gr.Textbox(visible=False, label="Run token")
        listed = gr.JSON(visible=False, label="This session's runs")
        list_btn = gr.Button(visible=False)
    outputs = [*results.outputs(), note, picker, pair.teacher, pair.student]
    open_btn.click(open_picked, [picker, user], outputs, **PRIVATE)
    token.submit(open_with_token, [picker, token, user], outputs, api_name="open_run")
    list_btn.click(my_runs, user, listed, api_name="my_runs")
    return EarlierRuns(memory, picker, outputs)


def run_label(row: dict[str, Any]) -> str:
    steps = f"{row.get('steps_done')}/{row.get('steps')} steps" if row.get("steps") else ""
    ppl = f"ppl {fmt_number(row.get('ppl'), 1)}" if row.get("ppl") else ""
    return " · ".join(p for p in (row["id"], f"{row.get('teacher')} → {row.get('student')}", steps, ppl) if p)


def choices(user: UserSession) -> list[tuple[str, str]]:
    """The picker's runs: this browser's on a public host, the runs folder's on one's own machine."""
    rows = list(reversed(user.runs)) if api.public_mode() else api.finished_runs()
    return [(run_label(row), row["id"]) for row in rows]


def opened(user: UserSession, last_run: dict[str, Any]) -> tuple[Any, ...]:
    """Show an opened run: the Distill tab's results rebuilt from its folder; the views and Export follow."""
    user.last_run = last_run
    view = RunView.reopened(Path(last_run["out_dir"]))
    probe = gr.update(value=view.probe_figure(), visible=True) if view.last_probe else gr.update(visible=False)
    note = (f"Opened `{Path(last_run['out_dir']).name}`: `{last_run['teacher']}` → `{last_run['student']}` (the pair "
            "in **Setup** is now this run's).")
    picker = gr.update(choices=choices(user), value=Path(last_run["out_dir"]).name)
    return (view.status_markdown(), view.loss_figure(), probe, view.summary_markdown(), note, picker,
            last_run["teacher"], last_run["student"])


def refused(message: str) -> tuple[Any, ...]:
    return (gr.skip(),) * 4 + (error_markdown(message),) + (gr.skip(),) * 3


def open_picked(run_id: str | None, user: UserSession) -> tuple[Any, ...]:
    """Open the picked run: on a public host with this browser's token for it; on one's own machine any run."""
    token = next((row["token"] for row in user.runs if row["id"] == run_id), None)
    return open_with_token(run_id, token, user, need_token=api.public_mode())


def open_with_token(run_id: str | None, token: str | None, user: UserSession | None,
                    need_token: bool = True) -> tuple[Any, ...]:
    """Open a run by its id and token (api_name `open_run`): its views and Export for this session."""
    user = user if user is not None else UserSession()
    try:
        last_run = api.open_run(run_id or "", token, need_token=need_token)
    except Exception as exc:
        return refused(warn(exc))
    if token and not any(row["id"] == run_id for row in user.runs):
        user.runs.append({"id": run_id, "token": token, "teacher": last_run["teacher"], "student": last_run["student"]})
    return opened(user, last_run)


def my_runs(user: UserSession | None) -> list[dict[str, Any]]:
    """This session's finished runs with their tokens (api_name `my_runs`): what a browser keeps."""
    return list(user.runs) if user is not None else []


def remember(user: UserSession, memory: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], Any]:
    """After a session: the browser keeps this session's runs (the newest KEPT_RUNS), and the picker lists them."""
    kept = {row["id"]: row for row in (memory or []) + user.runs if isinstance(row, dict) and "id" in row}
    return list(kept.values())[-KEPT_RUNS:], gr.update(choices=choices(user))


def restore(memory: list[dict[str, Any]] | None, user: UserSession) -> tuple[Any, ...]:
    """On page load: take back the browser's runs that still open with their tokens, and reopen the last one."""
    user.runs = []
    for row in memory or []:
        try:
            api.open_run(row.get("id", ""), row.get("token"), need_token=True)
        except (api.DistillError, AttributeError, TypeError):
            continue  # removed, or not this app's: forget it
        user.runs.append({key: row.get(key) for key in ("id", "token", "teacher", "student")})
    if not user.runs:
        return (gr.skip(),) * 5 + (gr.update(choices=choices(user)),) + (gr.skip(),) * 2
    last = user.runs[-1]
    return opened(user, api.open_run(last["id"], last["token"]))
