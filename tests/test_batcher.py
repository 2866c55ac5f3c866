"""Shared forward passes: a padded batch gives each text what it gives alone; requests that wait while a pass
runs go together in the next one; the same text on the same model is not run twice; a model being trained is
never batched or kept."""

import threading

import numpy as np
import pytest
import torch

from distill_core.batcher import ForwardBatcher, _batched, frozen
from distill_core.models import load_model


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    loaded = load_model(str(tiny_teacher_dir), attn_implementation="eager")
    loaded.model.requires_grad_(False)
    return loaded


def ids_of(teacher, text: str) -> torch.Tensor:
    return teacher.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


TEXTS = ["I ate an apple", "For breakfast I ate an apple and a banana today", "The cat"]


@pytest.mark.parametrize("kind", ["logits", "attentions", "hidden"])
def test_a_padded_batch_gives_each_text_what_it_gives_alone(teacher, kind):
    rows = [ids_of(teacher, text) for text in TEXTS]
    together = _batched(teacher.model, kind, rows)
    for row, batched in zip(rows, together):
        (alone,) = _batched(teacher.model, kind, [row])
        if kind == "hidden":
            assert len(batched) == len(alone) == 4
            for a, b in zip(alone, batched):
                assert a.shape == b.shape == (len(row), 64) and torch.allclose(a, b, atol=1e-4)
        elif kind == "attentions":
            assert batched.shape == alone.shape == (4, teacher.model.config.num_attention_heads, len(row), len(row))
            assert np.allclose(alone, batched, atol=1e-5)
        else:
            assert batched.shape == alone.shape == (len(row), teacher.model.config.vocab_size)
            assert torch.allclose(alone, batched, atol=1e-4)


def test_waiting_requests_go_together_and_the_same_text_is_not_run_twice(teacher):
    first_running, release, calls = threading.Event(), threading.Event(), []

    def compute(model, kind, rows, options):
        calls.append(len(rows))
        if len(calls) == 1:
            first_running.set()
            release.wait(10)  # the first pass holds the model while the others arrive
        return [row.sum() for row in rows]

    batcher = ForwardBatcher(compute=compute)
    rows = [ids_of(teacher, text) for text in ["one text", "two texts here", "three", "two texts here"]]
    results = [None] * len(rows)

    def ask(i):
        results[i] = batcher.run(teacher.model, "logits", rows[i].unsqueeze(0))

    threads = [threading.Thread(target=ask, args=(0,))]
    threads[0].start()
    first_running.wait(10)
    threads += [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for thread in threads[1:]:
        thread.start()
    while sum(len(lane.queue) for lane in batcher._lanes.values()) < 2:  # the two distinct texts queued
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join()
    assert calls == [1, 2]  # the first alone, the others in one pass (the repeated text once)
    assert [int(r) for r in results] == [int(row.sum()) for row in rows]
    assert batcher.run(teacher.model, "logits", rows[2].unsqueeze(0)) is results[2] and calls == [1, 2]
    assert (batcher.passes, batcher.batched_rows) == (2, 3)


def test_a_model_being_trained_is_run_alone_every_time(teacher, tiny_teacher_dir):
    student = load_model(str(tiny_teacher_dir)).model.train()
    assert not frozen(student) and frozen(teacher.model)
    batcher = ForwardBatcher()
    ids = ids_of(teacher, "I ate an").unsqueeze(0)
    first = batcher.run(student, "logits", ids)
    with torch.no_grad():
        student.lm_head.weight.add_(0.5)  # a training step changes it
    second = batcher.run(student, "logits", ids)
    assert not torch.allclose(first, second) and student.training  # recomputed; its mode restored
    assert batcher.results.stats()["entries"] == 0
    assert batcher.kept((student,), ("x",), lambda: object()) is not batcher.kept((student,), ("x",), object)
    kept = batcher.kept((teacher.model,), ("x",), lambda: [1])
    assert batcher.kept((teacher.model,), ("x",), lambda: [2]) is kept


def test_a_failed_pass_fails_every_request_in_it(teacher):
    def compute(model, kind, rows, options):
        raise RuntimeError("out of memory")

    batcher = ForwardBatcher(compute=compute)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.run(teacher.model, "hidden", ids_of(teacher, "I ate").unsqueeze(0))
    assert batcher.results.stats()["entries"] == 0
