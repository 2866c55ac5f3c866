"""The teacher grades a model's own words: a model continues prompts (sampled, seeded), and the teacher scores
every token it wrote. Off-policy training and held-out perplexity judge the student on text someone else wrote;
at inference the student continues its own text, where one early mistake leads it to contexts it never saw
(exposure bias). These measures look at exactly that text:

- `sample_measure`: over held-out prompts, the teacher's mean negative log-likelihood per token of the model's
  continuations (how plausible the teacher finds them: lower is better; the teacher's own samples are the floor)
  and the mean per-token reverse KL(model || teacher) at those positions (the on-policy distillation loss).
- `grade_continuations`: for one prompt, each model's continuation token by token with the teacher's probability
  of every token, the reverse KL there and the teacher's own top choices (the Teacher grades view).

Shapes: b rows of t tokens; vocab the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Generator
from typing import Any

import torch

from distill_core import hosting
from distill_core.data import check_text, read_prompts
from distill_core.errors import DistillError
from distill_core.losses import kl_divergence
from distill_core.paths import cache_dir, write_text_atomic
from distill_core.sampling import Samples, sample_continuations

SCORE_ROWS = 8
"""Rows the teacher (and the model) score at once: bounds the (rows, t, vocab) log-probabilities in memory."""
TOP_CHOICES = 5
"""The teacher's most likely tokens shown at each position of a graded continuation."""


def finish(writing: Generator[int, None, Samples]) -> Samples:
    """Run a `sample_continuations` generator to its end; its samples."""
    while True:
        try:
            next(writing)
        except StopIteration as done:
            return done.value


def continuation_mask(samples: Samples) -> torch.Tensor:
    """(b, t) 1 at each position whose next token the model wrote (positions prompt_length - 1 .. length - 2):
    the positions of an on-policy loss and of these measures; 0 on the prompt and the padding."""
    positions = torch.arange(samples.ids.shape[1])
    starts = torch.tensor(samples.prompt_lengths)[:, None] - 1
    ends = torch.tensor(samples.lengths)[:, None] - 1
    return ((positions >= starts) & (positions < ends)).long()


def sample(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int, seed: int,
           temperature: float = 1.0, top_p: float = 1.0, max_length: int | None = None) -> Samples:
    """The model's sampled continuations of the prompts (token ids), in eval mode, from `seed` (each row at most
    `max_length` tokens in all)."""
    was_training = model.training
    model.eval()
    try:
        return finish(sample_continuations(model, prompts, new_tokens, max_length=max_length,
                                           temperature=temperature, top_p=top_p, seed=seed, eos_token_id=tokenizer.eos_token_id,
                                           pad_token_id=tokenizer.pad_token_id or 0))
    finally:
        model.train(was_training)


@torch.no_grad()
def _log_probs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (b, t, vocab) at T=1, in fp32."""
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1).cpu()


def score_samples(teacher: Any, samples: Samples, model: Any = None) -> dict[str, torch.Tensor]:
    """The teacher's log-probability of each token the model wrote, and (with `model`, the one that wrote them)
    the reverse KL(model || teacher) and the model's entropy at its position; each (n,) over the continuation
    positions, row by row. reverse KL = E_model[-log teacher] - entropy: a model lowers it by spreading its
    mass as well as by writing what the teacher expects."""
    counted = continuation_mask(samples)
    attention = (torch.arange(samples.ids.shape[1]) < torch.tensor(samples.lengths)[:, None]).long()
    teacher_logp, reverse_kl, entropy = [], [], []
    for start in range(0, samples.ids.shape[0], SCORE_ROWS):
        rows = slice(start, start + SCORE_ROWS)
        ids, mask, keep = samples.ids[rows], attention[rows], counted[rows].bool()
        next_ids = torch.zeros_like(ids)
        next_ids[:, :-1] = ids[:, 1:]  # position i predicts token i + 1
        t_logp = _log_probs(teacher, ids, mask)
        teacher_logp.append(t_logp.gather(-1, next_ids[..., None])[..., 0][keep])
        if model is not None:
            m_logp = _log_probs(model, ids, mask)[keep]
            reverse_kl.append(kl_divergence(m_logp, t_logp[keep]))
            entropy.append(-(m_logp.exp() * m_logp).sum(-1))
    return {"teacher_logp": torch.cat(teacher_logp), "reverse_kl": torch.cat(reverse_kl) if reverse_kl else None,
            "entropy": torch.cat(entropy) if entropy else None}


def sample_measure(teacher: Any, model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int, seed: int,
                   temperature: float = 1.0, top_p: float = 1.0) -> dict[str, Any]:
    """`model` continues each prompt (sampled from `seed`); the teacher's mean negative log-likelihood per token
    of what it wrote (`nll`), the mean reverse KL(model || teacher) per token (`reverse_kl`; 0 when the model
    is the teacher: its own samples, the floor) and the model's mean entropy there (`entropy`; None for the
    teacher), over `tokens` continuation tokens."""
    samples = sample(model, tokenizer, prompts, new_tokens, seed, temperature, top_p)
    scored = score_samples(teacher, samples, None if model is teacher else model)
    n = int(scored["teacher_logp"].numel())
    if n == 0:
        raise DistillError("the model wrote no tokens for the held-out prompts (each ended at once)")
    reverse_kl = float(scored["reverse_kl"].mean()) if scored["reverse_kl"] is not None else 0.0
    entropy = float(scored["entropy"].mean()) if scored["entropy"] is not None else None
    return {"nll": float(-scored["teacher_logp"].mean()), "reverse_kl": reverse_kl, "entropy": entropy, "tokens": n}


def teacher_floor(teacher: Any, identity: str, tokenizer: Any, prompts: list[list[int]], new_tokens: int, seed: int,
                  temperature: float = 1.0, top_p: float = 1.0) -> float:
    """The teacher's NLL per token of its own continuations (`sample_measure`'s floor), cached on disk per teacher
    (`identity`: its weights' fingerprint, device type and dtype), prompts and sampling settings: it is the same
    for every session of that teacher, and costs a sampling pass."""
    key = json.dumps({"teacher": identity, "prompts": prompts, "new_tokens": new_tokens, "seed": seed,
                      "temperature": temperature, "top_p": top_p, "version": 1})
    path = cache_dir() / "teacher_samples" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["nll"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    nll = sample_measure(teacher, teacher, tokenizer, prompts, new_tokens, seed, temperature, top_p)["nll"]
    write_text_atomic(path, json.dumps({"nll": nll}))
    return nll


def encode_prompts(tokenizer: Any, prompts: list[str], seq_len: int | None = None) -> list[list[int]]:
    """Prompts as token ids (no special tokens, as the teacher-generated corpus starts them); with `seq_len`, only
    those that leave room in a block of that length for at least one new token."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return [p for p in ids if p and (seq_len is None or len(p) < seq_len - 1)]


def heldout_prompts(config: Any, tokenizer: Any) -> list[list[int]]:
    """The config's held-out prompts (`sample_eval_prompts`) as token ids."""
    prompts = encode_prompts(tokenizer, read_prompts(config.sample_eval_prompts))
    if not prompts:
        raise DistillError(f"{config.sample_eval_prompts} holds no prompts")
    return prompts


def graded_row(teacher: Any, model: Any, tokenizer: Any, samples: Samples, row: int,
               top: int = TOP_CHOICES) -> dict[str, Any]:
    """One continuation (row `row` of `samples`, written by `model`) graded token by token: its tokens as text,
    the teacher's probability of each, the reverse KL(model || teacher) there, the teacher's `top` choices
    (token, probability) and the model's own probability of its token; with the means over the continuation."""
    length, start = samples.lengths[row], samples.prompt_lengths[row]
    ids = samples.ids[row: row + 1, :length]
    mask = torch.ones_like(ids)
    t_logp = _log_probs(teacher, ids, mask)[0, start - 1: length - 1]  # (n, vocab): the written tokens' positions
    m_logp = t_logp if model is teacher else _log_probs(model, ids, mask)[0, start - 1: length - 1]
    written = ids[0, start:length]
    teacher_token = t_logp.gather(-1, written[:, None])[:, 0]
    reverse_kl = kl_divergence(m_logp, t_logp)
    best = t_logp.topk(min(top, t_logp.shape[-1]), dim=-1)
    choices = [[(tokenizer.decode([int(i)]), math.exp(float(v))) for i, v in zip(idx, val)]
               for idx, val in zip(best.indices, best.values)]
    n = max(1, int(written.numel()))
    return {"prompt": tokenizer.decode(ids[0, :start]), "tokens": [tokenizer.decode([int(i)]) for i in written],
            "teacher_prob": teacher_token.exp().tolist(), "model_prob": m_logp.gather(-1, written[:, None])[:, 0].exp().tolist(),
            "reverse_kl": reverse_kl.tolist(), "teacher_top": choices,
            "mean_nll": float(-teacher_token.sum()) / n, "mean_reverse_kl": float(reverse_kl.sum()) / n}


def grade_continuations(teacher: Any, models: dict[str, Any], tokenizer: Any, prompt: str, new_tokens: int = 32,
                        seed: int = 0, temperature: float = 1.0, top_p: float = 1.0) -> dict[str, Any]:
    """Each model (and the teacher itself, last) continues `prompt`, sampled from the same `seed`; the teacher
    grades every token (`graded_row`). Returns {"prompt", "seed", "rows": {name: graded row}}."""
    check_text(prompt, "prompt")
    hosting.check_text_size(prompt, "prompt")
    if not 1 <= new_tokens <= 512:
        raise DistillError(f"new tokens must be between 1 and 512, got {new_tokens}")
    hosting.check_cap("new_tokens", new_tokens, "new tokens")
    if not 0 < top_p <= 1 or not temperature > 0:
        raise DistillError(f"sampling needs a positive temperature and top-p in (0, 1], got {temperature} and {top_p}")
    prompt_ids = encode_prompts(tokenizer, [prompt])
    if not prompt_ids:
        raise DistillError("the prompt has no tokens")
    rows = {}
    for name, model in {**models, "teacher": teacher}.items():
        samples = sample(model, tokenizer, prompt_ids, new_tokens, seed, temperature, top_p)
        rows[name] = graded_row(teacher, model, tokenizer, samples, 0)
    return {"prompt": prompt, "seed": seed, "temperature": temperature, "top_p": top_p, "rows": rows}


def own_text_report(teacher: Any, student: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int,
                    seed: int = 0, temperature: float = 1.0, top_p: float = 1.0) -> dict[str, Any]:
    """`sample_measure` for the student and, as the floor, for the teacher's own samples (same prompts, settings
    and seed): {"teacher": {"sample_nll"}, "student": {"sample_nll", "sample_reverse_kl", "sample_entropy"},
    "sample_tokens"}."""
    args = (tokenizer, prompts, new_tokens, seed, temperature, top_p)
    floor, own = sample_measure(teacher, teacher, *args), sample_measure(teacher, student, *args)
    return {"teacher": {"sample_nll": floor["nll"]},
            "student": {"sample_nll": own["nll"], "sample_reverse_kl": own["reverse_kl"],
                        "sample_entropy": own["entropy"]},
            "sample_tokens": own["tokens"]}
