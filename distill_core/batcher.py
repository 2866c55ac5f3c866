"""Forward passes the inspection views share across users: requests of one kind (next-token logits, attention
maps, hidden states) on one model that arrive while a pass on it is running are run next as one padded batch,
and a result already computed for the same model and the same tokens is reused (a class probing one shared
run with the same texts, a temperature slider that moves: no second forward pass).

    logits = FORWARDS.run(model, "logits", input_ids)        # (t, vocab) float32, input_ids (1, t)

Right padding with an attention mask leaves every real position's result as it is alone (causal attention
never looks right; positions count from 0 in each row); results are cut back to each text's own length.
A model's passes run one at a time (one batch each), so concurrent requests neither oversubscribe the cores
nor race on the attention switch of `attention.attention_maps_from`. Results live in a byte-budgeted cache
keyed by the model object itself (through a serial number that dies with it: never confused with another).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from distill_core.attention import attention_maps_from
from distill_core.budget import ByteBudgetCache
from distill_core.decoding import decode_together
from distill_core.models import decoder_layers
from distill_core.threads import view_threads

KINDS = ("logits", "attentions", "hidden", "continue")
MAX_BATCH = 8
"""Texts in one batched pass."""
MAX_BATCH_TOKENS = 2048
"""Padded tokens (texts x longest) in one batched pass: bounds its activations (logits are 49152 wide)."""
RESULTS_BUDGET = 256 * 2**20
"""Bytes of forward results kept for reuse."""


def result_bytes(value: Any) -> int:
    """About what a kept result holds in memory (tensors and arrays exactly; numbers 8 bytes; a container 64 more)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return 64 + sum(result_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return 64 + sum(result_bytes(v) for v in value)
    return 8


def frozen(model: Any) -> bool:
    """Whether `model` is a network none of whose parameters requires gradients: the shared models the views
    compare (the cache's teachers and students are frozen), never a student a session is training (nor a
    stand-in without weights, such as the teacher cache's replay of recorded outputs)."""
    parameters = list(model.parameters())
    return bool(parameters) and not any(p.requires_grad for p in parameters)


@dataclass
class _Request:
    key: tuple
    ids: torch.Tensor
    options: tuple = ()
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Lane:
    """The requests waiting for one model and kind, and whether a pass on it is running."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: list[_Request] = field(default_factory=list)
    inflight: dict[tuple, _Request] = field(default_factory=dict)
    busy: bool = False


@torch.no_grad()
def _batched(model: Any, kind: str, rows: list[torch.Tensor], options: list[tuple] | None = None) -> list[Any]:
    """One padded forward pass of `model` over `rows` (each (t,) token ids); each row's result at its length.
    "continue": each row's greedy and sampled continuations, its options (new tokens, seed), decoded together
    (decoding.decode_together)."""
    if kind == "continue":
        return decode_together(model, [(row, *option) for row, option in zip(rows, options or [])])
    lengths = [int(r.shape[0]) for r in rows]
    width = max(lengths)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : lengths[i]] = row
        attention_mask[i, : lengths[i]] = 1
    if len(rows) == 1:  # alone: no padding, no mask (what a stand-in without weights can replay)
        inputs = {"input_ids": input_ids.to(model.device)}
    else:
        inputs = {"input_ids": input_ids.to(model.device), "attention_mask": attention_mask.to(model.device)}
    if kind == "logits":
        logits = model(**inputs).logits.float().cpu()  # (b, t, vocab)
        return [logits[i, :n].clone() for i, n in enumerate(lengths)]
    if kind == "hidden":  # the output layer's logits are not wanted: one position's (its smallest) is computed
        states = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[1:]  # each (b, t, hidden)
        return [[h[i, :n].float().cpu().clone() for h in states] for i, n in enumerate(lengths)]
    with attention_maps_from(model, list(range(len(decoder_layers(model))))):
        attentions = model(**inputs, output_attentions=True, logits_to_keep=1).attentions  # each (b, heads, t, t)
    maps = torch.stack([a.float().cpu() for a in attentions], dim=1)  # (b, layers, heads, t, t)
    return [maps[i, :, :, :n, :n].numpy().copy() for i, n in enumerate(lengths)]


class ForwardBatcher:
    """Shared, batched, reused forward passes (module docstring)."""

    def __init__(self, budget: int = RESULTS_BUDGET, max_batch: int = MAX_BATCH,
                 max_batch_tokens: int = MAX_BATCH_TOKENS, compute: Callable[..., list[Any]] = _batched):
        self.results = ByteBudgetCache(budget, sizeof=result_bytes)
        self.max_batch, self.max_batch_tokens, self._compute = max_batch, max_batch_tokens, compute
        self._serials: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)
        self._lanes: dict[tuple[int, str], _Lane] = {}
        self._lock = threading.Lock()
        self.passes = 0
        self.batched_rows = 0

    def serial(self, model: Any) -> int:
        """A number for `model` while it lives (never reused for another model)."""
        with self._lock:
            if model not in self._serials:
                self._serials[model] = next(self._numbers)
            return self._serials[model]

    def _lane(self, serial: int, kind: str) -> _Lane:
        with self._lock:
            return self._lanes.setdefault((serial, kind), _Lane())

    def run(self, model: Any, kind: str, input_ids: torch.Tensor, options: tuple = ()) -> Any:
        """`kind` ("logits": (t, vocab); "attentions": (layers, heads, t, t); "hidden": one (t, hidden) per
        layer; "continue": the greedy and sampled continuations of `options` (new tokens, seed)) of `model` on
        `input_ids` (1, t), computed with the other requests waiting for this model and kind, or reused. Treat the result as read-only: other users get the same object. A model that is
        being trained (a parameter requires gradients: a session's student) is run alone, in eval mode, and
        nothing of it is kept (its weights change from one call to the next)."""
        if kind not in KINDS:
            raise ValueError(f"unknown forward kind {kind!r}")
        ids = input_ids.reshape(-1).to("cpu", torch.long)
        if not frozen(model):
            was_training = model.training
            model.eval()
            try:
                return self._compute(model, kind, [ids], [options])[0]  # on the caller's threads (a session's)
            finally:
                model.train(was_training)
        key = (self.serial(model), kind, tuple(ids.tolist()), options)
        hit = self.results.get(key)
        if hit is not None:
            return hit
        lane = self._lane(key[0], kind)
        with lane.cond:
            request = lane.inflight.get(key)  # the same request from someone else, in flight: wait for it
            if request is None:
                request = lane.inflight[key] = _Request(key, ids, options)
                lane.queue.append(request)
            while not request.done:
                if lane.busy:
                    lane.cond.wait()
                else:
                    self._run_next_batch(model, kind, lane)
        if request.error is not None:
            raise request.error
        return request.result

    def kept(self, models: tuple[Any, ...], parts: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()` (something derived from forward passes of `models`, e.g. a CKA matrix), kept with the
        forward results for the next request of the same `parts` on the same models; computed afresh when one
        of them is being trained."""
        if not all(frozen(model) for model in models):
            return compute()
        key = ("derived", *(self.serial(model) for model in models), *parts)
        return self.results.get_or_build(key, compute)

    def _take(self, lane: _Lane) -> list[_Request]:
        batch, width = [], 0
        for request in lane.queue:
            width = max(width, int(request.ids.shape[0]))
            if batch and (len(batch) == self.max_batch or width * (len(batch) + 1) > self.max_batch_tokens):
                break
            batch.append(request)
        del lane.queue[: len(batch)]
        return batch

    def _run_next_batch(self, model: Any, kind: str, lane: _Lane) -> None:
        """Called holding lane.cond, not busy: run the first waiting requests as one pass, outside the lock."""
        lane.busy = True
        batch = self._take(lane)
        lane.cond.release()
        try:
            with view_threads():  # the views' share of the cores (threads.py), whoever's thread runs the batch
                results = self._compute(model, kind, [r.ids for r in batch], [r.options for r in batch])
            error = None
        except BaseException as exc:  # every request of the batch gets it (e.g. out of memory)
            results, error = [None] * len(batch), exc
        finally:
            lane.cond.acquire()
        self.passes += 1
        self.batched_rows += len(batch)
        for request, result in zip(batch, results):
            request.result, request.error, request.done = result, error, True
            lane.inflight.pop(request.key, None)
            if error is None:
                self.results.put(request.key, result)
        lane.busy = False
        lane.cond.notify_all()

    def clear(self) -> None:
        self.results.clear()


FORWARDS = ForwardBatcher()
"""The process's shared forward passes (every user's inspection views)."""
