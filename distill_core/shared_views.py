"""What the Evaluate tab computes once for everyone looking at the same models: a prompt's greedy and sampled
continuations and the held-out evaluation rows are kept, by the model objects themselves
(batcher.FORWARDS.serial) and the exact inputs, and handed to the next user who asks for the same thing, with
when they were measured. Thirty students of one shared run pressing Evaluate cost one evaluation.

A prompt's two continuations are decoded side by side and with other users' prompts for the same model
(decoding.decode_together, through batcher.FORWARDS), the sampled one from its own random generator: what
transformers' `generate` gives for the same seed, without touching torch's global generator.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distill_core import hosting
from distill_core.batcher import FORWARDS, frozen
from distill_core.budget import ByteBudgetCache
from distill_core.data import Blocks, check_text
from distill_core.errors import DistillError
from distill_core.evaluate import (compare, generation_speed, real_text_row, reference_ppl, size_on_disk,
                                   teacher_reference)
from distill_core.models import count_parameters
from distill_core.threads import view_threads

KEPT_RESULTS = 512
"""Continuations and evaluation rows kept (each a few hundred bytes)."""
_RESULTS = ByteBudgetCache(KEPT_RESULTS, sizeof=lambda value: 1)


def _kept(key: tuple, model: Any, compute: Any) -> Any:
    """`compute()` once per `key` for a frozen (shared) model, on the views' threads; a model being trained is
    never reused."""
    def measured() -> Any:
        with view_threads():
            return compute()

    return _RESULTS.get_or_build(key, measured) if frozen(model) else measured()


def _check_request(prompt: str, new_tokens: int) -> None:
    """What evaluate.generate refuses, refused the same way."""
    check_text(prompt, "prompt")
    hosting.check_text_size(prompt, "prompt")
    if not 1 <= new_tokens <= 512:
        raise DistillError(f"new tokens must be between 1 and 512, got {new_tokens}")
    hosting.check_cap("new_tokens", new_tokens, "new tokens")


def _encoded(tokenizer: Any, prompt: str, new_tokens: int) -> Any:
    """`prompt`'s ids (1, t) as evaluate.generate encodes them, once what generate refuses is refused."""
    _check_request(prompt, new_tokens)
    return tokenizer(prompt, return_tensors="pt")["input_ids"]


def _both(tokenizer: Any, done: dict[str, Any]) -> dict[str, Any]:
    """decoding.decode_together's result for one request, in words: for each mode {text, new_tokens,
    tokens_per_s}, plus `rows` and `measured_at`."""
    return {"measured_at": done.setdefault("measured_at", time.time()), "rows": done["rows"],
            **{mode: {"text": tokenizer.decode(done[mode]["ids"], skip_special_tokens=True),
                      "new_tokens": len(done[mode]["ids"]),
                      "tokens_per_s": len(done[mode]["ids"]) / max(done[mode]["seconds"], 1e-9)}
               for mode in ("greedy", "sampled")}}


def continue_both(model: Any, tokenizer: Any, prompt: str, new_tokens: int, seed: int) -> dict[str, Any]:
    """`prompt`'s greedy and sampled continuations, decoded with the other users' requests waiting for this
    model (batcher.FORWARDS, decoding.decode_together) or kept from the same request earlier: for each mode
    {text, new_tokens, tokens_per_s} as evaluate.generate returns it, plus `rows` (the batch it was decoded in)
    and `measured_at`."""
    ids = _encoded(tokenizer, prompt, new_tokens)
    return _both(tokenizer, FORWARDS.run(model, "continue", ids, (int(new_tokens), int(seed))))


def _continued_on_view_threads(model: Any, ids: Any, options: tuple) -> dict[str, Any]:
    with view_threads():
        return FORWARDS.run(model, "continue", ids, options)


def generate_each(models: dict[str, Any], tokenizer: Any, prompt: str, new_tokens: int = 40,
                  seed: int = 0) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """evaluate.generate_each's continuations (`continue_both`): (name, {"greedy": ..., "sampled": ...}) in the
    models' order as soon as that model is done, each with `measured_at` and `rows`. The models are asked at
    once (each joins the next batch of its own model: the wait is the slowest model's, not the sum of all);
    the tokenizer is used only in this thread (a fast tokenizer refuses being used from two threads at once)."""
    ids, options = _encoded(tokenizer, prompt, new_tokens), (int(new_tokens), int(seed))
    with ThreadPoolExecutor(max_workers=len(models) or 1, thread_name_prefix="continue") as pool:
        asked = {name: pool.submit(_continued_on_view_threads, model, ids, options) for name, model in models.items()}
        for name, future in asked.items():
            both = _both(tokenizer, future.result())
            yield name, {mode: {**both[mode], "measured_at": both["measured_at"], "rows": both["rows"]}
                         for mode in ("greedy", "sampled")}


def stamped(compute: Any) -> Any:
    """`compute` whose result carries when it was measured."""
    return lambda: {**compute(), "measured_at": time.time()}


def _blocks_key(blocks: Blocks) -> str:
    return hashlib.sha256(blocks.input_ids.numpy().tobytes() + blocks.attention_mask.numpy().tobytes()).hexdigest()


def evaluate_each(teacher: Any, students: dict[str, Any], tokenizer: Any, blocks: Blocks,
                  speed_tokens: int = 32, real_blocks: Blocks | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """evaluate.evaluate_each (speed included; the real text's `real_*` figures with `real_blocks`), each model's
    row kept for the next user asking about the same models on the same blocks (with `measured_at`); the
    teacher's reference distributions are computed only when a student's row is not kept yet."""
    blocks_key = (_blocks_key(blocks), _blocks_key(real_blocks) if real_blocks is not None else None)
    reference: list[Any] = []
    real_reference: list[Any] = []

    def references() -> None:
        reference[:] = reference or teacher_reference(teacher, blocks)
        if real_blocks is not None:
            real_reference[:] = real_reference or teacher_reference(teacher, real_blocks)

    def teacher_row() -> dict[str, Any]:
        references()
        row = {"ppl": reference_ppl(reference, blocks), "top1_agreement": 1.0, "kl_to_teacher": 0.0,
               "params": count_parameters(teacher), "size_bytes": size_on_disk(teacher)}
        if real_blocks is not None:
            row.update(real_ppl=reference_ppl(real_reference, real_blocks), real_top1_agreement=1.0,
                       real_kl_to_teacher=0.0)
        return {**row, "tokens_per_s": generation_speed(teacher, tokenizer, new_tokens=speed_tokens)}

    def student_row(model: Any) -> dict[str, Any]:
        references()
        result = compare(teacher, model, blocks, reference=reference)
        row = {"ppl": result["student_ppl"], "top1_agreement": result["top1_agreement"],
               "kl_to_teacher": result["kl_to_teacher"], "params": count_parameters(model),
               "size_bytes": size_on_disk(model)}
        if real_blocks is not None:
            row.update(real_text_row(model, real_blocks, real_reference))
        return {**row, "tokens_per_s": generation_speed(model, tokenizer, new_tokens=speed_tokens)}

    teacher_serial = FORWARDS.serial(teacher)
    yield "teacher", _kept(("evaluate", teacher_serial, blocks_key, speed_tokens), teacher, stamped(teacher_row))
    for name, model in students.items():
        key = ("evaluate", teacher_serial, FORWARDS.serial(model), blocks_key, speed_tokens)
        yield name, _kept(key, model, stamped(lambda model=model: student_row(model)))
