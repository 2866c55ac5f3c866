"""What every tab shares: the per-browser `UserSession`, dict inputs by name, the Learn prose, number
formatting, error messages, the public-mode caps, and the note that says which models a view compares."""

from __future__ import annotations

import functools
import math
import re
import secrets
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from gradio.components.plot import PlotData

from distill_core import api

SESSION_GPU_S = api.gpu_duration()
"""How long one GPU call of a session may hold a ZeroGPU GPU (spaces.GPU duration, seconds; the operator's
DISTILL_GPU_DURATION_S, default 300); a longer session goes on in further calls."""
DISTILLATION_QUEUE = "distillation"
"""Gradio concurrency id of run_session and size_sweep. They enter at once and wait for their turn in
DISTILLATIONS, the app's fair queue: one distillation at a time per app (one device), one place per browser,
each waiting user told their place and about how long (README, Several users)."""
DISTILLATIONS = api.SessionQueue()
"""The app's queue of distillations (sessions and sweeps)."""
VIEW_CONCURRENCY = 8
"""Requests of one inspection view served at once: enough for requests of several users to meet in one batched
forward pass (api.FORWARDS), each on its own thread (api.for_views), while a model's passes run one at a time."""
PRIVATE = {"api_visibility": "private"}
"""Event options of the handlers that are no part of the app's API (re-runs on Enter, visibility toggles)."""
LEARN = api.ROOT / "assets" / "learn"
"""The teaching prose: one Markdown file per tab, in sections (intro, learn, ...)."""


class UserSession:
    """Per-browser-session state, held in gr.State: the stop signal of this user's running session, its place
    in the distillation queue, and the run the inspection tabs show (its own last session, an earlier run or a
    shared one). Each browser tab, and each gradio_client Client, is one such session; nothing here is shared
    between users (README, Several users). Every model lives in the engine's shared caches (api.Comparison).
    After api.idle_expiry_s() without a request its state is dropped (`expire_idle`)."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(8)  # this browser session, as the queue knows it
        self.stop = api.StopSignal()  # a file-based flag: it works in ZeroGPU's worker process too
        self.running = False  # a session or sweep of this user is running (not merely queued)
        self.ticket: api.Ticket | None = None  # its place in DISTILLATIONS, while queued or running
        self.last_run: dict[str, Any] | None = None  # out_dir, teacher, student, probes, role, allow_export
        self.export_dir: Path | None = None  # this user's last export (replaced by the next one)
        self.runs: list[dict[str, Any]] = []  # this browser's finished runs: id, token, teacher, student (newest last)
        self.recipes: dict[str, dict[str, Any]] = {}  # the knobs saved under a name (Compare recipes): definitions
        self.last_seen = time.time()
        SESSIONS.add(self)

    def __deepcopy__(self, memo: dict) -> "UserSession":
        # gr.State deep-copies its default for every browser session: give each one its own stop signal.
        return UserSession()

    @property
    def busy(self) -> bool:
        return self.running or self.ticket is not None

    def forget(self) -> None:
        """Drop what an idle browser held: the run it showed, its runs' tokens (its browser keeps them) and its
        export on disk."""
        self.last_run, self.runs = None, []
        if self.export_dir is not None:
            shutil.rmtree(self.export_dir, ignore_errors=True)
            self.export_dir = None


SESSIONS: "weakref.WeakSet[UserSession]" = weakref.WeakSet()
"""Every live browser session's state (Gradio holds them; this set only looks)."""
EXPIRY_CHECK_S = 60.0
_last_expiry_check = [0.0]
_expiry_lock = threading.Lock()


def expire_idle(now: float | None = None, force: bool = False) -> int:
    """Drop the state of browser sessions idle for longer than api.idle_expiry_s() (never one whose session is
    queued or running); at most once a minute unless `force`. Returns how many were dropped."""
    now = time.time() if now is None else now
    with _expiry_lock:
        if not force and now - _last_expiry_check[0] < EXPIRY_CHECK_S:
            return 0
        _last_expiry_check[0] = now
    horizon, dropped = now - api.idle_expiry_s(), 0
    for user in list(SESSIONS):
        if user.last_seen < horizon and not user.busy and (user.last_run or user.runs or user.export_dir):
            user.forget()
            dropped += 1
    return dropped


def touch(user: UserSession) -> None:
    """`user` made a request now (and, once a minute, idle sessions are dropped)."""
    user.last_seen = time.time()
    expire_idle()


class Answers:
    """A view's latest answers by question, shared by every user: the same question about the same models (the
    same run, seen the same way) gets the same answer, its figures built and serialised once (Gradio's PlotData,
    which gr.Plot sends as it is). Answers that are errors are not kept."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._answers: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[tuple, threading.Lock] = {}

    def _kept(self, key: tuple) -> tuple | None:
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        return None

    def get_or_make(self, key: tuple, make: Callable[[], tuple], note_index: int) -> tuple:
        """The kept answer to `key`, or `make()`'s. A question asked by many at once (a class opening the same
        view) is answered once: the others wait for that answer instead of each building the same figures."""
        kept = self._kept(key)
        if kept is not None:
            return kept
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        try:
            with making:
                kept = self._kept(key)
                return kept if kept is not None else self._keep(key, make(), note_index)
        finally:
            with self._lock:
                self._making.pop(key, None)

    def _keep(self, key: tuple, answer: tuple, note_index: int) -> tuple:
        if str(answer[note_index]).startswith("**Error:**"):
            return answer
        answer = tuple(PlotData(type="plotly", plot=value.to_json()) if isinstance(value, go.Figure) else value
                       for value in answer)
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answer


def question_of(user: UserSession) -> tuple:
    """What, besides its inputs, decides a view's answer for `user`: the run it shows, how (owner or visitor),
    and whether it is still there."""
    run = user.last_run or {}
    out_dir = run.get("out_dir")
    return (out_dir, run.get("teacher"), run.get("student"), run.get("role"),
            bool(out_dir) and (Path(out_dir) / "student").is_dir())


class Inputs:
    """A dict-input handler's inputs by name. Given a set of components, Gradio calls the handler with one
    dict {component: value} (and lists them in the API in the order they were created); `named` turns it
    into {name: value}. A name is the DistillConfig field the input sets, or the UI's own (preset,
    corpus_choice, upload, pasted, specs, user)."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = dict(components)

    @property
    def set(self) -> set[Any]:
        return set(self.components.values())

    def named(self, values: dict[Any, Any]) -> dict[str, Any]:
        return {name: values[component] for name, component in self.components.items() if component in values}

    def pick(self, names: Iterable[str]) -> "Inputs":
        return Inputs({name: self.components[name] for name in names})

    def without(self, names: Iterable[str]) -> "Inputs":
        left_out = set(names)
        return Inputs({name: c for name, c in self.components.items() if name not in left_out})

    def plus(self, components: dict[str, Any]) -> "Inputs":
        return Inputs({**self.components, **components})

    def bind(self, handler: Callable[["Inputs", dict[Any, Any]], Any]) -> Callable[[dict[Any, Any]], Any]:
        """`handler(self, values)` as the Gradio function of one dict, under the handler's name."""
        bound = functools.partial(handler, self)
        bound.__name__ = handler.__name__  # Gradio names private endpoints after it
        return bound

    def api_arguments(self, parameters: list[dict[str, Any]], named: dict[str, Any]) -> list[Any]:
        """The positional arguments of this dict-input endpoint for gradio_client, from values by name:
        `parameters` as `view_api` lists them (in the order the inputs were created, each under its label);
        an input not named gets the endpoint's default."""
        by_label = {component.label: name for name, component in self.components.items()}
        return [named.get(by_label[p["label"]], p["parameter_default"]) for p in parameters]


def item_progress(view: Any, kind: str, names: list[str], steps: Any) -> list[str]:
    """A sweep's or a comparison's status lines while one of its sessions (`names`) runs: which `kind` (student,
    recipe) it is, its step (of `steps` unless the step says), loss and ETA; then the engine's last message.
    `view`: a SweepView or a CompareView (its rows so far, current name, last step, message, stop request)."""
    done, n, step = len(view.rows), len(names), view.last_step
    name = view.current or (names[done] if done < n else "—")
    head = f"**{kind.capitalize()} {min(done + 1, n)}/{n} `{name}`**"
    if step is not None:
        head += (f" · step {step['step']}/{step.get('steps', steps)} · loss {step['loss']:.3f} · "
                 f"ETA {fmt_seconds(step.get('eta_s'))} for this {kind}")
    return [head, view.message + (" · **stop requested**, finishing the current step" if view.stop_requested else "")]


def run_buttons(running: bool) -> tuple[Any, Any]:
    """The Run (or Compare sizes) and Stop buttons while a session or sweep runs, or while none does."""
    return gr.update(interactive=not running), gr.update(interactive=running)


@functools.lru_cache(maxsize=None)
def prose_sections(tab: str) -> dict[str, str]:
    """assets/learn/<tab>.md by section: each starts at a line `<!-- name -->`."""
    text = (LEARN / f"{tab}.md").read_text(encoding="utf-8")
    parts = re.split(r"^<!-- ([\w-]+) -->$", text, flags=re.M)
    return {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2])}


def prose(tab: str, section: str) -> str:
    """One section of a tab's teaching prose (its intro, its Learn text, ...)."""
    return prose_sections(tab)[section]


# ---------------------------------------------------------------------------------------
# errors and numbers from the UI
# ---------------------------------------------------------------------------------------
def error_markdown(message: str) -> str:
    return f"**Error:** {message}"


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one readable line; out of memory says what to do."""
    return api.describe_failure(exc)


def warn(exc: BaseException) -> str:
    """An engine error (its message) or an unexpected one (one line, e.g. out of memory), shown as a warning
    toast; returns the message."""
    message = str(exc) if isinstance(exc, api.DistillError) else one_line(exc)
    gr.Warning(plain(message))
    return message


def plain(markdown: str) -> str:
    """A message without Markdown emphasis, for a toast (which shows text as it is)."""
    return markdown.replace("**", "").replace("`", "")


def view_error(exc: BaseException) -> str:
    """`warn`, as error markdown."""
    return error_markdown(warn(exc))


def as_int(value: Any, name: str) -> int:
    """A UI number that must be an integer, or a DistillError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise api.DistillError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise api.DistillError(f"{name} must be an integer, got {value!r}")
    return int(number)


def as_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise api.DistillError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise api.DistillError(f"{name} must be a finite number, got {value!r}")
    return number


# ---------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------
def fmt_params(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f} M"


def fmt_number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def shown_path(path: str | Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(api.ROOT))
    except ValueError:
        return str(path)


def pairs_text(pairs: list[Any]) -> str:
    return " ".join(f"`{s}:{t}`" for s, t in pairs)


# ---------------------------------------------------------------------------------------
# hosting
# ---------------------------------------------------------------------------------------
def cap(name: str) -> int | None:
    """A public-mode cap (PublicLimits) for a control's maximum; None outside public mode."""
    return getattr(api.public_limits(), name) if api.public_mode() else None


def public_note() -> str:
    """Public mode's limits in a few lines for the top of the page; '' outside public mode."""
    if not api.public_mode():
        return ""
    c = api.public_limits()
    return (f"**Public mode.** Models: the bundled `smollm2-135m`, Hugging Face model ids (up to "
            f"{c.model_params / 1e6:,.0f} M parameters) and students derived from the teacher; no local paths. "
            f"Sessions: at most {c.steps} steps, batch {c.batch_size}, sequences of {c.seq_len} tokens, "
            f"{c.eval_max_tokens} held-out tokens, {c.hub_max_rows:,} dataset rows, {c.augment_copies} augmented "
            f"copies, {c.sweep_students} students per size sweep. Files: uploads of at most {c.upload_mb} MiB. "
            f"Texts and prompts: at most {c.text_chars:,} characters, {c.new_tokens} new tokens.")


# ---------------------------------------------------------------------------------------
# which models the inspection tabs compare
# ---------------------------------------------------------------------------------------
NO_RUN_NOTE = ("No distillation session has run in this browser session yet: showing the teacher and the untrained "
               "student only. The trained student, **student (after)**, appears here once a session in **Distill** "
               "has finished.")


def compared(user: UserSession, teacher_spec: str, student_spec: str) -> tuple[api.Comparison, str]:
    """The models an inspection view shows for the pair picked in Setup (the engine's Comparison, with the run
    this user has open), and a note saying which they are."""
    touch(user)
    models = api.Comparison(teacher_spec, student_spec, user.last_run)
    if models.status == "no-run":
        return models, NO_RUN_NOTE
    if models.status == "other-pair":
        last = user.last_run
        return models, (f"The last session distilled `{last['teacher']}` → `{last['student']}`, not the pair picked "
                        "in Setup; pick that pair to see the trained student.")
    if models.run.get("role") == api.VIEWER:
        return models, (f"Student (after) is the student of the shared run `{Path(models.run['out_dir']).name}` "
                        f"(opened read-only from its link); student (before) is the student it started from "
                        f"(`{models.before_spec}`).")
    return models, (f"Student (after) is the last session's student from `{shown_path(models.run['out_dir'])}`; "
                    f"student (before) is the student it started from (`{models.before_spec}`).")
