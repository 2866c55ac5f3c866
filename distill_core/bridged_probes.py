"""The Dark knowledge probe for a pair whose tokenizers differ: the next-token distributions over the bridged
candidates. The text is shown in the teacher's tokens; at a teacher position, a student is asked at its own
token that ends at the same byte (both models have read the same text there). The candidates are the union of
every model's top-k tokens, as the bytes they stand for (alignment.vocabulary_keys), so " apple" of one
vocabulary and " apple" of the other are one candidate; a model whose vocabulary has no such token gives it
probability 0 (listed in `missing`). The KL per position is the span-aligned comparison at the positions where
both have read the same bytes: KL over the shared tokens plus one bucket for the rest of each (NaN elsewhere).

Same keys as probes.dark_knowledge, plus `student_positions`, `missing` and `bridged: True`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from distill_core.alignment import shown_bytes, token_spans, vocabulary_fingerprint, vocabulary_keys
from distill_core.errors import DistillError
from distill_core.models import LoadedModel
from distill_core.probes import MAX_PROBE_TOKENS, dark_knowledge, next_token_snapshot
from distill_core.data import check_text


@functools.lru_cache(maxsize=8)
def _key_of_id(fingerprint: str, tokenizer: Any) -> dict[int, Any]:
    return {token_id: key for key, token_id in vocabulary_keys(tokenizer).items()}


def key_of_id(tokenizer: Any) -> dict[int, Any]:
    """id -> what the token stands for (bytes, text or a special token), per vocabulary (cached)."""
    return _key_of_id(vocabulary_fingerprint(tokenizer), tokenizer)


def shown_key(key: Any) -> str:
    """A candidate as the views show it."""
    if isinstance(key, bytes):
        return shown_bytes(key)
    if isinstance(key, tuple):
        return key[1]
    return str(key)


@torch.no_grad()
def _log_probs(model: Any, ids: list[int], temperature: float) -> torch.Tensor:
    """(t, vocab) log-probabilities of the next token at every position of `ids`, at temperature T."""
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device)).logits[0]
    finally:
        model.train(was_training)
    return torch.log_softmax(logits.float().cpu() / temperature, dim=-1)


def _positions(teacher_spans: list[tuple[int, int]], student_spans: list[tuple[int, int]]) -> list[int | None]:
    """For each teacher token, the student token that ends at the same byte (None where none does)."""
    by_end = {end: i for i, (_, end) in enumerate(student_spans)}
    return [by_end.get(end) for _, end in teacher_spans]


def _bucket_kl(teacher_lp: torch.Tensor, student_lp: torch.Tensor, t_ids: torch.Tensor, s_ids: torch.Tensor) -> float:
    """KL(teacher || student) over the shared tokens (t_ids[i] ~ s_ids[i]) plus one bucket for the rest of each."""
    t_shared, s_shared = teacher_lp[t_ids], student_lp[s_ids]
    t_rest = torch.log1p(-t_shared.exp().sum().clamp(max=1 - 1e-7))
    s_rest = torch.log1p(-s_shared.exp().sum().clamp(max=1 - 1e-7))
    t, s = torch.cat([t_shared, t_rest[None]]), torch.cat([s_shared, s_rest[None]])
    return float((t.exp() * (t - s)).sum())


def bridged_dark_knowledge(teacher: LoadedModel, students: dict[str, tuple[Any, Any]], text: str, position: int = -1,
                           temperature: float = 1.0, k: int = 10) -> dict[str, Any]:
    """probes.dark_knowledge across tokenizers (see the module's docstring). students: name -> (model, tokenizer)."""
    if not temperature > 0:
        raise DistillError(f"temperature must be positive, got {temperature}")
    if not 1 <= k <= 100:
        raise DistillError(f"k must be between 1 and 100, got {k}")
    check_text(text, "probe text")
    t_tokens = token_spans(teacher.tokenizer, text)
    n = min(len(t_tokens), MAX_PROBE_TOKENS)
    if not -n <= position < n:
        raise DistillError(f"position {position} is outside the text's {n} tokens (0..{n - 1})")
    position %= n
    keys = {"teacher": key_of_id(teacher.tokenizer)}
    log_probs = {"teacher": _log_probs(teacher.model, t_tokens.ids[:n], temperature)}
    student_at, actual_ids, kl = {}, {}, {}
    for name, (model, tokenizer) in students.items():
        s_tokens = token_spans(tokenizer, text)
        keys[name] = key_of_id(tokenizer)
        log_probs[name] = _log_probs(model, s_tokens.ids[:MAX_PROBE_TOKENS], temperature)
        aligned = _positions(t_tokens.spans[:n], s_tokens.spans[:MAX_PROBE_TOKENS])
        student_at[name] = aligned[position]
        actual_ids[name] = (s_tokens.ids[aligned[position] + 1] if aligned[position] is not None
                            and aligned[position] + 1 < min(len(s_tokens), MAX_PROBE_TOKENS) else None)
        kl[name] = _kl_strip(log_probs["teacher"], log_probs[name], aligned, keys["teacher"], keys[name])
    actual_ids["teacher"] = t_tokens.ids[position + 1] if position + 1 < n else None
    at = {"teacher": log_probs["teacher"][position].exp()}
    at.update({name: log_probs[name][i].exp() for name, i in student_at.items() if i is not None})
    return _result(teacher, t_tokens, n, position, temperature, k, keys, at, log_probs, student_at, actual_ids, kl)


def _kl_strip(teacher_lp: torch.Tensor, student_lp: torch.Tensor, aligned: list[int | None], t_keys: dict[int, Any],
              s_keys: dict[int, Any]) -> list[float]:
    s_ids_of = {key: i for i, key in s_keys.items()}
    pairs = [(t, s_ids_of[key]) for t, key in t_keys.items() if key in s_ids_of]
    t_ids = torch.tensor([t for t, _ in pairs], dtype=torch.long)
    s_ids = torch.tensor([s for _, s in pairs], dtype=torch.long)
    return [_bucket_kl(teacher_lp[i], student_lp[j], t_ids, s_ids) if j is not None else float("nan")
            for i, j in enumerate(aligned)]


def _result(teacher: LoadedModel, t_tokens: Any, n: int, position: int, temperature: float, k: int,
            keys: dict[str, dict[int, Any]], at: dict[str, torch.Tensor], log_probs: dict[str, torch.Tensor],
            student_at: dict[str, int | None], actual_ids: dict[str, int | None],
            kl: dict[str, list[float]]) -> dict[str, Any]:
    """The probe's result: candidates as bytes shared across vocabularies, each model's probability of each."""
    candidates: list[Any] = []
    for name, p in at.items():
        for idx in p.topk(min(k, p.numel())).indices.tolist():
            key = keys[name].get(idx)
            if key is not None and key not in candidates:
                candidates.append(key)
    actual = keys["teacher"].get(actual_ids["teacher"]) if actual_ids["teacher"] is not None else None
    if actual is not None and actual not in candidates:
        candidates.append(actual)
    probs, missing, ranks, entropy = {}, {}, {}, {}
    for name, p in at.items():
        id_of = {key: i for i, key in keys[name].items()}
        probs[name] = [float(p[id_of[c]]) if c in id_of else 0.0 for c in candidates]
        missing[name] = [shown_key(c) for c in candidates if c not in id_of]
        entropy[name] = float(-(p * p.clamp_min(1e-30).log()).sum())
        if actual_ids.get(name) is not None:
            ranks[name] = int((p > p[actual_ids[name]]).sum()) + 1
    return {
        "tokens": t_tokens.pieces[:n],
        "position": position,
        "context": teacher.tokenizer.decode(t_tokens.ids[: position + 1]),
        "temperature": temperature,
        "candidates": [shown_key(c) for c in candidates],
        "probs": probs,
        "actual": shown_key(actual) if actual is not None else None,
        "actual_rank": ranks or None,
        "entropy": entropy,
        "kl": {name: strip[:-1] + [float("nan")] for name, strip in kl.items()},  # the last has no next token
        "kl_at_position": {name: strip[position] for name, strip in kl.items()},
        "mean_kl": {name: float(np.nanmean(strip[:-1])) if np.isfinite(strip[:-1]).any() else float("nan")
                    for name, strip in kl.items()},
        "student_positions": student_at,
        "missing": missing,
        "bridged": True,
    }


def pair_dark_knowledge(teacher: LoadedModel, students: dict[str, tuple[Any, Any]], text: str, position: int = -1,
                        temperature: float = 1.0, k: int = 10) -> dict[str, Any]:
    """The Dark knowledge probe for any pair: probes.dark_knowledge when every student reads the teacher's tokens,
    `bridged_dark_knowledge` when one does not. students: name -> (model, tokenizer)."""
    if all(vocabulary_fingerprint(tok) == vocabulary_fingerprint(teacher.tokenizer) for _, tok in students.values()):
        return dark_knowledge(teacher, {name: model for name, (model, _) in students.items()}, text, position,
                              temperature, k)
    return bridged_dark_knowledge(teacher, students, text, position, temperature, k)


def pair_snapshot(teacher: LoadedModel, student: LoadedModel, text: str, temperature: float, k: int = 8) -> dict[str, Any]:
    """probes.next_token_snapshot for any pair (a session's probe events): the teacher's top-k and the student's
    own other choices, with both models' probabilities, over the bridged candidates across tokenizers."""
    if vocabulary_fingerprint(student.tokenizer) == vocabulary_fingerprint(teacher.tokenizer):
        return next_token_snapshot(teacher, student, text, temperature, k)
    result = bridged_dark_knowledge(teacher, {"student": (student.model, student.tokenizer)}, text, -1, temperature, k)
    teacher_p = np.asarray(result["probs"]["teacher"])
    student_p = np.asarray(result["probs"].get("student", np.zeros_like(teacher_p)))
    teacher_top = [int(i) for i in np.argsort(-teacher_p)[:k]]
    order = teacher_top + [int(i) for i in np.argsort(-student_p)[:k] if int(i) not in teacher_top]
    return {"text": text, "temperature": temperature, "candidates": [result["candidates"][i] for i in order],
            "teacher_probs": [float(teacher_p[i]) for i in order], "student_probs": [float(student_p[i]) for i in order],
            "kl_last": result["kl_at_position"]["student"]}
