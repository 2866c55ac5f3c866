"""Students: derived from the teacher (a subset of its layers with their weights, or a fresh model of its
family, with its tokenizer or a byte-level BPE of its own) or loaded from a spec of their own and checked
against the teacher's vocabulary (a student whose tokens differ needs a tokenizer bridge: tokenizer_bridge.py).

`layers:N` keeps N teacher layers with their weights (DistilBERT's initialisation, Sanh et al. 2019): which
ones by the depth rule (specs.select_layers) or, for `layers:N:angular`, by measurement on calibration
text (Gromov et al. 2024; layer_select.py).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM

from distill_core import layer_select
from distill_core.bpe import bpe_tokenizer
from distill_core.config import DistillConfig
from distill_core.corpora import load_corpus
from distill_core.errors import DistillError
from distill_core.models import (LazyTeacher, LoadedModel, check_model_size, decoder_layers, load_config, load_model,
                                 load_tokenizer, one_build_at_a_time, require_causal_lm, resolve_model)
from distill_core.paths import ASSETS
from distill_core.specs import is_derived_spec, own_vocabulary, parse_derived_spec, select_layers
from distill_core.tokenizer_bridge import choose_bridge


@one_build_at_a_time
def derive_student(teacher: LoadedModel, spec: str, seed: int = 0, attn_implementation: str = "sdpa", *,
                   calibration: list[str] | None = None, calibration_source: str | None = None) -> LoadedModel:
    """Build a student from the teacher: a layer subset with copied weights, or a fresh model.

    `calibration`: texts a `layers:N:angular` student measures its layer distances on, and a
    `fresh:...,vocab=bpe:N` student trains its vocabulary on (a session passes its training documents;
    `calibration_source` says what they are, for the notes). None: the lines of assets/prompts.txt for the
    angular rule, the default corpus for a BPE (`corpus_documents`). Other specs ignore both."""
    kind, args = parse_derived_spec(spec)
    config = teacher.model.config.__class__.from_dict(teacher.model.config.to_dict())
    config._attn_implementation = attn_implementation
    tokenizer = teacher.tokenizer
    if kind == "fresh" and "vocab" in args:
        docs, calibration_source = (calibration, calibration_source) if calibration is not None else (
            corpus_documents(teacher.spec))
        tokenizer = bpe_tokenizer(docs, args["vocab"])
    torch.manual_seed(seed)  # the fresh weights (and a subset's unused ones) come from this seed
    if kind == "layers":
        student, keep, notes, selection = _layer_subset(teacher, spec, args, config, calibration, calibration_source)
    else:
        student, keep, notes, selection = _fresh(teacher, spec, args, config, tokenizer), None, [
            _fresh_note(teacher, tokenizer, args, calibration_source)], None
    student.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer is not teacher.tokenizer:
        student.generation_config.eos_token_id = tokenizer.eos_token_id
        student.generation_config.bos_token_id = tokenizer.bos_token_id
    student.eval()
    return LoadedModel(student, tokenizer, spec, f"derived from {teacher.spec}", keep, notes, selection)


def _fresh_note(teacher: LoadedModel, tokenizer: Any, args: dict[str, Any], source: str | None) -> str:
    if tokenizer is teacher.tokenizer:
        return "random initialisation (fresh), teacher's architecture family and tokenizer"
    return (f"random initialisation (fresh), teacher's architecture family; its own byte-level BPE vocabulary of "
            f"{len(tokenizer)} tokens (asked for {args['vocab']}) trained on {source or 'the corpus'}")


def corpus_documents(teacher_spec: str, config: DistillConfig | None = None) -> tuple[list[str], str]:
    """The training documents of `config` (default: a session with this teacher's default corpus, teacher-generated,
    cached after its first session), with their description: what a BPE student trains its vocabulary on when
    no corpus is given."""
    config = config.with_overrides({"teacher": teacher_spec}) if config is not None else DistillConfig(
        teacher=teacher_spec)
    for source, corpus in load_corpus(config, LazyTeacher(teacher_spec, torch.device("cpu"))):
        if corpus is not None:
            return corpus.docs, source
    raise DistillError(f"no corpus for {teacher_spec!r}")


def student_vocabulary(spec: str, teacher: Any, teacher_width: int,
                       documents: list[str] | None = None) -> tuple[Any, int]:
    """A student's tokenizer and output-layer width without building the student: the teacher's for a derived
    student, a BPE trained on `documents` (default: `corpus_documents`) for `fresh:...,vocab=bpe:N`, the
    model's own (its config's vocab_size, no weights loaded) for any other spec. `teacher`: anything with the
    teacher's `spec` and `tokenizer` (a LoadedModel, a LazyTeacher)."""
    vocab = own_vocabulary(spec)
    if vocab is not None:
        tokenizer = bpe_tokenizer(documents if documents is not None else corpus_documents(teacher.spec)[0], vocab)
        return tokenizer, len(tokenizer)
    if is_derived_spec(spec):
        return teacher.tokenizer, teacher_width
    resolved = resolve_model(spec)
    config = require_causal_lm(load_config(resolved.target, resolved.local_only), resolved.target)
    return load_tokenizer(resolved), int(config.vocab_size)


def _layer_subset(teacher: LoadedModel, spec: str, args: dict[str, Any], config: Any, calibration: list[str] | None,
                  calibration_source: str | None) -> tuple[Any, list[int], list[str], dict[str, Any] | None]:
    """A student of some teacher layers, their weights copied: (model, kept layers, notes, angular record)."""
    n_teacher = config.num_hidden_layers
    selection_notes: list[str] = []
    layer_selection = None
    if "indices" in args:
        keep = args["indices"]
    elif args["rule"] == "angular":
        keep, layer_selection, selection_notes = _angular_keep(teacher, args["count"], calibration, calibration_source)
    elif args["rule"] == "ppl":
        keep, layer_selection, selection_notes = _ppl_keep(teacher, args["count"], calibration, calibration_source)
    else:
        keep = select_layers(n_teacher, args["count"])
    bad = [i for i in keep if i >= n_teacher]
    if bad:
        raise DistillError(f"{spec!r}: layer {bad[0]} does not exist; the teacher has layers 0..{n_teacher - 1}")
    _subset_layer_config(config, keep)
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                               attn_implementation=config._attn_implementation)
    # Everything outside the blocks (embeddings, final norm, output layer) is copied as is; block i of
    # the student is teacher block keep[i]. Only the teacher's state dict is read (same architecture, so
    # the same parameter names), which `models.TeacherWeights` also provides.
    t_state = teacher.model.state_dict()
    s_blocks = decoder_layers(student)
    block_prefix = _module_prefix(student, s_blocks) + "."
    outside = {k: v for k, v in t_state.items() if not k.startswith(block_prefix)}
    _, unexpected = student.load_state_dict(outside, strict=False)
    assert not unexpected, unexpected
    for s_block, t_index in zip(s_blocks, keep):
        prefix = f"{block_prefix}{t_index}."
        s_block.load_state_dict({k[len(prefix):]: v for k, v in t_state.items() if k.startswith(prefix)})
    notes = [f"keeps teacher layers {_ranges(keep)} of 0..{n_teacher - 1}, weights copied", *selection_notes]
    return student, keep, notes, layer_selection


def _fresh(teacher: LoadedModel, spec: str, args: dict[str, int], config: Any, tokenizer: Any) -> Any:
    """A randomly initialised model of the teacher's family: L layers, width H, A heads (the teacher's
    query-to-KV-head ratio and MLP ratio kept where they divide), over `tokenizer`'s vocabulary."""
    t_config = teacher.model.config
    heads = args["heads"]
    t_ratio = t_config.num_attention_heads // max(1, getattr(t_config, "num_key_value_heads", None)
                                                  or t_config.num_attention_heads)
    config.num_hidden_layers = args["layers"]
    config.hidden_size = args["hidden"]
    config.num_attention_heads = heads
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = heads // t_ratio if t_ratio and heads % t_ratio == 0 else heads
    if hasattr(config, "head_dim"):
        config.head_dim = args["hidden"] // heads
    if hasattr(config, "intermediate_size"):
        ratio = t_config.intermediate_size / t_config.hidden_size
        config.intermediate_size = int(round(ratio * args["hidden"] / 64)) * 64 or 64
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[0]] * args["layers"]
    if tokenizer is not teacher.tokenizer:  # its own vocabulary: the embedding and output layer follow it
        config.vocab_size = len(tokenizer)
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    check_model_size(config, f"the student {spec!r}")
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=config._attn_implementation)


def _angular_keep(teacher: LoadedModel, count: int, calibration: list[str] | None,
                  calibration_source: str | None) -> tuple[list[int], dict[str, Any], list[str]]:
    """The kept layers of a `layers:N:angular` student, a JSON-able record and the notes."""
    calibration, source = _calibration(calibration, calibration_source)
    selection = layer_select.angular_selection(teacher, count, calibration)
    record = {**layer_select.selection_summary(selection), "calibration": source}
    if selection.n == 0:
        return selection.keep, record, ["layer rule angular: the student keeps every teacher layer, nothing to measure"]
    d = selection.distances
    end = selection.start + selection.n - 1
    note = (f"layer rule angular (Gromov et al. 2024): drops block {selection.start}-{end} ({selection.n} layers), "
            f"angular distance {d[selection.start]:.3f}, the smallest of {len(d)} blocks (largest {max(d):.3f}); "
            f"measured on {selection.tokens} tokens of {source}" + (" (cached)" if selection.cached else ""))
    return selection.keep, record, [note]


def _calibration(calibration: list[str] | None, calibration_source: str | None) -> tuple[list[str], str]:
    """The texts a measured layer rule runs on and what they are: a session's training documents, or the lines of
    assets/prompts.txt."""
    if calibration is None:
        prompts_file = ASSETS / "prompts.txt"
        try:
            text = prompts_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise DistillError(f"cannot read the default calibration text {prompts_file}: {exc}") from None
        calibration = [line.strip() for line in text.splitlines() if line.strip()]
        calibration_source = f"the lines of {prompts_file.parent.name}/{prompts_file.name} (default calibration)"
    return calibration, calibration_source or f"{len(calibration)} calibration text(s)"


def _ppl_keep(teacher: LoadedModel, count: int, calibration: list[str] | None,
              calibration_source: str | None) -> tuple[list[int], dict[str, Any], list[str]]:
    """The kept layers of a `layers:N:ppl` student, a JSON-able record and the notes."""
    calibration, source = _calibration(calibration, calibration_source)
    selection = layer_select.ppl_selection(teacher, count, calibration)
    record = {"rule": "ppl", "increases": selection.increases, "base_loss": selection.base_loss,
              "tokens": selection.tokens, "cached": selection.cached, "calibration": source}
    dropped = [i for i in range(len(selection.increases)) if i not in selection.keep]
    if not dropped:
        return selection.keep, record, ["layer rule ppl: the student keeps every teacher layer, nothing to measure"]
    raised = [selection.increases[i] for i in dropped]
    note = (f"layer rule ppl (Kim et al. 2024): drops layers {_ranges(dropped)}, whose removal alone raised the "
            f"teacher's loss least ({min(raised):+.3f} to {max(raised):+.3f} nats/token from "
            f"{selection.base_loss:.3f}); measured on {selection.tokens} tokens of {source}"
            + (" (cached)" if selection.cached else ""))
    return selection.keep, record, [note]


def _subset_layer_config(config: Any, keep: list[int]) -> None:
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]


def _module_prefix(model: Any, target: torch.nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise DistillError("cannot locate decoder layers in the model")


def _ranges(indices: list[int]) -> str:
    """[0,1,2,5,6,9] -> '0-2, 5-6, 9'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(f"{start}" if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def load_student(spec: str, teacher: LoadedModel, seed: int = 0, attn_implementation: str = "sdpa", *,
                 calibration: list[str] | None = None, calibration_source: str | None = None,
                 tokenizer_bridge: str = "auto") -> LoadedModel:
    """A student spec is either derived from the teacher or a model spec of its own. `calibration`
    (and `calibration_source`): see `derive_student`; only `layers:N:angular` and `vocab=bpe:N` use them.
    A student of its own must share the teacher's vocabulary unless `tokenizer_bridge` bridges them."""
    if is_derived_spec(spec):
        return derive_student(teacher, spec, seed=seed, attn_implementation=attn_implementation,
                              calibration=calibration, calibration_source=calibration_source)
    student = load_model(spec, attn_implementation)
    check_compatible(teacher, student, tokenizer_bridge)
    return student


def check_compatible(teacher: LoadedModel, student: LoadedModel, tokenizer_bridge: str = "auto") -> None:
    """DistillError when no bridge (`tokenizer_bridge`, tokenizer_bridge.choose_bridge) lets the pair distil."""
    choose_bridge(tokenizer_bridge, teacher.tokenizer, student.tokenizer, teacher.model.config.vocab_size,
                  student.model.config.vocab_size)
