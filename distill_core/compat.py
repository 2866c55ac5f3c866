"""What a teacher/student pair shares and which techniques apply to it (the Setup tab's report, the
CLI's `info`), and the layer pairs a layer-map spec resolves to for a pair, remembered per pair so that
the app can show them without loading the models again."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from distill_core.config import DistillConfig
from distill_core.device import resolve_device
from distill_core.layer_map import resolve_layer_map
from distill_core.memory import session_fit, trainable_count
from distill_core.models import LoadedModel, count_parameters, load_teacher
from distill_core.students import load_student


def vocab_fingerprint(tokenizer: Any) -> str:
    """A hash of the vocabulary's content (token -> id), independent of the tokenizer's name."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


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
    """What a teacher/student pair shares, which techniques apply to it, and the memory a session
    with `config` (default: the default config's batch, length and settings) would need on its device."""
    t_fp, s_fp = vocab_fingerprint(teacher.tokenizer), vocab_fingerprint(student.tokenizer)
    same_vocab = t_fp == s_fp
    t_desc, s_desc = describe(teacher), describe(student)
    report = {
        "teacher": t_desc,
        "student": s_desc,
        "tokenizer": {
            "same_vocabulary": same_vocab,
            "teacher_fingerprint": t_fp,
            "student_fingerprint": s_fp,
            "vocab_size": len(teacher.tokenizer),
        },
        "compression": {
            "param_ratio": round(t_desc["params"] / max(1, s_desc["params"]), 3),
            "layer_ratio": round(t_desc["layers"] / max(1, s_desc["layers"]), 3),
        },
        "techniques": {
            "soft_targets": same_vocab,
            "hard_labels": True,
            "fitnets": True,  # a learned projection bridges any difference in width
            "attention_transfer": True,  # head-averaged maps: head counts may differ
        },
        "layer_map": [list(pair) for pair in resolve_layer_map(
            "auto", s_desc["layers"], t_desc["layers"], student.layers_kept)],
    }
    config = config or DistillConfig()
    report["memory"] = session_fit(config, teacher.model.config, student.model.config, t_desc["params"],
                                   s_desc["params"], trainable_count(student.model, config),
                                   resolve_device(config.device))
    return report


def check_pair(teacher_spec: str, student_spec: str, config: DistillConfig | None = None) -> dict[str, Any]:
    """Load the pair (the teacher from the shared cache, the student derived or loaded) and report on it;
    the pair's shape is remembered for `layer_pairs_for`."""
    teacher = load_teacher(teacher_spec or "")
    student = load_student(student_spec or "", teacher)
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
