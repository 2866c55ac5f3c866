"""What the Evaluate tab computes once for everyone looking at the same models: a continuation of a prompt
(greedy, or sampled with a seed) and the held-out evaluation rows are kept, by the model objects themselves
(batcher.FORWARDS.serial) and the exact inputs, and handed to the next user who asks for the same thing, with
when they were measured. Thirty students of one shared run pressing Evaluate cost one evaluation.

Sampled continuations draw from torch's global random generator (transformers `generate` takes no generator),
so they run one at a time: two users sampling at once would each get a different continuation than their seed
gives alone.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from distill_core.batcher import FORWARDS, frozen
from distill_core.budget import ByteBudgetCache
from distill_core.data import Blocks
from distill_core.evaluate import compare, generate, generation_speed, reference_ppl, size_on_disk, teacher_reference
from distill_core.models import count_parameters
from distill_core.threads import view_threads

KEPT_RESULTS = 512
"""Generations and evaluation rows kept (each a few hundred bytes)."""
SAMPLING = threading.Lock()
"""Held while a continuation is sampled (torch's global random generator)."""
_RESULTS = ByteBudgetCache(KEPT_RESULTS, sizeof=lambda value: 1)


def _kept(key: tuple, model: Any, compute: Any) -> dict[str, Any]:
    """`compute()` once per `key` for a frozen (shared) model, on the views' threads; a model being trained is
    never reused."""
    def measured() -> dict[str, Any]:
        with view_threads():
            return {**compute(), "measured_at": time.time()}

    return _RESULTS.get_or_build(key, measured) if frozen(model) else measured()


def generate_shared(model: Any, tokenizer: Any, prompt: str, new_tokens: int, sample: bool,
                    seed: int) -> dict[str, Any]:
    """evaluate.generate, kept for the next user asking the same model the same (prompt, new tokens, mode, seed)."""
    def compute() -> dict[str, Any]:
        if not sample:
            return generate(model, tokenizer, prompt, new_tokens, sample=False)
        with SAMPLING:
            return generate(model, tokenizer, prompt, new_tokens, sample=True, seed=seed)

    key = ("generate", FORWARDS.serial(model), prompt, int(new_tokens), bool(sample), int(seed) if sample else 0)
    return _kept(key, model, compute)


def generate_each(models: dict[str, Any], tokenizer: Any, prompt: str, new_tokens: int = 40,
                  seed: int = 0) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """evaluate.generate_each through `generate_shared`: each model's greedy and sampled continuation, yielded
    as (name, {"greedy": ..., "sampled": ...}) as soon as that model is done."""
    for name, model in models.items():
        yield name, {"greedy": generate_shared(model, tokenizer, prompt, new_tokens, False, seed),
                     "sampled": generate_shared(model, tokenizer, prompt, new_tokens, True, seed)}


def _blocks_key(blocks: Blocks) -> str:
    return hashlib.sha256(blocks.input_ids.numpy().tobytes() + blocks.attention_mask.numpy().tobytes()).hexdigest()


def evaluate_each(teacher: Any, students: dict[str, Any], tokenizer: Any, blocks: Blocks,
                  speed_tokens: int = 32) -> Iterator[tuple[str, dict[str, Any]]]:
    """evaluate.evaluate_each (speed included), each model's row kept for the next user asking about the same
    models on the same blocks (with `measured_at`); the teacher's reference distributions are computed only
    when a student's row is not kept yet."""
    blocks_key = _blocks_key(blocks)
    reference: list[Any] = []

    def teacher_row() -> dict[str, Any]:
        reference[:] = reference or teacher_reference(teacher, blocks)
        return {"ppl": reference_ppl(reference, blocks), "top1_agreement": 1.0, "kl_to_teacher": 0.0,
                "params": count_parameters(teacher), "size_bytes": size_on_disk(teacher),
                "tokens_per_s": generation_speed(teacher, tokenizer, new_tokens=speed_tokens)}

    def student_row(model: Any) -> dict[str, Any]:
        reference[:] = reference or teacher_reference(teacher, blocks)
        result = compare(teacher, model, blocks, reference=reference)
        return {"ppl": result["student_ppl"], "top1_agreement": result["top1_agreement"],
                "kl_to_teacher": result["kl_to_teacher"], "params": count_parameters(model),
                "size_bytes": size_on_disk(model), "tokens_per_s": generation_speed(model, tokenizer,
                                                                                    new_tokens=speed_tokens)}

    teacher_serial = FORWARDS.serial(teacher)
    yield "teacher", _kept(("evaluate", teacher_serial, blocks_key, speed_tokens), teacher, teacher_row)
    for name, model in students.items():
        key = ("evaluate", teacher_serial, FORWARDS.serial(model), blocks_key, speed_tokens)
        yield name, _kept(key, model, lambda model=model: student_row(model))
