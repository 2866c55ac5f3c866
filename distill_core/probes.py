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

from distill_core import hosting
from distill_core.batcher import FORWARDS
from distill_core.models import LoadedModel
from distill_core.data import check_text
from distill_core.errors import DistillError

MAX_PROBE_TOKENS = 512


def encode(tokenizer: Any, text: str) -> torch.Tensor:
    check_text(text, "probe text")
    hosting.check_text_size(text, "probe text")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, t)
    if ids.shape[1] > MAX_PROBE_TOKENS:
        ids = ids[:, :MAX_PROBE_TOKENS]
    return ids


def _log_probs(model: Any, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """(t, vocab) log-probabilities of the next token at every position, at temperature T. The logits come
    from the shared forward passes (batcher.FORWARDS): other users' requests on the same model run in the
    same batch, and the same text on the same model is not run again (a moving temperature slider)."""
    logits = FORWARDS.run(model, "logits", input_ids)  # (t, vocab), at T = 1
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
    input_ids = encode(tokenizer, text)
    n = input_ids.shape[1]
    if not -n <= position < n:
        raise DistillError(f"position {position} is outside the text's {n} tokens (0..{n - 1})")
    position %= n
    tokens = [tokenizer.decode([int(t)]) for t in input_ids[0]]
    models = {"teacher": teacher.model, **students}
    log_probs = {name: _log_probs(model, input_ids, temperature) for name, model in models.items()}
    width = min(lp.shape[-1] for lp in log_probs.values())  # output layers of different widths: the shared ids
    if any(lp.shape[-1] != width for lp in log_probs.values()):
        log_probs = {name: lp[:, :width].log_softmax(-1) for name, lp in log_probs.items()}
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
    """A compact dark-knowledge probe for session snapshots, at the end of `text` at temperature T: the
    teacher's top-k and the student's own top-k (the union: the teacher's by its probability, then the
    student's other choices by theirs), with both models' probabilities for each."""
    result = dark_knowledge(teacher, {"student": student.model}, text, -1, temperature, k)
    teacher_p, student_p = np.asarray(result["probs"]["teacher"]), np.asarray(result["probs"]["student"])
    teacher_top = [int(i) for i in np.argsort(-teacher_p)[:k]]
    student_top = [int(i) for i in np.argsort(-student_p)[:k] if int(i) not in teacher_top]
    order = teacher_top + student_top
    return {
        "text": text,
        "temperature": temperature,
        "candidates": [result["candidates"][i] for i in order],
        "teacher_probs": [float(teacher_p[i]) for i in order],
        "student_probs": [float(student_p[i]) for i in order],
        "kl_last": result["kl_at_position"]["student"],
    }


# ---------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------
def attention_maps(model: Any, input_ids: torch.Tensor) -> np.ndarray:
    """Every layer's attention weights for one text: (layers, heads, t, t), query rows first.
    Row i holds how much query token i attends to each key token j <= i (causal: j > i is 0).
    From the shared forward passes (batcher.FORWARDS): read-only, other users may hold the same array."""
    return FORWARDS.run(model, "attentions", input_ids)


def attention_entropy(maps: np.ndarray) -> np.ndarray:
    """Mean entropy (nats) of each head's query rows, (layers, heads): low = sharp, focused heads
    (previous token, first token); high = diffuse ones. Rows are normalised to the number of keys
    they can see, so early queries (which see few tokens) do not dominate: entropy / log(i + 1)."""
    t = maps.shape[-1]
    p = np.clip(maps, 1e-12, 1.0)
    row_entropy = -(maps * np.log(p)).sum(-1)  # (layers, heads, t)
    visible = np.log(np.arange(1, t + 1, dtype=np.float64))
    normalised = np.divide(row_entropy, visible, out=np.zeros_like(row_entropy), where=visible > 0)
    return normalised[..., 1:].mean(-1) if t > 1 else normalised.mean(-1)


def attention_probe(teacher: LoadedModel, students: dict[str, Any], text: str) -> dict[str, Any]:
    """Attention maps of every layer and head of the teacher and each student on `text`, with
    per-head normalised entropies for the overview. students: display name -> model."""
    input_ids = encode(teacher.tokenizer, text)
    tokens = [teacher.tokenizer.decode([int(t)]) for t in input_ids[0]]
    models = {"teacher": teacher.model, **students}
    maps = {name: attention_maps(model, input_ids) for name, model in models.items()}
    return {"tokens": tokens, "maps": maps, "entropy": {name: attention_entropy(m) for name, m in maps.items()}}


# ---------------------------------------------------------------------------------------
# hidden-state similarity
# ---------------------------------------------------------------------------------------
def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same n examples
    (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"):
    x (n, p1), y (n, p2); CKA = ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) after centring the columns.
    1 for representations equal up to an orthogonal transform and isotropic scaling; near 0 for
    unrelated ones. Caveat (Davari et al. 2023, "Reliability of CKA as a Similarity Measure in
    Deep Learning"): a few outlier dimensions with very large activations can dominate it."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape[0] != y.shape[0]:
        raise DistillError(f"CKA needs the same examples in both: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0


@torch.no_grad()
def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The output of every layer (layer i -> hidden_states[i + 1]) at the real tokens: a list of
    (n_tokens, width) fp32 tensors on the CPU."""
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=input_ids.to(model.device),
                    attention_mask=None if attention_mask is None else attention_mask.to(model.device),
                    output_hidden_states=True, logits_to_keep=1)  # the logits are not wanted: one position's
    finally:
        model.train(was_training)
    keep = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool().cpu()
    return [h.float().cpu()[keep] for h in out.hidden_states[1:]]


def normalised_grams(states: list[torch.Tensor]) -> torch.Tensor:
    """Centred, unit-norm Gram matrices of every layer's states (each (n, p)), flattened: (layers, n*n) in
    float64; linear CKA of two layers is the dot product of their rows. One batched product for all layers of
    one width (a model's), a product each otherwise."""
    states = [torch.as_tensor(h).to(torch.float64) for h in states]
    if len({tuple(h.shape) for h in states}) == 1:
        x = torch.stack(states)  # (layers, n, p)
        x = x - x.mean(1, keepdim=True)  # centring the columns centres the Gram matrix on both sides
        gram = x @ x.transpose(1, 2)  # (layers, n, n)
    else:
        gram = torch.stack([(h - h.mean(0)) @ (h - h.mean(0)).T for h in states])
    norm = torch.linalg.matrix_norm(gram)  # (layers,)
    return (gram / torch.where(norm > 0, norm, torch.ones_like(norm))[:, None, None]).flatten(1)


def cka_matrix(teacher_states: list[torch.Tensor], student_states: list[torch.Tensor]) -> np.ndarray:
    """Linear CKA between every teacher layer (rows) and every student layer (columns), through
    the n x n Gram matrices (one per layer, cheaper than p x p cross-covariances when n < p):
    CKA(X, Y) = <XX', YY'>_F / (||XX'||_F ||YY'||_F) for centred X, Y, equal to `linear_cka`."""
    return (normalised_grams(teacher_states) @ normalised_grams(student_states).T).numpy()


def similarity_probe(teacher: LoadedModel, students: dict[str, Any], text: str,
                     layer_pairs: list[tuple[int, int]] | None = None, projection: Any = None,
                     skip_first: bool = True) -> dict[str, Any]:
    """Hidden-state similarity on a probe text: CKA of every teacher layer against every layer of
    each student, the CKA of the mapped pairs, and, given a FitNets projection (trained with the
    session), the mean cosine similarity of each mapped pair after projecting the student's states.

    skip_first leaves out the first token: in LLMs its hidden state carries a few huge activations
    (an attention sink; Sun et al. 2024, "Massive Activations in Large Language Models") that
    would dominate CKA, the outlier problem Davari et al. 2023 describe."""
    input_ids = encode(teacher.tokenizer, text)
    if input_ids.shape[1] < 3 + skip_first:
        raise DistillError("the probe text needs at least 4 tokens for a similarity measure")
    start = 1 if skip_first else 0

    def states(model: Any) -> list[torch.Tensor]:
        return [h[start:] for h in FORWARDS.run(model, "hidden", input_ids)]  # shared forward passes

    t_states = states(teacher.model)
    t_grams: list[torch.Tensor] = []  # the teacher's, computed once for every student that needs them

    def cka(model: Any) -> np.ndarray:
        t_grams[:] = t_grams or [normalised_grams(t_states)]
        return (t_grams[0] @ normalised_grams(states(model)).T).numpy()  # (teacher layers, student layers)

    result: dict[str, Any] = {"n_tokens": int(input_ids.shape[1]) - start, "cka": {}, "pair_cka": {}, "pair_cosine": {},
                              "layer_pairs": [list(p) for p in (layer_pairs or [])]}
    key = ("cka", tuple(input_ids[0].tolist()), start)
    for name, model in students.items():
        result["cka"][name] = FORWARDS.kept((teacher.model, model), key, lambda model=model: cka(model))
        s_states = states(model)
        if layer_pairs:
            result["pair_cka"][name] = [float(result["cka"][name][t, s]) for s, t in layer_pairs]
            if projection is not None and len(projection.maps) == len(layer_pairs):
                device = next(projection.parameters()).device
                with torch.no_grad():
                    result["pair_cosine"][name] = [
                        torch.nn.functional.cosine_similarity(projection(i, s_states[s].to(device)).cpu(), t_states[t], dim=-1)
                        .mean().item()
                        for i, (s, t) in enumerate(layer_pairs)
                    ]
    return result
