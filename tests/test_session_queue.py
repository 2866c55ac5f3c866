"""The fair queue: first come first served, one place per owner, the place of each waiting user and the wait
estimated from the sessions ahead (the running one's own ETA, the waiting ones' steps at the measured speed)."""

import pytest

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.session_queue import SessionQueue

CONFIG = DistillConfig(teacher="smollm2-135m", student="layers:20", steps=20, batch_size=8, seq_len=64)


def test_one_place_per_owner_first_come_first_served():
    queue = SessionQueue()
    a, b, c = (queue.join(owner, CONFIG) for owner in "abc")
    with pytest.raises(DistillError, match="already has a distillation queued or running"):
        queue.join("b", CONFIG)
    assert [queue.place(t) for t in (a, b, c)] == [0, 1, 2] and queue.ready(a) and not queue.ready(b)
    assert queue.waiting() == 2
    assert queue.cancel("c") and c.cancelled and not queue.ready(c) and queue.waiting() == 1
    assert not queue.cancel("a")  # running, not waiting: Stop stops it instead
    queue.leave(a)
    assert queue.ready(b) and queue.place(b) == 0
    queue.join("a", CONFIG)  # gone from the line: may join again


def test_the_wait_comes_from_the_sessions_ahead():
    queue = SessionQueue()
    running = queue.join("a", CONFIG)
    waiting = queue.join("b", CONFIG.with_overrides({"steps": 10}))
    mine = queue.join("c", CONFIG)
    assert queue.wait_s(mine) is None  # nothing measured here yet
    queue.learn({"teacher_spec": "smollm2-135m", "student_spec": "layers:20", "steps_done": 20, "train_s": 50.0,
                 "wall_s": 80.0}, tokens_per_step=8 * 64)  # 2.5 s a step, 30 s outside training
    queue.start(running)
    queue.track(running, {"kind": "step", "eta_s": 40.0})
    assert running.remaining_s == pytest.approx(40.0 + 15.0)  # the ETA and the evaluation after (half of 30 s)
    assert queue.estimate_s(waiting) == pytest.approx(30.0 + 10 * 2.5)
    assert queue.wait_s(mine) == pytest.approx(55.0 + 55.0)
    bigger = queue.join("d", CONFIG.with_overrides({"batch_size": 16}))  # twice the tokens a step
    assert queue.estimate_s(bigger) == pytest.approx(30.0 + 20 * 5.0)
