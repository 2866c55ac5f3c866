"""Sampling continuations of many prompts at once, lean: one batched forward pass per new token with a KV
cache, left-padded prompts, and each row leaving the batch as soon as it is done (its block is full, it
wrote its last new token, or it wrote the end-of-text token), so no step computes padding. Optionally it
keeps the model's top-k next-token log-probabilities (and the tail mass) at every position of every row:
the teacher's soft targets on its own text, captured while it writes (`Samples.targets`).

Temperature and top-p (nucleus) sampling draw from one seeded `torch.Generator`, so the same prompts,
settings and seed give the same text. A generator function: it yields the tokens written so far between
decode steps (progress, and a place to stop: closing it ends the work at once) and returns the samples.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from distill_core.errors import DistillError
from distill_core.losses import OutputHead, TopKTargets, teacher_topk

PREFILL_CHUNK_POSITIONS = 256
"""Prompt positions of a row whose log-probabilities are made at once when capturing (bounds the prefill's memory)."""


@dataclass
class Samples:
    """Each row: its token ids (prompt, then continuation) and, when captured, the model's top-k at each of its
    positions but the last (position i: the distribution of token i + 1 given tokens 0..i)."""

    ids: torch.Tensor
    """(rows, longest) int64, each row's tokens then padding."""
    lengths: list[int]
    prompt_lengths: list[int]
    targets: TopKTargets | None = None
    """indices (rows, longest, k) int32, logp and tail (rows, longest, k | 1) on the CPU; row i's first
    lengths[i] - 1 positions hold its targets, the rest zeros."""

    def row(self, i: int) -> torch.Tensor:
        return self.ids[i, : self.lengths[i]]

    @property
    def new_tokens(self) -> int:
        return sum(self.lengths) - sum(self.prompt_lengths)


NUCLEUS_CANDIDATES = 256
"""Most likely tokens a nucleus is looked for in first (a whole-vocabulary sort only for rows they do not cover)."""


def _draw(sorted_probs: torch.Tensor, order: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the mass before this token already reaches top_p
    choice = torch.multinomial(sorted_probs.masked_fill(outside, 0.0), 1, generator=generator)  # renormalises
    return order.gather(-1, choice).squeeze(-1)


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of logits (b, vocab): softmax at `temperature`, keep the smallest set of most likely
    tokens whose mass reaches `top_p` (Holtzman et al. 2020), draw from it. Temperature 0: the most likely.
    The set is looked for among the NUCLEUS_CANDIDATES most likely tokens (a sort of the whole vocabulary at
    every step cost as much as the model's forward pass on a CPU); rows whose set is larger sort it all. With
    top_p >= 1 the whole distribution, drawn from at once."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:  # the whole distribution: no nucleus to look for (a sort would cost a forward pass)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    top = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)  # sorted, most likely first
    tokens = _draw(top.values, top.indices, top_p, generator)
    wide = top.values.sum(-1) < top_p
    if wide.any():
        tokens[wide] = _draw(*probs[wide].sort(dim=-1, descending=True), top_p, generator)
    return tokens


def _left_padded(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def _prefill(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache,
             captured: TopKTargets | None) -> torch.Tensor:
    """The prompts' forward pass into the cache; returns the last position's logits (b, vocab). When capturing,
    writes each row's top-k at its prompt positions but the last into `captured` (made a few positions at a time
    through a plain linear output layer, so the (b, width, vocab) logits never exist at once)."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    chunked = captured is not None and OutputHead.supported(model)
    out = (model.base_model if chunked else model)(input_ids=ids, attention_mask=mask, position_ids=positions,
                                                   cache=cache, use_cache=True)
    head = OutputHead(model) if chunked else None
    if captured is None:
        return out.logits[:, -1]
    width, k = ids.shape[1], captured.indices.shape[-1]
    for row in range(ids.shape[0]):
        start = int((mask[row] == 0).sum())  # left padding
        for s in range(start, width - 1, PREFILL_CHUNK_POSITIONS):  # the last position: the first decode step's
            e = min(s + PREFILL_CHUNK_POSITIONS, width - 1)
            logits = head.logits(out.last_hidden_state[row, s:e]) if chunked else out.logits[row, s:e]
            top = teacher_topk(torch.log_softmax(logits.float(), -1), k)
            _store(captured, torch.full((e - s,), row), torch.arange(s - start, e - start), top)
    return head.logits(out.last_hidden_state[:, -1]) if chunked else out.logits[:, -1]


def _store(captured: TopKTargets, rows: torch.Tensor, positions: torch.Tensor, top: TopKTargets) -> None:
    captured.indices[rows, positions] = top.indices.to(torch.int32).cpu()
    captured.logp[rows, positions] = top.logp.float().cpu()
    captured.tail[rows, positions] = top.tail.float().cpu()


def sample_continuations(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, *,
                         max_length: int | None = None, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                         eos_token_id: int | None = None, pad_token_id: int = 0, capture_top_k: int = 0
                         ) -> Generator[int, None, Samples]:
    """Continue every prompt (token ids) by up to `max_new_tokens`, a row stopping early at `max_length` tokens
    in all or after writing `eos_token_id`. Yields the new tokens written so far after each decode step; returns
    the `Samples` (with `capture_top_k` > 0, the model's top-k at every position)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise DistillError("every prompt needs at least one token")
    if max_length is not None and any(len(p) >= max_length for p in prompts):
        raise DistillError(f"a prompt has {max(len(p) for p in prompts)} tokens; it must be shorter than the "
                           f"{max_length}-token block it starts")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    lengths = torch.tensor([len(p) for p in prompts])
    limits = lengths + max_new_tokens if max_length is None else (lengths + max_new_tokens).clamp(max=max_length)
    longest = int(limits.max())
    out = torch.full((len(prompts), longest), pad_token_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        out[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    captured = None
    if capture_top_k > 0:
        captured = TopKTargets(torch.zeros((len(prompts), longest, capture_top_k), dtype=torch.int32),
                               torch.zeros((len(prompts), longest, capture_top_k)), torch.zeros((len(prompts), longest, 1)))
    ids, mask = _left_padded(prompts, pad_token_id, device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = _prefill(model, ids, mask, cache, captured)
        active = torch.arange(len(prompts))  # rows still writing, in the batch's order
        while len(active):
            if captured is not None:
                _store(captured, active, lengths[active] - 1, teacher_topk(torch.log_softmax(logits.float(), -1),
                                                                           capture_top_k))
            tokens = nucleus_sample(logits, temperature, top_p, generator)
            out[active, lengths[active]] = tokens.cpu()
            lengths[active] += 1
            yield int(lengths.sum()) - sum(len(p) for p in prompts)
            keep = (lengths[active] < limits[active]) & (tokens.cpu() != (-1 if eos_token_id is None else eos_token_id))
            if not keep.all():
                cache.batch_select_indices(keep.nonzero().squeeze(-1).to(device))
                active, mask, tokens = active[keep], mask[keep.to(device)], tokens[keep.to(device)]
            if not len(active):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = (lengths[active] - 1).unsqueeze(-1).to(device)
            logits = model(input_ids=tokens.unsqueeze(-1), attention_mask=mask, position_ids=positions, cache=cache,
                           use_cache=True).logits[:, -1]
    return Samples(out, lengths.tolist(), [len(p) for p in prompts], captured)
