"""Attention maps from chosen layers only, for attention transfer and the attention view.

Fast attention kernels (SDPA) return no weights, and switching a whole model to the eager
implementation makes every layer materialise its (seq x seq) maps. `attention_maps_from` switches
just the mapped layers: the model builds its mask in the eager (explicit 4-D) format, which SDPA
accepts too, mapped layers run eager and return their maps, the others keep their kernel.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distill_core.models import decoder_layers
from distill_core.errors import DistillError

_SWITCH_LOCK = threading.RLock()
"""Held while a model's layers are switched: a session's teacher (attention transfer) and the app's attention
view may use the same model object at once, and interleaved switches would restore each other's settings."""


def _layer_config(module: Any, implementation: str) -> Any:
    """A copy of an attention module's config with its own attention implementation, made once per module
    and implementation: the same object at every step, so compiled layers see nothing new (no recompiles)."""
    copies = module.__dict__.setdefault("_distill_configs", {})
    if implementation not in copies:
        layer_config = copy.copy(module.config)
        layer_config._attn_implementation = implementation
        copies[implementation] = layer_config
    return copies[implementation]


@contextmanager
def attention_maps_from(model: Any, layers: list[int]) -> Iterator[None]:
    """Within the block, `model(..., output_attentions=True).attentions` holds the maps of
    `layers` (in increasing layer order), each (batch, heads, seq, seq)."""
    blocks = decoder_layers(model)
    wanted = set(layers)
    if not wanted or max(wanted) >= len(blocks) or min(wanted) < 0:
        raise DistillError(f"attention maps asked for layers {sorted(wanted)} of a {len(blocks)}-layer model")
    modules = [getattr(block, "self_attn", None) for block in blocks]
    if any(m is None or not hasattr(m, "config") for m in modules):
        raise DistillError(f"{type(model).__name__}: attention maps are supported for Llama-style blocks (self_attn)")
    model_config = model.config
    with _SWITCH_LOCK:
        original = model_config._attn_implementation
        saved = [module.config for module in modules]
        try:
            model_config._attn_implementation = "eager"  # the mask format every layer understands
            for index, module in enumerate(modules):
                module.config = _layer_config(module, "eager" if index in wanted else original)
            yield
        finally:
            model_config._attn_implementation = original
            for module, config in zip(modules, saved):
                module.config = config
