"""A session in a spawned child process: the same `run_session`, its events streamed back through a queue.

This is how a ZeroGPU Space runs a `spaces.GPU` handler (in a worker process, arguments and results
pickled), and a way to keep a session's memory out of the app's process. The inputs cross the boundary
as they are (a `DistillConfig`, a folder, a `session.StopSignal`), the events as plain dicts.

    stop = StopSignal()
    for event in session_in_child(config, out_dir, stop):
        ...   # stop.set() from this process stops the child after its current step
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_core.config import DistillConfig
from distill_core.errors import DistillError, describe_failure
from distill_core.session import StopSignal, run_session

_END = "__end__"
POLL_S = 0.5
"""How often the parent checks that the child is still alive while it waits for an event."""


def _child_main(config: DistillConfig, out_dir: str | None, stop: StopSignal, events: Any, resume: bool) -> None:
    """The child's work: run the session, put every event, then one end marker (with the error, if any)."""
    try:
        for event in run_session(config, out_dir, stop, resume=resume):
            events.put(event)
        events.put((_END, None, None))
    except DistillError as exc:
        events.put((_END, "DistillError", str(exc)))
    except BaseException as exc:  # anything else, in one line (out of memory: what to do)
        events.put((_END, "failure", describe_failure(exc)))


def session_in_child(config: DistillConfig, out_dir: str | Path | None, stop: StopSignal,
                     resume: bool = False) -> Iterator[dict[str, Any]]:
    """`run_session(config, out_dir, stop, resume)` in a spawned child process, its events yielded here as
    they come. A DistillError in the child is raised here with its message; a child that dies without a
    word (killed, out of memory) raises a RuntimeError. Closing this generator early asks the child to
    stop (`stop`) and waits for it."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or CUDA state inherited
    events = context.Queue()
    child = context.Process(target=_child_main, args=(config, None if out_dir is None else str(out_dir), stop,
                                                      events, resume), name="distill-session", daemon=True)
    child.start()
    ended = False
    try:
        while True:
            try:
                item = events.get(timeout=POLL_S)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the session's process ended without a result (exit code {child.exitcode})")
                continue
            if isinstance(item, tuple) and item and item[0] == _END:
                ended = True
                if item[1] == "DistillError":
                    raise DistillError(item[2])
                if item[1] is not None:
                    raise RuntimeError(item[2])
                return
            yield item
    finally:
        if not ended:  # closed early: the child stops after its current step and saves
            stop.set()
            _drain_until_end(events, child, deadline_s=120)
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()


def _drain_until_end(events: Any, child: Any, deadline_s: float) -> None:
    """Read (and drop) the child's remaining events until its end marker: a child cannot exit while what
    it put on the queue is still waiting to be read."""
    for _ in range(int(deadline_s / POLL_S)):
        try:
            item = events.get(timeout=POLL_S)
        except queue.Empty:
            if not child.is_alive():
                return
            continue
        if isinstance(item, tuple) and item and item[0] == _END:
            return
