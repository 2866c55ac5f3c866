"""What a teacher/student pair shares and which techniques apply to it (the Setup tab's report, the
CLI's `info`), and the layer pairs a layer-map spec resolves to for a pair, remembered per pair so that
the app can show them without loading the models again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from distill_core.alignment import align_text, vocabulary_fingerprint
from distill_core.config import DistillConfig
from distill_core.data import check_text, read_text_file
from distill_core.device import resolve_device
from distill_core.errors import DistillError
from distill_core.layer_map import resolve_layer_map
from distill_core.memory import session_fit, trainable_count
from distill_core.models import LazyTeacher, LoadedModel, count_parameters, load_teacher
from distill_core.students import load_student, student_vocabulary
from distill_core.tokenizer_bridge import bridge_report, choose_bridge

SAMPLE_CHARS = 2000
"""The one-to-one share of the report is measured on this many characters of the config's held-out text."""


def describe(loaded: LoadedModel) -> dict[str, Any]:
    c = loaded.model.config
    return {
        "spec": loaded.spec,
        "source": loaded.source,
        "architecture": type(loaded.model).__name__,
        "vocab_size": c.vocab_size,
        "layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": getattr(c, "num_key_value_heads", c.num_attention_heads),
        "params": count_parameters(loaded.model),
        "layers_kept": loaded.layers_kept,
        "layer_selection": loaded.layer_selection,
        "notes": loaded.notes,
    }


def compatibility_report(teacher: LoadedModel, student: LoadedModel, config: DistillConfig | None = None) -> dict[str, Any]:
    """What a teacher/student pair shares, the tokenizer bridge a session would use, which techniques apply to
    it, and the memory a session with `config` (default: the default config's batch, length and settings)
    would need on its device."""
    config = config or DistillConfig()
    t_fp, s_fp = vocabulary_fingerprint(teacher.tokenizer), vocabulary_fingerprint(student.tokenizer)
    same_vocab = t_fp == s_fp
    t_desc, s_desc = describe(teacher), describe(student)
    bridge = choose_bridge(config.tokenizer_bridge, teacher.tokenizer, student.tokenizer, t_desc["vocab_size"],
                           s_desc["vocab_size"])
    report = {
        "teacher": t_desc,
        "student": s_desc,
        "tokenizer": {
            "same_vocabulary": same_vocab,
            "teacher_fingerprint": t_fp,
            "student_fingerprint": s_fp,
            "vocab_size": len(teacher.tokenizer),
            "student_vocab_size": len(student.tokenizer),
        },
        "tokenizer_bridge": bridge_report(bridge, teacher.tokenizer, student.tokenizer, t_desc["vocab_size"],
                                          s_desc["vocab_size"], _one_to_one_share(teacher, student, config)),
        "compression": {
            "param_ratio": round(t_desc["params"] / max(1, s_desc["params"]), 3),
            "layer_ratio": round(t_desc["layers"] / max(1, s_desc["layers"]), 3),
        },
        "techniques": {
            "soft_targets": True,  # through the bridge when the vocabularies differ
            "hard_labels": True,
            "fitnets": bridge.layer_wise.get("fitnets") is None,  # a learned projection bridges any width
            "attention_transfer": bridge.layer_wise.get("attention_transfer") is None,  # head-averaged maps
        },
        "layer_map": [list(pair) for pair in resolve_layer_map(
            "auto", s_desc["layers"], t_desc["layers"], student.layers_kept)],
    }
    report["memory"] = session_fit(config, teacher.model.config, student.model.config, t_desc["params"],
                                   s_desc["params"], trainable_count(student.model, config),
                                   resolve_device(config.device))
    return report


def _one_to_one_share(teacher: LoadedModel, student: LoadedModel, config: DistillConfig) -> float | None:
    """The share of the held-out text's bytes whose tokens align one to one (its first SAMPLE_CHARS characters)."""
    try:
        text = read_text_file(config.eval_text, "evaluation text")[:SAMPLE_CHARS]
        return round(align_text(teacher.tokenizer, student.tokenizer, text)["one_to_one_share"], 4)
    except DistillError:  # a slow tokenizer (no offsets), an unreadable text: the report goes on without it
        return None


def check_pair(teacher_spec: str, student_spec: str, config: DistillConfig | None = None) -> dict[str, Any]:
    """Load the pair (the teacher from the shared cache, the student derived or loaded) and report on it;
    the pair's shape is remembered for `layer_pairs_for`."""
    teacher = load_teacher(teacher_spec or "")
    student = load_student(student_spec or "", teacher,
                           tokenizer_bridge=config.tokenizer_bridge if config is not None else "auto")
    report = compatibility_report(teacher, student, config)
    PAIR_SHAPES.remember(teacher_spec, student_spec, report["student"]["layers"], report["teacher"]["layers"],
                         report["student"]["layers_kept"])
    return report


class PairShapes:
    """(teacher spec, student spec) -> (student layers, teacher layers, teacher layers the student kept):
    what resolving a layer map needs, remembered from checked or loaded pairs (the most recent 64)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._shapes: OrderedDict[tuple[str, str], tuple[int, int, list[int] | None]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(teacher_spec: str | None, student_spec: str | None) -> tuple[str, str]:
        return (teacher_spec or "").strip(), (student_spec or "").strip()

    def remember(self, teacher_spec: str, student_spec: str, n_student: int, n_teacher: int,
                 layers_kept: list[int] | None) -> None:
        with self._lock:
            self._shapes[self._key(teacher_spec, student_spec)] = (n_student, n_teacher, layers_kept)
            while len(self._shapes) > self.capacity:
                self._shapes.popitem(last=False)

    def get(self, teacher_spec: str | None, student_spec: str | None,
            load: bool = False) -> tuple[int, int, list[int] | None] | None:
        """The pair's shape: remembered, or (with `load`) from loading the pair, else None."""
        key = self._key(teacher_spec, student_spec)
        with self._lock:
            shape = self._shapes.get(key)
        if shape is None and load:
            teacher = load_teacher(key[0])
            student = load_student(key[1], teacher)
            shape = (student.model.config.num_hidden_layers, teacher.model.config.num_hidden_layers,
                     student.layers_kept)
            self.remember(*key, *shape)
        return shape


PAIR_SHAPES = PairShapes()


def layer_pairs_for(teacher_spec: str, student_spec: str, layer_map: str,
                    load: bool = True) -> tuple[list[tuple[int, int]], int, int] | None:
    """The (student, teacher) layer pairs `layer_map` resolves to for the pair, with the student's and the
    teacher's depths; None when the pair's shape is not known and `load` is off. DistillError for a spec
    that cannot work for the pair."""
    shape = PAIR_SHAPES.get(teacher_spec, student_spec, load)
    if shape is None:
        return None
    n_student, n_teacher, kept = shape
    return resolve_layer_map(layer_map, n_student, n_teacher, kept), n_student, n_teacher


def pair_alignment(teacher_spec: str, student_spec: str, text: str, tokenizer_bridge: str = "auto") -> dict[str, Any]:
    """How the pair's two tokenizations of `text` line up (alignment.align_text: each side's tokens and byte spans,
    the aligned groups, the one-to-one share), with the bridge a session would use; tokenizers only, no weights
    (a `vocab=bpe:N` student's vocabulary is trained on the default corpus, or read from its cache)."""
    check_text(text, "text")
    if len(text) > SAMPLE_CHARS:
        raise DistillError(f"the text has {len(text)} characters; the alignment view shows at most {SAMPLE_CHARS}")
    teacher = LazyTeacher((teacher_spec or "").strip(), torch.device("cpu"))
    teacher_width = int(teacher.config().vocab_size)
    tokenizer, width = student_vocabulary((student_spec or "").strip(), teacher, teacher_width)
    bridge = choose_bridge(tokenizer_bridge, teacher.tokenizer, tokenizer, teacher_width, width)
    result = align_text(teacher.tokenizer, tokenizer, text)
    result.update(bridge=bridge.kind, reason=bridge.reason, teacher_tokens=len(teacher.tokenizer),
                  student_tokens=len(tokenizer))
    return result
