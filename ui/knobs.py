"""The Distill tab's knobs, generated from DistillConfig: `KNOBS` decides which fields show and how (widget,
label, where, slider range, public-mode cap); the help under each is the field's docstring
(`api.field_help`), a dropdown's choices are `api.CHOICES` (or `api.SUGGESTIONS`, open to other values),
and the defaults are the quickstart preset's. `recipe_config` turns a recipe's inputs by name into the
session's DistillConfig: the preset's config with every input applied as one mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from distill_core import api
from ui.common import cap

CORPUS_GENERATED = "Teacher-generated (default)"
CORPUS_UPLOAD = "Upload a file"
CORPUS_PASTE = "Paste text"
CORPUS_HUB = "Hugging Face dataset"
CORPUS_CHOICES = [CORPUS_GENERATED, CORPUS_UPLOAD, CORPUS_PASTE, CORPUS_HUB]


@dataclass(frozen=True)
class Knob:
    """One DistillConfig field as a control of the Distill tab."""

    field: str
    widget: str
    """number, slider, dropdown or checkbox."""
    label: str
    heading: str
    """The sub-heading it sits under; knobs under one heading are drawn together, in KNOBS order."""
    place: int
    """Training: its row; Techniques: its column."""
    slider: tuple[float, float, float] | None = None
    """A slider's (minimum, maximum, step)."""
    cap: str | None = None
    """The public-mode cap (a PublicLimits field) that bounds a number."""

    @property
    def elem_id(self) -> str:
        return self.field.replace("_", "-")


TRAINING = "Training"
SOFT_TARGETS = "Soft targets (Hinton et al. 2015)"
TOP_K = "Top-k dark knowledge"
ATTENTION = "Attention transfer"
FREEZING = "Freezing"
FITNETS = "FitNets hints (Romero et al. 2015)"
LAYER_MAP = "Layer map (attention transfer, FitNets)"
ON_POLICY = "On-policy distillation (GKD, Agarwal et al. 2024)"

KNOBS = (
    Knob("steps", "number", "Steps", TRAINING, 0, cap="steps"),
    Knob("batch_size", "number", "Batch size", TRAINING, 0, cap="batch_size"),
    Knob("seq_len", "number", "Sequence length", TRAINING, 0, cap="seq_len"),
    Knob("learning_rate", "number", "Learning rate", TRAINING, 1),
    Knob("warmup_steps", "number", "Warm-up steps", TRAINING, 1),
    Knob("seed", "number", "Seed", TRAINING, 1),
    Knob("temperature", "slider", "Temperature T", SOFT_TARGETS, 0, slider=(0.5, 10, 0.1)),
    Knob("kd_weight", "slider", "KD weight α (soft targets vs hard labels)", SOFT_TARGETS, 0, slider=(0, 1, 0.05)),
    Knob("divergence", "dropdown", "Divergence", SOFT_TARGETS, 0),
    Knob("jsd_beta", "slider", "JSD β (divergence jsd)", SOFT_TARGETS, 0, slider=(0.01, 0.99, 0.01)),
    Knob("skew_alpha", "slider", "Skew α (divergence skew_kl)", SOFT_TARGETS, 0, slider=(0, 0.99, 0.01)),
    Knob("tokenizer_bridge", "dropdown", "Tokenizer bridge (when the vocabularies differ)", SOFT_TARGETS, 0),
    Knob("top_k", "number", "Top-k teacher tokens (0 = all)", TOP_K, 1),
    Knob("teacher_cache", "checkbox", "Cache the teacher's top-k", TOP_K, 1),
    Knob("attention_weight", "number", "Attention weight", ATTENTION, 1),
    Knob("attention_loss", "dropdown", "Attention loss", ATTENTION, 1),
    Knob("hidden_weight", "number", "Hidden-state weight", FITNETS, 2),
    Knob("hidden_loss", "dropdown", "Hidden-state loss", FITNETS, 2),
    Knob("layer_map", "dropdown", "Layer map (or pairs s:t,…)", LAYER_MAP, 2),
    Knob("freeze_embeddings", "checkbox", "Freeze embeddings", FREEZING, 1),
    Knob("freeze_layers", "number", "Frozen layers", FREEZING, 1),
    Knob("on_policy_fraction", "slider", "On-policy share λ (steps on the student's own text)", ON_POLICY, 0,
         slider=(0, 1, 0.05)),
    Knob("on_policy_divergence", "dropdown", "On-policy divergence", ON_POLICY, 0),
    Knob("rollout_tokens", "number", "Tokens the student writes per prompt", ON_POLICY, 0),
)
"""The DistillConfig fields the Distill tab sets, in the order of the `preset` endpoint's outputs."""
KNOB_FIELDS = tuple(knob.field for knob in KNOBS)
DATA_FIELDS = ("corpus_column", "hub_dataset", "hub_config", "hub_split", "hub_max_rows", "augment",
               "augment_strength", "augment_copies")
"""The Data and augmentation section's DistillConfig fields (besides the corpus choice, upload and pasted text)."""


def knob_component(knob: Knob, default: Any, help_text: dict[str, str]) -> Any:
    """The control of one knob: its widget, label, docstring as help, choices and default."""
    options = dict(label=knob.label, info=help_text[knob.field], elem_id=knob.elem_id)
    if knob.widget == "number":
        return gr.Number(default, maximum=cap(knob.cap) if knob.cap else None, **options)
    if knob.widget == "slider":
        low, high, step = knob.slider
        return gr.Slider(low, high, value=default, step=step, **options)
    if knob.widget == "checkbox":
        return gr.Checkbox(default, **options)
    if knob.field in api.CHOICES:
        return gr.Dropdown(list(api.CHOICES[knob.field]), value=default, **options)
    return gr.Dropdown(list(api.SUGGESTIONS[knob.field]), value=default, allow_custom_value=True, **options)


def _headings(knobs: list[Knob]) -> dict[str, list[Knob]]:
    grouped: dict[str, list[Knob]] = {}
    for knob in knobs:
        grouped.setdefault(knob.heading, []).append(knob)
    return grouped


def training_knobs(defaults: api.DistillConfig) -> dict[str, Any]:
    """The Training knobs under their heading, a row per `place`; field -> component."""
    help_text, knobs = api.field_help(), [knob for knob in KNOBS if knob.heading == TRAINING]
    components: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(f"#### {TRAINING}")
            for row in sorted({knob.place for knob in knobs}):
                with gr.Row():
                    for knob in (k for k in knobs if k.place == row):
                        components[knob.field] = knob_component(knob, getattr(defaults, knob.field), help_text)
    return components


def technique_knobs(defaults: api.DistillConfig) -> tuple[dict[str, Any], list[Any]]:
    """The technique knobs in columns, each heading with its knobs; field -> component, and the columns
    (to add to one later)."""
    help_text, knobs = api.field_help(), [knob for knob in KNOBS if knob.heading != TRAINING]
    components: dict[str, Any] = {}
    columns = []
    with gr.Row():
        for place in sorted({knob.place for knob in knobs}):
            with gr.Column() as column:
                for heading, under in _headings([k for k in knobs if k.place == place]).items():
                    gr.Markdown(f"#### {heading}")
                    for knob in under:
                        components[knob.field] = knob_component(knob, getattr(defaults, knob.field), help_text)
            columns.append(column)
    return components, columns


# ---------------------------------------------------------------------------------------
# a recipe's inputs -> DistillConfig
# ---------------------------------------------------------------------------------------
def data_overrides(named: dict[str, Any]) -> dict[str, Any]:
    """DistillConfig overrides for the corpus source and augmentation picked in the Data and augmentation
    section (`corpus_choice`, `upload`, `pasted` and DATA_FIELDS by name). A missing or None value keeps
    the preset's."""
    overrides: dict[str, Any] = {"corpus": "teacher-generated", "corpus_text": "", "hub_dataset": ""}
    choice, column = named.get("corpus_choice"), (named.get("corpus_column") or "").strip()
    hub_dataset = (named.get("hub_dataset") or "").strip()
    if choice == CORPUS_UPLOAD:
        if not named.get("upload"):
            raise api.DistillError("no file uploaded: choose a file (.txt, .jsonl, .json, .csv, .parquet), "
                                   "or pick another corpus")
        overrides.update(corpus=str(named["upload"]), corpus_column=column)
    elif choice == CORPUS_PASTE:
        overrides["corpus_text"] = api.check_text(named.get("pasted") or "", "pasted text")
    elif choice == CORPUS_HUB:
        if not hub_dataset:
            raise api.DistillError("no Hugging Face dataset id given: type one (like `wikitext`), or pick another "
                                   "corpus")
        overrides.update(hub_dataset=hub_dataset, hub_config=(named.get("hub_config") or "").strip(),
                         hub_split=(named.get("hub_split") or "").strip() or "train", corpus_column=column)
        if named.get("hub_max_rows") is not None:
            overrides["hub_max_rows"] = named["hub_max_rows"]
    elif choice not in (None, "", CORPUS_GENERATED):
        raise api.DistillError(f"unknown corpus choice {choice!r}")
    augment = named.get("augment")
    if augment is not None:
        overrides["augment"] = ",".join(augment) if isinstance(augment, (list, tuple)) else str(augment)
    for name in ("augment_strength", "augment_copies"):
        if named.get(name) is not None:
            overrides[name] = named[name]
    return overrides


def recipe_config(named: dict[str, Any]) -> api.DistillConfig:
    """The preset's config (quickstart when none) with the recipe's inputs applied as one mapping: the pair
    (where given), every knob given, the corpus source and augmentation; DistillConfig checks types and
    ranges. Fields without an input keep the preset's values."""
    overrides = {name: named[name] or "" for name in ("teacher", "student") if name in named}
    overrides.update({field: named[field] for field in KNOB_FIELDS if field in named})
    overrides.update(data_overrides(named))
    return api.preset_config(named.get("preset")).with_overrides(overrides)
