"""The Distill tab's Earlier runs and Share: runs survive a page reload. The browser keeps its finished runs (id
and token, in its localStorage: `gr.BrowserState`); on load the page reopens the last one, and the picker opens
any of them again: the views and Export then show its student. On a machine of one's own the picker lists
every finished run of the runs folder; on a public host only this browser's runs, each opened by its token.
The owner of a run shares it with a link (`?run=<id>&share=<token>`): whoever opens the page with it gets the
run's views read-only. API: `open_run` (a run id and its token, or its share token), `my_runs` (this session's
runs with their tokens), `share_run` and `unshare_run` (the run open here), `delete_run` (an id and its token)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from distill_core import api
from ui.common import PRIVATE, Answers, UserSession, error_markdown, fmt_number, prose, touch, warn
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
        delete_btn = gr.Button(visible=False)
    outputs = [*results.outputs(), note, picker, pair.teacher, pair.student]
    open_btn.click(open_picked, [picker, user], outputs, **PRIVATE)
    token.submit(open_with_token, [picker, token, user], outputs, api_name="open_run")
    list_btn.click(my_runs, user, listed, api_name="my_runs")
    delete_btn.click(delete_run, [picker, token, user], note, api_name="delete_run")
    return EarlierRuns(memory, picker, outputs)


def build_share(user: gr.State) -> None:
    """Share: a read-only link to the run open here (its owner's), with or without export for visitors."""
    with gr.Column(variant="panel", elem_id="share-section"):
        gr.Markdown(prose("distill", "share"), padding=True)
        with gr.Row(equal_height=True):
            allow_export = gr.Checkbox(False, label="Visitors may export its student", scale=2,
                                       elem_id="share-export")
            share_btn = gr.Button("Create share link", variant="primary", scale=1, elem_id="share-btn")
            unshare_btn = gr.Button("Stop sharing", scale=1, elem_id="unshare-btn")
        link = gr.Textbox(label="Share link (read-only)", interactive=False, buttons=["copy"], elem_id="share-link")
        note = gr.Markdown(elem_id="share-note", padding=True)
    share_btn.click(share_open_run, [allow_export, user], [note, link], api_name="share_run")
    unshare_btn.click(unshare_open_run, user, [note, link], api_name="unshare_run")


def run_label(row: dict[str, Any]) -> str:
    steps = f"{row.get('steps_done')}/{row.get('steps')} steps" if row.get("steps") else ""
    ppl = f"ppl {fmt_number(row.get('ppl'), 1)}" if row.get("ppl") else ""
    return " · ".join(p for p in (row["id"], f"{row.get('teacher')} → {row.get('student')}", steps, ppl) if p)


def choices(user: UserSession) -> list[tuple[str, str]]:
    """The picker's runs: this browser's on a public host, the runs folder's on one's own machine."""
    rows = list(reversed(user.runs)) if api.public_mode() else api.finished_runs()
    return [(run_label(row), row["id"]) for row in rows]


OPENED = Answers()
"""An opened run's results, shared by everyone who opens the same run the same way (a class on one shared link)."""


def run_results(out_dir: Path, shared: bool) -> tuple[Any, ...]:
    """The Distill tab's results of a run, rebuilt from its folder: status, curves, last probe (None without one),
    before/after. Figures and text only: Gradio consumes an update dict as it sends it, so none is kept."""
    view = RunView.reopened(out_dir)
    view.shared = shared
    probe = view.probe_figure() if view.last_probe else None
    return view.status_markdown(), view.loss_figure(), probe, view.summary_markdown()


def folder_stamp(out_dir: Path) -> tuple[int, ...]:
    """When the files a run's results are read from last changed (a running run's change at every step)."""
    return tuple(path.stat().st_mtime_ns if path.exists() else 0
                 for path in (out_dir / "summary.json", out_dir / "metrics.jsonl"))


def opened(user: UserSession, last_run: dict[str, Any]) -> tuple[Any, ...]:
    """Show an opened run: the Distill tab's results rebuilt from its folder; the views and Export follow."""
    touch(user)
    user.last_run = last_run
    out_dir = Path(last_run["out_dir"])
    api.look_at(out_dir)  # retention keeps a run someone is looking at
    shared = last_run.get("role") == api.VIEWER
    status, curves, probe, summary = OPENED.get_or_make((str(out_dir), shared, *folder_stamp(out_dir)),
                                                        lambda: run_results(out_dir, shared), note_index=0)
    note = (f"Opened `{out_dir.name}`: `{last_run['teacher']}` → `{last_run['student']}` (the pair "
            "in **Setup** is now this run's).")
    if shared:
        export = "its owner lets visitors export its student" if last_run.get("allow_export") else "no export"
        note += f" Shared with you read-only ({export})."
    picker = gr.update(choices=choices(user), value=out_dir.name)
    probe = gr.update(visible=False) if probe is None else gr.update(value=probe, visible=True)
    return (status, curves, probe, summary, note, picker, last_run["teacher"], last_run["student"])


def refused(message: str) -> tuple[Any, ...]:
    return (gr.skip(),) * 4 + (error_markdown(message),) + (gr.skip(),) * 3


def open_picked(run_id: str | None, user: UserSession) -> tuple[Any, ...]:
    """Open the picked run: on a public host with this browser's token for it; on one's own machine any run."""
    token = next((row["token"] for row in user.runs if row["id"] == run_id), None)
    return open_with_token(run_id, token, user, need_token=api.public_mode())


def open_with_token(run_id: str | None, token: str | None, user: UserSession | None,
                    need_token: bool = True) -> tuple[Any, ...]:
    """Open a run by its id and its token, or its share token (api_name `open_run`): its views (and, for its
    owner, Export) for this session."""
    user = user if user is not None else UserSession()
    try:
        if need_token or token:
            last_run = api.open_for(run_id or "", token)
        else:  # one's own machine: every run of the runs folder is the user's
            last_run = {**api.open_run(run_id or "", None, need_token=False), "role": api.OWNER, "allow_export": True}
    except Exception as exc:
        return refused(warn(exc))
    owned = last_run["role"] == api.OWNER
    if owned and token and not any(row["id"] == run_id for row in user.runs):
        user.runs.append({"id": run_id, "token": token, "teacher": last_run["teacher"], "student": last_run["student"]})
    return opened(user, last_run)


def share_open_run(allow_export: bool, user: UserSession | None, request: gr.Request):
    """Share the run open here (api_name `share_run`): a new read-only link (the run's earlier one stops
    working); only its owner can. Returns note markdown and the link."""
    user = user if user is not None else UserSession()
    try:
        run_id, token = owned_open_run(user, "share")
        share_token = api.share_run(run_id, token, bool(allow_export))
    except api.DistillError as exc:
        return error_markdown(warn(exc)), ""
    link = f"{page_url(request)}?{api.link_query(run_id, share_token)}"
    export = "may export its student" if allow_export else "cannot export it"
    return (f"Anyone with this link opens run `{run_id}` read-only: every view with their own texts; they cannot "
            f"stop or delete it, and {export}. Sharing again makes a new link.", link)


def unshare_open_run(user: UserSession | None):
    """Stop sharing the run open here (api_name `unshare_run`): its link no longer opens it."""
    user = user if user is not None else UserSession()
    try:
        run_id, token = owned_open_run(user, "stop sharing")
        api.unshare_run(run_id, token)
    except api.DistillError as exc:
        return error_markdown(warn(exc)), gr.skip()
    return f"Run `{run_id}` is no longer shared: its link opens nothing.", ""


def owned_open_run(user: UserSession, doing: str) -> tuple[str, str | None]:
    """The id and owner token of the run open here, or a DistillError when this browser does not own it."""
    touch(user)
    if user.last_run is None:
        raise api.DistillError(f"no run is open here: run a session (or open one of yours) first, then {doing} it")
    run_id = Path(user.last_run["out_dir"]).name
    token = next((row["token"] for row in user.runs if row["id"] == run_id), None)
    if user.last_run.get("role") == api.VIEWER or token is None:
        raise api.DistillError(f"only the browser that ran `{run_id}` can {doing} it (this one opened it from a link)"
                               if user.last_run.get("role") == api.VIEWER else
                               f"this browser has no token for `{run_id}`: only the browser that ran it can {doing} it")
    return run_id, token


def page_url(request: gr.Request | None) -> str:
    """The address of the page the request came from, without its query (the link's base)."""
    headers = dict(getattr(request, "headers", None) or {}) if request is not None else {}
    referer = headers.get("referer", "")
    if referer.startswith(("http://", "https://")):
        return referer.split("?")[0].split("#")[0]
    scheme = headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{headers.get('host', '127.0.0.1:7860')}/"


def delete_run(run_id: str | None, token: str | None, user: UserSession | None) -> str:
    """Delete a run (api_name `delete_run`): its id and its own token (a share token is refused). Returns a note."""
    user = user if user is not None else UserSession()
    try:
        api.delete_run(run_id or "", token)
    except api.DistillError as exc:
        return error_markdown(warn(exc))
    user.runs = [row for row in user.runs if row["id"] != run_id]
    if user.last_run is not None and Path(user.last_run["out_dir"]).name == run_id:
        user.last_run = None
    return f"Deleted run `{run_id}`."


def my_runs(user: UserSession | None) -> list[dict[str, Any]]:
    """This session's finished runs with their tokens (api_name `my_runs`): what a browser keeps."""
    return list(user.runs) if user is not None else []


def remember(user: UserSession, memory: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], Any]:
    """After a session: the browser keeps this session's runs (the newest KEPT_RUNS), and the picker lists them."""
    kept = {row["id"]: row for row in (memory or []) + user.runs if isinstance(row, dict) and "id" in row}
    return list(kept.values())[-KEPT_RUNS:], gr.update(choices=choices(user))


def restore(memory: list[dict[str, Any]] | None, user: UserSession, request: gr.Request | None = None
            ) -> tuple[Any, ...]:
    """On page load: take back the browser's runs that still open with their tokens; then open the run of a
    share link (`?run=<id>&share=<token>`) read-only, or else reopen the browser's last run."""
    user.runs = []
    for row in memory or []:
        try:
            api.open_run(row.get("id", ""), row.get("token"), need_token=True)
        except (api.DistillError, AttributeError, TypeError):
            continue  # removed, or not this app's: forget it
        user.runs.append({key: row.get(key) for key in ("id", "token", "teacher", "student")})
    query = dict(getattr(request, "query_params", None) or {}) if request is not None else {}
    if query.get("run") and query.get("share"):
        return open_with_token(query["run"], query["share"], user)
    if not user.runs:
        return (gr.skip(),) * 5 + (gr.update(choices=choices(user)),) + (gr.skip(),) * 2
    last = user.runs[-1]
    return opened(user, {**api.open_run(last["id"], last["token"]), "role": api.OWNER, "allow_export": True})
