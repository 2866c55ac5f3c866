"""Which bridge a teacher/student pair's vocabularies need (the config's `tokenizer_bridge`), and what it allows.

- `none`: the same vocabulary; soft targets compare the two distributions id by id.
- `shared_ids`: the same tokens at the same ids, but output layers of different widths (a vocabulary padded to a
  multiple of 64 or 128, added tokens at the end: Qwen2.5-7B's 152064 rows against Qwen2.5-0.5B's 151936, TRL
  #3028): distil over the ids both output layers have, each distribution renormalised over them.
- `uld`: Universal Logit Distillation (cross_losses.uld_loss): any two tokenizers, positions aligned by index.
- `span`: span-aligned distillation (cross_losses.span_aligned_loss): tokens aligned by the bytes they cover,
  shared tokens compared directly, the rest by ULD. Needs both tokenizers to say where their tokens sit (fast
  tokenizers).

`auto` picks `none`, `shared_ids` or `span` (`uld` where a tokenizer cannot give offsets). Attention transfer and
FitNets compare states at the same token: they work with `none` and `shared_ids`, with `span` only on the text
where the two tokenizations align (FitNets at the ends of aligned spans, attention on tokens aligned one to one),
and not with `uld`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill_core.alignment import has_offsets, vocabulary_match
from distill_core.errors import DistillError

BRIDGES = ("auto", "none", "shared_ids", "uld", "span")
"""The values of the config's `tokenizer_bridge`."""
CROSS_BRIDGES = ("uld", "span")
"""Bridges across different tokenizations: each model reads the text in its own tokens."""


def vocabulary_relation(teacher_tokenizer: Any, student_tokenizer: Any, teacher_width: int,
                        student_width: int) -> tuple[str, str]:
    """How two vocabularies relate, with the evidence in words: `same` (same tokens, ids and widths), `shared`
    (the same token at every id both have: one is the other plus tokens or padding rows at the end) or
    `different`."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab == s_vocab and teacher_width == student_width:
        return "same", "the same vocabulary"
    t_by_id = {i: tok for tok, i in t_vocab.items()}
    s_by_id = {i: tok for tok, i in s_vocab.items()}
    both = sorted(t_by_id.keys() & s_by_id.keys())
    disagree = [i for i in both if t_by_id[i] != s_by_id[i]]
    smaller = t_by_id if len(t_by_id) <= len(s_by_id) else s_by_id
    if not disagree and set(smaller) == set(both):
        return "shared", (f"the same token at each of the {len(both)} ids both tokenizers have; output layers of "
                          f"{teacher_width} (teacher) and {student_width} (student) rows")
    if 0 < len(disagree) <= 10:  # nearly the same vocabulary: say where it differs
        first = disagree[0]
        return "different", (f"{len(disagree)} of the {len(both)} ids both have stand for different tokens (id "
                             f"{first}: {t_by_id[first]!r} in the teacher's, {s_by_id[first]!r} in the student's)")
    if disagree:
        return "different", f"different tokenizers ({len(t_vocab)} tokens and {len(s_vocab)})"
    return "different", (f"the teacher has {len(t_vocab)} tokens, the student {len(s_vocab)}, and neither is the "
                         "other's first ids")


@dataclass
class Bridge:
    """The bridge a pair's session uses, and what it means for the techniques."""

    kind: str
    """`none`, `shared_ids`, `uld` or `span`."""
    requested: str
    reason: str
    shared_rows: int | None = None
    """For `shared_ids`: how many output rows (ids) both models have; distillation uses those."""
    layer_wise: dict[str, str | None] = field(default_factory=dict)
    """Why attention transfer / FitNets are off with this bridge (None: on)."""

    @property
    def cross(self) -> bool:
        return self.kind in CROSS_BRIDGES

    def check_config(self, config: Any) -> None:
        """Refuse settings this bridge cannot honour, each with what to do instead."""
        asks = {"attention_transfer": config.attention_weight > 0, "fitnets": config.hidden_weight > 0}
        for technique, asked in asks.items():
            why = self.layer_wise.get(technique)
            if asked and why:
                raise DistillError(f"{technique.replace('_', ' ')} is off with tokenizer_bridge={self.kind}: {why}; "
                                   "set its weight to 0 or use tokenizer_bridge=span")
        if self.kind != "none" and config.teacher_cache:
            raise DistillError(f"teacher_cache keeps the teacher's top-k over its own token ids; with "
                               f"tokenizer_bridge={self.kind} the teacher runs live: set teacher_cache false")
        if self.cross and config.top_k:
            raise DistillError(f"top_k compares the teacher's top tokens id by id; tokenizer_bridge={self.kind} "
                               "compares whole distributions across vocabularies: set top_k 0")
        if self.cross and config.augment_methods:
            raise DistillError("augmentation rewrites the teacher's token blocks; it is not available across "
                               f"tokenizers (tokenizer_bridge={self.kind}) yet: leave augment empty")


ULD_LAYER_WISE = ("ULD aligns positions by their index, not by the text they cover, so hidden states and attention "
                  "maps at one index describe different text")


def choose_bridge(requested: str, teacher_tokenizer: Any, student_tokenizer: Any, teacher_width: int,
                  student_width: int) -> Bridge:
    """The bridge for the pair, or a DistillError saying why the requested one does not apply."""
    if requested not in BRIDGES:
        raise DistillError(f"tokenizer_bridge must be one of {', '.join(BRIDGES)}, got {requested!r}")
    relation, evidence = vocabulary_relation(teacher_tokenizer, student_tokenizer, teacher_width, student_width)
    offsets = has_offsets(teacher_tokenizer) and has_offsets(student_tokenizer)
    kind = requested
    if requested == "auto":
        kind = {"same": "none", "shared": "shared_ids"}.get(relation, "span" if offsets else "uld")
    elif requested == "none" and relation != "same":
        raise DistillError(f"tokenizers differ ({evidence}); distillation needs the same vocabulary or a bridge: set "
                           "tokenizer_bridge to auto" + (", shared_ids" if relation == "shared" else "")
                           + ", uld or span")
    elif requested == "shared_ids" and relation == "different":
        raise DistillError(f"tokenizer_bridge=shared_ids needs the same token at every id both vocabularies have; "
                           f"here {evidence}: use uld or span, which distil across different tokenizers")
    elif requested == "span" and not offsets:
        raise DistillError("tokenizer_bridge=span aligns tokens by where they sit in the text, and a slow (Python) "
                           "tokenizer does not say: use uld, which needs no alignment")
    if kind == "shared_ids" and relation == "same":
        kind = "none"
    return Bridge(kind, requested, _reason(kind, relation, evidence), _shared_rows(kind, teacher_width, student_width),
                  _layer_wise(kind))


def _shared_rows(kind: str, teacher_width: int, student_width: int) -> int | None:
    return min(teacher_width, student_width) if kind == "shared_ids" else None


def _reason(kind: str, relation: str, evidence: str) -> str:
    if kind == "none":
        return "same vocabulary: soft targets id by id"
    if kind == "shared_ids":
        return f"{evidence}: soft targets over the ids both output layers have"
    name = "ULD (sorted probabilities, positions aligned by index)" if kind == "uld" else (
        "span alignment (tokens aligned by the bytes they cover; shared tokens compared directly, the rest by ULD)")
    return f"{'same vocabulary' if relation == 'same' else evidence}: {name}"


def _layer_wise(kind: str) -> dict[str, str | None]:
    if kind == "uld":
        return {"attention_transfer": ULD_LAYER_WISE, "fitnets": ULD_LAYER_WISE}
    return {"attention_transfer": None, "fitnets": None}


LAYER_WISE_WHERE = {"none": "every token", "shared_ids": "every token",
                    "span": {"attention_transfer": "only among the tokens aligned one to one",
                             "fitnets": "only at the ends of aligned spans"}}


def bridge_report(bridge: Bridge, teacher_tokenizer: Any, student_tokenizer: Any, teacher_width: int,
                  student_width: int, one_to_one_share: float | None) -> dict[str, Any]:
    """The compatibility report's `tokenizer_bridge` section: the bridge and why, the shared tokens, the share of
    a sample text whose tokens align one to one, and where attention transfer and FitNets work (or why not)."""
    shared = len(vocabulary_match(teacher_tokenizer, student_tokenizer, teacher_width, student_width))
    report = {
        "bridge": bridge.kind,
        "requested": bridge.requested,
        "reason": bridge.reason,
        "shared_tokens": shared,
        "teacher_tokens": len(teacher_tokenizer),
        "student_tokens": len(student_tokenizer),
        "shared_rows": bridge.shared_rows,
        "one_to_one_share": one_to_one_share,
    }
    for technique in ("attention_transfer", "fitnets"):
        why = bridge.layer_wise.get(technique)
        where = LAYER_WISE_WHERE.get(bridge.kind, "")
        where = where.get(technique) if isinstance(where, dict) else where
        report[technique] = f"off: {why}" if why else f"on: {where}"
    return report
