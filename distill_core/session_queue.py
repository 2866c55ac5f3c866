"""The fair queue of distillations: one runs at a time per device (two side by side would halve each other's
speed on a CPU and could run a GPU out of memory), the others wait first come, first served, one place per
browser, and each waiting user is told their place and about how long until their turn.

    ticket = QUEUE.join(owner, config)          # DistillError when `owner` already has a place
    while not QUEUE.ready(ticket): QUEUE.waiting_message(ticket) ...
    ... the session runs; QUEUE.progress(ticket, step, steps, eta_s) as it goes ...
    QUEUE.leave(ticket); QUEUE.learn(summary)

The wait is estimated from the sessions ahead: the running one's remaining training (its own ETA) and
evaluation, and for each waiting one its steps times the seconds per step measured on this machine for its
pair and batch (the last finished sessions' summaries), plus the time those sessions spent outside training.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distill_core.errors import DistillError

HISTORY = 20
"""Finished sessions remembered for the estimates."""


@dataclass
class Ticket:
    """One user's place: who (`owner`, e.g. a browser session), what (`steps`, the pair and the batch), since
    when, and once it runs, how far it got."""

    owner: str
    steps: int
    pair: tuple[str, str]
    tokens_per_step: int
    sessions: int = 1
    """Sessions this place runs in turn (a size sweep: one per student)."""
    number: int = 0
    joined: float = field(default_factory=time.monotonic)
    started: float | None = None
    remaining_s: float | None = None
    """The running session's own estimate of what it has left (its ETA plus the evaluation after)."""
    cancelled: bool = False


@dataclass
class Measured:
    """A finished session, for estimates: its pair, tokens per step, seconds per step, seconds outside training."""

    pair: tuple[str, str]
    tokens_per_step: int
    step_s: float
    overhead_s: float


class SessionQueue:
    """First come, first served, `lanes` at a time (one per device), one place per owner."""

    def __init__(self, lanes: int = 1):
        self.lanes = lanes
        self._tickets: list[Ticket] = []
        self._history: list[Measured] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def join(self, owner: str, config: Any, sessions: int = 1) -> Ticket:
        """A place at the end of the line for `owner`'s session of `config` (`sessions` of it in turn: a sweep);
        refused when `owner` already waits or runs."""
        with self._lock:
            if any(t.owner == owner for t in self._tickets):
                raise DistillError("this browser session already has a distillation queued or running: one at a "
                                   "time per user (Stop ends it, or takes it out of the queue)")
            ticket = Ticket(owner, int(config.steps), (str(config.teacher), str(config.student)),
                            int(config.batch_size) * int(config.seq_len), sessions, next(self._numbers))
            self._tickets.append(ticket)
            return ticket

    def place(self, ticket: Ticket) -> int:
        """0 while it runs (or may start), else its place among those waiting (1: next)."""
        with self._lock:
            index = self._tickets.index(ticket) if ticket in self._tickets else 0
        return max(0, index - self.lanes + 1)

    def ready(self, ticket: Ticket) -> bool:
        """Its turn has come (it is among the first `lanes` places); cancelled tickets are never ready."""
        return not ticket.cancelled and self.place(ticket) == 0

    def start(self, ticket: Ticket) -> None:
        ticket.started = time.monotonic()

    def track(self, ticket: Ticket, event: dict[str, Any]) -> None:
        """Update what the running `ticket` has left from one of its session's events: a step's ETA plus the
        evaluation after training (the measured time outside training, halved), or before training starts the
        estimate less the time it has run. A sweep's later students are added in full."""
        after = self.overhead_s(ticket)
        if event.get("kind") == "step" and isinstance(event.get("eta_s"), (int, float)):
            ticket.remaining_s = float(event["eta_s"]) + (after / 2 if after is not None else 0.0)
        elif ticket.remaining_s is None and ticket.started is not None:
            estimate = self.estimate_s(ticket)
            if estimate is not None:
                ticket.remaining_s = max(0.0, estimate - (time.monotonic() - ticket.started))

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket in self._tickets:
                self._tickets.remove(ticket)

    def cancel(self, owner: str) -> bool:
        """Take `owner`'s waiting place out of the line (Stop while queued); False when it has none waiting."""
        with self._lock:
            waiting = [t for t in self._tickets[self.lanes:] if t.owner == owner and t.started is None]
            for ticket in waiting:
                ticket.cancelled = True
                self._tickets.remove(ticket)
        return bool(waiting)

    def waiting(self) -> int:
        with self._lock:
            return max(0, len(self._tickets) - self.lanes)

    # -----------------------------------------------------------------------------------
    # estimates
    # -----------------------------------------------------------------------------------
    def learn(self, summary: dict[str, Any] | None, tokens_per_step: int) -> None:
        """Remember a finished session's speed from its summary.json (`steps_done`, `train_s`, `wall_s`)."""
        if not summary or not summary.get("steps_done") or summary.get("train_s") is None:
            return
        step_s = float(summary["train_s"]) / int(summary["steps_done"])
        overhead = max(0.0, float(summary.get("wall_s") or 0) - float(summary["train_s"]))
        pair = (str(summary.get("teacher_spec")), str(summary.get("student_spec")))
        with self._lock:
            self._history = [*self._history, Measured(pair, tokens_per_step, step_s, overhead)][-HISTORY:]

    def overhead_s(self, ticket: Ticket) -> float | None:
        """Seconds the last finished session of `ticket`'s pair (else any) spent outside training."""
        with self._lock:
            history = list(self._history)
        same = [m for m in history if m.pair == ticket.pair] or history
        return same[-1].overhead_s if same else None

    def estimate_s(self, ticket: Ticket) -> float | None:
        """Seconds one waiting session of `ticket` will take: from the last finished session of its pair (else
        of any pair), scaled by tokens per step; None before any session has finished here."""
        with self._lock:
            history = list(self._history)
        same = [m for m in history if m.pair == ticket.pair] or history
        if not same:
            return None
        last = same[-1]
        step_s = last.step_s * ticket.tokens_per_step / max(1, last.tokens_per_step)
        return ticket.sessions * (last.overhead_s + ticket.steps * step_s)

    def wait_s(self, ticket: Ticket) -> float | None:
        """About how long until `ticket`'s turn: what the sessions ahead of it have left; None when one of them
        cannot be estimated yet."""
        with self._lock:
            ahead = self._tickets[: self._tickets.index(ticket)] if ticket in self._tickets else []
        total = 0.0
        for other in ahead:
            left = other.remaining_s if other.started is not None else self.estimate_s(other)
            if left is None:
                return None
            total += left
        return total / self.lanes
