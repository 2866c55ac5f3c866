"""How a training session and the inspection views share the CPU cores: each runs its torch operations on a
set number of threads (the operator's DISTILL_TRAIN_THREADS and DISTILL_VIEW_THREADS; defaults: half the cores
for training, one per view request), set in whichever worker thread runs them.

Why: torch's thread count is per calling thread (OpenMP), and every request of a web app runs on some worker
thread. With the default (every core for every caller), a view answered next to a training session waits at
each parallel operation for a core the session holds: on 2 cores a similarity probe took 8.6 s instead of 0.6 s
at one thread (README, "Views under load").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

import torch

from distill_core import hosting

T = TypeVar("T")


def use_threads(count: int) -> None:
    """Run this thread's torch operations on `count` threads (intra-op parallelism)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def for_views() -> None:
    """This worker thread serves an inspection request: DISTILL_VIEW_THREADS threads."""
    use_threads(hosting.view_threads())


@contextlib.contextmanager
def view_threads() -> Iterator[None]:
    """Within the block, this thread's torch operations run on the views' threads; the count it had before
    comes back after (a session's probe snapshot, or the command line, keeps its own)."""
    before = torch.get_num_threads()
    for_views()
    try:
        yield
    finally:
        use_threads(before)


def for_training() -> None:
    """This worker thread steps a training session: DISTILL_TRAIN_THREADS threads."""
    use_threads(hosting.training_threads())


def training_steps(events: Generator[T, None, Any]) -> Generator[T, None, Any]:
    """`events` (a session's generator), each step taken on the training threads in whichever worker thread
    asks for the next event (a web app hands a streaming handler from thread to thread). Closing this closes
    the session."""
    try:
        while True:
            for_training()
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            yield event
    finally:
        events.close()


def thread_settings() -> dict[str, int]:
    """The settings in effect, for reports: cores, training threads, view threads."""
    return {"cores": os.cpu_count() or 1, "training_threads": hosting.training_threads(),
            "view_threads": hosting.view_threads()}
