"""A cache with a byte budget: entries are kept by key, least recently used first out, until their bytes fit.

The app's loaded models (teachers, students before and after a session) live in one such cache
(models.LOADED), shared by every user, so thirty users looking at one run hold its models once and a
hundred runs opened over a day never hold more than the budget. An entry that is evicted while someone still
uses it (a view in the middle of a forward pass, a training session's teacher) stays alive for them and is
handed out again if asked for before it is freed: never a second copy of the same model.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


def tensor_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages among `tensors` in the machine's memory (tied weights counted once; a
    tensor on a GPU or the meta device counts 0: the budget is the host's memory)."""
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        if tensor.device.type != "cpu":
            continue
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def model_bytes(entry: Any) -> int:
    """Bytes of a model's weights and buffers (an nn.Module, or anything with a `.model` that is one)."""
    model = getattr(entry, "model", entry)
    if isinstance(model, torch.nn.Module):
        return tensor_bytes([*model.parameters(), *model.buffers()])
    if isinstance(model, torch.Tensor):
        return tensor_bytes([model])
    return 0


class ByteBudgetCache:
    """Values by key, within `budget()` bytes (each value's bytes by `sizeof`); the least recently used go
    first. Thread-safe; `get_or_build` builds a missing value once however many threads ask at once."""

    def __init__(self, budget: Callable[[], int] | int, sizeof: Callable[[Any], int] = model_bytes,
                 collect_evicted: bool = False):
        """`collect_evicted`: run the garbage collector after an eviction, for values that hold reference cycles
        (models): they are freed now, not at the next collection. A full collection costs tens of milliseconds
        with the GIL held, so caches of plain values (tensors, results) leave it off."""
        self._budget = budget if callable(budget) else (lambda: budget)
        self._sizeof = sizeof
        self._collect_evicted = collect_evicted
        self._total = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._evicted: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # still held by someone
        self._lock = threading.RLock()
        self._building: dict[Hashable, threading.Lock] = {}
        self.evictions = 0
        self.peak_bytes = 0

    @property
    def budget(self) -> int:
        return int(self._budget())

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._total

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The value of `key` (now the most recently used), or one evicted but still alive, or None."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
            try:
                alive = self._evicted.pop(key)
            except (KeyError, TypeError):
                return None
        return self.put(key, alive)  # back in: it takes memory anyway

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep `value` under `key` and evict the least recently used others until the budget holds (the new
        value stays even when it alone is over the budget: its caller needs it)."""
        size = self._sizeof(value)
        evicted = []
        with self._lock:
            replaced = self._entries.pop(key, None)
            self._total += size - (replaced[1] if replaced else 0)
            self._entries[key] = (value, size)
            budget = self.budget
            while self._total > budget and len(self._entries) > 1:
                old_key, (old, old_size) = self._entries.popitem(last=False)
                self._total -= old_size
                evicted.append(old)
                self.evictions += 1
                try:
                    self._evicted[old_key] = old
                except TypeError:  # not weak-referenceable: nothing to hand out again
                    pass
            self.peak_bytes = max(self.peak_bytes, self._total)
        if evicted:
            del evicted, old
            if self._collect_evicted:
                gc.collect()  # models hold reference cycles: free an evicted one now, not at the next collection
        return value

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The value of `key`, built by `build()` when missing (once: others asking meanwhile wait for it)."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            value = self.get(key)
            if value is None:
                value = self.put(key, build())
        with self._lock:
            self._building.pop(key, None)
        return value

    def discard(self, key: Hashable) -> None:
        with self._lock:
            removed = self._entries.pop(key, None)
            self._total -= removed[1] if removed else 0
            self._evicted.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._total = 0
            self._evicted.clear()

    def stats(self) -> dict[str, int]:
        """Entries, bytes held, the budget, the most bytes ever held after an insertion, evictions so far."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self.bytes, "budget": self.budget,
                    "peak_bytes": self.peak_bytes, "evictions": self.evictions}
