"""The distillation session: a generator of events, stoppable between steps, saved at the end.

    for event in run_session(config, out_dir, stop_event):
        ...  # event["kind"] in status | corpus | eval | step | probe | done | stopped | error

Every event is a JSON-able dict. Step and eval events also go to OUT/metrics.jsonl as they
happen, so nothing is lost when a session stops or fails half way. A training checkpoint
(OUT/checkpoint, see distill_core.resume) is written every `checkpoint_every` steps and when the
session stops or fails; `run_session(config, out_dir, stop, resume=True)` continues from it.

Under `accelerate launch` (several processes, DDP; see distill_core.distributed) every process runs
this generator; each trains on its share of every batch and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from distill_core import probes
from distill_core.checkpoints import (
    LoadedModel,
    ResolvedModel,
    TeacherWeights,
    count_parameters,
    decoder_layers,
    is_derived_spec,
    load_config,
    load_student,
    load_teacher,
    load_tokenizer,
    resolve_model,
)
from distill_core.config import DistillConfig
from distill_core import resume as training_checkpoint
from distill_core.data import (
    Blocks,
    batch_indices,
    cached_corpus,
    check_text,
    pack,
    read_prompts,
    read_text_file,
    split_documents,
    generate_corpus,
    train_heldout_split,
)
from distill_core.distributed import Processes, all_processes, state_checksum
from distill_core.errors import DistillError, describe_failure, first_line
from distill_core.evaluate import compare, score, teacher_reference
from distill_core.layer_map import resolve_layer_map
from distill_core.layer_select import NeedsTeacherNetwork
from distill_core.memory import session_fit
from distill_core.teacher_cache import CachedTeacher, TeacherCache
from distill_core.attention import attention_maps_from
from distill_core.augment import augment_blocks
from distill_core.losses import (
    FitNetsProjection,
    OutputHead,
    chunked_distillation_loss,
    TopKTargets,
    attention_transfer_loss,
    distillation_loss,
    fitnets_loss,
    shift_for_next_token,
)

HELDOUT_FRACTION = 0.1
"""Share of the training corpus held out to show over-fitting."""
MAX_VAL_BLOCKS = 8
"""At most this many held-out corpus blocks are scored in each periodic evaluation."""


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TeacherHandle:
    """The session's teacher, loaded on first use: with a complete teacher cache it never is."""

    def __init__(self, config: DistillConfig, device: torch.device):
        self.config, self.device = config, device
        self.loaded: LoadedModel | None = None
        self.resolved: ResolvedModel | None = None
        self._tokenizer: Any = None

    def get(self) -> LoadedModel:
        if self.loaded is None:
            self.loaded = load_teacher(self.config.teacher)
            self.loaded.model.to(self.device)
            prepare_teacher(self.loaded, self.config, self.device)
        return self.loaded

    def resolve(self) -> ResolvedModel:
        """Where the teacher's files are, without loading weights."""
        if self.resolved is None:
            self.resolved = resolve_model(self.config.teacher)
        return self.resolved

    def identity(self) -> Any:
        """spec + source (the corpus cache's key): the loaded teacher, else the resolved one."""
        return self.loaded if self.loaded is not None else self.resolve()

    @property
    def tokenizer(self) -> Any:
        if self.loaded is not None:
            return self.loaded.tokenizer
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.resolve())
        return self._tokenizer


def load_corpus(config: DistillConfig, teacher: TeacherHandle) -> Iterator[tuple[str, list[str] | None]]:
    """Yields progress messages, then (description of the source, the training documents)."""
    if config.corpus_text.strip():
        docs = split_documents(check_text(config.corpus_text, "pasted text"))
        yield f"pasted text ({len(config.corpus_text)} characters)", docs
    elif config.hub_dataset.strip():
        from distill_core.corpora import load_hub_dataset

        yield f"Reading the Hugging Face dataset {config.hub_dataset} …", None
        texts, info = load_hub_dataset(config.hub_dataset, config.hub_config or None, config.hub_split,
                                       config.corpus_column or None, config.hub_max_rows)
        yield (f"Hugging Face dataset {info['dataset']}" + (f" ({info['config']})" if info["config"] else "")
               + f", split {info['split']}, column {info['column']}: {info['documents']} rows"), texts
    elif config.corpus == "teacher-generated":
        prompts = read_prompts(config.prompts_file)
        source = f"teacher-generated: {len(prompts)} prompts x {config.generation_tokens} new tokens"
        texts = cached_corpus(teacher.identity(), prompts, config.generation_tokens, config.seed)
        if texts is not None:
            yield source, texts
            return
        if teacher.loaded is None:
            yield f"Loading teacher {config.teacher} to write the corpus …", None
        for fraction, texts in generate_corpus(teacher.get(), prompts, config.generation_tokens, config.seed):
            if texts is None:
                yield (f"The teacher is writing its corpus, {len(prompts)} continuations (once; then cached): "
                       f"{fraction:.0%} …"), None
            else:
                yield source, texts
    else:
        from distill_core.corpora import read_corpus_file

        docs, info = read_corpus_file(config.corpus, config.corpus_column or None)
        yield f"file {Path(config.corpus).name}" + (f", column {info['column']}" if "column" in info else ""), docs


def _teacher_for_student(config: DistillConfig, teacher: TeacherHandle) -> LoadedModel:
    """What the student is built from: the loaded teacher, or, when the teacher is not loaded, its
    weights alone (a derived student copies them) or just its tokenizer (for the compatibility check)."""
    if teacher.loaded is not None:
        return teacher.loaded
    resolved = teacher.resolve()
    weights = TeacherWeights(resolved) if is_derived_spec(config.student) else None
    return LoadedModel(weights, teacher.tokenizer, config.teacher, resolved.source)


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


def _teacher_config(resolved: ResolvedModel) -> Any:
    """The teacher's transformers config, read without loading its weights."""
    return load_config(resolved.target, resolved.local_only)


def _save_student(student: LoadedModel, target: Path) -> None:
    """save_pretrained + tokenizer into a temporary directory, then swap it in."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.model.save_pretrained(tmp)
    student.tokenizer.save_pretrained(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file next to `path`, then rename it over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(path)


def _eval_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "ppl": result["student_ppl"],
        "top1_agreement": result["top1_agreement"],
        "kl_to_teacher": result["kl_to_teacher"],
    }


def run_session(
    config: DistillConfig,
    out_dir: str | Path | None = None,
    stop: threading.Event | None = None,
    resume: bool = False,
) -> Iterator[dict[str, Any]]:
    """Run one distillation session, yielding events. Raises DistillError on bad input before
    training starts; a failure during training ends with an `error` event after the last good
    student has been saved.

    With `resume`, continue the stopped session in `out_dir` from its checkpoint (same config but
    for `config.RESUME_FIELDS`): its metrics.jsonl is kept up to the checkpoint's step and appended
    to, and the summary says `resumed_from_step`."""
    config.validate()
    stop = stop or threading.Event()
    procs = Processes.current(config.device)
    procs.check_batch_size(config.batch_size)
    checkpoint = None
    if resume:
        if out_dir is None:
            raise DistillError("resuming needs the stopped session's output folder")
        checkpoint = training_checkpoint.check_resumable(Path(out_dir), config)
    out = Path(out_dir) if out_dir is not None and procs.is_main else None  # only the main process writes
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        config.to_yaml(out / "config.yaml")
        if checkpoint is not None:
            training_checkpoint.trim_metrics(out / "metrics.jsonl", checkpoint.step)
        else:  # a new run in an old run's folder: that run's checkpoint is not this one's
            training_checkpoint.remove(out)
        metrics_file = (out / "metrics.jsonl").open("a" if checkpoint is not None else "w", encoding="utf-8")
    else:
        metrics_file = None
    started = time.perf_counter()

    def emit(kind: str, **payload: Any) -> dict[str, Any]:
        event = {"kind": kind, "elapsed_s": round(time.perf_counter() - started, 3), **payload}
        if metrics_file is not None and kind in ("step", "eval"):
            metrics_file.write(json.dumps(event) + "\n")
            metrics_file.flush()
        return event

    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        device = procs.device if procs.distributed else resolve_device(config.device)
        if not procs.is_main:  # the main process fills the shared caches (corpus, teacher cache, ...) first
            procs.barrier()
        teacher = TeacherHandle(config, device)
        if not config.teacher_cache:
            yield emit("status", message=f"Loading teacher {config.teacher} …")
            teacher.get()
        tokenizer = teacher.tokenizer

        yield emit("status", message="Preparing the corpus …")
        for corpus_source, docs in load_corpus(config, teacher):
            if docs is None:
                yield emit("status", message=corpus_source)
        blocks = pack(tokenizer, docs, config.seq_len)
        train_blocks, val_blocks = train_heldout_split(blocks, HELDOUT_FRACTION, config.seed)
        augmented = None
        if config.augment_methods:  # after the split: only training blocks are augmented (augment_blocks)
            for message, result in augment_blocks(tokenizer, train_blocks, config.augment_methods,
                                                  config.augment_strength, config.augment_copies, config.seed,
                                                  config.seq_len, teacher, config.translation_models):
                if result is None:
                    yield emit("status", message=message)
                else:
                    train_blocks, augmented = result
        eval_blocks = pack(tokenizer, split_documents(read_text_file(config.eval_text, "evaluation text")),
                           config.seq_len, max_tokens=config.eval_max_tokens, pad_last=True)
        yield emit("corpus", source=corpus_source, documents=len(docs), train_tokens=train_blocks.n_tokens,
                   val_tokens=val_blocks.n_tokens, eval_tokens=eval_blocks.n_tokens,
                   epochs=round(config.steps * config.batch_size / max(1, len(train_blocks)), 2),
                   augmented=augmented)

        cached: CachedTeacher | None = None
        if config.teacher_cache:
            store = TeacherCache(teacher.resolve(), train_blocks, eval_blocks,
                                 probes.encode(tokenizer, config.probe_text), config.temperature, config.top_k)
            cached, why = store.load()
            if cached is None:
                yield emit("status", message=f"{why}: the teacher computes its top-{config.top_k} over the corpus once …")
                teacher.get()
                for fraction, result in store.build(teacher.loaded):
                    if result is None:
                        yield emit("status", message=f"Teacher cache: {fraction:.0%} of the corpus …")
                    cached = result
            yield emit("cache", path=str(cached.path), teacher_loaded=teacher.loaded is not None,
                       message=("teacher cache complete: the teacher is not loaded" if teacher.loaded is None
                                else f"teacher cache written to {cached.path}"))

        yield emit("status", message=f"Building student {config.student} …")
        try:
            student = load_student(config.student, _teacher_for_student(config, teacher), seed=config.seed,
                                   calibration=docs, calibration_source=corpus_source)
        except NeedsTeacherNetwork:  # e.g. layers:N:angular measures the teacher once, then caches its choice
            yield emit("status", message=f"Loading teacher {config.teacher} to choose the student's layers …")
            student = load_student(config.student, teacher.get(), seed=config.seed,
                                   calibration=docs, calibration_source=corpus_source)
        student.model.to(device)
        if procs.is_main:
            procs.barrier()
        probe_teacher = teacher.loaded if teacher.loaded is not None else cached.as_teacher(tokenizer, config.teacher)
        n_teacher_layers = (teacher.loaded.model.config.num_hidden_layers if teacher.loaded is not None
                            else _teacher_config(teacher.resolve()).num_hidden_layers)
        layer_pairs = resolve_layer_map(config.layer_map, student.model.config.num_hidden_layers,
                                        n_teacher_layers, student.layers_kept)
        tracker = PairSimilarity(teacher.loaded, eval_blocks, layer_pairs) if teacher.loaded is not None else None

        def snapshot(step: int) -> dict[str, Any]:
            """A probe event: the dark-knowledge snapshot, plus the CKA of the mapped layer pairs."""
            event = probes.next_token_snapshot(probe_teacher, student, config.probe_text, config.temperature)
            if tracker is not None:
                event.update(tracker.measure(student))
            return emit("probe", step=step, **event)

        student_params = count_parameters(student.model)
        if cached is not None:
            reference, teacher_params = cached.reference, cached.teacher_params
        else:
            reference = teacher_reference(teacher.loaded.model, eval_blocks)
            teacher_params = count_parameters(teacher.loaded.model)
        val_blocks = val_blocks.select(slice(0, MAX_VAL_BLOCKS))
        if checkpoint is None:
            yield emit("status", message="Evaluating the student before distillation …")
            before = compare(None, student.model, eval_blocks, reference=reference)
            yield emit("eval", step=0, **_periodic_eval(student, eval_blocks, val_blocks, before))
            yield snapshot(0)
        else:  # measured by the run that wrote the checkpoint, on the same student before training
            before = checkpoint.state["before"]

        trainable = _prepare_trainable(student, config)
        projection = None
        if config.hidden_weight > 0:
            projection = FitNetsProjection(len(layer_pairs), student.model.config.hidden_size,
                                           teacher.loaded.model.config.hidden_size).to(device)
            trainable += list(projection.parameters())
            yield emit("status", message="FitNets hints on layer pairs (student:teacher) "
                       + ", ".join(f"{s}:{t}" for s, t in layer_pairs))
        if config.attention_weight > 0:
            yield emit("status", message="Attention transfer on layer pairs (student:teacher) "
                       + ", ".join(f"{s}:{t}" for s, t in layer_pairs))
        layer_wise = projection is not None or config.attention_weight > 0
        # the shared prefix calls the student with swapped layers, past the DDP wrapper: one process only
        shared_prefix = (None if layer_wise or cached is not None or procs.distributed
                         else SharedPrefix.create(teacher.loaded, student, config, train_blocks))
        if shared_prefix is not None:
            yield emit("status", message=f"Student layers 0-{config.freeze_layers - 1} are frozen copies of the "
                       "teacher's: each step reuses the teacher's hidden states there (exact, faster)")
        memory = session_fit(config, teacher.loaded.model.config if teacher.loaded is not None else
                             _teacher_config(teacher.resolve()), student.model.config, teacher_params, student_params,
                             sum(p.numel() for p in trainable), device, teacher_loaded=teacher.loaded is not None)
        if memory["warning"]:
            yield emit("status", message=f"Warning: {memory['warning']}", warning=memory["warning"])
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay,
                                      fused=device.type == "cuda")
        from transformers import get_cosine_schedule_with_warmup

        scheduler = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, config.steps), config.steps)
        start = 0
        if checkpoint is not None:
            checkpoint.restore(student.model, projection, optimizer, scheduler)
            start = checkpoint.step
        forward_model = procs.wrap(student.model)  # DDP under accelerate launch, else None
        after_backward = ((lambda: procs.average_gradients(projection.parameters()))
                          if procs.distributed and projection is not None else None)
        batch_iter = batch_indices(len(train_blocks), config.batch_size, config.seed, start=start)
        torch.manual_seed(config.seed)
        if checkpoint is not None:
            checkpoint.restore_rng()

        step, last_loss, error = start, math.nan, None
        if checkpoint is not None:
            last_loss = checkpoint.state["last_loss"]
        saved_step, rng_top = start, None

        def save_checkpoint(rng: dict[str, Any]) -> dict[str, Any]:
            """Write OUT/checkpoint at `step`; a failed write keeps the previous checkpoint and the run goes on."""
            nonlocal saved_step
            try:
                path = training_checkpoint.save(
                    out, step=step, last_loss=last_loss, config=config, model=student.model, projection=projection,
                    optimizer=optimizer, scheduler=scheduler, rng=rng, before=before)
            except Exception as exc:  # disk full, permissions: not worth the session
                return emit("status", message=f"the checkpoint of step {step} could not be written ({type(exc).__name__}: "
                            f"{first_line(exc, 200)}); the previous one is kept")
            saved_step = step
            return emit("status", message=f"checkpoint of step {step} written to {path}")

        train_started = time.perf_counter()
        if checkpoint is not None:
            yield emit("status", message=f"Resuming at step {start} of {config.steps} from {checkpoint.path}")
        yield emit("status", message=f"Distilling: {config.steps} steps of {config.batch_size} x {config.seq_len} tokens"
                   + (f" over {procs.world} processes ({procs.backend})" if procs.distributed else ""),
                   training=True)  # the first event of the training loop (callers may stop before it: nothing to save)
        while step < config.steps and not procs.any(stop.is_set()):
            if out is not None:
                rng_top = training_checkpoint.rng_state()  # what a checkpoint of this step needs if the step fails
            index = next(batch_iter)
            local_index = procs.shard(index)  # this process's share of the batch (all of it in one process)
            batch = train_blocks.select(local_index)
            step_start = time.perf_counter()
            try:
                terms = _train_step(teacher.loaded, student, batch, config, optimizer, device, shared_prefix,
                                    projection, layer_pairs,
                                    targets=cached.targets(local_index, device) if cached is not None else None,
                                    student_forward=forward_model, after_backward=after_backward)
            except (RuntimeError, MemoryError) as exc:  # out of memory, or a kernel failure: keep what was learnt
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the failed step's activations: the evaluation below needs room
                error = (f"step {step + 1} failed ({describe_failure(exc)[:300]}); the session stopped and kept the "
                         f"student of step {step}")
                break
            if terms is None:
                error = (f"the loss became NaN or infinite at step {step + 1} (learning rate "
                         f"{config.learning_rate:g} too high?); the session stopped and kept the student of step {step}")
                break
            scheduler.step()
            step += 1
            terms = procs.mean(terms)  # the shards' losses averaged (the terms themselves in one process)
            last_loss = terms["loss"]
            tokens = int(train_blocks.attention_mask[index].sum())  # the whole batch, over all processes
            elapsed_train = time.perf_counter() - train_started
            if step % config.log_every == 0 or step == config.steps:
                yield emit("step", step=step, steps=config.steps, **terms, lr=scheduler.get_last_lr()[0],
                           tokens_per_s=tokens / (time.perf_counter() - step_start),
                           eta_s=elapsed_train / step * (config.steps - step))
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                yield emit("eval", step=step, **_periodic_eval(student, eval_blocks, val_blocks))
            if config.probe_every and step % config.probe_every == 0 and step < config.steps:
                yield snapshot(step)
            if out is not None and config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                yield save_checkpoint(training_checkpoint.rng_state())

        if out is not None and step < config.steps and step > saved_step:  # stopped or failed: keep where it got to
            yield save_checkpoint(rng_top if error else training_checkpoint.rng_state())
        student.model.eval()
        yield emit("status", message="Evaluating the student after distillation …")
        after = compare(None, student.model, eval_blocks, reference=reference)
        yield emit("eval", step=step, **_periodic_eval(student, eval_blocks, val_blocks, after))
        yield snapshot(step)
        stopped = step < config.steps
        distributed = None
        if procs.distributed:
            sums = procs.gather(state_checksum(student.model)
                                + (f"+{state_checksum(projection)}" if projection is not None else ""))
            distributed = {"processes": procs.world, "backend": procs.backend, "student_sha256": sums,
                           "ranks_agree": len(set(sums)) == 1}
        summary = {
            "teacher_spec": config.teacher,
            "student_spec": config.student,
            "student_layers_kept": student.layers_kept,
            "layer_map": [list(pair) for pair in layer_pairs],
            "corpus": corpus_source,
            "augmented": augmented,
            "teacher_loaded": teacher.loaded is not None,
            "teacher_cache": str(cached.path) if cached is not None else None,
            "steps_done": step,
            "steps": config.steps,
            "stopped_early": stopped,
            "error": error,
            "resumed_from_step": checkpoint.step if checkpoint is not None else None,
            "checkpoint": (str(out / training_checkpoint.DIRNAME) if out is not None and stopped
                           and (out / training_checkpoint.DIRNAME).is_dir() else None),
            "distributed": distributed,
            "final_loss": last_loss,
            "wall_s": round(time.perf_counter() - started, 2),
            "train_s": round(time.perf_counter() - train_started, 2),
            "eval_tokens": before["tokens"],
            "teacher": {"ppl": before["teacher_ppl"], "params": teacher_params},
            "student": {"params": student_params, "trainable_params": sum(p.numel() for p in trainable)},
            "memory_estimate_gb": memory["estimate_gb"]["total"],
            "before": _eval_summary(before),
            "after": _eval_summary(after),
        }
        if out is not None:
            yield emit("status", message=f"Saving the student to {out / 'student'} …")
            _save_student(student, out / "student")
            if projection is not None:  # part of the run, not of the exported student
                save_file(projection.state_dict(), str(out / "fitnets_projection.safetensors"))
            write_json_atomic(out / "summary.json", summary)
            if not stopped and not error:  # complete: nothing left to resume
                training_checkpoint.remove(out)
        kind = "error" if error else ("stopped" if stopped else "done")
        yield emit(kind, summary=summary, message=error or ("stopped at step %d" % step if stopped else "done"),
                   out_dir=str(out) if out else None, student_dir=str(out / "student") if out else None)
    finally:
        if metrics_file is not None:
            metrics_file.close()


def frozen_parameters(model: Any, config: DistillConfig) -> set[int]:
    """ids of the parameters a session with `config` keeps fixed: with freeze_embeddings the
    (teacher-copied) input embeddings and output layer (tied in SmolLM2: one 49152 x 576 matrix),
    and every parameter of the first `freeze_layers` decoder layers."""
    frozen = set()
    if config.freeze_embeddings:
        frozen |= {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    for layer in list(decoder_layers(model))[: config.freeze_layers]:
        frozen |= {id(p) for p in layer.parameters()}
    return frozen


def _prepare_trainable(student: LoadedModel, config: DistillConfig) -> list[torch.nn.Parameter]:
    """Set which parameters train (all but `frozen_parameters`), switch on activation checkpointing and
    compilation when asked, and return the trainable parameters."""
    model = student.model
    model.train()
    layers = decoder_layers(model)
    if config.freeze_layers >= len(layers):
        raise DistillError(f"freeze_layers={config.freeze_layers} would freeze all {len(layers)} student layers")
    frozen = frozen_parameters(model, config)
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if config.compile:
        compile_layers(model)
    return [p for p in model.parameters() if p.requires_grad]


class SharedPrefix:
    """Exact compute sharing for a `layers:` student whose first K layers are frozen copies of the
    teacher's first K layers (and whose embeddings are frozen copies too): its hidden state after K
    layers *is* the teacher's hidden_states[K], so each step runs only the student's upper layers
    on it. Enabled only after a check that both paths give the same logits."""

    def __init__(self, student: LoadedModel, k: int):
        self.model, self.k = student.model, k
        layers = decoder_layers(self.model)
        self.parent, self.attr = next(
            (module, name) for module in self.model.modules() for name, child in module.named_children() if child is layers
        )

    @classmethod
    def create(cls, teacher: LoadedModel, student: LoadedModel, config: DistillConfig, probe: Blocks) -> "SharedPrefix | None":
        k = config.freeze_layers
        kept = student.layers_kept
        if not (k and config.freeze_embeddings and kept and kept[:k] == list(range(k))):
            return None
        prefix = cls(student, k)
        with torch.no_grad():
            ids, attn = probe.input_ids[:1].to(student.model.device), probe.attention_mask[:1].to(student.model.device)
            hidden = teacher.model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[k]
            full = student.model(input_ids=ids, attention_mask=attn).logits
            shared = prefix.upper(hidden, attn)
        return prefix if torch.allclose(full, shared, atol=1e-4, rtol=1e-4) else None

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, final_hidden: bool = False) -> torch.Tensor:
        """From the hidden state (b, t, h) entering the student's layer K: its logits (b, t, vocab), or
        with `final_hidden` its last hidden states (b, t, h) before the output layer."""
        layers = getattr(self.parent, self.attr)
        config = self.model.config
        n = config.num_hidden_layers
        setattr(self.parent, self.attr, torch.nn.ModuleList(list(layers)[self.k :]))
        config.num_hidden_layers = n - self.k
        model = self.model.base_model if final_hidden else self.model
        try:
            out = model(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False)
        finally:
            setattr(self.parent, self.attr, layers)
            config.num_hidden_layers = n
        return out.last_hidden_state if final_hidden else out.logits


def _maps_if(enabled: bool, model: Any, layers: list[int]):
    """attention_maps_from(model, layers) when attention transfer is on, else nothing."""
    return attention_maps_from(model, layers) if enabled else contextlib.nullcontext()


def autocast_dtype(config: DistillConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when the session computes in bf16 (see `DistillConfig.precision`), else None (fp32)."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DistillError("precision bf16 was asked for but this GPU does not support bf16; use fp32")
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def prepare_teacher(teacher: LoadedModel, config: DistillConfig, device: torch.device) -> None:
    """The frozen teacher for training: in bf16 when the session computes in bf16 on a GPU (half the
    memory, no per-step weight casts), its layers compiled when asked."""
    teacher.model.eval().requires_grad_(False)
    if device.type == "cuda" and autocast_dtype(config, device) == torch.bfloat16:
        teacher.model.to(torch.bfloat16)
    if config.compile:
        compile_layers(teacher.model)


def compile_layers(model: Any) -> None:
    """torch.compile each decoder layer in place (same code for every layer: one compilation)."""
    for layer in decoder_layers(model):
        layer.compile()


def _uses_chunked_loss(config: DistillConfig, teacher: LoadedModel | None, student: LoadedModel,
                       targets: TopKTargets | None) -> bool:
    return (config.loss_chunk_tokens > 0 and OutputHead.supported(student.model)
            and (targets is not None or OutputHead.supported(teacher.model)))


def _train_step(teacher: LoadedModel | None, student: LoadedModel, batch: Blocks, config: DistillConfig,
                optimizer: torch.optim.Optimizer, device: torch.device,
                shared_prefix: SharedPrefix | None = None, projection: FitNetsProjection | None = None,
                layer_pairs: list[tuple[int, int]] | None = None,
                targets: TopKTargets | None = None, student_forward: torch.nn.Module | None = None,
                after_backward: Any = None) -> dict[str, float] | None:
    """One step: teacher forward (no grad) or its cached top-k `targets`, student forward, loss,
    backward, clip, update. Returns the loss terms, or None (and no update) when the loss is not finite.

    With `loss_chunk_tokens` (the default) both models run without their output layer and
    `chunked_distillation_loss` applies the heads chunk by chunk; else full logits are made.
    `student_forward` is the module the student's forward goes through (the DDP wrapper under
    accelerate launch; default the student model); `after_backward()`, when given, runs right after
    backward (averages gradients that DDP does not see)."""
    input_ids = batch.input_ids.to(device)  # (b, t)
    attention_mask = batch.attention_mask.to(device)  # (b, t)
    labels, mask = shift_for_next_token(input_ids, attention_mask)
    want_hidden = projection is not None
    want_attention = config.attention_weight > 0
    pairs = layer_pairs or []
    # under DDP the student's forward must go through its wrapper, which returns full logits
    chunked = student_forward is None and _uses_chunked_loss(config, teacher, student, targets)
    dtype = autocast_dtype(config, device)
    with _autocast(device, dtype):
        if targets is not None:  # the teacher cache: no teacher forward at all
            teacher_source, teacher_out = targets, None
        else:
            teacher_model = teacher.model.base_model if chunked else teacher.model
            with torch.inference_mode(not (want_hidden or want_attention or shared_prefix)), torch.no_grad(), \
                    _maps_if(want_attention, teacher.model, [t for _, t in pairs]):
                teacher_out = teacher_model(input_ids=input_ids, attention_mask=attention_mask,
                                            output_hidden_states=shared_prefix is not None or want_hidden,
                                            output_attentions=want_attention, use_cache=False)
            # (b, t, vocab) logits, or (b, t, width) final hidden states with the output layer
            teacher_source = ((teacher_out.last_hidden_state, OutputHead(teacher.model)) if chunked
                              else teacher_out.logits)
        if shared_prefix is not None:
            student_final = shared_prefix.upper(teacher_out.hidden_states[shared_prefix.k], attention_mask, chunked)
        else:
            student_model = student.model.base_model if chunked else (student_forward or student.model)
            with _maps_if(want_attention, student.model, [s for s, _ in pairs]):
                student_out = student_model(input_ids=input_ids, attention_mask=attention_mask,
                                            output_hidden_states=want_hidden, output_attentions=want_attention,
                                            use_cache=False)
            student_final = student_out.last_hidden_state if chunked else student_out.logits
        if chunked:
            loss = chunked_distillation_loss(student_final, OutputHead(student.model), teacher_source, labels, mask,
                                             config.temperature, config.kd_weight, config.divergence, config.top_k,
                                             config.jsd_beta, config.skew_alpha, config.loss_chunk_tokens)
        else:
            loss = distillation_loss(student_final, teacher_source, labels, mask, config.temperature, config.kd_weight,
                                     config.divergence, config.top_k, config.jsd_beta, config.skew_alpha)
        total, terms = loss.total, dict(loss.terms)
        if projection is not None:
            # hidden_states[i + 1] is the output of layer i: (b, t, width)
            hint = fitnets_loss([student_out.hidden_states[s + 1] for s, _ in layer_pairs],
                                [teacher_out.hidden_states[t + 1] for _, t in layer_pairs],
                                projection, config.hidden_loss, mask)
            total = total + config.hidden_weight * hint
            terms["fitnets_loss"] = hint
        if want_attention:
            # maps come back in increasing layer order: (b, heads, t, t) for each mapped layer
            t_maps = dict(zip(sorted({t for _, t in pairs}), teacher_out.attentions))
            s_maps = dict(zip(sorted({s for s, _ in pairs}), student_out.attentions))
            transfer = attention_transfer_loss([s_maps[s] for s, _ in pairs], [t_maps[t] for _, t in pairs],
                                               config.attention_loss, attention_mask)
            total = total + config.attention_weight * transfer
            terms["attention_loss"] = transfer
    if not all_processes(torch.isfinite(total)):  # under DDP: skipped in every process or in none
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if after_backward is not None:
        after_backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else float("inf"))
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}, "grad_norm": grad_norm.item()}


def _periodic_eval(student: LoadedModel, eval_blocks: Blocks, val_blocks: Blocks,
                   full: dict[str, Any] | None = None) -> dict[str, Any]:
    """Student perplexity on the held-out text and on the held-out part of the training corpus
    (the two diverge when the student over-fits the corpus)."""
    was_training = student.model.training
    student.model.eval()
    held_out = score(student.model, eval_blocks)
    val = score(student.model, val_blocks)
    student.model.train(was_training)
    result = {"held_out_ppl": held_out["ppl"], "held_out_loss": held_out["loss"],
              "val_ppl": val["ppl"], "val_loss": val["loss"]}
    if full is not None:
        result.update(teacher_ppl=full["teacher_ppl"], top1_agreement=full["top1_agreement"],
                      kl_to_teacher=full["kl_to_teacher"])
    return result
