"""Greedy and sampled continuations of several prompts decoded together: each prompt is two rows of one batch
(greedy, sampled), the prompts left-padded, one forward pass per new token for all of them. A decoding step
reads every weight of the model once however many rows it has, so users who ask at the same time share it.

Each sampled row draws from its own random generator, seeded with its request's seed, through transformers'
warpers in transformers' order (temperature, the model's top-k, top-p): the continuation `generate` gives for
that seed, whoever else is decoded in the same batch, and torch's global generator is never touched.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

TEMPERATURE, TOP_P = 0.8, 0.95
"""The sampled continuation's settings (evaluate.generate's defaults)."""
MODES = ("greedy", "sampled")


def end_tokens(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _left_padded(prompts: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt (t,) twice, left-padded to the longest: ids and attention mask (2 x prompts, width)."""
    width = max(int(p.shape[0]) for p in prompts)
    ids = torch.full((2 * len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        n = int(prompt.shape[0])
        ids[2 * i: 2 * i + 2, width - n:] = prompt
        mask[2 * i: 2 * i + 2, width - n:] = 1
    return ids, mask


@torch.no_grad()
def decode_together(model: Any, requests: list[tuple[torch.Tensor, int, int]]) -> list[dict[str, Any]]:
    """Continue each request (prompt ids (t,), new tokens, seed) greedily and by sampling, all in one batch. For
    each: {"greedy": {"ids", "seconds"}, "sampled": {...}, "rows": rows in the batch}; a row ends at an
    end-of-sequence token (kept) or after its new tokens."""
    device, eos = model.device, end_tokens(model)
    ids, mask = _left_padded([prompt for prompt, _, _ in requests], min(eos) if eos else 0)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token
    limits = [n for _, n, _ in requests for _ in MODES]
    generators = [torch.Generator(device).manual_seed(int(seed)) for _, _, seed in requests]
    warpers = LogitsProcessorList([TemperatureLogitsWarper(TEMPERATURE),
                                   TopKLogitsWarper(model.generation_config.top_k or 50), TopPLogitsWarper(TOP_P)])
    new: list[list[int]] = [[] for _ in limits]
    ended: list[float | None] = [None] * len(limits)
    cache, started = DynamicCache(), time.perf_counter()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1].float()  # (rows, vocab): only the last position's (as generate)
    while True:
        step = logits.argmax(-1)  # (rows,): greedy; the sampled rows replaced below
        for i, generator in enumerate(generators):
            row = 2 * i + 1
            if ended[row] is None:
                step[row] = torch.multinomial(warpers(ids[row:row + 1], logits[row:row + 1]).softmax(-1), 1,
                                              generator=generator)[0, 0]
        for row, token in enumerate(step.tolist()):
            if ended[row] is None:
                new[row].append(token)
                if token in eos or len(new[row]) == limits[row]:
                    ended[row] = time.perf_counter()
        if all(end is not None for end in ended):
            break
        ids, mask = torch.cat([ids, step[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        positions = positions[:, -1:] + 1
        logits = model(input_ids=step[:, None], attention_mask=mask, position_ids=positions, cache=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1].float()
    return [{mode: {"ids": new[2 * i + k], "seconds": ended[2 * i + k] - started} for k, mode in enumerate(MODES)}
            | {"rows": len(limits)} for i in range(len(requests))]
