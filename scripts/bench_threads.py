"""How torch thread settings share the CPU between a training session and the inspection views, in one process
as in the app: a session of the default pair trains in one thread on T threads while P other threads run the
views' engine calls (dark knowledge, attention, similarity, an 8-token generation; nothing reused between
calls) on V threads each. Prints one JSON line: seconds per training step and each view's median and max.

    .venv/bin/python scripts/bench_threads.py --train 2 --view 2 --probers 1 --seconds 60
    .venv/bin/python scripts/bench_threads.py --train 1 --view 1 --probers 1 --seconds 60

README, "Views under load", has the figures on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from distill_core import api  # noqa: E402
from ui.similarity import similarity_text  # noqa: E402


def view_calls(models: api.Comparison) -> dict:
    text = similarity_text()
    every = {"teacher": models.teacher.model, **models.students}
    return {
        "dark_knowledge": lambda i: api.dark_knowledge(models.teacher, models.students, f"I ate an {i}", -1, 1.0, 10),
        "attention": lambda i: api.attention_probe(models.teacher, models.students, f"For breakfast I ate {i} apples."),
        "similarity": lambda i: api.similarity_probe(models.teacher, models.students, f"{text} {i}",
                                                     models.layer_pairs()),
        "generate": lambda i: list(api.generate_shared(every, models.teacher.tokenizer, f"The baker {i} opened", 8, 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1, help="threads of the training session")
    parser.add_argument("--view", type=int, default=1, help="threads of each view call")
    parser.add_argument("--probers", type=int, default=1, help="threads calling the views")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ["DISTILL_VIEW_THREADS"] = str(args.view)  # the views' forward passes set it themselves
    config = api.preset_config().with_overrides({"steps": 1000, "eval_every": 0, "probe_every": 0,
                                                 "checkpoint_every": 0})
    models = api.Comparison(config.teacher, config.student, None)
    calls, steps, training, stop = view_calls(models), [], threading.Event(), threading.Event()

    def train() -> None:
        torch.set_num_threads(args.train)
        for event in api.run_session(config, tempfile.mkdtemp(prefix="bench-threads-"), stop):
            training.set() if event.get("training") else None
            if event["kind"] == "step":
                steps.append(time.monotonic())

    threading.Thread(target=train, daemon=True).start()
    training.wait()
    time.sleep(5)
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    started = time.monotonic()
    deadline = started + args.seconds

    def probe(index: int) -> None:
        torch.set_num_threads(args.view)
        names, turn = list(calls), index
        while time.monotonic() < deadline:
            name = names[turn % len(names)]
            turn += 1
            begin = time.perf_counter()
            calls[name](f"{index}-{turn}")  # a new text each time: nothing reused
            latencies[name].append(time.perf_counter() - begin)

    probers = [threading.Thread(target=probe, args=(i,)) for i in range(args.probers)]
    for thread in probers:
        thread.start()
    for thread in probers:
        thread.join()
    ended = time.monotonic()
    stop.set()
    done = [t for t in steps if started <= t <= ended]
    print(json.dumps({"train_threads": args.train, "view_threads": args.view, "probers": args.probers,
                      "seconds": round(ended - started, 1), "training_steps": len(done),
                      "s_per_step": round((ended - started) / len(done), 2) if done else None,
                      **{name: {"calls": len(v), "median_s": round(statistics.median(v), 3) if v else None,
                                "max_s": round(max(v), 3) if v else None} for name, v in latencies.items()}}))


if __name__ == "__main__":
    main()
