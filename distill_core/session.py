"""The distillation session: prepare -> fit -> finish, as a generator of events.

    for event in run_session(config, out_dir, stop):
        ...  # event["kind"] in status | corpus | cache | eval | step | probe | done | stopped | error

The entry point takes plain, picklable inputs (a `DistillConfig`, a folder, a stop handle: anything with
`is_set()`, a `threading.Event` in one process or a `StopSignal` across processes) and yields plain,
JSON-able dicts, so the same session runs in the app's process, in a child process (ZeroGPU's worker,
distill_core/child.py) or under `accelerate launch`. Step, eval and probe events also go to OUT/metrics.jsonl
as they happen, so nothing is lost when a session stops or fails half way. A training checkpoint
(OUT/checkpoint, see distill_core.resume) is written every `checkpoint_every` steps and when the session
stops or fails; `run_session(config, out_dir, stop, resume=True)` continues from it.

- `prepare` loads the teacher (unless a complete teacher cache makes it unnecessary), reads and packs the
  corpus, builds the student and measures it before training: a `Prepared`.
- `fit` runs the steps (`step.DistillStep`) until done, stopped or failed: a `Fitted`.
- `finish` measures the student after training, saves it and writes summary.json.

Under `accelerate launch` (several processes, DDP; see distill_core.distributed) every process runs
this generator; each trains on its share of every batch and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import get_cosine_schedule_with_warmup

from distill_core import before_cache, probes
from distill_core import resume as training_checkpoint
from distill_core.augment import augment_blocks
from distill_core.card import model_card
from distill_core.bridged_probes import pair_snapshot
from distill_core.config import DistillConfig
from distill_core.corpora import Corpus, load_corpus
from distill_core.cross_step import make_step
from distill_core.data import (HELDOUT_FRACTION, Blocks, batch_indices, heldout_blocks, heldout_split, pack,
                               real_text_blocks, tensors_digest)
from distill_core.device import resolve_device, teacher_dtype
from distill_core.distributed import Processes, state_checksum
from distill_core.errors import DistillError, describe_failure, first_line
from distill_core.evaluate import compare, score, teacher_reference
from distill_core.fair_eval import HeldOut, compare_student, held_out, reference as fair_reference, student_bpb, teacher_bpb
from distill_core.grading import graded_row, heldout_prompts, sample_measure, teacher_floor
from distill_core.layer_map import resolve_layer_map
from distill_core.layer_select import NeedsTeacherNetwork
from distill_core.realtext import describe as describe_real_text
from distill_core.losses import FitNetsProjection
from distill_core.memory import session_fit
from distill_core.models import LazyTeacher, LoadedModel, TeacherWeights, conversion_pending, count_parameters
from distill_core.on_policy import OnPolicy, Rollout
from distill_core.paired_data import pack_pairs
from distill_core.paths import write_text_atomic
from distill_core.specs import is_derived_spec, own_vocabulary
from distill_core.storage import swapped_in, weights_to_save
from distill_core.step import DistillStep, SharedPrefix, make_optimizer, prepare_student
from distill_core.students import load_student, student_vocabulary
from distill_core.tokenizer_bridge import choose_bridge
from distill_core.teacher_cache import CachedTeacher, TeacherCache
from distill_core.teacher_corpus import CapturedTargets, captured_targets_blocked
from distill_core.tracking import SessionTracker

PHASES = ("start", "conversion", "teacher", "corpus", "student", "evaluation", "training", "saving")
"""The phases of a session, in order (evaluation recurs during training); `summary.json`'s `phases_s` times
each, and the app's progress names the current one."""
MAX_VAL_BLOCKS = 8
"""At most this many held-out corpus blocks are scored in each periodic evaluation."""
FINAL_KINDS = ("done", "stopped", "error")
"""The kinds of a session's last event."""
PAUSED = "paused"
"""The last event of a call that ran out of its time limit (the session goes on in the next call)."""

Events = Generator[dict[str, Any], None, Any]


class StopSignal:
    """A stop request that works across processes: set() creates a file, is_set() looks for it. It pickles
    as its path, so a session in a child process (or ZeroGPU's worker) sees the parent's request."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            handle, path = tempfile.mkstemp(prefix="distill-stop-")
            os.close(handle)
            os.unlink(path)
        self.path = Path(path)

    def set(self) -> None:
        self.path.touch()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_set(self) -> bool:
        return self.path.exists()

    def __reduce__(self) -> tuple:
        return StopSignal, (str(self.path),)


class Record:
    """Where a session's events go: OUT (config.yaml, metrics.jsonl) in the main process, timed from the start."""

    def __init__(self, config: DistillConfig, out_dir: str | Path | None, procs: Processes,
                 checkpoint: training_checkpoint.Checkpoint | None):
        self.started = time.perf_counter()
        self.phase = "start"
        """What the session is doing (one of `PHASES`): every event carries it."""
        self._phases_s: dict[str, float] = {}
        self._phase_start = 0.0
        self.out = Path(out_dir) if out_dir is not None and procs.is_main else None  # only the main process writes
        self.metrics = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            config.portable().to_yaml(self.out / "config.yaml")  # reruns from another checkout too
            if checkpoint is not None:
                training_checkpoint.trim_metrics(self.out / "metrics.jsonl", checkpoint.step)
            else:  # a new run in an old run's folder: that run's checkpoint is not this one's
                training_checkpoint.remove(self.out)
            self.metrics = (self.out / "metrics.jsonl").open("a" if checkpoint is not None else "w", encoding="utf-8")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def enter(self, phase: str) -> None:
        """The session moves to `phase`; the time since the last change goes to the phase it leaves."""
        now = self.elapsed()
        self._phases_s[self.phase] = self._phases_s.get(self.phase, 0.0) + now - self._phase_start
        self.phase, self._phase_start = phase, now

    def phases_s(self) -> dict[str, float]:
        """Seconds spent in each phase so far (the current one up to now)."""
        self.enter(self.phase)
        return {name: round(seconds, 2) for name, seconds in self._phases_s.items() if seconds > 0}

    def emit(self, kind: str, phase: str | None = None, **payload: Any) -> dict[str, Any]:
        if phase is not None and phase != self.phase:
            self.enter(phase)
        event = {"kind": kind, "elapsed_s": round(self.elapsed(), 3), "phase": self.phase, **payload}
        if self.metrics is not None and kind in ("step", "eval", "probe", "rollout"):
            self.metrics.write(json.dumps(event) + "\n")
            self.metrics.flush()
        return event

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


def run_session(config: DistillConfig, out_dir: str | Path | None = None, stop: Any = None,
                resume: bool = False, time_limit_s: float | None = None) -> Events:
    """Run one distillation session, yielding events. Raises DistillError on bad input before
    training starts; a failure during training ends with an `error` event after the last good
    student has been saved.

    With `resume`, continue the stopped session in `out_dir` from its checkpoint (same config but
    for `config.RESUME_FIELDS`): its metrics.jsonl is kept up to the checkpoint's step and appended
    to, and the summary says `resumed_from_step`.

    With `time_limit_s`, this call trains until that many seconds from its start would be passed by one
    more step (at least one step a call), then writes a checkpoint and ends with a `paused` event instead
    of finishing: a GPU lent for a fixed time (ZeroGPU) runs a long session in slices (`run_in_slices`)."""
    config.validate()
    if time_limit_s is not None and out_dir is None:
        raise DistillError("a session in slices (time_limit_s) needs an output folder for its checkpoint")
    stop = stop if stop is not None else threading.Event()
    procs = Processes.current(config.device)
    procs.check_batch_size(config.batch_size)
    checkpoint = None
    if resume:
        if out_dir is None:
            raise DistillError("resuming needs the stopped session's output folder")
        checkpoint = training_checkpoint.check_resumable(Path(out_dir), config)
    record = Record(config, out_dir, procs, checkpoint)
    tracker = SessionTracker(config, out_dir, resume=checkpoint is not None, main=procs.is_main)
    deadline = record.started + time_limit_s if time_limit_s is not None else None
    try:
        with contextlib.closing(_stages(config, record, procs, checkpoint, stop, deadline)) as stages:
            for event in stages:  # the one place every event passes: the tracker sees them all
                warning = tracker.log(event)
                yield event
                if warning is not None:
                    yield record.emit("status", message=f"Warning: {warning}", warning=warning)
    finally:
        record.close()
        tracker.finish()


def _stages(config: DistillConfig, record: Record, procs: Processes, checkpoint: training_checkpoint.Checkpoint | None,
            stop: Any, deadline: float | None) -> Events:
    """prepare -> fit -> finish (not finish when the session pauses, to resume in another call)."""
    prepared = yield from prepare(config, record, procs, checkpoint)
    fitted = yield from fit(prepared, record, stop, deadline)
    if not fitted.paused:
        yield from finish(prepared, fitted, record)


def run_in_slices(config: DistillConfig, out_dir: str | Path, stop: Any, run: Any = None,
                  time_limit_s: float | None = None) -> Events:
    """One session as calls of `run` (default `run_session`; on ZeroGPU the same wrapped in `spaces.GPU`),
    each limited to `time_limit_s`: a call that ends `paused` is followed by one that resumes from its
    checkpoint, until the session is done, stopped or failed. Yields every call's events."""
    run = run or run_session
    resume = False
    while True:
        paused = False
        for event in run(config, out_dir, stop, resume=resume, time_limit_s=time_limit_s):
            paused = event["kind"] == PAUSED
            yield event
        if not paused:
            return
        resume = True


# ---------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything `fit` and `finish` need: data, models, and the measurements before training."""

    config: DistillConfig
    procs: Processes
    device: torch.device
    teacher: LazyTeacher
    corpus: dict[str, Any]
    """The training text: its `description`, `documents` and `sha256` (for the model card)."""
    train_blocks: Blocks
    val_blocks: Blocks
    eval_blocks: Blocks
    augmented: dict[str, Any] | None
    cached: CachedTeacher | None
    student: LoadedModel
    layer_pairs: list[tuple[int, int]]
    reference: list[torch.Tensor]
    teacher_params: int
    student_params: int
    before: dict[str, Any] = field(default_factory=dict)
    checkpoint: training_checkpoint.Checkpoint | None = None
    similarity: "PairSimilarity | None" = None
    held: HeldOut | None = None
    """The held-out text as each model reads it (bits per byte; across tokenizers, the aligned blocks and the bridge)."""
    captured: CapturedTargets | None = None
    real: "RealText | None" = None
    on_policy: OnPolicy | None = None
    """The on-policy schedule and prompts (on_policy_fraction > 0), else None."""
    sample_prompts: list[list[int]] | None = None
    """The held-out prompts the student continues for the teacher-scored measure of its own text (None: skipped)."""

    @property
    def step_targets(self) -> CachedTeacher | CapturedTargets | None:
        """Where each step's soft targets come from without a teacher forward pass: the teacher cache, or the
        targets captured while the teacher wrote the corpus; None: the teacher runs at every step."""
        return self.cached if self.cached is not None else self.captured

    def snapshot(self, record: Record, step: int) -> dict[str, Any]:
        """A probe event: the dark-knowledge snapshot, plus the CKA of the mapped layer pairs."""
        probe_teacher = (self.teacher.loaded if self.teacher.loaded is not None
                         else self.cached.as_teacher(self.teacher.tokenizer, self.config.teacher))
        event = pair_snapshot(probe_teacher, self.student, self.config.probe_text, self.config.temperature)
        if self.similarity is not None:
            event.update(self.similarity.measure(self.student))
        return record.emit("probe", step=step, **event)

    def own_text(self, model: Any, with_floor: bool = False) -> dict[str, Any]:
        """The teacher-scored measure of `model`'s own continuations of the held-out prompts (grading.py):
        `sample_nll` and `sample_reverse_kl` (None each when skipped); with `with_floor`, the teacher's own
        samples' `teacher_sample_nll` too (cached per teacher on disk). Seeded by the session's seed: before and after see the same draws."""
        c = self.config
        if self.sample_prompts is None:
            return {"sample_nll": None, "sample_reverse_kl": None, "sample_entropy": None,
                    **({"teacher_sample_nll": None} if with_floor else {})}
        teacher, tokenizer = self.teacher.loaded.model, self.teacher.tokenizer
        args = (tokenizer, self.sample_prompts, c.sample_eval_tokens, c.seed, c.rollout_temperature, c.rollout_top_p)
        measured = sample_measure(teacher, model, *args)
        result = {"sample_nll": measured["nll"], "sample_reverse_kl": measured["reverse_kl"],
                  "sample_entropy": measured["entropy"], "sample_tokens": measured["tokens"]}
        if with_floor:
            identity = f"{self.teacher.fingerprint()}:{self.device.type}:{next(teacher.parameters()).dtype}"
            result["teacher_sample_nll"] = teacher_floor(teacher, identity, *args)
        return result


def _sample_prompts(config: DistillConfig, record: Record, teacher: LazyTeacher, bridge: str) -> Events:
    """The held-out prompts of the teacher-scored measure as token ids, or None (and why) when it is skipped."""
    if not config.sample_eval_tokens:
        return None
    if bridge != "none":  # the teacher scores the student's tokens as its own ids
        yield record.emit("status", message="The teacher-scored measure of the student's own text is skipped: the "
                                            f"student reads other tokens than the teacher (tokenizer bridge {bridge})")
        return None
    if teacher.loaded is None:
        yield record.emit("status", message="The teacher-scored measure of the student's own text is skipped: the "
                                            "teacher cache serves this session and the teacher is not loaded")
        return None
    return heldout_prompts(config, teacher.tokenizer)


def prepare(config: DistillConfig, record: Record, procs: Processes,
            checkpoint: training_checkpoint.Checkpoint | None) -> Events:
    """Teacher, corpus, student, and the student measured before training; returns a `Prepared`."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = procs.device if procs.distributed else resolve_device(config.device)
    if not procs.is_main:  # the main process fills the shared caches (corpus, teacher cache, ...) first
        procs.barrier()
    teacher = LazyTeacher(config.teacher, device, teacher_dtype(config, device), config.compile)
    if conversion_pending(config.teacher):
        yield record.emit("status", message=f"Converting {config.teacher} from GGUF (once; then cached) …",
                          phase="conversion")
        teacher.resolve()
    if not config.teacher_cache or config.on_policy_fraction > 0:  # on-policy steps: the teacher scores live
        yield record.emit("status", message=f"Loading teacher {config.teacher} …", phase="teacher")
        teacher.get()
    data = yield from _prepare_data(config, record, teacher)
    train_blocks, eval_blocks, held = data.train_blocks, data.eval_blocks, data.held
    cached = (yield from _teacher_cache(config, record, teacher, train_blocks, eval_blocks)) if config.teacher_cache else None
    student = yield from _build_student(config, record, teacher, data.docs, data.source)
    student.model.to(device)
    if procs.is_main:
        procs.barrier()
    n_teacher_layers = teacher.config().num_hidden_layers
    layer_pairs = resolve_layer_map(config.layer_map, student.model.config.num_hidden_layers, n_teacher_layers,
                                    student.layers_kept)
    if cached is not None:
        reference, teacher_params = cached.reference, cached.teacher_params
    else:
        reference = fair_reference(teacher.loaded.model, held)
        teacher_params = count_parameters(teacher.loaded.model)
    corpus = {"description": data.source, "documents": len(data.docs),
              "sha256": hashlib.sha256("\n\n".join(data.docs).encode("utf-8")).hexdigest()}
    prepared = Prepared(config, procs, device, teacher, corpus, train_blocks,
                        data.val_blocks.select(slice(0, MAX_VAL_BLOCKS)), eval_blocks, data.augmented, cached, student,
                        layer_pairs, reference, teacher_params, count_parameters(student.model), checkpoint=checkpoint,
                        held=held, captured=data.captured)
    if teacher.loaded is not None and not held.cross:  # CKA compares states of the same tokens
        prepared.similarity = PairSimilarity(teacher.loaded, eval_blocks, layer_pairs)
    prepared.real = yield from _real_text(config, record, teacher, held.cross)
    if config.on_policy_fraction > 0:
        if held.bridge.kind != "none":  # the teacher scores the student's samples as its own ids
            raise DistillError(f"on-policy steps need a student that reads the teacher's tokens; this pair is "
                               f"bridged ({held.bridge.kind}): set on_policy_fraction=0, or pick a student with "
                               "the teacher's tokenizer")
        prepared.on_policy = OnPolicy(config, teacher.tokenizer)
    prepared.sample_prompts = yield from _sample_prompts(config, record, teacher, held.bridge.kind)
    if checkpoint is None:
        yield record.emit("status", message="Evaluating the student before distillation …",
                          phase="evaluation")
        name = _before_key(prepared, eval_blocks) if before_cache.enabled() and not held.cross else None
        stored = before_cache.load(name) if name is not None else None
        if stored is not None:
            yield record.emit("status", message="The student before distillation: measured by an earlier session of "
                              "this student on the same texts and settings (read from the cache)", phase="evaluation")
        step0 = _measure_before(prepared, eval_blocks, stored)
        if name is not None and stored is None:
            before_cache.store(name, {"before": prepared.before, "step0": step0,
                                      "real": prepared.real.results.get("before") if prepared.real else None})
        yield record.emit("eval", step=0, **step0)
        yield prepared.snapshot(record, 0)
    else:  # measured by the run that wrote the checkpoint, on the same student before training
        prepared.before = checkpoint.state["before"]
    return prepared


def _measure_before(p: Prepared, eval_blocks: Blocks, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The student before training (`p.before`, the real text's `before`), and the step-0 eval event's figures,
    which it returns; from `stored` (the before-cache) when given."""
    if stored is not None:
        p.before = stored["before"]
        if p.real is not None and stored["real"] is not None:
            p.real.results["before"] = stored["real"]
        return stored["step0"]
    student, held, teacher = p.student, p.held, p.teacher
    p.before = compare_student(student.model, held, p.reference)
    p.before["teacher_bpb"] = teacher_bpb(teacher.loaded.model if teacher.loaded is not None else None, held,
                                          teacher.fingerprint())
    if p.real is not None:
        p.real.measure("before", student.model)
    p.before.update(p.own_text(student.model, with_floor=True))
    return periodic_eval(student, eval_blocks, p.val_blocks, p.before, held)


def _before_key(p: Prepared, eval_blocks: Blocks) -> str:
    """The before-cache's key of this session's measurements before training (before_cache.py)."""
    c, held, real = p.config, p.held, p.real
    return before_cache.key(p.student.model, {
        "teacher": p.teacher.fingerprint(), "device": p.device.type,
        "held": held.blocks.digest(), "eval": eval_blocks.digest(), "val": p.val_blocks.digest(),
        "held_text": hashlib.sha256("\x00".join(held.text.documents).encode("utf-8")).hexdigest(),
        "windows": tensors_digest(held.student_windows.input_ids, held.student_windows.counted),
        "real": real.blocks.digest() if real is not None and real.blocks is not None else None,
        "samples": [p.sample_prompts, c.sample_eval_tokens, c.seed, c.rollout_temperature, c.rollout_top_p]})


@dataclass
class RealText:
    """The real-text evaluation (`config.real_text`): its blocks and the teacher's reference on them, the
    student's scores before and after; or, when it cannot be measured, why (`note`)."""

    source: str
    blocks: Blocks | None = None
    reference: list[torch.Tensor] | None = None
    note: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def measure(self, when: str, student: Any) -> None:
        if self.blocks is not None:
            self.results[when] = compare(None, student, self.blocks, reference=self.reference)

    def summary(self) -> dict[str, Any]:
        """summary.json's `real_text`: where it comes from, the teacher's perplexity, the student before and after."""
        if self.note is not None or not self.results:
            return {"source": self.source, "note": self.note or "not measured"}
        first = next(iter(self.results.values()))
        return {"source": self.source, "tokens": first["tokens"], "teacher": {"ppl": first["teacher_ppl"]},
                **{when: _eval_summary(result) for when, result in self.results.items()}}


def _real_text(config: DistillConfig, record: Record, teacher: LazyTeacher, cross: bool) -> Events:
    """The real text's blocks and the teacher's reference on them (None when the config names no real text);
    a missing package, an unloaded teacher or a student with another vocabulary (the real text is scored in the
    teacher's tokens) becomes a note in the summary, not a failed session."""
    if not config.real_text.strip():
        return None
    real = RealText(describe_real_text(config.real_text))
    if cross:
        real.note = "not measured: the student reads another vocabulary, and the real text is scored per token"
        yield record.emit("status", message=f"Real-text evaluation skipped: {real.note}")
        return real
    try:
        real.blocks = real_text_blocks(config, teacher.tokenizer)
    except DistillError as err:
        real.note = str(err)
    if real.blocks is not None and teacher.loaded is None:
        real.blocks, real.note = None, "not measured: with a complete teacher cache the teacher is not loaded"
    if real.blocks is not None:
        yield record.emit("status", message="Scoring the teacher on the real text …", phase="evaluation")
        real.reference = teacher_reference(teacher.loaded.model, real.blocks)
    else:
        yield record.emit("status", message=f"Real-text evaluation skipped: {real.note}")
    return real


@dataclass
class SessionData:
    """A session's text as blocks: training (augmented copies included), validation, held-out evaluation."""

    docs: list[str]
    source: str
    train_blocks: Blocks
    val_blocks: Blocks
    eval_blocks: Blocks
    augmented: dict[str, Any] | None
    captured: CapturedTargets | None
    """The teacher's targets captured while it wrote the corpus, when they can train this session."""
    held: HeldOut
    """The held-out text as each model reads it (`eval_blocks` is its per-token side)."""


def _prepare_data(config: DistillConfig, record: Record, teacher: LazyTeacher) -> Events:
    """The corpus, packed and split (augmented copies join the training part only; across tokenizers, in both
    tokenizations: paired_data), and the held-out text as each model reads it; ends with the `corpus` event,
    returns the `SessionData`."""
    yield record.emit("status", message="Preparing the corpus …", phase="corpus")
    for source, corpus in load_corpus(config, teacher):
        if corpus is None:
            yield record.emit("status", message=source)
    student_tokenizer, student_width, bridge, tokenizer = yield from _bridge(config, record, teacher, corpus.docs)
    if bridge.cross:
        blocks = pack_pairs(teacher.tokenizer, student_tokenizer, corpus.docs, config.seq_len)
    else:  # the blocks the teacher wrote in its own tokens serve a pair that reads them id by id
        blocks = (corpus.blocks if corpus.blocks is not None and bridge.kind == "none"
                  else pack(tokenizer, corpus.docs, config.seq_len))
    train_index, val_index = heldout_split(len(blocks), HELDOUT_FRACTION, config.seed)
    train_blocks, val_blocks = blocks.select(train_index), blocks.select(val_index)
    captured = yield from _captured_targets(config, record, corpus, train_index, bridge.kind)
    augmented = None
    if config.augment_methods:  # after the split: only training blocks are augmented (augment_blocks)
        for message, result in augment_blocks(tokenizer, train_blocks, config.augment_methods, config.augment_strength,
                                              config.augment_copies, config.seed, config.seq_len, teacher,
                                              config.translation_models):
            if result is None:
                yield record.emit("status", message=message)
            else:
                train_blocks, augmented = result
    held = held_out(config, teacher.tokenizer, student_tokenizer, teacher.config().vocab_size, student_width,
                    bridge, None if bridge.cross else heldout_blocks(config, tokenizer))
    yield record.emit("corpus", source=source, documents=len(corpus.docs), train_tokens=train_blocks.n_tokens,
                      val_tokens=val_blocks.n_tokens, eval_tokens=held.blocks.scored_tokens,
                      epochs=round(config.steps * config.batch_size / max(1, len(train_blocks)), 2),
                      augmented=augmented, **({"one_to_one_share": round(blocks.one_to_one_share, 4)}
                                              if bridge.cross else {}))
    return SessionData(corpus.docs, source, train_blocks, val_blocks, held.blocks, augmented, captured, held)


def _bridge(config: DistillConfig, record: Record, teacher: LazyTeacher, docs: list[str]) -> Events:
    """The student's tokenizer (a BPE of its own trained on `docs` for `vocab=bpe:N`), the bridge between the
    two vocabularies (tokenizer_bridge.py) and the tokenizer the corpus is packed with when both read the same
    tokens (with shared_ids, the one with fewer tokens)."""
    if own_vocabulary(config.student):
        yield record.emit("status", message=f"Training the student's BPE vocabulary on the corpus ({len(docs)} "
                                            "documents; cached for later sessions) …")
    teacher_width = teacher.config().vocab_size
    student_tokenizer, student_width = student_vocabulary(config.student, teacher, teacher_width, docs)
    bridge = choose_bridge(config.tokenizer_bridge, teacher.tokenizer, student_tokenizer, teacher_width, student_width)
    bridge.check_config(config)
    if bridge.kind != "none":
        yield record.emit("status", message=f"Tokenizer bridge {bridge.kind}: {bridge.reason}")
    smaller = student_tokenizer if len(student_tokenizer) < len(teacher.tokenizer) else teacher.tokenizer
    return student_tokenizer, student_width, bridge, smaller


def _captured_targets(config: DistillConfig, record: Record, corpus: Corpus, train_index: torch.Tensor,
                      bridge: str = "none") -> Events:
    """The targets the teacher captured while writing, for the training blocks, when they can serve (the status
    says which, and why not)."""
    if corpus.targets is None or config.teacher_cache:  # another corpus, or the teacher cache serves
        return None
    blocked = captured_targets_blocked(config) or (
        f"they are over the teacher's own token ids and blocks, and tokenizer_bridge={bridge} compares other ones"
        if bridge != "none" else None)
    if blocked:
        yield record.emit("status", message=f"Soft targets: the teacher runs at every step (the ones it captured "
                                            f"while writing cannot serve: {blocked})")
        return None
    kept = corpus.targets.indices.shape[-1]
    k = config.top_k if 0 < config.top_k < kept else kept
    yield record.emit("status", message=f"Soft targets: the teacher's top {k} (and the rest of the mass) at every "
                                        "position, captured while it wrote the corpus: no teacher forward pass per step")
    return CapturedTargets(corpus.targets.take(train_index), config.top_k)


def _teacher_cache(config: DistillConfig, record: Record, teacher: LazyTeacher, train_blocks: Blocks,
                   eval_blocks: Blocks) -> Events:
    """The teacher's top-k over the corpus from the cache, built once (the teacher loaded) when missing."""
    store = TeacherCache(teacher.resolve(), train_blocks, eval_blocks, probes.encode(teacher.tokenizer, config.probe_text),
                         config.temperature, config.top_k, teacher_dtype=teacher.dtype)
    cached, why = store.load()
    if cached is None:
        yield record.emit("status", message=f"{why}: the teacher computes its top-{config.top_k} over the corpus once …")
        for fraction, result in store.build(teacher.get()):
            if result is None:
                yield record.emit("status", message=f"Teacher cache: {fraction:.0%} of the corpus …")
            cached = result
    yield record.emit("cache", path=str(cached.path), teacher_loaded=teacher.loaded is not None,
                      message=("teacher cache complete: the teacher is not loaded" if teacher.loaded is None
                               else f"teacher cache written to {cached.path}"))
    return cached


def _build_student(config: DistillConfig, record: Record, teacher: LazyTeacher, docs: list[str],
                   corpus_source: str) -> Events:
    """The student, derived from the teacher (its weights alone when the teacher is not loaded) or loaded."""
    yield record.emit("status", message=f"Building student {config.student} …", phase="student")
    if teacher.loaded is not None:
        source = teacher.loaded
    else:  # a derived student copies the weights; any other needs only the tokenizer (compatibility check)
        weights = TeacherWeights(teacher.resolve()) if is_derived_spec(config.student) else None
        source = LoadedModel(weights, teacher.tokenizer, config.teacher, teacher.resolve().source)
    try:
        return load_student(config.student, source, seed=config.seed, calibration=docs,
                            calibration_source=corpus_source, tokenizer_bridge=config.tokenizer_bridge)
    except NeedsTeacherNetwork:  # e.g. layers:N:angular measures the teacher once, then caches its choice
        yield record.emit("status", message=f"Loading teacher {config.teacher} to choose the student's layers …")
        return load_student(config.student, teacher.get(), seed=config.seed, calibration=docs,
                            calibration_source=corpus_source, tokenizer_bridge=config.tokenizer_bridge)


class PairSimilarity:
    """Linear CKA of each mapped (student, teacher) layer pair on the first held-out block, for the
    probe snapshots: how the student's representations move toward the teacher's during training.
    The teacher's hidden states are computed once."""

    def __init__(self, teacher: LoadedModel, blocks: Blocks, layer_pairs: list[tuple[int, int]], skip_first: bool = True):
        self.ids, self.mask = blocks.input_ids[:1], blocks.attention_mask[:1]
        # among the real tokens, which count: the first token's massive activations dominate CKA
        # (see probes.similarity_probe), so it is left out
        self.keep = torch.ones(int(self.mask.sum()), dtype=torch.bool)
        self.keep[0] = not skip_first
        self.pairs = layer_pairs
        states = probes.hidden_states(teacher.model, self.ids, self.mask)
        self.teacher = {t: states[t][self.keep] for _, t in layer_pairs}

    def measure(self, student: LoadedModel) -> dict[str, Any]:
        states = probes.hidden_states(student.model, self.ids, self.mask)
        return {"layer_pairs": [list(p) for p in self.pairs],
                "pair_cka": [probes.linear_cka(states[s][self.keep], self.teacher[t]) for s, t in self.pairs]}


def periodic_eval(student: LoadedModel, eval_blocks: Blocks, val_blocks: Blocks,
                  full: dict[str, Any] | None = None, held: HeldOut | None = None) -> dict[str, Any]:
    """Student perplexity on the held-out text and on the held-out part of the training corpus
    (the two diverge when the student over-fits the corpus), with `held` its bits per byte on the held-out
    text; with `full` (a `compare_student` result) also the teacher's perplexity and bits per byte, top-1
    agreement and KL to the teacher."""
    was_training = student.model.training
    student.model.eval()
    held_out = score(student.model, eval_blocks)
    val = score(student.model, val_blocks)
    student.model.train(was_training)
    result = {"held_out_ppl": held_out["ppl"], "held_out_loss": held_out["loss"],
              "val_ppl": val["ppl"], "val_loss": val["loss"]}
    if held is not None:
        result["held_out_bpb"] = full["student_bpb"] if full is not None else student_bpb(student.model, held)
    if full is not None:
        result.update(teacher_ppl=full["teacher_ppl"], top1_agreement=full["top1_agreement"],
                      kl_to_teacher=full["kl_to_teacher"], teacher_bpb=full.get("teacher_bpb"))
        result.update({key: full[key] for key in ("sample_nll", "sample_reverse_kl", "teacher_sample_nll")
                       if full.get(key) is not None})
    return result


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------
@dataclass
class Fitted:
    """Where training got to: the last step, its loss, why it ended early (if it did)."""

    step: int
    last_loss: float
    error: str | None
    train_s: float
    trainable_params: int
    projection: FitNetsProjection | None
    memory: dict[str, Any]
    paused: bool = False
    """This call's time limit ended it; a checkpoint holds where it got to."""
    on_policy_steps: int = 0
    """Steps of this call that trained on the student's own text."""
    rollout_s: float = 0.0
    """Seconds the student spent writing for them."""

    def stopped(self, config: DistillConfig) -> bool:
        return self.step < config.steps


@dataclass
class Training:
    """What every step of a session shares: the step itself, the schedule, the checkpoint's state."""

    step: DistillStep
    scheduler: Any
    trainable_params: int
    projection: FitNetsProjection | None
    memory: dict[str, Any]


def _training_setup(p: Prepared, record: Record) -> Events:
    """Trainable parameters, FitNets projection, shared prefix, memory check, optimizer and schedule."""
    config, device, student = p.config, p.device, p.student
    trainable = prepare_student(student, config)
    projection = None
    if config.hidden_weight > 0:
        projection = FitNetsProjection(len(p.layer_pairs), student.model.config.hidden_size,
                                       p.teacher.loaded.model.config.hidden_size).to(device)
        trainable += list(projection.parameters())
        yield record.emit("status", message="FitNets hints on layer pairs (student:teacher) "
                          + ", ".join(f"{s}:{t}" for s, t in p.layer_pairs))
    if config.attention_weight > 0:
        yield record.emit("status", message="Attention transfer on layer pairs (student:teacher) "
                          + ", ".join(f"{s}:{t}" for s, t in p.layer_pairs))
    layer_wise = projection is not None or config.attention_weight > 0
    # the shared prefix calls the student with swapped layers, past the DDP wrapper: one process only
    shared_prefix = (None if layer_wise or p.step_targets is not None or p.procs.distributed
                     else SharedPrefix.create(p.teacher.loaded, student, config, p.train_blocks))
    if shared_prefix is not None:
        yield record.emit("status", message=f"Student layers 0-{config.freeze_layers - 1} are frozen copies of the "
                          "teacher's: each step reuses the teacher's hidden states there (exact, faster)")
    n_trainable = sum(t.numel() for t in trainable)
    memory = session_fit(config, p.teacher.config(), student.model.config, p.teacher_params, p.student_params,
                         n_trainable, device, teacher_loaded=p.teacher.loaded is not None)
    if memory["warning"]:
        yield record.emit("status", message=f"Warning: {memory['warning']}", warning=memory["warning"])
    optimizer = make_optimizer(trainable, config, device)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, config.steps), config.steps)
    after_backward = ((lambda: p.procs.average_gradients(projection.parameters()))
                      if p.procs.distributed and projection is not None else None)
    if p.checkpoint is not None:
        p.checkpoint.restore(student.model, projection, optimizer, scheduler)
    step = make_step(config, p.teacher.loaded, student, optimizer, p.held.bridge, p.held.shared,
                     layer_pairs=p.layer_pairs, projection=projection, shared_prefix=shared_prefix,
                     student_forward=p.procs.wrap(student.model),  # DDP under accelerate launch, else None
                     after_backward=after_backward)
    if p.checkpoint is not None and step.scaler is not None:
        p.checkpoint.restore_scaler(step.scaler)
    return Training(step, scheduler, n_trainable, projection, memory)


def fit(p: Prepared, record: Record, stop: Any, deadline: float | None = None) -> Events:
    """The training loop: steps until `config.steps`, a stop request, a failure or (with a `deadline`) the
    time of this call; returns a `Fitted`."""
    config, procs = p.config, p.procs
    training = yield from _training_setup(p, record)
    start = p.checkpoint.step if p.checkpoint is not None else 0
    batch_iter = batch_indices(len(p.train_blocks), config.batch_size, config.seed, start=start)
    torch.manual_seed(config.seed)
    if p.checkpoint is not None:
        p.checkpoint.restore_rng()
    loop = Loop(p, record, training, start)
    train_started = time.perf_counter()
    if p.checkpoint is not None:
        yield record.emit("status", message=f"Resuming at step {start} of {config.steps} from {p.checkpoint.path}")
    yield record.emit("status", message=f"Distilling: {config.steps} steps of {config.batch_size} x {config.seq_len} "
                      "tokens" + (f" over {procs.world} processes ({procs.backend})" if procs.distributed else ""),
                      training=True, phase="training")  # the first event of the training loop (callers may stop before it: nothing to save)
    out_of_time = False
    while loop.step < config.steps and not procs.any(stop.is_set() or out_of_time):
        step_started = time.perf_counter()
        events = loop.one_step(next(batch_iter), train_started)
        if events is None:
            break
        yield from events
        # one more step (as long as the last one) would pass the deadline: pause here
        out_of_time = deadline is not None and 2 * time.perf_counter() - step_started > deadline
    if record.out is not None and loop.step < config.steps and loop.step > loop.saved_step:  # keep where it got to
        yield loop.save_checkpoint(loop.rng_top if loop.error else training_checkpoint.rng_state())
    paused = deadline is not None and loop.step < config.steps and not loop.error and not stop.is_set()
    if paused:
        yield record.emit(PAUSED, step=loop.step, steps=config.steps,
                          message=f"paused at step {loop.step} of {config.steps}: this call's time is used up; "
                                  "the next one resumes from the checkpoint")
    return Fitted(loop.step, loop.last_loss, loop.error, round(time.perf_counter() - train_started, 2),
                  training.trainable_params, training.projection, training.memory, paused, loop.on_policy_steps,
                  loop.rollout_s)


class Loop:
    """The training loop's state between steps, and one step of it with its logging, evaluation, probe
    snapshot and checkpoint."""

    def __init__(self, p: Prepared, record: Record, training: Training, start: int):
        self.p, self.record, self.training = p, record, training
        self.step, self.saved_step, self.error, self.rng_top = start, start, None, None
        self.last_loss = p.checkpoint.state["last_loss"] if p.checkpoint is not None else math.nan
        self.on_policy_steps, self.rollout_s = 0, 0.0

    def one_step(self, index: torch.Tensor, train_started: float) -> list[dict[str, Any]] | None:
        """Train on the batch of block indices `index`; the events it makes, or None when it failed
        (`error` says why; the student of the step before is kept)."""
        p, config, record = self.p, self.p.config, self.record
        if record.out is not None:
            self.rng_top = training_checkpoint.rng_state()  # what a checkpoint of this step needs if the step fails
        step_start = time.perf_counter()
        try:
            terms, batch, rollout = self._train(index)
        except (RuntimeError, MemoryError) as exc:  # out of memory, or a kernel failure: keep what was learnt
            self.training.step.optimizer.zero_grad(set_to_none=True)
            if p.device.type == "cuda":
                torch.cuda.empty_cache()  # the failed step's activations: the evaluation after needs room
            self.error = (f"step {self.step + 1} failed ({describe_failure(exc)[:300]}); the session stopped and kept "
                          f"the student of step {self.step}")
            return None
        if terms is None:
            self.error = (f"the loss became NaN or infinite at step {self.step + 1} (learning rate "
                          f"{config.learning_rate:g} too high?); the session stopped and kept the student of step "
                          f"{self.step}")
            return None
        self.training.scheduler.step()
        self.step += 1
        terms = p.procs.mean(terms)  # the shards' losses averaged (the terms themselves in one process)
        self.last_loss = terms["loss"]
        # tokens trained on, over all processes
        tokens = int(batch.attention_mask.sum()) * p.procs.world if rollout is not None else \
            int(p.train_blocks.attention_mask[index].sum())
        return self._after_step(terms, tokens, rollout, step_start, train_started)

    def _train(self, index: torch.Tensor) -> tuple[dict[str, float] | None, Blocks, Rollout | None]:
        """One step on the corpus's blocks at `index`, or (an on-policy step) on the student's own continuations
        of prompts; its terms, the batch and the rollout (None off-policy). Off-policy, exactly the step of a
        session without on-policy steps."""
        p, step = self.p, self.step + 1
        if p.on_policy is not None and p.on_policy.is_on_policy(step):
            share = p.procs.shard(torch.tensor(p.on_policy.prompts_for(step))).tolist()  # this process's prompts
            rollout = p.on_policy.rollout(p.student.model, step, share)
            self.on_policy_steps, self.rollout_s = self.on_policy_steps + 1, self.rollout_s + rollout.seconds
            return self.training.step(rollout.blocks, None, rollout.continuation), rollout.blocks, rollout
        local_index = p.procs.shard(index)  # this process's share of the batch (all of it in one process)
        cached = p.step_targets.targets(local_index, p.device) if p.step_targets is not None else None
        batch = p.train_blocks.select(local_index)
        return self.training.step(batch, cached), batch, None

    def _after_step(self, terms: dict[str, float], tokens: int, rollout: Rollout | None, step_start: float,
                    train_started: float) -> list[dict[str, Any]]:
        p, config, record, step = self.p, self.p.config, self.record, self.step
        events = []
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - train_started  # the student's writing included: an honest ETA
            extra = {} if p.on_policy is None else {"on_policy": rollout is not None}
            if rollout is not None:
                extra.update(rollout_s=round(rollout.seconds, 3), rollout_tokens=rollout.new_tokens)
            events.append(record.emit("step", step=step, steps=config.steps, **terms,
                                      lr=self.training.scheduler.get_last_lr()[0],
                                      tokens_per_s=tokens / (time.perf_counter() - step_start),
                                      eta_s=elapsed / step * (config.steps - step), **extra))
            if rollout is not None and p.procs.is_main:
                events.append(self._rollout_event(rollout))
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            record.enter("evaluation")
            events.append(record.emit("eval", step=step, **periodic_eval(p.student, p.eval_blocks, p.val_blocks,
                                                                         held=p.held)))
        if config.probe_every and step % config.probe_every == 0 and step < config.steps:
            record.enter("evaluation")
            events.append(p.snapshot(record, step))
        record.enter("training")
        if record.out is not None and config.checkpoint_every and step % config.checkpoint_every == 0 \
                and step < config.steps:
            events.append(self.save_checkpoint(training_checkpoint.rng_state()))
        return events

    def _rollout_event(self, rollout: Rollout) -> dict[str, Any]:
        """The step's first continuation, graded by the teacher token by token (the live view of an on-policy
        session)."""
        p = self.p
        p.student.model.eval()
        try:
            graded = graded_row(p.teacher.loaded.model, p.student.model, p.teacher.tokenizer, rollout.samples, 0)
        finally:
            p.student.model.train()
        return self.record.emit("rollout", step=self.step, **graded)

    def save_checkpoint(self, rng: dict[str, Any]) -> dict[str, Any]:
        """Write OUT/checkpoint at this step; a failed write keeps the previous checkpoint and the run goes on."""
        p, training = self.p, self.training
        try:
            path = training_checkpoint.save(
                self.record.out, step=self.step, last_loss=self.last_loss, config=p.config, model=p.student.model,
                projection=training.projection, optimizer=training.step.optimizer, scheduler=training.scheduler,
                rng=rng, before=p.before, scaler=training.step.scaler)
        except Exception as exc:  # disk full, permissions: not worth the session
            return self.record.emit("status", message=f"the checkpoint of step {self.step} could not be written "
                                    f"({type(exc).__name__}: {first_line(exc, 200)}); the previous one is kept")
        self.saved_step = self.step
        return self.record.emit("status", message=f"checkpoint of step {self.step} written to {path}")


# ---------------------------------------------------------------------------------------
# finish
# ---------------------------------------------------------------------------------------
def finish(p: Prepared, fitted: Fitted, record: Record) -> Events:
    """The student measured after training, saved with the run's summary; the last event."""
    config, out, student = p.config, record.out, p.student
    student.model.eval()
    yield record.emit("status", message="Evaluating the student after distillation …", phase="evaluation")
    after = compare_student(student.model, p.held, p.reference)
    after["teacher_bpb"] = p.before.get("teacher_bpb")
    if p.real is not None:
        p.real.measure("after", student.model)
    after.update(p.own_text(student.model))
    yield record.emit("eval", step=fitted.step, **periodic_eval(student, p.eval_blocks, p.val_blocks, after, p.held))
    yield p.snapshot(record, fitted.step)
    stopped = fitted.stopped(config)
    summary = _summary(p, fitted, after, record)
    if out is not None:
        yield record.emit("status", message=f"Saving the student to {out / 'student'} …", phase="saving")
        card = model_card(config, summary, p.corpus, f"{out.name}-student")
        save_student(student, out / "student", card, summary, config)
        if fitted.projection is not None:  # part of the run, not of the exported student
            save_file(fitted.projection.state_dict(), str(out / "fitnets_projection.safetensors"))
        write_json_atomic(out / "summary.json", summary)
        if not stopped and not fitted.error:  # complete: nothing left to resume
            training_checkpoint.remove(out)
    kind = "error" if fitted.error else ("stopped" if stopped else "done")
    yield record.emit(kind, summary=summary,
                      message=fitted.error or ("stopped at step %d" % fitted.step if stopped else "done"),
                      out_dir=str(out) if out else None, student_dir=str(out / "student") if out else None)


def _summary(p: Prepared, fitted: Fitted, after: dict[str, Any], record: Record) -> dict[str, Any]:
    """summary.json: what ran, how far it got, and the student before and after against the teacher."""
    config, out = p.config, record.out
    stopped = fitted.stopped(config)
    return {
        "teacher_spec": config.teacher,
        "student_spec": config.student,
        "student_layers_kept": p.student.layers_kept,
        "layer_map": [list(pair) for pair in p.layer_pairs],
        "corpus": p.corpus["description"],
        "augmented": p.augmented,
        "teacher_loaded": p.teacher.loaded is not None,
        "teacher_cache": str(p.cached.path) if p.cached is not None else None,
        "teacher_targets": ("teacher cache" if p.cached is not None else "captured while the teacher wrote the corpus"
                            if p.captured is not None else "teacher forward pass at every step"),
        "steps_done": fitted.step,
        "steps": config.steps,
        "stopped_early": stopped,
        "error": fitted.error,
        "resumed_from_step": p.checkpoint.step if p.checkpoint is not None else None,
        "checkpoint": (str(out / training_checkpoint.DIRNAME) if out is not None and stopped
                       and (out / training_checkpoint.DIRNAME).is_dir() else None),
        "distributed": _ranks_agree(p, fitted),
        "final_loss": fitted.last_loss,
        "wall_s": round(record.elapsed(), 2),
        "train_s": fitted.train_s,
        "phases_s": record.phases_s(),
        "eval_tokens": p.before["tokens"],
        "eval_bytes": p.held.text.n_bytes,
        "tokenizer_bridge": _bridge_summary(p),
        "teacher": {"ppl": p.before["teacher_ppl"], "bits_per_byte": p.before.get("teacher_bpb"),
                    "params": p.teacher_params, "sample_nll": p.before.get("teacher_sample_nll")},
        "on_policy": _on_policy_summary(p, fitted),
        "student": {"params": p.student_params, "trainable_params": fitted.trainable_params},
        "memory_estimate_gb": fitted.memory["estimate_gb"]["total"],
        "before": _eval_summary(p.before),
        "after": _eval_summary(after),
        "real_text": p.real.summary() if p.real is not None else None,
    }


def _ranks_agree(p: Prepared, fitted: Fitted) -> dict[str, Any] | None:
    """Under DDP: every process's student checksum, and whether they agree (None in one process)."""
    if not p.procs.distributed:
        return None
    sums = p.procs.gather(state_checksum(p.student.model)
                          + (f"+{state_checksum(fitted.projection)}" if fitted.projection is not None else ""))
    return {"processes": p.procs.world, "backend": p.procs.backend, "student_sha256": sums,
            "ranks_agree": len(set(sums)) == 1}


def _eval_summary(result: dict[str, Any]) -> dict[str, Any]:
    """summary.json's `before`/`after`; the teacher-scored measure of the student's own text only when measured."""
    own_text = {key: result[key] for key in ("sample_nll", "sample_reverse_kl", "sample_entropy")
                if result.get(key) is not None}
    return {"ppl": result["student_ppl"], "bits_per_byte": result.get("student_bpb"),
            "top1_agreement": result["top1_agreement"], "kl_to_teacher": result["kl_to_teacher"], **own_text}


def _bridge_summary(p: Prepared) -> dict[str, Any]:
    """summary.json's `tokenizer_bridge`: which bridge, why, and across tokenizers how much of the corpus aligns."""
    bridge = p.held.bridge
    summary = {"bridge": bridge.kind, "requested": bridge.requested, "reason": bridge.reason,
               "student_vocabulary": len(p.student.tokenizer)}
    if bridge.cross:
        summary["one_to_one_share"] = round(p.train_blocks.one_to_one_share, 4)
    return summary


def _on_policy_summary(p: Prepared, fitted: Fitted) -> dict[str, Any]:
    """The session's on-policy share (GKD's λ), the steps it drew on-policy and the student's writing time; and
    where the teacher-scored measure's prompts come from."""
    c = p.config
    return {"fraction": c.on_policy_fraction, "divergence": c.on_policy_divergence if c.on_policy_fraction else None,
            "steps": fitted.on_policy_steps, "rollout_s": round(fitted.rollout_s, 2),
            "sample_eval_prompts": c.portable().sample_eval_prompts if p.sample_prompts is not None else None,
            "sample_eval_tokens": c.sample_eval_tokens}


def save_student(student: LoadedModel, target: Path, card: str, summary: dict[str, Any],
                 config: DistillConfig) -> None:
    """A self-contained student folder: save_pretrained + tokenizer, the model card (README.md), the run's
    summary.json and the config.yaml that reruns it, every file readable by all (rw-r--r--); written to a
    temporary directory, then swapped in (a full disk leaves the folder there before, and says so); weights
    in the operator's DISTILL_SAVE_DTYPE (fp32 unless half precision was chosen)."""
    student.model.config.__dict__.pop("_model_name_or_path", None)  # a GGUF file's internal name, not this model's
    with swapped_in(target, "the student") as tmp:
        student.model.save_pretrained(tmp, state_dict=weights_to_save(student.model))  # the operator's precision
        student.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_json_atomic(tmp / "summary.json", summary)
        config.portable().to_yaml(tmp / "config.yaml")
        for file in tmp.iterdir():
            file.chmod(0o644)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file next to `path`, then rename it over `path`."""
    write_text_atomic(path, json.dumps(payload, indent=2))
