"""Torch threads per worker thread: the views' count inside a view, the training count for each step of a
session in whichever thread takes it, and the thread's own count back afterwards."""

import threading

import torch

from distill_core import threads


def test_view_threads_are_set_for_the_block_and_restored(monkeypatch):
    monkeypatch.setenv("DISTILL_VIEW_THREADS", "1")
    seen = {}

    def work():
        threads.use_threads(2)
        with threads.view_threads():
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"inside": 1, "after": 2}


def test_each_step_of_a_session_runs_on_the_training_threads(monkeypatch):
    monkeypatch.setenv("DISTILL_TRAIN_THREADS", "1")
    closed = []

    def session():
        try:
            for step in range(3):
                yield torch.get_num_threads()
        finally:
            closed.append(True)

    steps = threads.training_steps(session())
    seen = []

    def advance():
        threads.use_threads(2)  # a worker thread that last served something else
        seen.append(next(steps))

    for _ in range(2):
        thread = threading.Thread(target=advance)
        thread.start()
        thread.join()
    assert seen == [1, 1]
    steps.close()
    assert closed == [True]  # closing the wrapper ends the session
    assert threads.thread_settings()["training_threads"] == 1
