"""The student's measurements before training, kept on disk: a warm session of the same student on the same
texts and settings reads them instead of measuring again. On 2 CPU cores they took 13 s of the quickstart's
67 (the student writing its own text for the teacher to score, most of it): time the training gets instead.

The key holds everything the figures depend on: the student's weights themselves (a digest of every
parameter and buffer, so a student built any other way misses), the teacher's fingerprint, the exact token
ids of every text scored, the sampling settings, the device and the torch version. `DISTILL_BEFORE_CACHE=0`
turns it off (the tests do, but for the test about it). A cache that cannot be read or written is only slower.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from distill_core.paths import cache_dir, write_text_atomic

VERSION = 1


def enabled() -> bool:
    return os.environ.get("DISTILL_BEFORE_CACHE", "1") != "0"


def weights_digest(model: torch.nn.Module) -> str:
    """BLAKE2b of every parameter and buffer (name, dtype, shape and bytes) in state_dict order."""
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the raw bytes, bf16 included (numpy has no bf16)
    return digest.hexdigest()


def key(model: torch.nn.Module, parts: dict[str, Any]) -> str:
    """The cache key of `model`'s measurements on what `parts` describes (JSON-able)."""
    described = {"weights": weights_digest(model), "torch": torch.__version__, "version": VERSION, **parts}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(name: str):
    return cache_dir() / "before" / f"{name}.json"


def load(name: str) -> dict[str, Any] | None:
    """The measurements stored under `name`, or None (none yet, or unreadable)."""
    try:
        return json.loads(_path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store(name: str, measured: dict[str, Any]) -> None:
    """Keep `measured` under `name` (written whole, then renamed into place)."""
    try:
        write_text_atomic(_path(name), json.dumps(measured))
    except OSError:
        pass
