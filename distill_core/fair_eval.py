"""A student measured against its teacher whatever their tokenizers, on the held-out text: perplexity (each
model per its own tokens), bits per byte (bits_per_byte.py: the same bytes for both, so pairs with different
tokenizers compare), top-1 agreement and KL to the teacher.

With one vocabulary (or the same tokens in output layers of different widths) agreement and KL are
evaluate.compare's, id by id. Across tokenizers they are read over the aligned spans of the same held-out bytes
(paired_data.pack_pairs): agreement, how often the two models' most likely next tokens stand for the same bytes;
KL, the span-aligned loss's direct term at T = 1 (cross_losses.span_aligned_terms: the divergence over each
span's text and the shared tokens).

`HeldOut` is what a session, a sweep, the CLI's `evaluate` and the Evaluate tab score on; `evaluate_each` gives
the Evaluate tab's rows and `evaluate_pair` the CLI's JSON, with bits per byte in both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from distill_core.alignment import vocabulary_match
from distill_core.bits_per_byte import ByteText, ByteWindows, bits_per_byte, byte_windows, heldout_text
from distill_core.config import DistillConfig
from distill_core.cross_losses import SharedTokens, shared_tokens, span_aligned_terms, top1_agrees
from distill_core.data import Blocks, heldout_blocks
from distill_core.evaluate import (compare, generation_speed, real_text_row, reference_ppl, score, size_on_disk,
                                   teacher_reference)
from distill_core.losses import shift_for_next_token
from distill_core.models import count_parameters
from distill_core.paired_data import PairedBlocks, pack_pairs
from distill_core.paths import cache_dir
from distill_core.tokenizer_bridge import Bridge, choose_bridge


def output_width(model: Any) -> int:
    """Rows of a model's output layer (its config's vocab_size)."""
    return int(model.config.vocab_size)


@dataclass
class HeldOut:
    """The held-out text of a pair, as each side reads it."""

    text: ByteText
    """The bytes both models score for bits per byte."""
    blocks: Blocks
    """Per-token scoring: the teacher's tokens for a shared vocabulary; across tokenizers, `paired`'s student side."""
    paired: PairedBlocks | None
    shared: SharedTokens | None
    bridge: Bridge
    student_windows: ByteWindows
    teacher_windows: ByteWindows
    teacher_blocks: Blocks | None = None
    """Across tokenizers, the teacher's own held-out blocks (its perplexity, the same figure as for any pair)."""

    @property
    def cross(self) -> bool:
        return self.paired is not None


@dataclass
class TeacherLogits:
    """Across tokenizers, what comparisons against the teacher reuse: its logits on its side of each batch of paired
    blocks, and its held-out perplexity on its own blocks."""

    logits: list[torch.Tensor]
    ppl: float


def held_out(config: DistillConfig, teacher_tokenizer: Any, student_tokenizer: Any, teacher_width: int,
             student_width: int, bridge: Bridge | None = None, blocks: Blocks | None = None) -> HeldOut:
    """The held-out text of `config` for a pair (its bridge chosen from `config.tokenizer_bridge` unless given;
    `blocks`: the held-out blocks when the caller has packed them already, for a pair that reads one vocabulary)."""
    bridge = bridge or choose_bridge(config.tokenizer_bridge, teacher_tokenizer, student_tokenizer, teacher_width,
                                     student_width)
    text = heldout_text(config, teacher_tokenizer)
    paired = shared = teacher_blocks = None
    if bridge.cross:
        teacher_blocks = heldout_blocks(config, teacher_tokenizer)
        paired = pack_pairs(teacher_tokenizer, student_tokenizer, text.documents, config.seq_len, pad_last=True)
        match = vocabulary_match(teacher_tokenizer, student_tokenizer, teacher_width, student_width)
        shared = shared_tokens(match.teacher_ids, match.student_ids, teacher_width, student_width)
        blocks = paired
    elif blocks is None:  # the tokenizer with fewer tokens: with shared_ids, its ids exist in both output layers
        smaller = student_tokenizer if len(student_tokenizer) < len(teacher_tokenizer) else teacher_tokenizer
        blocks = heldout_blocks(config, smaller)
    return HeldOut(text, blocks, paired, shared, bridge, byte_windows(student_tokenizer, text, config.seq_len),
                   byte_windows(teacher_tokenizer, text, config.seq_len), teacher_blocks)


@torch.no_grad()
def reference(teacher: Any, held: HeldOut, batch_size: int = 8) -> list[torch.Tensor] | TeacherLogits:
    """What every comparison against the teacher reuses: evaluate.teacher_reference (log-probabilities at the
    counted positions) for a shared vocabulary; across tokenizers `TeacherLogits`."""
    if not held.cross:
        return teacher_reference(teacher, held.blocks, batch_size)
    teacher_side = held.paired.teacher_blocks()
    device = next(teacher.parameters()).device
    logits = [teacher(input_ids=teacher_side.input_ids[i : i + batch_size].to(device),
                      attention_mask=teacher_side.attention_mask[i : i + batch_size].to(device)).logits.float().cpu()
              for i in range(0, len(teacher_side), batch_size)]
    return TeacherLogits(logits, score(teacher, held.teacher_blocks, batch_size)["ppl"])


@torch.no_grad()
def compare_student(student: Any, held: HeldOut, teacher_reference_: list[torch.Tensor] | TeacherLogits,
                    batch_size: int = 8) -> dict[str, Any]:
    """evaluate.compare's figures (teacher_ppl, student_ppl, student_loss, top1_agreement, kl_to_teacher,
    tokens) for any pair, plus the student's bits per byte (`student_bpb`)."""
    was_training = student.training
    student.eval()
    try:
        result = (_compare_across(student, held, teacher_reference_, batch_size) if held.cross
                  else compare(None, student, held.blocks, batch_size, reference=teacher_reference_))
        result["student_bpb"] = bits_per_byte(student, held.student_windows)["bits_per_byte"]
    finally:
        student.train(was_training)
    return result


def _compare_across(student: Any, held: HeldOut, teacher: TeacherLogits, batch_size: int) -> dict[str, Any]:
    paired, device = held.paired, next(student.parameters()).device
    sums = {"student_nll": 0.0, "student_count": 0, "agree": 0.0, "kl": 0.0, "groups": 0}
    for logits_t, start in zip(teacher.logits, range(0, len(paired), batch_size)):
        batch = paired.select(slice(start, start + batch_size))
        s_ids, s_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        t_ids = batch.teacher_ids.to(device)
        logits_s = student(input_ids=s_ids, attention_mask=s_mask).logits.float()
        logits_t = logits_t.to(device)
        labels, counted = shift_for_next_token(s_ids, s_mask)
        nll = F.cross_entropy(logits_s.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        sums["student_nll"] += float((nll * counted).sum())
        sums["student_count"] += int(counted.sum())
        spans = batch.aligned_spans()
        if len(spans):
            terms = span_aligned_terms(logits_s, logits_t, s_ids, t_ids, spans, held.shared, 1.0)
            sums["agree"] += float(top1_agrees(terms, held.shared).sum())
            sums["kl"] += float(terms.direct.sum())
            sums["groups"] += len(spans)
    groups = max(1, sums["groups"])
    student_loss = sums["student_nll"] / max(1, sums["student_count"])
    return {"teacher_ppl": teacher.ppl,
            "student_ppl": math.exp(min(student_loss, 50.0)), "student_loss": student_loss,
            "top1_agreement": sums["agree"] / groups, "kl_to_teacher": sums["kl"] / groups,
            "tokens": sums["student_count"], "aligned_spans": sums["groups"]}


def _bpb_cache_path(identity: str, held: HeldOut) -> Any:
    digest = hashlib.sha256(json.dumps([identity, held.text.documents, held.teacher_windows.input_ids.shape[1]])
                            .encode()).hexdigest()[:16]
    return cache_dir() / "bits_per_byte" / f"teacher-{digest}.json"


def teacher_bpb(teacher: Any, held: HeldOut, identity: str | None = None) -> float | None:
    """The teacher's bits per byte on the held-out bytes. `identity` (the teacher's fingerprint) keeps it on disk,
    so a session that never loads the teacher (a complete teacher cache) still reports it: pass `teacher` None
    there (None when it was never measured)."""
    path = _bpb_cache_path(identity, held) if identity else None
    if teacher is None:
        if path is not None and path.is_file():
            return float(json.loads(path.read_text(encoding="utf-8"))["bits_per_byte"])
        return None
    value = bits_per_byte(teacher, held.teacher_windows)["bits_per_byte"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"bits_per_byte": value}), encoding="utf-8")
    return value


def student_bpb(student: Any, held: HeldOut) -> float:
    return bits_per_byte(student, held.student_windows)["bits_per_byte"]


# ---------------------------------------------------------------------------------------
# the Evaluate tab and the CLI
# ---------------------------------------------------------------------------------------
def evaluate_each(teacher: Any, students: dict[str, tuple[Any, Any]], config: DistillConfig, speed: bool = True,
                  speed_tokens: int = 32, real_blocks: Blocks | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Evaluate tab's rows one model at a time, the teacher first, each as soon as it is measured: held-out
    perplexity (per its own tokens), bits per byte (the same bytes for all), top-1 agreement and KL to the teacher,
    parameters, weight size and greedy tokens/s (when `speed`). `teacher`: a LoadedModel; `students`: name ->
    (model, tokenizer). With `real_blocks` (the real text in the teacher's tokens) each row also has `real_ppl`,
    `real_top1_agreement` and `real_kl_to_teacher`; None for a student that reads other tokens."""
    teacher_blocks = heldout_blocks(config, teacher.tokenizer)
    real_ref = teacher_reference(teacher.model, real_blocks) if real_blocks is not None else None
    teacher_text = heldout_text(config, teacher.tokenizer)
    teacher_ref = teacher_reference(teacher.model, teacher_blocks)
    row = {"ppl": reference_ppl(teacher_ref, teacher_blocks),
           "bits_per_byte": bits_per_byte(teacher.model, byte_windows(teacher.tokenizer, teacher_text,
                                                                      config.seq_len))["bits_per_byte"],
           "top1_agreement": 1.0, "kl_to_teacher": 0.0, "params": count_parameters(teacher.model),
           "size_bytes": size_on_disk(teacher.model)}
    if real_blocks is not None:
        row.update(real_ppl=reference_ppl(real_ref, real_blocks), real_top1_agreement=1.0, real_kl_to_teacher=0.0)
    if speed:
        row["tokens_per_s"] = generation_speed(teacher.model, teacher.tokenizer, new_tokens=speed_tokens)
    yield "teacher", row
    for name, (model, tokenizer) in students.items():
        bridge = choose_bridge(config.tokenizer_bridge, teacher.tokenizer, tokenizer, output_width(teacher.model),
                               output_width(model))
        same = bridge.kind == "none"  # the teacher's own blocks: its reference is reused
        held = held_out(config, teacher.tokenizer, tokenizer, output_width(teacher.model), output_width(model), bridge,
                        teacher_blocks if same else None)
        result = compare_student(model, held, teacher_ref if same else reference(teacher.model, held))
        row = {"ppl": result["student_ppl"], "bits_per_byte": result["student_bpb"],
               "top1_agreement": result["top1_agreement"], "kl_to_teacher": result["kl_to_teacher"],
               "params": count_parameters(model), "size_bytes": size_on_disk(model), "bridge": bridge.kind}
        if real_blocks is not None:
            row.update(real_text_row(model, real_blocks, real_ref) if not bridge.cross else
                       dict.fromkeys(("real_ppl", "real_top1_agreement", "real_kl_to_teacher")))
        if speed:
            row["tokens_per_s"] = generation_speed(model, tokenizer, new_tokens=speed_tokens)
        yield name, row


def evaluate_pair(teacher: Any, student: Any, config: DistillConfig, speed: bool = True) -> dict[str, Any]:
    """The CLI's `evaluate` JSON: teacher {ppl, bits_per_byte, params, tokens_per_s}, student {ppl, bits_per_byte,
    top1_agreement, kl_to_teacher, params, tokens_per_s}, the tokens scored, the bytes scored and the bridge.
    `teacher`, `student`: LoadedModels."""
    held = held_out(config, teacher.tokenizer, student.tokenizer, output_width(teacher.model),
                    output_width(student.model))
    result = compare_student(student.model, held, reference(teacher.model, held))
    report = {
        "teacher": {"ppl": result["teacher_ppl"], "bits_per_byte": teacher_bpb(teacher.model, held),
                    "params": count_parameters(teacher.model)},
        "student": {"ppl": result["student_ppl"], "bits_per_byte": result["student_bpb"],
                    "top1_agreement": result["top1_agreement"], "kl_to_teacher": result["kl_to_teacher"],
                    "params": count_parameters(student.model)},
        "tokens": result["tokens"],
        "bytes": held.text.n_bytes,
        "tokenizer_bridge": held.bridge.kind,
    }
    if speed:
        report["teacher"]["tokens_per_s"] = generation_speed(teacher.model, teacher.tokenizer)
        report["student"]["tokens_per_s"] = generation_speed(student.model, student.tokenizer)
    return report


def byte_trade_sentence(rows: dict[str, dict[str, Any]], student: str) -> str:
    """evaluate.trade_sentence for a student that reads other tokens than its teacher: the trade in bits per
    byte (perplexities per different tokens do not compare), speed and parameters, from measured figures only."""
    teacher, row = rows["teacher"], rows[student]
    parts = [f"The {student} needs {row['bits_per_byte']:.3f} bits per byte of the held-out text against the "
             f"teacher's {teacher['bits_per_byte']:.3f} ({row['bits_per_byte'] / teacher['bits_per_byte']:.2f}x; "
             "its tokens are not the teacher's, so per-token perplexities do not compare)"]
    if "tokens_per_s" in row and teacher.get("tokens_per_s"):
        parts.append(f"at {row['tokens_per_s'] / teacher['tokens_per_s']:.2f}x the teacher's generation speed (in its "
                     "own tokens)")
    parts.append(f"with {teacher['params'] / row['params']:.2f}x fewer parameters "
                 f"({row['params'] / 1e6:.1f} M vs {teacher['params'] / 1e6:.1f} M)")
    return ", ".join(parts[:-1]) + " and " + parts[-1] + "."
