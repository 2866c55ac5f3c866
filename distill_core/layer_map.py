"""Which student layer learns from which teacher layer, for the layer-wise techniques (FitNets).

Specs:
- `auto`: `kept` for a student derived with `layers:` (each student layer matches the teacher
  layer it was copied from), else `uniform`.
- `kept`: student layer i <-> the teacher layer it was copied from.
- `uniform`: student layer i <-> teacher layer ceil((i + 1) * T / S) - 1, so the student's last layer
  matches the teacher's last and the rest are spread evenly (PKD-style, Sun et al. 2019).
- `last`: only the last layers, (S - 1, T - 1).
- explicit pairs `s:t,s:t`: 0-based student and teacher layers.

A pair (s, t) compares the *outputs* of student layer s and teacher layer t, that is
`hidden_states[s + 1]` and `hidden_states[t + 1]` of a Hugging Face forward pass.
"""

from __future__ import annotations

import math
import re

from distill_core.errors import DistillError

LAYER_MAP_SPECS = ("auto", "kept", "uniform", "last")


def resolve_layer_map(spec: str, n_student: int, n_teacher: int, layers_kept: list[int] | None = None) -> list[tuple[int, int]]:
    """The (student layer, teacher layer) pairs a spec names, validated against both depths."""
    spec = (spec or "").strip()
    if spec == "auto":
        spec = "kept" if layers_kept else "uniform"
    if spec == "kept":
        if not layers_kept:
            raise DistillError("layer_map 'kept' needs a student derived with layers:...; use uniform or explicit pairs")
        return list(enumerate(layers_kept))
    if spec == "uniform":
        return [(i, math.ceil((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]
    if spec == "last":
        return [(n_student - 1, n_teacher - 1)]
    if not re.fullmatch(r"\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*,?\s*", spec):
        raise DistillError(f"layer_map {spec!r}: expected auto, kept, uniform, last or pairs like 0:0,5:12")
    pairs = [tuple(int(x) for x in part.split(":")) for part in spec.split(",") if part.strip()]
    for s, t in pairs:
        if s >= n_student:
            raise DistillError(f"layer_map pair {s}:{t}: the student has layers 0..{n_student - 1}")
        if t >= n_teacher:
            raise DistillError(f"layer_map pair {s}:{t}: the teacher has layers 0..{n_teacher - 1}")
    if len({s for s, _ in pairs}) != len(pairs):
        raise DistillError(f"layer_map {spec!r}: a student layer is listed twice")
    return pairs  # type: ignore[return-value]
