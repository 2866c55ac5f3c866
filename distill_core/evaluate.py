"""How much of the teacher a student kept: held-out perplexity, top-1 agreement with the teacher,
KL to the teacher, parameter count and inference speed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from distill_core import hosting
from distill_core.models import count_parameters
from distill_core.errors import DistillError
from distill_core.data import Blocks, check_text, real_text_or_note
from distill_core.realtext import describe as describe_real_text
from distill_core.losses import next_token_nll, shared_rows, shift_for_next_token

SPEED_PROMPT = "The history of the city begins"


@torch.no_grad()
def score(model: Any, blocks: Blocks, batch_size: int = 8) -> dict[str, Any]:
    """Mean next-token cross-entropy and perplexity of one model on the blocks."""
    total_nll, total_count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        nll, count = next_token_nll(model, blocks.input_ids[start : start + batch_size].to(model.device),
                                    blocks.attention_mask[start : start + batch_size].to(model.device))
        total_nll, total_count = total_nll + nll, total_count + count
    loss = total_nll / max(1, total_count)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": total_count}


@torch.no_grad()
def teacher_reference(teacher: Any, blocks: Blocks, batch_size: int = 8) -> list[torch.Tensor]:
    """The teacher's next-token log-probabilities at every counted position, per batch: computed
    once per session and reused by every `compare` against it."""
    reference = []
    for start in range(0, len(blocks), batch_size):
        ids = blocks.input_ids[start : start + batch_size].to(teacher.device)
        attn = blocks.attention_mask[start : start + batch_size].to(teacher.device)
        _, mask = shift_for_next_token(ids, attn)
        reference.append(teacher(input_ids=ids, attention_mask=attn).logits.float()[mask.bool()].log_softmax(-1))
    return reference  # each (n_counted, vocab)


def reference_ppl(reference: list[torch.Tensor], blocks: Blocks, batch_size: int = 8) -> float:
    """The teacher's held-out perplexity from its `teacher_reference` (same blocks and batch size), without
    running it again."""
    total_nll, total_count = 0.0, 0
    for t_logp, start in zip(reference, range(0, len(blocks), batch_size)):
        labels, mask = shift_for_next_token(blocks.input_ids[start : start + batch_size],
                                            blocks.attention_mask[start : start + batch_size])
        total_nll += float(F.nll_loss(t_logp, labels[mask.bool()].to(t_logp.device), reduction="sum"))
        total_count += int(mask.sum())
    return math.exp(min(total_nll / max(1, total_count), 50.0))


@torch.no_grad()
def compare(teacher: Any, student: Any, blocks: Blocks, batch_size: int = 8,
            reference: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Student vs teacher on the same blocks: perplexities, top-1 agreement, KL(teacher || student).
    `reference` (from `teacher_reference`, same blocks and batch size) avoids rerunning the teacher."""
    if reference is None:
        reference = teacher_reference(teacher, blocks, batch_size)
    sums = {"teacher_nll": 0.0, "student_nll": 0.0, "agree": 0.0, "kl": 0.0}
    count = 0
    for t_logp, start in zip(reference, range(0, len(blocks), batch_size)):
        ids = blocks.input_ids[start : start + batch_size].to(student.device)
        attn = blocks.attention_mask[start : start + batch_size].to(student.device)
        labels, mask = shift_for_next_token(ids, attn)
        m = mask.bool()
        s_logp = student(input_ids=ids, attention_mask=attn).logits.float()[m].log_softmax(-1)  # (n, vocab)
        t_logp, s_logp = shared_rows(t_logp.to(s_logp.device), s_logp)  # output layers of different widths
        y = labels[m]
        sums["teacher_nll"] += float(F.nll_loss(t_logp, y, reduction="sum"))
        sums["student_nll"] += float(F.nll_loss(s_logp, y, reduction="sum"))
        sums["agree"] += float((t_logp.argmax(-1) == s_logp.argmax(-1)).sum())
        sums["kl"] += float(F.kl_div(s_logp, t_logp, log_target=True, reduction="sum"))
        count += int(m.sum())
    n = max(1, count)
    return {
        "teacher_ppl": math.exp(min(sums["teacher_nll"] / n, 50.0)),
        "student_ppl": math.exp(min(sums["student_nll"] / n, 50.0)),
        "student_loss": sums["student_nll"] / n,
        "top1_agreement": sums["agree"] / n,
        "kl_to_teacher": sums["kl"] / n,
        "tokens": count,
    }


@torch.no_grad()
def generation_speed(model: Any, tokenizer: Any, new_tokens: int = 32, repeats: int = 2) -> float:
    """Greedy decoding tokens/s for one short prompt at batch size 1 (best of `repeats`)."""
    enc = tokenizer(SPEED_PROMPT, return_tensors="pt").to(model.device)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        elapsed = time.perf_counter() - start
        best = max(best, (out.shape[1] - enc["input_ids"].shape[1]) / elapsed)
    return best


def evaluate_pair(teacher: Any, student: Any, tokenizer: Any, blocks: Blocks, speed: bool = True) -> dict[str, Any]:
    """The DESIGN.md `evaluate` JSON: teacher {ppl, params, tokens_per_s}, student {ppl,
    top1_agreement, kl_to_teacher, params, tokens_per_s}."""
    result = compare(teacher, student, blocks)
    report = {
        "teacher": {"ppl": result["teacher_ppl"], "params": count_parameters(teacher)},
        "student": {
            "ppl": result["student_ppl"],
            "top1_agreement": result["top1_agreement"],
            "kl_to_teacher": result["kl_to_teacher"],
            "params": count_parameters(student),
        },
        "tokens": result["tokens"],
    }
    if speed:
        report["teacher"]["tokens_per_s"] = generation_speed(teacher, tokenizer)
        report["student"]["tokens_per_s"] = generation_speed(student, tokenizer)
    return report


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompt: str, new_tokens: int = 40, sample: bool = False,
             seed: int = 0, temperature: float = 0.8, top_p: float = 0.95) -> dict[str, Any]:
    """One continuation of `prompt`: greedy, or sampled (temperature, top-p) from `seed`, so that
    several models sampled with the same seed are compared on equal terms. Returns the new text,
    how many tokens it has and the decoding speed."""
    check_text(prompt, "prompt")
    hosting.check_text_size(prompt, "prompt")
    if not 1 <= new_tokens <= 512:
        raise DistillError(f"new tokens must be between 1 and 512, got {new_tokens}")
    hosting.check_cap("new_tokens", new_tokens, "new tokens")
    was_training = model.training
    model.eval()
    enc = tokenizer(prompt, return_tensors="pt").to(model.device)
    options: dict[str, Any] = {"do_sample": False}
    if sample:
        if not temperature > 0:
            raise DistillError(f"sampling temperature must be positive, got {temperature}")
        options = {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id, **options)
        elapsed = time.perf_counter() - start
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    new = out[0, enc["input_ids"].shape[1]:]
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "new_tokens": int(new.shape[0]),
            "tokens_per_s": int(new.shape[0]) / elapsed if elapsed > 0 else float("nan")}


def size_on_disk(model: Any) -> int:
    """Bytes of the model's weights as saved (safetensors, fp32 here): parameters x bytes per
    element, tied weights counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def real_text_report(teacher: Any, student: Any, tokenizer: Any, config: Any) -> dict[str, Any] | None:
    """The CLI `evaluate`'s `real_text`: the pair on the config's real text (`source`, `tokens`, teacher
    {ppl}, student {ppl, top1_agreement, kl_to_teacher}), or `source` and a `note` saying why it was not
    measured; None when the config names no real text."""
    if not config.real_text.strip():
        return None
    blocks, note = real_text_or_note(config, tokenizer)
    if blocks is None:
        return {"source": describe_real_text(config.real_text), "note": note}
    result = evaluate_pair(teacher, student, tokenizer, blocks, speed=False)
    return {"source": describe_real_text(config.real_text), "tokens": result.pop("tokens"),
            "teacher": {"ppl": result["teacher"]["ppl"]},
            "student": {k: result["student"][k] for k in ("ppl", "top1_agreement", "kl_to_teacher")}}


def evaluate_each(teacher: Any, students: dict[str, Any], tokenizer: Any, blocks: Blocks, speed: bool = True,
                  speed_tokens: int = 32, real_blocks: Blocks | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Evaluation tab's rows one model at a time, each yielded as (name, row) as soon as that model is
    measured, the teacher first: perplexity on the held-out blocks, top-1 agreement and KL to the teacher,
    parameters, weight size and greedy tokens/s (when `speed`), all measured in this call. A model's speed
    is measured right after its scores, so that a row arrives complete. With `real_blocks` (the real text) each
    row also has `real_ppl`, `real_top1_agreement` and `real_kl_to_teacher` on them."""
    reference = teacher_reference(teacher, blocks)
    real_reference = teacher_reference(teacher, real_blocks) if real_blocks is not None else None
    row = {"ppl": reference_ppl(reference, blocks), "top1_agreement": 1.0, "kl_to_teacher": 0.0,
           "params": count_parameters(teacher), "size_bytes": size_on_disk(teacher)}
    if real_blocks is not None:
        row.update(real_ppl=reference_ppl(real_reference, real_blocks), real_top1_agreement=1.0, real_kl_to_teacher=0.0)
    if speed:
        row["tokens_per_s"] = generation_speed(teacher, tokenizer, new_tokens=speed_tokens)
    yield "teacher", row
    for name, model in students.items():
        result = compare(teacher, model, blocks, reference=reference)
        row = {"ppl": result["student_ppl"], "top1_agreement": result["top1_agreement"],
               "kl_to_teacher": result["kl_to_teacher"], "params": count_parameters(model),
               "size_bytes": size_on_disk(model)}
        if real_blocks is not None:
            row.update(real_text_row(model, real_blocks, real_reference))
        if speed:
            row["tokens_per_s"] = generation_speed(model, tokenizer, new_tokens=speed_tokens)
        yield name, row


def real_text_row(model: Any, real_blocks: Blocks, real_reference: list[torch.Tensor]) -> dict[str, Any]:
    """A student's real-text figures for a row (`real_ppl`, `real_top1_agreement`, `real_kl_to_teacher`), against
    the teacher's reference on the same blocks."""
    real = compare(None, model, real_blocks, reference=real_reference)
    return {"real_ppl": real["student_ppl"], "real_top1_agreement": real["top1_agreement"],
            "real_kl_to_teacher": real["kl_to_teacher"]}


def evaluate_models(teacher: Any, students: dict[str, Any], tokenizer: Any, blocks: Blocks,
                    speed: bool = True, speed_tokens: int = 32, real_blocks: Blocks | None = None) -> dict[str, dict[str, Any]]:
    """The Evaluation tab's table at once: `evaluate_each`'s rows by name, the teacher first (the command
    line and the scripts read it whole)."""
    return dict(evaluate_each(teacher, students, tokenizer, blocks, speed=speed, speed_tokens=speed_tokens,
                              real_blocks=real_blocks))


def generate_each(models: dict[str, Any], tokenizer: Any, prompt: str, new_tokens: int = 40,
                  seed: int = 0) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """One prompt continued by each model in turn, greedy and sampled from the same `seed` (`generate`),
    yielded as (name, {"greedy": ..., "sampled": ...}) as soon as that model is done."""
    for name, model in models.items():
        yield name, {"greedy": generate(model, tokenizer, prompt, new_tokens, sample=False),
                     "sampled": generate(model, tokenizer, prompt, new_tokens, sample=True, seed=seed)}


def speed_conditions(model: Any) -> str:
    """Where a speed figure was measured, in words: this machine's CPU and its torch threads, or its GPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return f"this machine's GPU ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"this machine ({threads} CPU thread{'s' if threads != 1 else ''})"


def trade_sentence(rows: dict[str, dict[str, Any]], student: str) -> str:
    """One sentence stating the trade, from measured figures only: perplexity kept (teacher ppl /
    student ppl), speed-up and parameter reduction."""
    teacher, row = rows["teacher"], rows[student]
    kept = teacher["ppl"] / row["ppl"] if row["ppl"] > 0 else float("nan")
    parts = [f"The {student} keeps {kept:.0%} of the teacher's quality (held-out perplexity "
             f"{row['ppl']:.1f} vs {teacher['ppl']:.1f}, agreeing with its top-1 choice {row['top1_agreement']:.0%} of the time)"]
    if "tokens_per_s" in row and teacher.get("tokens_per_s"):
        parts.append(f"at {row['tokens_per_s'] / teacher['tokens_per_s']:.2f}x the teacher's generation speed")
    parts.append(f"with {teacher['params'] / row['params']:.2f}x fewer parameters "
                 f"({row['params'] / 1e6:.1f} M vs {teacher['params'] / 1e6:.1f} M)")
    return ", ".join(parts[:-1]) + " and " + parts[-1] + "."
