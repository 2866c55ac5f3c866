"""Waiting for one's turn to distil: Run and Compare sizes join the app's fair queue (DISTILLATIONS: one place
per browser, first come first served), show their place and the estimated wait while they wait (without holding
a worker thread: the wait is asynchronous), then stream their session's updates, each step in a worker thread."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import gradio as gr

from distill_core import api
from ui.common import DISTILLATIONS, UserSession, error_markdown, fmt_seconds, run_buttons, touch, warn

WAIT_POLL_S = 0.5
"""How often a waiting user's place is checked."""
WAIT_REFRESH_S = 5.0
"""A waiting user's status is sent again at least this often (the estimate moves with the session ahead)."""
LEFT_QUEUE = "**Left the queue** (Stop): nothing was started."
LEFT_QUEUE_NOTE = "**Taken out of the queue:** your session will not start."


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_markdown(ticket: api.Ticket, what: str = "session") -> str:
    """`**Waiting:** 2nd in line …; about 3 min 20 s until your session starts (…)`."""
    place, waiting = DISTILLATIONS.place(ticket), DISTILLATIONS.waiting()
    wait = DISTILLATIONS.wait_s(ticket)
    ahead = f"{place - 1} waiting ahead of you" if place > 1 else "next in line"
    if wait is None:
        estimate = ("no estimate yet: no session has finished on this machine since the app started, so its speed "
                    "is not known")
    else:
        estimate = (f"about {fmt_seconds(wait)} until your {what} starts (what the session running now has left, "
                    "and each waiting one's steps at the seconds per step measured here)")
    return (f"**Waiting: {ordinal(place)} in line** ({ahead}; {waiting} waiting in all; one distillation runs at a "
            f"time). {estimate[0].upper() + estimate[1:]}.  \nStop takes your {what} out of the queue.")


def join(user: UserSession, config: api.DistillConfig, sessions: int = 1) -> api.Ticket:
    """This user's place in the queue (DistillError when it already has one)."""
    touch(user)
    ticket = DISTILLATIONS.join(user.id, config, sessions)
    user.ticket = ticket
    return ticket


async def in_thread_steps(updates: Iterator[Any]) -> AsyncIterator[Any]:
    """A blocking generator's items, each computed in a worker thread (the event loop stays free)."""
    done = object()
    while True:
        update = await anyio.to_thread.run_sync(next, updates, done)
        if update is done:
            return
        yield update


async def in_turn(user: UserSession, ticket: api.Ticket, waiting: Callable[[str], tuple],
                  work: Callable[[], Iterator[tuple]], what: str = "session") -> AsyncIterator[tuple]:
    """Wait for `ticket`'s turn, yielding `waiting(status markdown)` as the place or the estimate changes, then
    the updates of `work()` (a blocking generator, run step by step in worker threads). The place is given up
    when this ends, however it ends (finished, failed, the browser gone)."""
    try:
        shown, last_sent = "", 0.0
        while not DISTILLATIONS.ready(ticket):
            if ticket.cancelled:
                yield waiting(LEFT_QUEUE)
                return
            status = waiting_markdown(ticket, what)
            now = asyncio.get_running_loop().time()
            if status != shown or now - last_sent >= WAIT_REFRESH_S:
                shown, last_sent = status, now
                yield waiting(status)
            await asyncio.sleep(WAIT_POLL_S)
        DISTILLATIONS.start(ticket)
        updates = work()
        try:
            async for update in in_thread_steps(updates):
                yield update
        finally:
            updates.close()
    finally:
        DISTILLATIONS.leave(ticket)
        user.ticket = None


async def sessions_in_turn(user: UserSession, plan: Callable[[], tuple[Any, int]], run: Callable[[], Iterator],
                           what: str) -> AsyncIterator[tuple]:
    """A job of several sessions (a comparison, a size sweep) in the fair queue as a Run: `plan()` gives the config
    of its first session and how many sessions it counts for in the estimates (a DistillError there is shown and
    nothing is queued); when its turn comes, `run()`'s updates stream. Every update is (status, figure, table,
    then the Run and Stop buttons)."""
    running, idle = run_buttons(True), run_buttons(False)
    try:
        config, sessions = plan()
        ticket = join(user, config, sessions=sessions)
    except api.DistillError as exc:
        yield error_markdown(warn(exc)), gr.skip(), gr.skip(), *idle
        return
    waiting = lambda status: (status, gr.skip(), gr.skip(), *running)  # noqa: E731
    async for update in in_turn(user, ticket, waiting, run, what=what):
        yield update
    if ticket.cancelled:
        yield LEFT_QUEUE_NOTE, gr.skip(), gr.skip(), *idle


def sessions_into(view: Any, user: UserSession, stream: Callable[[], Iterator], idle: tuple) -> Iterator[tuple]:
    """A comparison's or a sweep's sessions (`stream()`, its updates) run for `user` into `view` (a CompareView or
    a SweepView: `out_dir`, `rows`, `failure`, ...), with its run folder kept from retention meanwhile. A failure
    ends in `view` (the finished rows stay); a job that ends before its first row leaves no folder. The last
    update shows the end, with the buttons back to idle."""
    user.stop.clear()
    user.running = True
    try:
        with api.running(view.out_dir):  # retention never removes it meanwhile
            yield from stream()
    except Exception as exc:  # the engine's message, or one line (e.g. out of memory): the app stays up
        view.failure = warn(exc)
    finally:
        user.running = False
        view.ended = True
        view.stop_requested = user.stop.is_set()
        user.stop.clear()
    if not view.rows:
        shutil.rmtree(view.out_dir, ignore_errors=True)  # nothing finished: nothing to keep
    api.make_room()
    yield view.status_markdown(), view.figure(), view.table(), *idle
