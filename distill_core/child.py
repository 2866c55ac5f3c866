"""Engine work in a spawned child process, its yields streamed back through a queue.

This is how a ZeroGPU Space runs a `spaces.GPU` function (in a worker process, its arguments and every
value it yields or returns pickled), and a way to keep a session's memory out of the app's process. The
inputs cross the boundary as they are (a `DistillConfig`, a folder, a `session.StopSignal`), the events as
plain dicts.

    stop = StopSignal()
    for event in session_in_child(config, out_dir, stop):
        ...   # stop.set() from this process stops the child after its current step

`emulated_gpu(duration)` is a stand-in for `spaces.GPU(duration=...)` with ZeroGPU's process boundary
(DISTILL_ZEROGPU_EMULATION=1, hosting.zerogpu_emulation): the app runs as on a ZeroGPU Space, here.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distill_core.config import DistillConfig
from distill_core.errors import DistillError, describe_failure
from distill_core.session import StopSignal, run_session

_END = "__end__"
POLL_S = 0.5
"""How often the parent checks that the child is still alive while it waits for a value."""


def _child_main(fn: Callable, args: tuple, kwargs: dict, values: Any) -> None:
    """The child's work: call `fn`, put each value it yields (or the one it returns), then one end marker
    with the error, if any."""
    try:
        result = fn(*args, **kwargs)
        if inspect.isgenerator(result):
            for value in result:
                values.put(value)
            values.put((_END, None, None, None))
        else:
            values.put((_END, None, None, result))
    except DistillError as exc:
        values.put((_END, "DistillError", str(exc), None))
    except BaseException as exc:  # anything else, in one line (out of memory: what to do)
        values.put((_END, "failure", describe_failure(exc), None))


def _is_end(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 4 and item[0] == _END


def run_in_child(fn: Callable, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """`fn(*args, **kwargs)` in a spawned child process: yields what it yields (a generator function) and
    returns what it returns (the generator's return value). A DistillError in the child is raised here
    with its message; a child that dies without a word (killed, out of memory) raises a RuntimeError.
    Closing this generator early sets the first `StopSignal` among the arguments (the child stops after
    its current step) and waits for the child."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or CUDA state inherited
    values = context.Queue()
    child = context.Process(target=_child_main, args=(fn, args, kwargs, values), name="distill-child", daemon=True)
    child.start()
    ended = False
    try:
        while True:
            try:
                item = values.get(timeout=POLL_S)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the engine's process ended without a result (exit code {child.exitcode})")
                continue
            if _is_end(item):
                ended = True
                _, kind, message, value = item
                if kind == "DistillError":
                    raise DistillError(message)
                if kind is not None:
                    raise RuntimeError(message)
                return value
            yield item
    finally:
        if not ended:  # closed early: ask the child to stop, and let it finish
            for stop in [*args, *kwargs.values()]:
                if isinstance(stop, StopSignal):
                    stop.set()
                    break
            _drain_until_end(values, child, deadline_s=120)
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()


def _drain_until_end(values: Any, child: Any, deadline_s: float) -> None:
    """Read (and drop) the child's remaining values until its end marker: a child cannot exit while what
    it put on the queue is still waiting to be read."""
    for _ in range(int(deadline_s / POLL_S)):
        try:
            item = values.get(timeout=POLL_S)
        except queue.Empty:
            if not child.is_alive():
                return
            continue
        if _is_end(item):
            return


def session_in_child(config: DistillConfig, out_dir: str | Path | None, stop: StopSignal, resume: bool = False,
                     time_limit_s: float | None = None) -> Iterator[dict[str, Any]]:
    """`run_session(config, out_dir, stop, resume, time_limit_s)` in a spawned child process, its events
    yielded here as they come (see `run_in_child`)."""
    out = None if out_dir is None else str(out_dir)
    return run_in_child(run_session, config, out, stop, resume=resume, time_limit_s=time_limit_s)


def emulated_gpu(duration: int) -> Callable[[Callable], Callable]:
    """A stand-in for `spaces.GPU(duration=...)` that keeps ZeroGPU's process boundary: the decorated
    function runs in a spawned child, its arguments and every value it yields or returns pickled. (The
    duration is ZeroGPU's business; callers limit their own time, see session.run_in_slices.)"""
    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def streamed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return (yield from run_in_child(fn, *args, **kwargs))
            return streamed

        @functools.wraps(fn)
        def called(*args: Any, **kwargs: Any) -> Any:
            values = run_in_child(fn, *args, **kwargs)
            try:
                while True:
                    next(values)
            except StopIteration as done:
                return done.value
        return called
    return decorate
