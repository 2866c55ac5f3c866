"""Probes: forward passes that collect what the side-by-side views show. Plain Python/numpy out;
`visuals` turns them into figures and never runs a model.

Dark knowledge (Hinton et al. 2015): the teacher's probabilities for the *wrong* next tokens
("an" -> apple 0.2, orange 0.1, elephant 0.01) say which answers it finds similar; softening them
with a temperature T > 1 makes that ranking visible and is what soft-target training passes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distill_core.checkpoints import LoadedModel
from distill_core.data import check_text
from distill_core.errors import DistillError

MAX_PROBE_TOKENS = 512


def _encode(tokenizer: Any, text: str) -> torch.Tensor:
    check_text(text, "probe text")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, t)
    if ids.shape[1] > MAX_PROBE_TOKENS:
        ids = ids[:, :MAX_PROBE_TOKENS]
    return ids


@torch.no_grad()
def _log_probs(model: Any, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """(t, vocab) log-probabilities of the next token at every position, at temperature T."""
    was_training = model.training
    model.eval()
    logits = model(input_ids=input_ids.to(model.device)).logits[0].float().cpu()  # (t, vocab)
    model.train(was_training)
    return torch.log_softmax(logits / temperature, dim=-1)


def dark_knowledge(
    teacher: LoadedModel,
    students: dict[str, Any],
    text: str,
    position: int = -1,
    temperature: float = 1.0,
    k: int = 10,
) -> dict[str, Any]:
    """Teacher vs student next-token distributions at one position of `text`, and the per-position
    KL(teacher || student) over the whole text, all at temperature T.

    students: display name -> model (e.g. {"student (before)": m0, "student (after)": m1}).
    position: index of the token after which the next token is predicted (-1: the last one).
    Returns tokens, position, candidates (union of every model's top-k, teacher's order first),
    probs[name] over the candidates, actual next token (None at the end of the text), its rank
    under each model (1 = top), entropies (nats), kl[name] per position (NaN where no next token)
    and kl_at_position[name], the KL of the probed distribution itself.
    """
    if not temperature > 0:
        raise DistillError(f"temperature must be positive, got {temperature}")
    if not 1 <= k <= 100:
        raise DistillError(f"k must be between 1 and 100, got {k}")
    tokenizer = teacher.tokenizer
    input_ids = _encode(tokenizer, text)
    n = input_ids.shape[1]
    if not -n <= position < n:
        raise DistillError(f"position {position} is outside the text's {n} tokens (0..{n - 1})")
    position %= n
    tokens = [tokenizer.decode([int(t)]) for t in input_ids[0]]
    models = {"teacher": teacher.model, **students}
    log_probs = {name: _log_probs(model, input_ids, temperature) for name, model in models.items()}
    at_pos = {name: lp[position].exp() for name, lp in log_probs.items()}  # (vocab,)

    candidates: list[int] = []
    for name in models:
        for idx in at_pos[name].topk(k).indices.tolist():
            if idx not in candidates:
                candidates.append(idx)
    actual_id = int(input_ids[0, position + 1]) if position + 1 < n else None
    if actual_id is not None and actual_id not in candidates:
        candidates.append(actual_id)

    teacher_lp = log_probs["teacher"]
    kl: dict[str, list[float]] = {}
    kl_at_position: dict[str, float] = {}
    for name in students:
        # KL(p_teacher || p_student) per position, nats: (t,)
        per_position = (teacher_lp.exp() * (teacher_lp - log_probs[name])).sum(-1).numpy()
        kl_at_position[name] = float(per_position[position])
        per_position[-1] = np.nan  # the final position has no next token in the text
        kl[name] = per_position.tolist()

    def rank(p: torch.Tensor, token: int) -> int:
        return int((p > p[token]).sum()) + 1

    return {
        "tokens": tokens,
        "position": position,
        "context": tokenizer.decode(input_ids[0, : position + 1]),
        "temperature": temperature,
        "candidates": [tokenizer.decode([i]) for i in candidates],
        "probs": {name: p[candidates].tolist() for name, p in at_pos.items()},
        "actual": tokenizer.decode([actual_id]) if actual_id is not None else None,
        "actual_rank": {name: rank(p, actual_id) for name, p in at_pos.items()} if actual_id is not None else None,
        "entropy": {name: float(-(lp[position].exp() * lp[position]).sum()) for name, lp in log_probs.items()},
        "kl": kl,
        "kl_at_position": kl_at_position,
        "mean_kl": {name: float(np.nanmean(v)) if len(v) > 1 else float("nan") for name, v in kl.items()},
    }


def next_token_snapshot(teacher: LoadedModel, student: LoadedModel, text: str, temperature: float, k: int = 8) -> dict[str, Any]:
    """A compact dark-knowledge probe for session snapshots: teacher's top-k at the end of `text`
    and the student's probabilities for the same tokens, at temperature T."""
    result = dark_knowledge(teacher, {"student": student.model}, text, -1, temperature, k)
    order = np.argsort(-np.asarray(result["probs"]["teacher"]))[:k]
    return {
        "text": text,
        "temperature": temperature,
        "candidates": [result["candidates"][i] for i in order],
        "teacher_probs": [result["probs"]["teacher"][i] for i in order],
        "student_probs": [result["probs"]["student"][i] for i in order],
        "kl_last": result["kl_at_position"]["student"],
    }
