"""On-policy distillation: some steps train on the student's own text. The student continues prompts (sampled,
batched, with a KV cache, no gradient: sampling.py), the teacher scores prompt + continuation in one forward
pass inside the step, and the loss is a divergence on the continuation's positions only (`DistillStep` with a
`continuation` mask). This is GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning
from Self-Generated Mistakes"): with probability λ (`on_policy_fraction`) a step's batch is the student's
own, else the corpus (here the on-policy steps are spread evenly, so that exactly that share of the steps is
on-policy, and the session's time and ETA are known); with reverse KL as in MiniLLM (Gu et al. 2024). A student trained only on text someone
else wrote never sees the contexts its own mistakes lead to (exposure bias); here it does, and the teacher
says at each of them what it should have written.

Which steps are on-policy follows from the step's number, and which prompts they continue and the sampling
itself are drawn from the session's seed and the step's number alone, so a session is reproducible and a resumed one draws what the
uninterrupted one would have.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from distill_core.config import DistillConfig
from distill_core.data import Blocks, read_prompts
from distill_core.errors import DistillError
from distill_core.grading import continuation_mask, encode_prompts, sample
from distill_core.sampling import Samples


@dataclass
class Rollout:
    """One on-policy batch: the student's continuations as blocks, and which positions count."""

    blocks: Blocks
    """(b, t) token ids (prompt, continuation, padding) and attention mask."""
    continuation: torch.Tensor
    """(b, t) 1 at the positions whose next token the student wrote."""
    samples: Samples
    seconds: float
    """Time the student took to write them."""

    @property
    def new_tokens(self) -> int:
        return self.samples.new_tokens


class OnPolicy:
    """A session's on-policy schedule and prompts: `is_on_policy(step)`, `prompts_for(step)`, `rollout(...)`."""

    def __init__(self, config: DistillConfig, tokenizer: Any):
        self.config, self.tokenizer = config, tokenizer
        source = config.rollout_prompts or config.prompts_file
        self.prompts = encode_prompts(tokenizer, read_prompts(source), config.seq_len)
        if not self.prompts:
            raise DistillError(f"no prompt of {source} leaves room for the student to write in a block of "
                               f"seq_len={config.seq_len} tokens; shorten the prompts or raise seq_len")

    def _draw(self, purpose: str, step: int) -> random.Random:
        """A generator for one decision of step `step` (1-based), from the seed and the step alone."""
        return random.Random(f"{purpose}:{self.config.seed}:{step}")

    def is_on_policy(self, step: int) -> bool:
        """Whether step `step` (1-based) trains on the student's own text: a share on_policy_fraction of the steps,
        spread evenly (λ = 0.5: every second step; 0.25: every fourth), not drawn at random, so that a session of
        n steps has round-down(λ n) of them whatever the seed."""
        fraction = self.config.on_policy_fraction
        return math.floor(step * fraction + 1e-9) > math.floor((step - 1) * fraction + 1e-9)

    def prompts_for(self, step: int) -> list[int]:
        """The prompts (indices) step `step` continues: batch_size of them, without repeats while there are enough."""
        n, batch = len(self.prompts), self.config.batch_size
        draw = self._draw("prompts", step)
        return draw.sample(range(n), batch) if batch <= n else [draw.randrange(n) for _ in range(batch)]

    def sampling_seed(self, step: int) -> int:
        return self._draw("sampling", step).getrandbits(62)

    def rollout(self, model: Any, step: int, indices: list[int]) -> Rollout:
        """The student continues the prompts at `indices` (its share of step `step`'s, `prompts_for`), in eval
        mode and without gradients; its blocks end at seq_len."""
        c = self.config
        started = time.perf_counter()
        prompts = [self.prompts[i] for i in indices]
        samples = sample(model, self.tokenizer, prompts, c.rollout_tokens, self.sampling_seed(step),
                         c.rollout_temperature, c.rollout_top_p, max_length=c.seq_len)
        mask = (torch.arange(samples.ids.shape[1]) < torch.tensor(samples.lengths)[:, None]).long()
        return Rollout(Blocks(samples.ids, mask), continuation_mask(samples), samples,
                       time.perf_counter() - started)

