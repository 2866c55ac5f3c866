"""Students: derived from the teacher (a subset of its layers with their weights, or a fresh model of its
family and tokenizer) or loaded from a spec of their own and checked against the teacher's vocabulary.

`layers:N` keeps N teacher layers with their weights (DistilBERT's initialisation, Sanh et al. 2019): which
ones by the depth rule (specs.select_layers) or, for `layers:N:angular`, by measurement on calibration
text (Gromov et al. 2024; layer_select.py).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM

from distill_core import layer_select
from distill_core.errors import DistillError
from distill_core.models import LoadedModel, check_model_size, decoder_layers, load_model, one_build_at_a_time
from distill_core.paths import ASSETS
from distill_core.specs import is_derived_spec, parse_derived_spec, select_layers


@one_build_at_a_time
def derive_student(teacher: LoadedModel, spec: str, seed: int = 0, attn_implementation: str = "sdpa", *,
                   calibration: list[str] | None = None, calibration_source: str | None = None) -> LoadedModel:
    """Build a student from the teacher: a layer subset with copied weights, or a fresh model.

    `calibration`: texts a `layers:N:angular` student measures its layer distances on (a session
    passes its training documents; `calibration_source` says what they are, for the notes). None:
    the lines of assets/prompts.txt. Other specs ignore both."""
    kind, args = parse_derived_spec(spec)
    config = teacher.model.config.__class__.from_dict(teacher.model.config.to_dict())
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)  # the fresh weights (and a subset's unused ones) come from this seed
    if kind == "layers":
        student, keep, notes, selection = _layer_subset(teacher, spec, args, config, calibration, calibration_source)
    else:
        student, keep, notes, selection = _fresh(teacher, spec, args, config), None, [
            "random initialisation (fresh), teacher's architecture family and tokenizer"], None
    student.generation_config.pad_token_id = teacher.tokenizer.pad_token_id
    student.eval()
    return LoadedModel(student, teacher.tokenizer, spec, f"derived from {teacher.spec}", keep, notes, selection)


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


def _fresh(teacher: LoadedModel, spec: str, args: dict[str, int], config: Any) -> Any:
    """A randomly initialised model of the teacher's family: L layers, width H, A heads (the teacher's
    query-to-KV-head ratio and MLP ratio kept where they divide)."""
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
    check_model_size(config, f"the student {spec!r}")
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=config._attn_implementation)


def _angular_keep(teacher: LoadedModel, count: int, calibration: list[str] | None,
                  calibration_source: str | None) -> tuple[list[int], dict[str, Any], list[str]]:
    """The kept layers of a `layers:N:angular` student, a JSON-able record and the notes."""
    if calibration is None:
        prompts_file = ASSETS / "prompts.txt"
        try:
            text = prompts_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise DistillError(f"cannot read the default calibration text {prompts_file}: {exc}") from None
        calibration = [line.strip() for line in text.splitlines() if line.strip()]
        calibration_source = f"the lines of {prompts_file.parent.name}/{prompts_file.name} (default calibration)"
    source = calibration_source or f"{len(calibration)} calibration text(s)"
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
                 calibration: list[str] | None = None, calibration_source: str | None = None) -> LoadedModel:
    """A student spec is either derived from the teacher or a model spec of its own. `calibration`
    (and `calibration_source`): see `derive_student`; only `layers:N:angular` uses them."""
    if is_derived_spec(spec):
        return derive_student(teacher, spec, seed=seed, attn_implementation=attn_implementation,
                              calibration=calibration, calibration_source=calibration_source)
    student = load_model(spec, attn_implementation)
    check_compatible(teacher, student)
    return student


def check_compatible(teacher: LoadedModel, student: LoadedModel) -> None:
    t_vocab, s_vocab = teacher.tokenizer.get_vocab(), student.tokenizer.get_vocab()
    if t_vocab != s_vocab:
        only_t = len(set(t_vocab) - set(s_vocab))
        only_s = len(set(s_vocab) - set(t_vocab))
        raise DistillError(
            f"tokenizers differ: teacher {teacher.spec!r} has {len(t_vocab)} tokens, student {student.spec!r} "
            f"has {len(s_vocab)} ({only_t} only in the teacher's, {only_s} only in the student's, "
            "or the same tokens with other ids); distillation needs the same vocabulary "
            "(cross-tokenizer distillation is not supported)"
        )


