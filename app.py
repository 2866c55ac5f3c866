"""Distill Studio: the Gradio app. Wiring only: handlers turn UI values into engine calls
(`distill_core`) and engine results into figures (`visuals`) and markdown.

    python app.py     # serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)

API names (gradio_client): compatibility, preset, layer_map, run_session, stop, size_sweep, size_plot,
dark_knowledge, attention, similarity, evaluate, generate, export, augment_preview.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

import visuals
from distill_core import augment as augmentation
from distill_core import corpora, hosting, probes
from distill_core.checkpoints import (LoadedModel, compatibility_report, load_saved_model, load_student, load_teacher,
                                      load_tokenizer, resolve_model)
from distill_core.config import DistillConfig, field_help
from distill_core.data import cached_corpus, check_text, read_prompts, split_documents
from distill_core.errors import DistillError, describe_failure, first_line
from distill_core.layer_map import LAYER_MAP_SPECS, resolve_layer_map
from distill_core.losses import ATTENTION_LOSSES, DIVERGENCES, HIDDEN_LOSSES
from distill_core.session import run_session

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "assets" / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
PRESET_ORDER = ("quickstart", "hinton", "dark-knowledge-topk", "attention-transfer", "fitnets", "all-combined")
"""How the preset picker orders assets/configs/*.yaml; other YAML files there follow, by name."""

TRAINING_KNOBS = ("steps", "batch_size", "seq_len", "learning_rate", "warmup_steps", "seed")
TECHNIQUE_KNOBS = ("temperature", "kd_weight", "divergence", "jsd_beta", "skew_alpha", "top_k", "teacher_cache",
                   "attention_weight", "attention_loss", "hidden_weight", "hidden_loss", "layer_map",
                   "freeze_embeddings", "freeze_layers")
KNOBS = TRAINING_KNOBS + TECHNIQUE_KNOBS
"""The DistillConfig fields the Distill tab sets, in the order of the handlers' parameters and of the
`preset` endpoint's outputs."""

TEACHER_PRESETS = ["smollm2-135m", "HuggingFaceTB/SmolLM2-360M-Instruct"]
STUDENT_PRESETS = ["layers:20", "layers:15", "layers:10", "layers:6", "fresh:layers=4,hidden=256,heads=4",
                   "HuggingFaceTB/SmolLM2-135M-Instruct"]
SESSION_GPU_S = 300
"""How long a session or a size sweep may hold a ZeroGPU GPU (spaces.GPU duration, seconds)."""

CORPUS_GENERATED = "Teacher-generated (default)"
CORPUS_UPLOAD = "Upload a file"
CORPUS_PASTE = "Paste text"
CORPUS_HUB = "Hugging Face dataset"
CORPUS_CHOICES = [CORPUS_GENERATED, CORPUS_UPLOAD, CORPUS_PASTE, CORPUS_HUB]
DATA_INPUTS = ("corpus_column", "hub_dataset", "hub_config", "hub_split", "hub_max_rows", "augment",
               "augment_strength", "augment_copies")
"""The Data and augmentation section's fields after corpus_choice, upload, pasted, in the order of the handlers'
parameters (each a DistillConfig field; None keeps the preset's value)."""
PREVIEW_TEXTS = 3
"""Texts the augmentation preview shows per method."""
PREVIEW_WORDS = 60
"""Each previewed text is cut to its first this-many words (the preview stays readable and quick)."""

DISTILLATION_QUEUE = "distillation"
"""Gradio concurrency id of run_session and size_sweep, with a limit of 1: one distillation at a time per app
(one device); other users wait in the queue and see their position (README, Several users)."""

PROBE_TEXT = "I ate an"
PLOT_INTERVAL_S = 1.0
"""Re-render the loss curves at most this often while a session streams (plus on evals and at the end)."""
STATUS_INTERVAL_S = 0.2
"""Send step-only updates at most this often (tiny models step far faster than a browser redraws)."""

DEFAULT_SWEEP_SPECS = "layers:10, layers:15, layers:20"
SWEEP_TABLE_HEADERS = ["model", "params", "ppl before", "ppl after", "top-1 agreement", "KL to teacher",
                       "tokens/s", "wall time", "error"]

SPEC_HELP = """\
**Model specs.** A *teacher* is `smollm2-135m` (the bundled SmolLM2-135M-Instruct, offline), a Hugging Face id
(`HuggingFaceTB/SmolLM2-360M-Instruct`, needs the hub or its local cache), a local directory with `config.json`,
or a local `.gguf` file. A *student* is any teacher spec with the same tokenizer, or one derived from the teacher:

- `layers:N`: keep N of the teacher's layers with their weights copied (DistilBERT initialisation): the first
  ones and the last quarter, dropping a block of deep layers;
- `layers:0,5,9`: exactly these teacher layers (0-based);
- `fresh:layers=L,hidden=H,heads=A`: a randomly initialised model of the teacher's family and tokenizer.

Type your own spec in either box. The pair you pick here is used by every other tab.
"""


FIGURE_TIP = ("To save a figure, hover over it and click the camera icon (*Download plot as a PNG*) in its "
              "top-right toolbar.")

LEARN_SETUP = """\
**Knowledge distillation** trains a small *student* model to imitate a large *teacher*: instead of learning only
from the right answers in a text, it learns from the teacher's predictions, which say much more. Here the student
is usually made *from* the teacher by keeping some of its layers (with their weights: a head start, as in
DistilBERT), so the two share a tokenizer and can be compared token by token. **Check compatibility** shows what
the pair shares (the vocabulary must be the same for soft targets) and how much smaller the student is.
"""

LEARN_DISTILL = f"""\
**What happens in a session.** At every step the teacher and the student read the same batch of text. The
student's loss mixes two things: matching the teacher's whole next-token distribution (*soft targets*, weight α,
Hinton et al. 2015) and predicting the actual next token (*hard labels*, weight 1 − α). The *temperature* T
divides both models' scores before the softmax: T > 1 flattens the distributions so that the small probabilities
(the teacher's opinion of the wrong answers) weigh more. Optional extras match intermediate layers: attention maps
(attention transfer) and hidden states through a learned projection (FitNets hints).

**What to look for.** On the right, the held-out perplexity (text the student never trains on) should fall toward
the teacher's dotted line. If the validation perplexity on the training corpus keeps falling while the held-out one
rises, the student is memorising its corpus (over-fitting). The probe snapshot shows the student's next-token
distribution moving toward the teacher's. A good run: the loss falls smoothly and the gap to the teacher shrinks;
a bad one: the loss jumps or becomes NaN (learning rate too high) or nothing moves (too few steps).
{FIGURE_TIP}
"""

LEARN_SIZES = f"""\
**Size against quality.** Each student is distilled with the same recipe, so the only difference is its size.
Points further down are better (lower perplexity), further left are smaller. The curve through them is the
*trade-off frontier*: how much quality each removed layer costs. The faded markers are the same students before
distillation: the vertical gap is what distillation bought. {FIGURE_TIP}
"""

LEARN_DARK = f"""\
**Dark knowledge.** A language model does not just pick the next word: it gives *every* token in its vocabulary a
probability. After "I ate an", a good teacher gives "apple" the most mass, "orange" some too, and "banana" almost
none, not because bananas are not eaten but because "an banana" is ungrammatical. The text itself only says
"apple"; the teacher's ranking of the *wrong* answers (orange far above banana) is knowledge the text does not
contain. Hinton et al. (2015) called it *dark knowledge*; soft targets hand it to the student.

**What to look for.**
- *The bars:* after distillation the student's bars should take the teacher's shape (the same tokens, in the same
  order), not merely its top token. ★ marks the token that actually comes next in the text.
- *The temperature:* T > 1 divides the scores before the softmax, so the small probabilities grow and the wrong
  answers become visible; T = 1 is the model's own distribution. The ranks never change with T, only how much of
  the ranking shows. The view recomputes as you move the slider.
- *The rank of the actual next token:* 1 means the model's first choice was right.
- *The wrong-answer ranking:* one line per wrong answer, from the teacher's rank (left) to each student's. Flat lines
  mean the student orders the wrong answers as the teacher does: it has learnt the dark knowledge. Crossing lines
  mean it has not yet.
- *The KL strip:* how far each student's distribution is from the teacher's at every position of the text (darker:
  further). The "after" row should be paler than the "before" row.

A good picture: the after-student's bars look like the teacher's, its lines are flat and its KL row is pale. A bad
one: the student is confident about a token the teacher barely considers, or spreads its mass evenly over
everything. {FIGURE_TIP}
"""

LEARN_ATTENTION = f"""\
**Attention.** In every layer, each token (a *query*) looks back at the tokens before it (the *keys*) and takes a
weighted mix of what they carry; a *head* is one such pattern, and a layer has several. Each row of a map is one
query's weights, and they add up to 1. In "I ate an apple", a head may let the query "apple" attend to "ate":
what the eater ate. Other heads just look at the previous token, or park their attention on the first token when
there is nothing useful to look at (an *attention sink*). A language model reads left to right, so a token can
never attend to a later one: the cells above the diagonal are masked (hatched).

**How to read it.** Rows are the attending tokens, top to bottom in the order of the text; columns are the tokens
attended to. A bright line just under the diagonal is a previous-token head; a bright first column is an attention
sink. The *difference* map subtracts the teacher's weights from the student's: red where the student attends more,
blue where it attends less, white where they agree. The *overview* shows every layer and head of each model by its
entropy: dark cells (near 0) are sharp heads that look at one token, bright ones (near 1) spread evenly, so you
can spot which layers hold the focused patterns before picking one.

**Good and bad.** A layer of -1 picks the layer map's last pair (student:teacher): the layers attention transfer
and FitNets match. At a mapped pair, a good student's map resembles the teacher's and the difference is mostly
white; a poor one is diffuse where the teacher is sharp, or looks somewhere else entirely. A student built by
keeping teacher layers starts with the teacher's weights in those layers, but its maps still differ once a layer
below was dropped, because the input to the layer changed. {FIGURE_TIP}
"""

LEARN_SIMILARITY = f"""\
**Hidden-state similarity.** Every layer turns each token into a vector, its *hidden state*. *Linear CKA*
(centred kernel alignment, Kornblith et al. 2019) compares two layers by asking whether they arrange the same
tokens in the same way: it compares the token-by-token similarity matrices of the two layers, so layers of
different widths can be compared. It is 1 when one layer's states are a rotation (an orthogonal transform) and a
uniform rescaling of the other's, and near 0 when they are unrelated.

**How to read it.** Each heatmap has the teacher's layers up the side and the student's along the bottom; bright
cells are similar layers. A student made by keeping teacher layers starts with a bright staircase where its layers
come from; the boxes mark the mapped pairs (student:teacher) that FitNets hints and attention transfer train.
After distillation the boxed cells should be at least as bright. With FitNets, the cosine similarity after its
learned projection (Romero et al. 2015) says how closely the projected student states point the teacher's way
(1: the same direction). The last plot follows the mapped pairs' CKA through the session's snapshots.

**Caveats.** CKA can be dominated by a few outlier dimensions with very large activations (Davari et al. 2023,
"Reliability of CKA as a Similarity Measure in Deep Learning"): a high value does not prove two layers agree
everywhere, and one dimension can sink a value. Language models put such *massive activations* on the first
token (Sun et al. 2024, "Massive Activations in Large Language Models"), so the first token is left out here. On a
short text CKA is noisy: use 50 tokens or more. {FIGURE_TIP}
"""

LEARN_EVALUATE = """\
**The numbers.** *Perplexity* is how surprised a model is by text it never saw (the exponential of the average
negative log-likelihood per token): lower is better, and the teacher's is the target. *Top-1 agreement* is how
often the model's most likely next token is the teacher's. *KL(teacher ‖ model)* measures how far its whole
next-token distribution is from the teacher's, in nats per token (0: identical). *Parameters* and *size on disk*
are what you save; *tokens/s* is how fast it writes (greedy, one sequence at a time). On small models the
overhead of Hugging Face `generate` dominates, so the speed-up is smaller than the parameter ratio. The sentence
states the trade with the figures measured just now: quality kept = teacher's perplexity / student's perplexity.

**Generations.** *Greedy* always takes the most likely token (deterministic, and prone to repeating itself);
*sampled* draws from the distribution (temperature 0.8, top-p 0.95) with the same seed for all three models, so
the differences come from the models. Look for the untrained student's word salad turning into grammatical,
on-topic text after distillation.
"""


def runs_dir() -> Path:
    """Where each session gets its own folder (DISTILL_STUDIO_RUNS overrides `runs/`)."""
    return Path(os.environ.get("DISTILL_STUDIO_RUNS") or ROOT / "runs")


def quickstart_config() -> DistillConfig:
    return DistillConfig.from_yaml(QUICKSTART)


def preset_names() -> list[str]:
    """The YAML files in assets/configs/, by stem: PRESET_ORDER first (quickstart leads), then the rest by name."""
    stems = sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    return [name for name in PRESET_ORDER if name in stems] + [name for name in stems if name not in PRESET_ORDER]


def preset_description(name: str) -> str:
    """What a preset is: the first comment line of its YAML file, as a sentence (a trailing colon becomes a period)."""
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip().rstrip(":").strip()
            return text if not text or text.endswith(".") else text + "."
    return ""


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise DistillError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return CONFIGS / f"{name}.yaml"


def preset_config(name: str | None) -> DistillConfig:
    """The preset's config (quickstart when none is picked)."""
    return DistillConfig.from_yaml(preset_path(name)) if name else quickstart_config()


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one readable line; out of memory says what to do (`describe_failure`)."""
    return describe_failure(exc)


def error_markdown(message: str) -> str:
    return f"**Error:** {message}"


class UserSession:
    """Per-browser-session state, held in gr.State: the stop flag of this user's running session and
    the last session it finished (the inspection tabs' "student (after)"). Each browser tab, and each
    gradio_client Client, is one such session; nothing here is shared between users (see README, Several
    users)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = False  # a session or sweep of this user is running (not merely queued)
        self.last_run: dict[str, Any] | None = None  # out_dir, teacher, student, probes (the session's probe events)
        self._trained: tuple[str, Any] | None = None  # (student dir, model) loaded for probing
        self.attention: tuple[tuple, dict[str, Any]] | None = None  # (key, probe result): the last attention probe
        self.export_dir: Path | None = None  # this user's last export (replaced by the next one)

    def __deepcopy__(self, memo: dict) -> "UserSession":
        # gr.State deep-copies its default for every browser session: give each one its own flag.
        return UserSession()

    def trained_student(self) -> Any | None:
        """The last session's saved student, loaded once (None if no session has finished)."""
        if self.last_run is None:
            return None
        student_dir = str(Path(self.last_run["out_dir"]) / "student")
        if self._trained is None or self._trained[0] != student_dir:
            self._trained = (student_dir, load_saved_model(student_dir))
        return self._trained[1]


# ---------------------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------------------
def fmt_params(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f} M"


def fmt_number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def shown_path(path: str | Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------
# Setup: compatibility
# ---------------------------------------------------------------------------------------
def report_markdown(report: dict[str, Any]) -> str:
    """The compatibility report as a teacher | student table plus the verdict lines."""
    t, s, tok, comp = report["teacher"], report["student"], report["tokenizer"], report["compression"]
    rows = [
        ("spec", f"`{t['spec']}`", f"`{s['spec']}`"),
        ("source", t["source"], s["source"]),
        ("architecture", t["architecture"], s["architecture"]),
        ("layers", t["layers"], s["layers"]),
        ("hidden size", t["hidden_size"], s["hidden_size"]),
        ("attention heads (KV heads)", f"{t['heads']} ({t['kv_heads']})", f"{s['heads']} ({s['kv_heads']})"),
        ("vocabulary", t["vocab_size"], s["vocab_size"]),
        ("parameters", fmt_params(t["params"]), fmt_params(s["params"])),
    ]
    lines = ["| | teacher | student |", "|---|---|---|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    same = tok["same_vocabulary"]
    techniques = ", ".join(name.replace("_", " ") for name, ok in report["techniques"].items() if ok)
    lines += [
        "",
        f"- **Tokenizer:** {'same vocabulary ✓' if same else 'different vocabularies ✗'} "
        f"(fingerprints `{tok['teacher_fingerprint']}` / `{tok['student_fingerprint']}`)",
        f"- **Compression:** {comp['param_ratio']}× fewer parameters, {comp['layer_ratio']}× fewer layers",
        f"- **Techniques that apply:** {techniques or 'none'}",
    ]
    if report.get("layer_map"):
        lines.append(f"- **Layer map** (`auto`, for attention transfer and FitNets; student:teacher): "
                     f"{pairs_text(report['layer_map'])}")
    lines += [f"- **Student:** {note}" for note in s.get("notes") or []]
    if report.get("memory"):
        lines.append(memory_line(report["memory"]))
    return "\n".join(lines)


def memory_line(memory: dict[str, Any]) -> str:
    """The memory estimate of a session (`distill_core.memory.fit_report`) as one verdict line."""
    gb = memory["estimate_gb"]
    batch, length = memory["batch"]
    parts = ", ".join(f"{name.replace('_', ' ')} {gb[name]:.2f}" for name in
                      ("teacher_weights", "student_weights", "gradients", "optimizer", "activations", "logits"))
    verdict = "fits ✓" if memory["fits"] else f"⚠ {memory['warning']}"
    return (f"- **Memory** (a session of {batch} × {length} tokens on {memory['device']}): about {gb['total']:.2f} GB "
            f"of {memory['device_gb']:.1f} GB {memory['device_memory']}, {verdict} ({parts} GB)")


def check_compatibility(teacher_spec: str, student_spec: str) -> tuple[str, dict[str, Any] | None]:
    """Load the pair and report what it shares (api_name `compatibility`)."""
    try:
        teacher = load_teacher(teacher_spec or "")
        student = load_student(student_spec or "", teacher)
        report = compatibility_report(teacher, student)
    except DistillError as exc:
        gr.Warning(str(exc))
        return error_markdown(str(exc)), None
    except Exception as exc:  # e.g. out of memory: say it in one line, keep the app up
        gr.Warning(one_line(exc))
        return error_markdown(one_line(exc)), None
    remember_pair_shape(teacher_spec, student_spec, report["student"]["layers"], report["teacher"]["layers"],
                        report["student"]["layers_kept"])
    return report_markdown(report), report


# ---------------------------------------------------------------------------------------
# Distill: the layer map the session will use
# ---------------------------------------------------------------------------------------
_PAIR_SHAPES: dict[tuple[str, str], tuple[int, int, list[int] | None]] = {}
"""(teacher spec, student spec) -> (student layers, teacher layers, teacher layers the student kept): what
resolving a layer map needs, remembered from checked or loaded pairs."""


def remember_pair_shape(teacher_spec: str, student_spec: str, n_student: int, n_teacher: int,
                        layers_kept: list[int] | None) -> None:
    if len(_PAIR_SHAPES) >= 64:
        _PAIR_SHAPES.pop(next(iter(_PAIR_SHAPES)))
    _PAIR_SHAPES[((teacher_spec or "").strip(), (student_spec or "").strip())] = (n_student, n_teacher, layers_kept)


def pair_shape(teacher_spec: str, student_spec: str, load: bool) -> tuple[int, int, list[int] | None] | None:
    """The pair's depths and kept layers: remembered, or (with `load`) from loading the pair (the teacher
    stays in memory after its first load), else None."""
    key = ((teacher_spec or "").strip(), (student_spec or "").strip())
    if key not in _PAIR_SHAPES and load:
        teacher = load_teacher(key[0])
        student = load_student(key[1], teacher)
        remember_pair_shape(*key, student.model.config.num_hidden_layers, teacher.model.config.num_hidden_layers,
                            student.layers_kept)
    return _PAIR_SHAPES.get(key)


def pairs_text(pairs: list[Any]) -> str:
    return " ".join(f"`{s}:{t}`" for s, t in pairs)


def layer_map_markdown(teacher_spec: str, student_spec: str, spec: str, load: bool = True) -> str:
    """The student:teacher layer pairs `spec` resolves to for the pair picked in Setup (api_name `layer_map`);
    the engine's message for a spec that cannot work. Without `load`, only for a pair already checked or loaded."""
    try:
        shape = pair_shape(teacher_spec, student_spec, load)
        if shape is None:
            return ("The resolved layer pairs show here once the pair is checked in **Setup** "
                    "(or when you edit the layer map).")
        n_student, n_teacher, kept = shape
        pairs = resolve_layer_map(spec, n_student, n_teacher, kept)
    except DistillError as exc:
        return error_markdown(str(exc))
    except Exception as exc:  # e.g. out of memory while loading the pair
        return error_markdown(one_line(exc))
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"  # noqa: E731
    return (f"**{plural(len(pairs), 'layer pair')}** (student:teacher; the student has {plural(n_student, 'layer')}, "
            f"the teacher {n_teacher}): {pairs_text(pairs)}  \n"
            "Used by attention transfer and FitNets hints when their weight is above 0.")


def layer_map_if_known(teacher_spec: str, student_spec: str, spec: str) -> str:
    """layer_map_markdown without loading a pair (for pair changes: loading waits for a check or an edit)."""
    return layer_map_markdown(teacher_spec, student_spec, spec, load=False)


# ---------------------------------------------------------------------------------------
# Distill: config from the UI, the streaming session
# ---------------------------------------------------------------------------------------
def data_overrides(corpus_choice: str, upload: str | None, pasted: str | None, corpus_column: str | None = None,
                   hub_dataset: str | None = None, hub_config: str | None = None, hub_split: str | None = None,
                   hub_max_rows: Any = None, augment: Any = None, augment_strength: Any = None,
                   augment_copies: Any = None) -> dict[str, Any]:
    """DistillConfig overrides for the corpus source and augmentation picked in the Distill tab's Data and
    augmentation section. A value of None keeps the preset's."""
    overrides: dict[str, Any] = {"corpus": "teacher-generated", "corpus_text": "", "hub_dataset": ""}
    column = (corpus_column or "").strip()
    if corpus_choice == CORPUS_UPLOAD:
        if not upload:
            raise DistillError("no file uploaded: choose a file (.txt, .jsonl, .json, .csv, .parquet), "
                               "or pick another corpus")
        overrides.update(corpus=str(upload), corpus_column=column)
    elif corpus_choice == CORPUS_PASTE:
        overrides["corpus_text"] = check_text(pasted or "", "pasted text")
    elif corpus_choice == CORPUS_HUB:
        if not (hub_dataset or "").strip():
            raise DistillError("no Hugging Face dataset id given: type one (like `wikitext`), or pick another corpus")
        overrides.update(hub_dataset=hub_dataset.strip(), hub_config=(hub_config or "").strip(),
                         hub_split=(hub_split or "").strip() or "train", corpus_column=column)
        if hub_max_rows is not None:
            overrides["hub_max_rows"] = hub_max_rows
    elif corpus_choice not in (None, "", CORPUS_GENERATED):
        raise DistillError(f"unknown corpus choice {corpus_choice!r}")
    if augment is not None:
        overrides["augment"] = ",".join(augment) if isinstance(augment, (list, tuple)) else str(augment)
    if augment_strength is not None:
        overrides["augment_strength"] = augment_strength
    if augment_copies is not None:
        overrides["augment_copies"] = augment_copies
    return overrides


def config_from_ui(teacher: str, student: str, preset: str | None, corpus_choice: str, upload: str | None,
                   pasted: str | None, corpus_column: str | None = None, hub_dataset: str | None = None,
                   hub_config: str | None = None, hub_split: str | None = None, hub_max_rows: Any = None,
                   augment: Any = None, augment_strength: Any = None, augment_copies: Any = None,
                   **knobs: Any) -> DistillConfig:
    """The preset's config (quickstart when none) with the UI's pair, knobs (every name in KNOBS), corpus
    source and augmentation (DATA_INPUTS; None keeps the preset's value) applied; DistillConfig checks types
    and ranges. Fields without a knob keep the preset's values."""
    if set(knobs) != set(KNOBS):
        raise TypeError(f"config_from_ui needs exactly the knobs {KNOBS}; got {sorted(knobs)}")
    data = data_overrides(corpus_choice, upload, pasted, corpus_column, hub_dataset, hub_config, hub_split,
                          hub_max_rows, augment, augment_strength, augment_copies)
    overrides: dict[str, Any] = {"teacher": teacher or "", "student": student or "", **knobs, **data}
    return preset_config(preset).with_overrides(overrides)


def apply_preset(name: str) -> tuple[Any, ...]:
    """Every knob's value in the preset `name` (api_name `preset`), in KNOBS order, then the preset's
    description. Teacher, student and corpus stay as picked."""
    try:
        config = preset_config(name)
        description = preset_description(name)
    except DistillError as exc:
        gr.Warning(str(exc))
        return (*[gr.skip()] * len(KNOBS), error_markdown(str(exc)))
    return (*[getattr(config, knob) for knob in KNOBS], preset_markdown(name, description))


def preset_markdown(name: str, description: str) -> str:
    return (f"**{name}:** {description}  \n*Fills every knob below from `assets/configs/{name}.yaml`; "
            "the teacher, the student (Setup) and the corpus stay as picked.*")


def new_run_dir() -> Path:
    """A fresh folder for one session: runs/<timestamp>-<random id>/."""
    path = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


class RunView:
    """What the Distill tab shows of one streaming session, built from its events."""

    def __init__(self, config: DistillConfig, out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        self.history: list[dict[str, Any]] = []  # step and eval events, for loss_curves
        self.message = "Starting …"
        self.corpus: dict[str, Any] | None = None
        self.last_step: dict[str, Any] | None = None
        self.first_probe: dict[str, Any] | None = None
        self.last_probe: dict[str, Any] | None = None
        self.probes: list[dict[str, Any]] = []  # every probe event (the Similarity tab's CKA over the steps)
        self.final: dict[str, Any] | None = None
        self.failure: str | None = None
        self.stop_requested = False
        self.training = False  # the engine has entered its training loop
        self.stopped_before_training = False  # Stop came before the training loop: nothing trained, nothing saved

    def add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        self.training = self.training or kind == "step" or bool(event.get("training"))
        if kind in ("step", "eval"):
            self.history.append(event)
        if kind == "step":
            self.last_step = event
        elif kind == "status":
            self.message = event["message"]
        elif kind == "corpus":
            self.corpus = event
        elif kind == "probe":
            self.first_probe = self.first_probe or event
            self.last_probe = event
            self.probes.append(event)
        elif kind in ("done", "stopped", "error"):
            self.final = event

    def fail(self, message: str) -> None:
        self.failure = message

    @property
    def finished(self) -> bool:
        return self.final is not None or self.failure is not None or self.stopped_before_training

    def status_markdown(self) -> str:
        steps = self.config.steps
        lines: list[str] = []
        if self.failure:
            lines.append(error_markdown(self.failure))
        elif self.stopped_before_training:
            lines.append("**Stopped** before training started: nothing was trained or saved (earlier runs are kept).")
        elif self.final is not None:
            summary = self.final["summary"]
            done = summary["steps_done"]
            student_dir = shown_path(self.out_dir / "student")
            if self.final["kind"] == "done":
                lines.append(f"**Done:** {done}/{steps} steps in {fmt_seconds(summary['wall_s'])}. "
                             f"Student saved to `{student_dir}`.")
            elif self.final["kind"] == "stopped":
                lines.append(f"**Stopped** at step {done}/{steps}. The student so far is saved to `{student_dir}`.")
            else:
                lines.append(f"{error_markdown(self.final['message'])}  \nStudent saved to `{student_dir}`.")
        else:
            step = self.last_step
            if step is not None:
                terms = " · ".join(f"{key.removesuffix('_loss')} {step[key]:.3f}"
                                   for key in step if key.endswith("_loss"))
                lines.append(f"**Step {step['step']}/{steps}** · loss {step['loss']:.3f} ({terms}) · "
                             f"{step['tokens_per_s']:,.0f} tokens/s · ETA {fmt_seconds(step['eta_s'])}")
            else:
                lines.append(f"**Step 0/{steps}**")
            message = self.message + (" · **stop requested**, finishing the current step" if self.stop_requested else "")
            lines.append(f"{message}")
        if self.corpus is not None:
            c = self.corpus
            lines.append(f"Corpus: {c['source']}: {c['train_tokens']:,} training tokens "
                         f"({c['epochs']} epochs over {steps} steps), {c['eval_tokens']:,} held-out evaluation tokens.")
            if c.get("augmented"):
                lines.append(augmented_markdown(c["augmented"]))
        if self.out_dir.exists():  # a session that ends before training leaves no folder
            lines.append(f"Run folder: `{shown_path(self.out_dir)}`")
        return "  \n".join(lines)

    def loss_figure(self) -> Any:
        return visuals.loss_curves(self.history)

    def probe_figure(self) -> Any:
        probe = self.last_probe
        probs = {"teacher": probe["teacher_probs"]}
        first = self.first_probe
        if first is not probe and first["candidates"] == probe["candidates"]:
            probs["student (before)"] = first["student_probs"]
        now_label = "student (before)" if probe["step"] == 0 else f"student (step {probe['step']})"
        probs[now_label] = probe["student_probs"]
        title = (f"Next token after “{probe['text']}” at T={probe['temperature']:g} "
                 f"(KL teacher‖student {probe['kl_last']:.3f} nats)")
        return visuals.next_token_bars(probe["candidates"], probs, None, title)

    def summary_markdown(self) -> str:
        if self.final is None:
            return ""
        s = self.final["summary"]
        t, st, before, after = s["teacher"], s["student"], s["before"], s["after"]
        pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        rows = [
            ("held-out perplexity ↓", fmt_number(t["ppl"], 2), fmt_number(before["ppl"], 2), fmt_number(after["ppl"], 2)),
            ("top-1 agreement with the teacher ↑", "—", pct(before["top1_agreement"]), pct(after["top1_agreement"])),
            ("KL(teacher ‖ student), nats/token ↓", "—", fmt_number(before["kl_to_teacher"]),
             fmt_number(after["kl_to_teacher"])),
            ("parameters", fmt_params(t["params"]), fmt_params(st["params"]),
             f"{fmt_params(st['params'])} ({fmt_params(st['trainable_params'])} trained)"),
        ]
        lines = [f"### Before / after ({s['steps_done']}/{s['steps']} steps, {s['eval_tokens']:,} held-out tokens)",
                 "", f"| | teacher `{s['teacher_spec']}` | student before `{s['student_spec']}` | student after |",
                 "|---|---:|---:|---:|"]
        lines += [f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows]
        lines += ["", f"Final training loss {fmt_number(s['final_loss'])} · training {fmt_seconds(s['train_s'])} · "
                      f"total {fmt_seconds(s['wall_s'])} · corpus: {s['corpus']} · saved in `{shown_path(self.out_dir)}`"]
        if s.get("augmented"):
            lines += ["", augmented_markdown(s["augmented"])]
        return "\n".join(lines)


def augmented_markdown(report: dict[str, Any]) -> str:
    """One line from a session's `augmented` report: texts each augmenter produced, blocks and tokens added."""
    counts = " · ".join(f"{method} {count:,}" for method, count in report.get("methods", {}).items())
    return (f"Augmentation: {counts} new texts (changed copies of training text) → {report.get('blocks', 0):,} "
            f"extra training blocks ({report.get('tokens', 0):,} tokens).")


def run_distillation(teacher: str, student: str, preset: str | None,
                     steps: Any, batch_size: Any, seq_len: Any, learning_rate: Any, warmup_steps: Any, seed: Any,
                     temperature: Any, kd_weight: Any, divergence: Any, jsd_beta: Any, skew_alpha: Any, top_k: Any,
                     teacher_cache: Any, attention_weight: Any, attention_loss: Any, hidden_weight: Any,
                     hidden_loss: Any, layer_map: Any, freeze_embeddings: Any, freeze_layers: Any,
                     corpus_choice: str, upload: str | None, pasted: str | None, corpus_column: str | None = None,
                     hub_dataset: str | None = None, hub_config: str | None = None, hub_split: str | None = None,
                     hub_max_rows: Any = None, augment: Any = None, augment_strength: Any = None,
                     augment_copies: Any = None, user: UserSession | None = None):
    """Stream one session (api_name `run_session`). Yields, in order: status markdown, loss curves,
    probe snapshot, summary markdown, Run button, Stop button."""
    knobs = {name: value for name, value in locals().items() if name in KNOBS}  # the parameters named in KNOBS
    data = {name: value for name, value in locals().items() if name in DATA_INPUTS}
    user = user if user is not None else UserSession()
    running = (gr.update(interactive=False), gr.update(interactive=True))
    idle = (gr.update(interactive=True), gr.update(interactive=False))
    try:
        config = config_from_ui(teacher, student, preset, corpus_choice, upload, pasted, **data, **knobs)
        shape = pair_shape(config.teacher, config.student, load=False)
        if shape is not None:  # a pair already checked: a bad layer map fails now, not after the first evaluation
            resolve_layer_map(config.layer_map, *shape)
    except DistillError as exc:
        gr.Warning(str(exc))
        yield error_markdown(str(exc)), gr.skip(), gr.skip(), "", *idle
        return

    out_dir = new_run_dir()
    view = RunView(config, out_dir)
    user.stop.clear()
    user.running = True
    try:
        yield view.status_markdown(), view.loss_figure(), gr.update(visible=False), "", *running
        yield from stream_session(config, out_dir, view, user, running)
    finally:
        user.running = False
    if (out_dir / "student").is_dir():
        user.last_run = {"out_dir": str(out_dir), "teacher": config.teacher, "student": config.student,
                         "probes": view.probes}
    elif view.final is None:
        shutil.rmtree(out_dir, ignore_errors=True)  # failed or stopped before training: nothing worth keeping
    probe = gr.update(value=view.probe_figure(), visible=True) if view.last_probe else gr.skip()
    yield view.status_markdown(), view.loss_figure(), probe, view.summary_markdown(), *idle


def stream_session(config: DistillConfig, out_dir: Path, view: RunView, user: UserSession, running: tuple):
    """The engine's session events into `view`, yielding the Distill tab's updates as they come (at most every
    STATUS_INTERVAL_S for steps, the curves at most every PLOT_INTERVAL_S). A Stop before the training loop
    (loading, writing the corpus, the first evaluation) ends the session at the engine's next event without
    training or saving anything; once training runs, the engine stops after the current step and saves the
    student. Failures end up in `view` (the app stays up)."""
    last_plot = last_yield = time.monotonic()
    events = run_session(config, out_dir, user.stop)
    try:
        for event in events:
            if user.stop.is_set() and not view.training and not event.get("training"):
                events.close()  # still loading, preparing or evaluating: end it here
                view.stopped_before_training = True
                return
            view.add(event)
            view.stop_requested = user.stop.is_set()
            if view.finished:
                continue  # the last event: let the engine's generator finish, then show everything below
            now = time.monotonic()
            new_eval = event["kind"] == "eval"
            if event["kind"] == "step" and now - last_yield < STATUS_INTERVAL_S:
                continue
            plot = gr.skip()
            if event["kind"] in ("step", "eval") and (new_eval or now - last_plot >= PLOT_INTERVAL_S):
                plot, last_plot = view.loss_figure(), now
            probe = gr.update(value=view.probe_figure(), visible=True) if event["kind"] == "probe" else gr.skip()
            last_yield = now
            yield view.status_markdown(), plot, probe, gr.skip(), *running
    except DistillError as exc:
        gr.Warning(str(exc))
        view.fail(str(exc))
    except Exception as exc:  # e.g. out of memory: one line, and the app stays up
        gr.Warning(one_line(exc))
        view.fail(one_line(exc))


NOTHING_TO_STOP = ("Nothing is running in this browser session, so there is nothing to stop (a session waiting in "
                   "the queue can be stopped once it starts).")


def request_stop(user: UserSession | None = None) -> str:
    """Ask this user's running session or sweep to stop after the current step (api_name `stop`); the engine
    then evaluates and saves the student (before the first step: nothing is trained or saved). Only this
    user's own session; nothing happens when none is running."""
    if user is None or not user.running:
        return NOTHING_TO_STOP
    user.stop.set()
    gr.Info("Stopping after the current step; the student will be evaluated and saved (before training has "
            "started: the session just ends).")
    return ("**Stop requested:** finishing the current step, then evaluating and saving the student (before "
            "training has started, the session just ends, with nothing saved) …")


# ---------------------------------------------------------------------------------------
# Student size: one recipe, several students
# ---------------------------------------------------------------------------------------
def parse_specs(text: str | None) -> list[str]:
    """Student specs from the Student size box: one per line, and on each line as the engine's
    `parse_student_list` reads them (comma-separated, the commas of `layers:0,5,9` and
    `fresh:layers=4,hidden=256,heads=4` kept; or semicolon-separated). Repeats are dropped."""
    from distill_core.sweep import parse_student_list

    specs = [spec for line in (text or "").splitlines() if line.strip() for spec in parse_student_list(line)]
    if not specs:
        return parse_student_list("")  # the engine's message for an empty list
    return list(dict.fromkeys(specs))


def size_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The sweep's rows as table rows (SWEEP_TABLE_HEADERS), the teacher first."""
    pct = lambda v: "—" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"  # noqa: E731
    speed = lambda v: fmt_number(v, 1)  # noqa: E731
    table: list[list[str]] = []
    teacher = next((r for r in rows if isinstance(r.get("teacher_ppl"), (int, float))), None)
    if teacher is not None:
        table.append(["teacher", fmt_params(teacher.get("teacher_params")), "—",
                      fmt_number(teacher["teacher_ppl"], 2), "—", "—", speed(teacher.get("teacher_tokens_per_s")),
                      "—", ""])
    for r in rows:
        table.append([str(r.get("spec", "?")), fmt_params(r.get("params")), fmt_number(r.get("ppl_before"), 2),
                      fmt_number(r.get("ppl"), 2), pct(r.get("top1_agreement")), fmt_number(r.get("kl_to_teacher")),
                      speed(r.get("tokens_per_s")), fmt_seconds(r.get("wall_s")), str(r.get("error") or "")])
    return table


def row_line(row: dict[str, Any]) -> str:
    """One finished student in the progress list."""
    if row.get("error") and not isinstance(row.get("ppl"), (int, float)):
        return f"- `{row.get('spec', '?')}`: **failed:** {row['error']}"
    line = (f"- `{row.get('spec', '?')}`: {fmt_params(row.get('params'))}, held-out perplexity "
            f"{fmt_number(row.get('ppl_before'), 1)} → **{fmt_number(row.get('ppl'), 1)}**, "
            f"{fmt_number(row.get('tokens_per_s'), 1)} tokens/s, {fmt_seconds(row.get('wall_s'))}")
    return line + (f" ({row['error']})" if row.get("error") else "")


class SweepView:
    """What the Student size tab shows of one streaming sweep, built from its events."""

    def __init__(self, specs: list[str], steps: int, out_dir: Path) -> None:
        self.specs, self.steps, self.out_dir = specs, steps, out_dir
        self.rows: list[dict[str, Any]] = []
        self.teacher: str | None = None  # the teacher's measurements, in words
        self.current: str | None = None  # the spec the latest session events belong to
        self.last_step: dict[str, Any] | None = None
        self.message = "Starting …"
        self.failure: str | None = None
        self.ended = False
        self.stop_requested = False

    def add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "row":
            self.rows.append(event["row"])
            self.current, self.last_step, self.message = None, None, "Starting the next student …"
            return
        if kind == "teacher":
            self.teacher = event.get("message")
            return
        spec = event.get("student", event.get("spec"))  # the engine tags each session event with its student
        if isinstance(spec, str):
            self.current = spec
        elif self.current is None and len(self.rows) < len(self.specs):
            self.current = self.specs[len(self.rows)]
        if kind == "step":
            self.last_step = event
        elif kind == "status":
            self.message = event["message"]
        elif kind in ("done", "stopped", "error"):
            self.message = f"Session {kind}: {event.get('message', '')}"

    def fail(self, message: str) -> None:
        self.failure = message

    def status_markdown(self) -> str:
        n, done = len(self.specs), len(self.rows)
        lines: list[str] = []
        if self.failure:
            lines.append(error_markdown(self.failure))
        elif self.ended:
            results = self.out_dir / "students.json"
            saved = f" Rows saved to `{shown_path(results)}`." if results.is_file() else ""
            if self.stop_requested:  # the last row is the stopped student's (its error says at which step)
                lines.append(f"**Stopped** after {done}/{n} students.{saved}")
            else:
                lines.append(f"**Done:** {done}/{n} students.{saved}")
        else:
            spec = self.current or (self.specs[done] if done < n else "—")
            head = f"**Student {min(done + 1, n)}/{n} `{spec}`**"
            step = self.last_step
            if step is not None:
                head += (f" · step {step['step']}/{step.get('steps', self.steps)} · loss {step['loss']:.3f} · "
                         f"ETA {fmt_seconds(step.get('eta_s'))} for this student")
            lines.append(head)
            lines.append(self.message + (" · **stop requested**, finishing the current step"
                                         if self.stop_requested else ""))
        if self.teacher:
            lines.append(self.teacher[0].upper() + self.teacher[1:])
        lines.append(f"Run folder: `{shown_path(self.out_dir)}`")
        return "\n\n".join(["  \n".join(lines), *(["\n".join(map(row_line, self.rows))] if self.rows else [])])

    def figure(self) -> Any:
        return visuals.size_quality_figure(self.rows)

    def table(self) -> list[list[str]]:
        return size_table(self.rows)


def run_size_sweep(specs: str, teacher: str, preset: str | None,
                   steps: Any, batch_size: Any, seq_len: Any, learning_rate: Any, warmup_steps: Any, seed: Any,
                   temperature: Any, kd_weight: Any, divergence: Any, jsd_beta: Any, skew_alpha: Any, top_k: Any,
                   teacher_cache: Any, attention_weight: Any, attention_loss: Any, hidden_weight: Any,
                   hidden_loss: Any, layer_map: Any, freeze_embeddings: Any, freeze_layers: Any,
                   corpus_choice: str, upload: str | None, pasted: str | None, corpus_column: str | None = None,
                   hub_dataset: str | None = None, hub_config: str | None = None, hub_split: str | None = None,
                   hub_max_rows: Any = None, augment: Any = None, augment_strength: Any = None,
                   augment_copies: Any = None, user: UserSession | None = None):
    """Distil each student in `specs` with the Distill tab's recipe and plot size against quality
    (api_name `size_sweep`). Yields, in order: progress markdown, size/quality figure, table rows,
    Compare button, Stop button."""
    knobs = {name: value for name, value in locals().items() if name in KNOBS}  # the parameters named in KNOBS
    data = {name: value for name, value in locals().items() if name in DATA_INPUTS}
    user = user if user is not None else UserSession()
    running = (gr.update(interactive=False), gr.update(interactive=True))
    idle = (gr.update(interactive=True), gr.update(interactive=False))
    try:
        from distill_core.sweep import student_sweep  # imported here: tests replace it

        spec_list = parse_specs(specs)
        config = config_from_ui(teacher, spec_list[0], preset, corpus_choice, upload, pasted, **data, **knobs)
    except DistillError as exc:
        gr.Warning(str(exc))
        yield error_markdown(str(exc)), gr.skip(), gr.skip(), *idle
        return

    out_dir = new_run_dir()
    view = SweepView(spec_list, config.steps, out_dir)
    user.stop.clear()
    user.running = True
    try:
        yield view.status_markdown(), view.figure(), view.table(), *running
        last_yield = time.monotonic()
        for event in student_sweep(config, spec_list, out_dir, user.stop):
            view.add(event)
            view.stop_requested = user.stop.is_set()
            now = time.monotonic()
            if event["kind"] == "row":
                last_yield = now
                yield view.status_markdown(), view.figure(), view.table(), *running
            elif event["kind"] != "step" or now - last_yield >= STATUS_INTERVAL_S:
                last_yield = now
                yield view.status_markdown(), gr.skip(), gr.skip(), *running
    except DistillError as exc:
        gr.Warning(str(exc))
        view.fail(str(exc))
    except Exception as exc:  # e.g. out of memory: one line, and the app stays up
        gr.Warning(one_line(exc))
        view.fail(one_line(exc))
    finally:
        user.running = False
    view.ended = True
    view.stop_requested = user.stop.is_set()
    if not view.rows:
        shutil.rmtree(out_dir, ignore_errors=True)  # failed or stopped before the first student: nothing to keep
    yield view.status_markdown(), view.figure(), view.table(), *idle


def load_size_rows(path: str | None) -> tuple[Any, Any, Any]:
    """Plot a students.json written by an earlier sweep (api_name `size_plot`). Returns progress markdown,
    figure, table rows."""
    try:
        if not path:
            raise DistillError("no file: choose a students.json written by Compare sizes")
        hosting.check_readable(path, "sweep file")
        try:
            rows = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DistillError(f"{Path(path).name} is not a readable JSON file: {first_line(exc)}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "spec" in r for r in rows):
            raise DistillError(f"{Path(path).name} must hold a list of rows with a `spec` each, "
                               "like the students.json that Compare sizes writes")
    except DistillError as exc:
        gr.Warning(str(exc))
        return error_markdown(str(exc)), gr.skip(), gr.skip()
    note = f"Loaded {len(rows)} student{'s' if len(rows) != 1 else ''} from `{Path(path).name}`."
    return "\n\n".join([note, "\n".join(map(row_line, rows))]), visuals.size_quality_figure(rows), size_table(rows)


def pair_markdown(teacher: str, student: str) -> str:
    return f"Teacher `{teacher or '—'}` → student `{student or '—'}` (change them in the **Setup** tab)."


def corpus_visibility(choice: str) -> tuple[Any, Any, Any, Any]:
    """Visibility of the upload, the pasted text, the hub dataset fields and the text column picker."""
    return (gr.update(visible=choice == CORPUS_UPLOAD), gr.update(visible=choice == CORPUS_PASTE),
            gr.update(visible=choice == CORPUS_HUB), gr.update(visible=choice in (CORPUS_UPLOAD, CORPUS_HUB)))


def augmenter_label(name: str) -> str:
    """`name: what it does` for the augmenter picker (the description without its parenthesised credits)."""
    spec = augmentation.AUGMENTERS[name]
    short, depth = spec.description, 0
    if short.endswith(")"):  # drop the trailing "(nlpaug ...)" credit
        for i in range(len(short) - 1, 0, -1):
            depth += {")": 1, "(": -1}.get(short[i], 0)
            if depth == 0:
                short = short[:i].rstrip()
                break
    return f"{name}: {short}" + ("" if spec.offline else " (needs the hub)")


_TOKENIZERS: dict[str, Any] = {}


def teacher_tokenizer(teacher_spec: str) -> Any:
    """The teacher's tokenizer (no model loaded), kept per spec."""
    spec = (teacher_spec or "").strip()
    tokenizer = _TOKENIZERS.get(spec)
    if tokenizer is None:  # a local, not a second lookup: another user's request may clear the dict meanwhile
        tokenizer = load_tokenizer(resolve_model(spec))
        _TOKENIZERS.clear()
        _TOKENIZERS[spec] = tokenizer
    return tokenizer


def corpus_file_markdown(path: str, texts: list[str], info: dict[str, Any], stats: dict[str, Any] | None,
                         seq_len: int) -> str:
    name = Path(path).name
    if info["format"] == "text":
        read = f"**{name}**: text, {info['documents']:,} documents (paragraphs)"
    else:
        read = (f"**{name}**: {info['format'].upper()}, column `{info['column']}` of {len(info['columns'])} text "
                f"column{'s' if len(info['columns']) != 1 else ''}, {info['rows']:,} rows"
                + (f" ({info['empty_rows']:,} empty)" if info["empty_rows"] else "")
                + f" → {info['documents']:,} documents")
    read += f", {info['characters']:,} characters."
    if stats is None:
        return read
    counts = (f"{stats['tokens']:,} tokens with the teacher's tokenizer = {stats['blocks']:,} blocks of {seq_len} "
              f"({stats['train_blocks']:,} for training, {stats['val_blocks']:,} held out).")
    if not stats["enough"]:
        counts += " **Too short for a session:** it needs at least two blocks."
    return f"{read}  \n{counts}"


def inspect_corpus_file(path: str | None, column: str | None, teacher_spec: str, seq_len: Any) -> tuple[Any, str]:
    """An uploaded corpus file: its text columns for the column picker, and what a session would read from it
    (documents; tokens and blocks with the teacher's tokenizer), or the reason it cannot be read."""
    if not path:  # e.g. a column typed for a hub dataset: nothing to inspect, keep it
        return gr.skip(), ""
    try:
        columns = corpora.text_columns(path)
    except DistillError as exc:
        return gr.update(choices=[], value=None), error_markdown(str(exc))
    column = column if column in columns else None
    picker = gr.update(choices=columns, value=column)
    try:
        texts, info = corpora.read_corpus_file(path, column)
    except DistillError as exc:
        return picker, error_markdown(str(exc))
    if info["format"] != "text":
        picker = gr.update(choices=columns, value=info["column"])
    try:
        length = as_int(seq_len, "sequence length")
        stats = corpora.corpus_stats(teacher_tokenizer(teacher_spec), texts, length)
    except Exception as exc:  # no tokenizer (e.g. a bad teacher spec): the counts without tokens
        return picker, f"{corpus_file_markdown(path, texts, info, None, 0)}  \n*No token counts: {one_line(exc)}*"
    return picker, corpus_file_markdown(path, texts, info, stats, length)


def preview_source_texts(config: DistillConfig, rows: int) -> tuple[list[str], str]:
    """The first training texts of the config's corpus source, and a phrase naming them. For the
    teacher-generated corpus: the cached corpus if it has been generated, else the prompts."""
    if config.corpus_text.strip():
        return split_documents(config.corpus_text), "the pasted text"
    if config.hub_dataset.strip():
        texts, info = corpora.load_hub_dataset(config.hub_dataset, config.hub_config or None, config.hub_split,
                                               config.corpus_column or None, min(config.hub_max_rows, rows))
        return texts, f"Hugging Face dataset `{config.hub_dataset}`, column `{info['column']}`"
    if config.corpus != "teacher-generated":
        texts, _ = corpora.read_corpus_file(config.corpus, config.corpus_column or None)
        return texts, f"`{Path(config.corpus).name}`"
    prompts = read_prompts(config.prompts_file)
    generated = cached_corpus(resolve_model(config.teacher), prompts, config.generation_tokens, config.seed)
    if generated is not None:
        return generated, "the teacher-generated corpus"
    return prompts, ("the prompts the teacher will continue (its corpus is not generated yet: a session writes it "
                     "once, then it is cached)")


def clip_words(text: str, words: int = PREVIEW_WORDS) -> str:
    parts = text.split()
    return text.strip() if len(parts) <= words else " ".join(parts[:words])


def word_diff_html(original: str, augmented: str) -> tuple[str, str, int]:
    """Both texts as HTML with the words that differ marked (struck out in the original, highlighted in
    the augmented text), and how many words changed."""
    old, new = original.split(), augmented.split()
    left: list[str] = []
    right: list[str] = []
    changed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        a, b = html.escape(" ".join(old[i1:i2])), html.escape(" ".join(new[j1:j2]))
        if tag == "equal":
            left.append(a)
            right.append(b)
            continue
        changed += max(i2 - i1, j2 - j1)
        if a:
            left.append(f'<span style="background:#fecaca;color:#111;text-decoration:line-through">{a}</span>')
        if b:
            right.append(f'<mark style="background:#fde68a;color:#111">{b}</mark>')
    return " ".join(left), " ".join(right), changed


PREVIEW_STYLE = ("border-collapse:collapse;width:100%;font-size:0.9em;", "border:1px solid #d1d5db;padding:6px 8px;"
                 "vertical-align:top;text-align:left")


def preview_html(rows: list[dict[str, Any]]) -> str:
    """The augmentation preview as an HTML table: method | original | augmented | note."""
    table, cell = PREVIEW_STYLE
    head = "".join(f'<th style="{cell}">{name}</th>' for name in ("method", "original", "augmented", "note"))
    body: list[str] = []
    spans: dict[str, int] = {}
    for row in rows:
        spans[row["method"]] = spans.get(row["method"], 0) + 1
    shown: set[str] = set()
    for row in rows:
        method = row["method"]
        cells = []
        if method not in shown:
            shown.add(method)
            family = augmentation.AUGMENTERS[method].family
            cells.append(f'<td rowspan="{spans[method]}" style="{cell}" data-method="{method}"><b>{method}</b><br>'
                         f'<small>{html.escape(family)}</small></td>')
        if row["error"]:
            cells += [f'<td style="{cell}">{html.escape(row["original"])}</td>', f'<td style="{cell}">—</td>',
                      f'<td style="{cell}"><b>failed:</b> {html.escape(row["error"])}</td>']
        else:
            left, right, changed = word_diff_html(row["original"], row["augmented"])
            words = len(row["original"].split())
            note = (f"{changed} of {words} words changed" if changed
                    else "unchanged (too short, or no word this method can change)")
            cells += [f'<td style="{cell}">{left}</td>', f'<td style="{cell}">{right}</td>',
                      f'<td style="{cell}">{note}</td>']
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="augment-preview" style="{table}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def preview_augmentation(teacher: str, preset: str | None, seed: Any, corpus_choice: str, upload: str | None,
                         pasted: str | None, corpus_column: str | None, hub_dataset: str | None,
                         hub_config: str | None, hub_split: str | None, hub_max_rows: Any, augment: Any,
                         augment_strength: Any, augment_copies: Any = None) -> tuple[str, str]:
    """Each ticked augmenter applied to the first few training texts of the chosen corpus source (api_name
    `augment_preview`), before any session. Returns a note (markdown) and the table (HTML: method, original,
    augmented with the changed words marked, note); a method that fails shows its message in its row."""
    methods = list(augment or [])
    if not methods:
        return "Tick at least one augmenter, then press **Preview augmentation**.", ""
    try:
        data = data_overrides(corpus_choice, upload, pasted, corpus_column, hub_dataset, hub_config, hub_split,
                              hub_max_rows, methods, augment_strength, augment_copies)
        config = preset_config(preset).with_overrides({"teacher": teacher or "", "seed": seed, **data})
        texts, where = preview_source_texts(config, PREVIEW_TEXTS)
        sample = [clip_words(t) for t in texts if t.strip()][:PREVIEW_TEXTS]
        loaded = load_teacher(config.teacher) if "teacher_substitute" in config.augment_methods else None
        rows = augmentation.preview(sample, config.augment_methods, config.augment_strength, config.seed,
                                    teacher=loaded, n=PREVIEW_TEXTS, translation_models=config.translation_models)
    except DistillError as exc:
        return error_markdown(str(exc)), ""
    except Exception as exc:  # e.g. out of memory loading the teacher: one line, and the app stays up
        return error_markdown(one_line(exc)), ""
    failed = sorted({row["method"] for row in rows if row["error"]})
    note = (f"**Preview:** {len(config.augment_methods)} method{'s' if len(config.augment_methods) != 1 else ''} "
            f"at strength {config.augment_strength:g} (seed {config.seed}) on the first {len(sample)} texts of "
            f"{where}, each cut to its first {PREVIEW_WORDS} words. A session augments its training text the same "
            f"way, {config.augment_copies} cop{'y' if config.augment_copies == 1 else 'ies'} per method; held-out "
            "text is never augmented.")
    if failed:
        note += f"  \n**Failed:** {', '.join(failed)} (see its row); a session with it would stop with that message."
    return note, preview_html(rows)


# ---------------------------------------------------------------------------------------
# Which models the inspection tabs compare
# ---------------------------------------------------------------------------------------
BEFORE = "student (before)"
AFTER = "student (after)"
NO_RUN_NOTE = ("No distillation session has run in this browser session yet: showing the teacher and the untrained "
               "student only. The trained student, **student (after)**, appears here once a session in **Distill** "
               "has finished.")

_BEFORE_LOCK = threading.Lock()
_BEFORE_CACHE: dict[tuple[str, str, int], LoadedModel] = {}  # one untrained student, shared by all users (read-only)


def untrained_loaded(teacher_spec: str, student_spec: str, seed: int | None = None) -> LoadedModel:
    """A freshly derived (or loaded) student for the pair, as a session starts from; cached for the last one."""
    seed = quickstart_config().seed if seed is None else int(seed)
    key = (teacher_spec.strip(), student_spec.strip(), seed)
    with _BEFORE_LOCK:
        if key not in _BEFORE_CACHE:
            teacher = load_teacher(teacher_spec)
            student = load_student(student_spec, teacher, seed=seed)
            student.model.eval()
            _BEFORE_CACHE.clear()
            _BEFORE_CACHE[key] = student
        return _BEFORE_CACHE[key]


def untrained_student(teacher_spec: str, student_spec: str) -> Any:
    """The untrained student's model for the pair (see untrained_loaded)."""
    return untrained_loaded(teacher_spec, student_spec).model


def run_summary(out_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's summary.json, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_config(out_dir: str | Path) -> DistillConfig | None:
    try:
        return DistillConfig.from_yaml(Path(out_dir) / "config.yaml")
    except (OSError, DistillError, ValueError, TypeError):
        return None


def initial_student_spec(summary: dict[str, Any] | None, student_spec: str) -> str:
    """The spec that rebuilds the student a session started from (summary.json's `student_spec` and
    `student_layers_kept`): a `layers:N` depth-rule spec as it is (the rule is fixed); another derived
    student (e.g. `layers:N:angular`, chosen on the session's corpus) as its kept teacher layers, an explicit
    `layers:i,j,k`, so that it comes back the same; else (a fresh or a saved model, or a single kept
    layer, which has no explicit spec) the session's own spec."""
    from distill_core.checkpoints import parse_derived_spec

    summary = summary or {}
    spec = summary.get("student_spec") or student_spec
    kept = summary.get("student_layers_kept")
    try:
        kind, args = parse_derived_spec(spec)
    except DistillError:
        kind, args = "", {}
    if kind == "layers" and args.get("rule") == "depth":
        return spec
    if isinstance(kept, list) and len(kept) >= 2 and all(isinstance(i, int) for i in kept):
        return "layers:" + ",".join(str(i) for i in kept)
    return spec


class ModelSet:
    """The teacher, the untrained student and (after a session of the same pair) the trained one, with
    what the views need to know about them: the run, its config and layer map, and a note in words."""

    def __init__(self, user: UserSession, teacher_spec: str, student_spec: str) -> None:
        teacher_spec, student_spec = (teacher_spec or "").strip(), (student_spec or "").strip()
        self.teacher = load_teacher(teacher_spec)
        self.run: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None
        self.after: Any = None
        config = None
        last = user.last_run
        if last is None:
            self.note = NO_RUN_NOTE
        elif (last["teacher"].strip(), last["student"].strip()) != (teacher_spec, student_spec):
            self.note = (f"The last session distilled `{last['teacher']}` → `{last['student']}`, not the pair picked in "
                         "Setup; pick that pair to see the trained student.")
        else:
            self.run = last
            self.summary = run_summary(last["out_dir"])
            config = run_config(last["out_dir"])
            self.after = user.trained_student()
        self.before_spec = initial_student_spec(self.summary, student_spec) if self.run else student_spec
        seed = config.seed if config is not None else quickstart_config().seed
        self.before = untrained_loaded(teacher_spec, self.before_spec, seed)
        if self.run is not None:
            self.note = (f"Student (after) is the last session's student from `{shown_path(self.run['out_dir'])}`; "
                         f"student (before) is the student it started from (`{self.before_spec}`).")
        self.config = (config if config is not None
                       else quickstart_config().with_overrides({"teacher": teacher_spec, "student": student_spec}))

    @property
    def students(self) -> dict[str, Any]:
        students = {BEFORE: self.before.model}
        if self.after is not None:
            students[AFTER] = self.after
        return students

    @property
    def out_dir(self) -> Path | None:
        return Path(self.run["out_dir"]) if self.run else None

    def key(self) -> tuple:
        """What identifies these models (for caching a probe of them)."""
        return (self.teacher.spec, self.before_spec, str(self.out_dir))

    def layer_pairs(self) -> list[tuple[int, int]]:
        """The run's layer map, or the pair's `auto` map (the compatibility report's) before any run."""
        saved = (self.summary or {}).get("layer_map")
        if saved:
            return [(int(s), int(t)) for s, t in saved]
        return resolve_layer_map("auto", self.before.model.config.num_hidden_layers,
                                 self.teacher.model.config.num_hidden_layers, self.before.layers_kept)


def view_error(exc: BaseException) -> str:
    """An engine error (its message) or an unexpected one (one line), as a warning and error markdown."""
    message = str(exc) if isinstance(exc, DistillError) else one_line(exc)
    gr.Warning(message)
    return error_markdown(message)


# ---------------------------------------------------------------------------------------
# Dark knowledge
# ---------------------------------------------------------------------------------------
def as_int(value: Any, name: str) -> int:
    """A UI number that must be an integer, or a DistillError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DistillError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise DistillError(f"{name} must be an integer, got {value!r}")
    return int(number)


def as_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DistillError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DistillError(f"{name} must be a finite number, got {value!r}")
    return number


def tokens_html(tokens: list[str], position: int) -> str:
    """The probe text as numbered token chips; the probed position is highlighted."""
    chips = []
    for i, token in enumerate(tokens):
        picked = i == position
        style = ("display:inline-flex;flex-direction:column;align-items:center;margin:2px;padding:2px 6px;"
                 "border-radius:6px;border:1px solid " + ("#e4572e;background:#fde3dc" if picked else "#ccc;background:#f7f7f7"))
        chips.append(f'<span style="{style}"><code style="font-size:14px;background:none">'
                     f"{html.escape(visuals.display_token(token))}</code>"
                     f'<span style="font-size:11px;color:#666">{i}</span></span>')
    return ('<div style="line-height:1.2"><div style="font-size:13px;color:#555;margin-bottom:4px">'
            "Tokens (position below each; the highlighted one is probed):</div>" + "".join(chips) + "</div>")


WRONG_TOP = 5
"""The stats table counts how many of the teacher's top WRONG_TOP wrong answers a student also has in its top WRONG_TOP."""


def stats_markdown(result: dict[str, Any]) -> str:
    actual = result["actual"]
    shown = f"`{visuals.display_token(actual)}`" if actual is not None else "— (end of text)"
    ranks = visuals.wrong_answer_ranks(result["candidates"], result["probs"], actual, top=WRONG_TOP)
    top = len(ranks["labels"])
    lines = [f"| model | entropy (nats) | rank of the actual next token {shown} | teacher's top-{top} wrong answers "
             f"in its own top {top} | mean KL to teacher over the text (nats) |",
             "|---|---:|---:|---:|---:|"]
    for name, entropy in result["entropy"].items():
        rank = result["actual_rank"][name] if result["actual_rank"] else "—"
        shared = sum(r <= top for r in ranks["ranks"][name])
        mean_kl = fmt_number(result["mean_kl"][name]) if name in result["mean_kl"] else "—"
        lines.append(f"| {name} | {entropy:.3f} | {rank} | {shared}/{top} | {mean_kl} |")
    return "\n".join(lines)


def probe_dark_knowledge(text: str, position: Any, temperature: Any, top_k: Any, teacher_spec: str,
                         student_spec: str, user: UserSession | None = None):
    """Teacher vs students at one position of `text` (api_name `dark_knowledge`). Returns tokens HTML,
    note markdown, next-token bars, stats table markdown, KL strip, wrong-answer ranking."""
    user = user if user is not None else UserSession()
    try:
        position, top_k = as_int(position, "position"), as_int(top_k, "top-k")
        temperature = as_float(temperature, "temperature")
        models = ModelSet(user, teacher_spec, student_spec)
        result = probes.dark_knowledge(models.teacher, models.students, text, position, temperature, top_k)
    except Exception as exc:  # DistillError: its message; anything else (e.g. out of memory): one line
        return "", view_error(exc), None, "", None, None

    context = visuals.display_token(result["context"][-40:], max_len=40)
    title = f"Next token after “{context}” at T={temperature:g}"
    bars = visuals.next_token_bars(result["candidates"], result["probs"], result["actual"], title)
    strip = visuals.kl_strip(result["tokens"], result["kl"], f"KL(teacher ‖ student) per position at T={temperature:g}")
    wrong = visuals.wrong_answer_ranking(result["candidates"], result["probs"], result["actual"], top=10,
                                         title="The teacher's ranking of the wrong answers, next to the students'")
    note = (f"{models.note}  \nPosition {result['position']} of {len(result['tokens'])} tokens; ★ marks the actual "
            "next token. Wrong answers are ranked among the candidates shown (every model's top-k).")
    return tokens_html(result["tokens"], result["position"]), note, bars, stats_markdown(result), strip, wrong


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------
ATTENTION_TEXT = "For breakfast I ate an apple, then I went to school."
MAX_ATTENTION_TOKENS = 96
"""Longer texts make unreadable maps (and heavy figures): the Attention tab asks for a shorter one."""
GENERATE_PROMPT = "The baker opened the oven and"


def optional_int(value: Any, name: str) -> int | None:
    """An optional UI integer: empty or -1 means None (the default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = as_int(value, name)
    return None if number == -1 else number


def pick_index(value: int | None, default: int, count: int, what: str) -> int:
    index = default if value is None else value
    if not 0 <= index < count:
        raise DistillError(f"{what} {index} does not exist: it has {what.split()[-1]}s 0..{count - 1}")
    return index


def attention_result(models: ModelSet, text: str, user: UserSession) -> dict[str, Any]:
    """The attention probe of every layer and head of the models on `text`, cached per user (changing
    a layer or a head does not rerun the models)."""
    key = (text, *models.key())
    if user.attention is None or user.attention[0] != key:
        n = len(probes.encode(models.teacher.tokenizer, text)[0])
        if n > MAX_ATTENTION_TOKENS:
            raise DistillError(f"the text has {n} tokens; the attention view shows at most {MAX_ATTENTION_TOKENS}: "
                               "shorten it")
        user.attention = (key, probes.attention_probe(models.teacher, models.students, text))
    return user.attention[1]


def show_attention(text: str, teacher_layer: Any, teacher_head: Any, student_layer: Any, student_head: Any,
                   average_heads: bool, teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """Attention maps of one teacher layer/head and one student layer/head side by side (api_name
    `attention`); a layer of -1 (or empty): the layer map's last pair, a head of -1: head 0. Returns note
    markdown (naming the layers and heads shown), the side-by-side heatmaps, the difference map and the
    per-head entropy overview."""
    user = user if user is not None else UserSession()
    try:
        layers_heads = [optional_int(v, n) for v, n in ((teacher_layer, "teacher layer"), (teacher_head, "teacher head"),
                                                        (student_layer, "student layer"), (student_head, "student head"))]
        models = ModelSet(user, teacher_spec, student_spec)
        pairs = models.layer_pairs()
        result = attention_result(models, text, user)
        t_maps, s_maps = result["maps"]["teacher"], result["maps"][BEFORE]  # (layers, heads, t, t)
        t_layer = pick_index(layers_heads[0], pairs[-1][1], t_maps.shape[0], "the teacher layer")
        t_head = pick_index(layers_heads[1], 0, t_maps.shape[1], "the teacher head")
        s_default = next((s for s, t in reversed(pairs) if t == t_layer), pairs[-1][0])
        s_layer = pick_index(layers_heads[2], s_default, s_maps.shape[0], "the student layer")
        s_head = pick_index(layers_heads[3], 0, s_maps.shape[1], "the student head")
    except Exception as exc:
        return view_error(exc), None, None, None

    def pick(maps: Any, layer: int, head: int) -> Any:
        return maps[layer].mean(0) if average_heads else maps[layer, head]

    head_text = lambda head: "heads averaged" if average_heads else f"head {head}"  # noqa: E731
    shown = {"teacher": pick(t_maps, t_layer, t_head)}
    titles = [f"teacher · layer {t_layer} · {head_text(t_head)}"]
    for name in models.students:
        shown[name] = pick(result["maps"][name], s_layer, s_head)
        titles.append(f"{name} · layer {s_layer} · {head_text(s_head)}")
    tokens = result["tokens"]
    heatmaps = visuals.attention_heatmaps(tokens, shown, titles)
    student = AFTER if AFTER in shown else BEFORE
    difference = visuals.attention_difference(tokens, shown[student], shown["teacher"], (student, "teacher"),
                                              title="Where the student attends more (red) or less (blue)")
    entropy = visuals.head_entropy_grid(
        result["entropy"], {name: (t_layer if name == "teacher" else s_layer,
                                   None if average_heads else (t_head if name == "teacher" else s_head))
                            for name in result["entropy"]},
        title="Every layer and head: how focused is its attention?")

    visible = ~visuals.causal_mask(len(tokens))
    gaps = ", ".join(f"{name} {abs(shown[name] - shown['teacher'])[visible].mean():.3f}" for name in models.students)
    mapped = [f"{s}:{t}" for s, t in pairs if (s, t) == (s_layer, t_layer)]
    heads = "heads averaged" if average_heads else f"teacher head {t_head}, student head {s_head}"
    lines = [models.note,
             f"**Teacher layer {t_layer}, student layer {s_layer}**"
             + (f" (the mapped pair `{mapped[0]}`, student:teacher)" if mapped else " (not a mapped pair)")
             + f", {heads}; {len(tokens)} tokens. Mean absolute difference from the teacher's map over the "
               f"visible cells: {gaps}."]
    return "  \n".join(lines), heatmaps, difference, entropy


# ---------------------------------------------------------------------------------------
# Similarity
# ---------------------------------------------------------------------------------------
def similarity_text() -> str:
    """The Similarity tab's default probe text: the first paragraph of assets/texts/sample_user_corpus.txt
    (not the held-out evaluation text)."""
    text = (ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.split()) > 20]
    return paragraphs[0] if paragraphs else text.strip()[:400]


def load_projection(out_dir: Path, pairs: list[tuple[int, int]], student: Any, teacher: Any) -> tuple[Any, str]:
    """The run's FitNets projection (fitnets_projection.safetensors), or None and why not."""
    path = out_dir / "fitnets_projection.safetensors"
    if not path.is_file():
        return None, "The last session trained no FitNets projection (hidden-state weight 0), so there is no cosine after it."
    from safetensors.torch import load_file

    from distill_core.losses import FitNetsProjection

    projection = FitNetsProjection(len(pairs), student.config.hidden_size, teacher.config.hidden_size)
    try:
        projection.load_state_dict(load_file(str(path)))
    except (RuntimeError, KeyError) as exc:
        return None, f"`{path.name}` does not match the run's {len(pairs)} layer pairs ({first_line(exc)})."
    projection.eval()
    return projection, f"Cosine after the run's FitNets projection (`{path.name}`)."


def show_similarity(text: str, teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """Hidden-state similarity (api_name `similarity`): linear CKA of every teacher layer against every
    student layer (before, after), the mapped pairs' CKA and cosine after the FitNets projection, and the
    mapped pairs' CKA over the last session's steps. Returns note markdown and those three figures."""
    user = user if user is not None else UserSession()
    try:
        models = ModelSet(user, teacher_spec, student_spec)
        pairs = models.layer_pairs()
        projection, projection_note = None, ""
        if models.after is not None:
            projection, projection_note = load_projection(models.out_dir, pairs, models.after, models.teacher.model)
        result = probes.similarity_probe(models.teacher, models.students, text, pairs, projection)
    except Exception as exc:
        return view_error(exc), None, None, None

    heatmaps = visuals.cka_heatmaps(result["cka"], pairs, title=f"Linear CKA, every teacher layer × every student "
                                                                f"layer ({result['n_tokens']} tokens)")
    cosine = {AFTER: result["pair_cosine"][AFTER]} if AFTER in result["pair_cosine"] else None
    bars = visuals.pair_similarity_bars(pairs, result["pair_cka"], cosine, title="The mapped layer pairs")
    steps, values, step_pairs = visuals.snapshots_to_series((models.run or {}).get("probes") or [])
    over_steps = visuals.pair_cka_over_steps(steps, values, step_pairs or pairs,
                                             title="CKA of the mapped pairs during the session (first held-out block)")
    lines = [models.note,
             f"Layer pairs (student:teacher, {'the run' if models.summary else 'the pair'}'s layer map): "
             f"{pairs_text(pairs)}. The first token is left out ({result['n_tokens']} tokens measured)."]
    if projection_note:
        lines.append(projection_note)
    if models.run is not None and not steps:
        lines.append("The session's snapshots carry no CKA (the teacher cache kept the teacher unloaded).")
    return "  \n".join(lines), heatmaps, bars, over_steps


# ---------------------------------------------------------------------------------------
# Evaluate and generate
# ---------------------------------------------------------------------------------------
def evaluation_blocks(config: DistillConfig, tokenizer: Any) -> Any:
    """The held-out blocks a session evaluates on: config eval_text, eval_max_tokens and seq_len."""
    from distill_core.data import pack, read_text_file, split_documents

    text = read_text_file(config.eval_text, "evaluation text")
    return pack(tokenizer, split_documents(text), config.seq_len, max_tokens=config.eval_max_tokens, pad_last=True)


def evaluation_markdown(rows: dict[str, dict[str, Any]], sentence: str, config: DistillConfig, tokens: int) -> str:
    names = list(rows)
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    metrics = [
        ("held-out perplexity ↓", lambda r: fmt_number(r["ppl"], 2)),
        ("top-1 agreement with the teacher ↑", lambda r: pct(r["top1_agreement"])),
        ("KL(teacher ‖ model), nats/token ↓", lambda r: fmt_number(r["kl_to_teacher"])),
        ("parameters", lambda r: fmt_params(r["params"])),
        ("size on disk (fp32 weights)", lambda r: f"{r['size_bytes'] / 1e6:,.1f} MB"),
        ("generation speed (greedy, batch 1) ↑", lambda r: f"{fmt_number(r.get('tokens_per_s'), 1)} tokens/s"),
    ]
    lines = [f"**{sentence}**", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(rows[name]) for name in names) + " |" for label, cell in metrics]
    lines += ["", f"Measured just now on {tokens:,} tokens of `{shown_path(config.eval_text)}` (blocks of "
                  f"{config.seq_len} tokens; never trained on), speed from 32 greedy tokens, best of 2."]
    return "\n".join(lines)


def evaluate_students(teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """Teacher, student before and student after on the held-out text (api_name `evaluate`): perplexity,
    top-1 agreement, KL to the teacher, parameters, size, tokens/s, and the trade in one sentence.
    Returns note markdown, the table and sentence as markdown, and the measured rows (JSON)."""
    from distill_core.evaluate import evaluate_models, trade_sentence

    user = user if user is not None else UserSession()
    try:
        models = ModelSet(user, teacher_spec, student_spec)
        blocks = evaluation_blocks(models.config, models.teacher.tokenizer)
        rows = evaluate_models(models.teacher.model, models.students, models.teacher.tokenizer, blocks, speed=True)
    except Exception as exc:
        return view_error(exc), "", None
    student = AFTER if AFTER in rows else BEFORE
    sentence = trade_sentence(rows, student)
    return models.note, evaluation_markdown(rows, sentence, models.config, blocks.n_tokens), rows


def generation_html(prompt: str, outputs: dict[str, dict[str, dict[str, Any]]], seed: int) -> str:
    """One card per model: the greedy and the sampled continuation, each with its speed."""
    cards = []
    for name, runs in outputs.items():
        color = visuals.model_color(name)
        title_color = "#666" if color == visuals.STUDENT_BEFORE else color  # the light grey is hard to read as text
        parts = [f'<div style="font-weight:600;color:{title_color};font-size:15px;margin-bottom:6px">'
                 f'{html.escape(name)}</div>']
        for mode, label in (("greedy", "greedy"), ("sampled", f"sampled (seed {seed})")):
            out = runs[mode]
            parts.append(
                f'<div style="font-size:12px;color:#666;margin-top:8px">{label} · {out["new_tokens"]} tokens · '
                f'{fmt_number(out["tokens_per_s"], 1)} tokens/s</div>'
                f'<div style="white-space:pre-wrap;font-size:14px;line-height:1.45">'
                f'<span style="color:#888">{html.escape(prompt)}</span>{html.escape(out["text"])}</div>')
        cards.append(f'<div style="flex:1 1 0;min-width:240px;border:1px solid #ddd;border-top:4px solid {color};'
                     f'border-radius:8px;padding:10px 12px;background:#fff">{"".join(parts)}</div>')
    return f'<div style="display:flex;gap:12px;flex-wrap:wrap">{"".join(cards)}</div>'


def generate_side_by_side(prompt: str, new_tokens: Any, seed: Any, teacher_spec: str, student_spec: str,
                          user: UserSession | None = None):
    """One prompt, continued by the teacher, the student before and the student after, greedy and sampled
    with the same seed (api_name `generate`). Returns note markdown, the continuations as HTML cards, and
    the raw results (JSON: model -> greedy/sampled -> text, new_tokens, tokens_per_s)."""
    from distill_core.evaluate import generate

    user = user if user is not None else UserSession()
    try:
        new_tokens, seed = as_int(new_tokens, "new tokens"), as_int(seed, "seed")
        check_text(prompt or "", "prompt")
        models = ModelSet(user, teacher_spec, student_spec)
        tokenizer = models.teacher.tokenizer
        outputs = {}
        for name, model in {"teacher": models.teacher.model, **models.students}.items():
            outputs[name] = {"greedy": generate(model, tokenizer, prompt, new_tokens, sample=False),
                             "sampled": generate(model, tokenizer, prompt, new_tokens, sample=True, seed=seed)}
    except Exception as exc:
        return view_error(exc), "", None
    note = (f"{models.note}  \nSampling: temperature 0.8, top-p 0.95, the same seed for every model. "
            "Speeds include Hugging Face `generate` overhead, which dominates for small models.")
    return note, generation_html(prompt, outputs, seed), outputs


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------
def exports_root() -> Path:
    """Where exports are written: inside Gradio's file cache, so that it serves them without a copy."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "distill-studio-exports"


def export_run(user: UserSession | None = None):
    """The last session's student as a zip (save_pretrained + tokenizer) and the YAML config that reruns it
    through the CLI (api_name `export`). Returns note markdown, the zip's path, the config's path."""
    from distill_core.export import export_config, export_student, safe_filename

    user = user if user is not None else UserSession()
    try:
        if user.last_run is None:
            raise DistillError("no session has finished in this browser session yet: run one in **Distill** first, "
                               "then export its student")
        run = Path(user.last_run["out_dir"])
        dest = exports_root() / secrets.token_hex(8)
        zip_path = export_student(run, dest, name=f"{run.name}-student")
        config_path = dest / f"{safe_filename(run.name + '-config', 'config')}.yaml"
        shutil.copyfile(export_config(run), config_path)
    except Exception as exc:
        return view_error(exc), None, None
    if user.export_dir is not None and user.export_dir != dest:
        shutil.rmtree(user.export_dir, ignore_errors=True)  # one export per user on disk
    user.export_dir = dest
    note = (f"Exported the student of `{shown_path(run)}` ({zip_path.stat().st_size / 1e6:,.1f} MB). Unzip it and load "
            f"the folder with `AutoModelForCausalLM.from_pretrained(\"{zip_path.stem}\")` (tokenizer included); "
            f"`python -m distill_core distill --config {config_path.name} --out runs/again` reruns the session.")
    return note, str(zip_path), str(config_path)


# ---------------------------------------------------------------------------------------
# hosting: the starting pair, public mode's limits
# ---------------------------------------------------------------------------------------
def default_pair(defaults: DistillConfig) -> tuple[str, str]:
    """The Setup tab's starting teacher and student: the hub pair (SmolLM2-360M -> SmolLM2-135M) where the
    hub is there (hosting.use_hub_defaults: on Spaces, or without the bundled teacher but online), else
    the quickstart's offline pair."""
    return hosting.HUB_DEFAULT_PAIR if hosting.use_hub_defaults() else (defaults.teacher, defaults.student)


def cap(name: str) -> int | None:
    """A public-mode cap (hosting.PublicLimits) for a control's maximum; None outside public mode."""
    return getattr(hosting.public_limits(), name) if hosting.public_mode() else None


def public_note() -> str:
    """Public mode's limits in a few lines for the top of the page; '' outside public mode."""
    if not hosting.public_mode():
        return ""
    c = hosting.public_limits()
    return (f"**Public mode.** Models: the bundled `smollm2-135m`, Hugging Face model ids (up to "
            f"{c.model_params / 1e6:,.0f} M parameters) and students derived from the teacher; no local paths. "
            f"Sessions: at most {c.steps} steps, batch {c.batch_size}, sequences of {c.seq_len} tokens, "
            f"{c.eval_max_tokens} held-out tokens, {c.hub_max_rows:,} dataset rows, {c.augment_copies} augmented "
            f"copies, {c.sweep_students} students per size sweep. Files: uploads of at most {c.upload_mb} MiB. "
            f"Texts and prompts: at most {c.text_chars:,} characters, {c.new_tokens} new tokens.")


# ---------------------------------------------------------------------------------------
# layout and wiring
# ---------------------------------------------------------------------------------------
def build_app() -> gr.Blocks:
    defaults = quickstart_config()
    teacher_default, student_default = default_pair(defaults)
    help_text = field_help()
    private = {"api_visibility": "private"}
    gpu = hosting.spaces_gpu(SESSION_GPU_S)  # ZeroGPU on Spaces; the identity elsewhere

    with gr.Blocks(title="Distill Studio") as demo:
        user = gr.State(UserSession())
        gr.Markdown(
            "# Distill Studio\n"
            "Knowledge distillation of language models, live: a small **student** learns to copy a **teacher**'s "
            "next-token probabilities (its *soft targets*, Hinton et al. 2015). Pick a pair in **Setup**, train in "
            "**Distill**, then look inside: what the two predict (**Dark knowledge**), where they look "
            "(**Attention**), how alike their layers are (**Similarity**), and what the student kept of the teacher "
            "(**Evaluate**)."
        )
        gr.Markdown(public_note(), visible=hosting.public_mode(), elem_id="public-note")
        with gr.Tab("Setup", id="setup"):
            with gr.Row():
                teacher = gr.Dropdown(TEACHER_PRESETS, value=teacher_default, label="Teacher", allow_custom_value=True,
                                      info=help_text.get("teacher"), elem_id="teacher-spec")
                student = gr.Dropdown(STUDENT_PRESETS, value=student_default, label="Student", allow_custom_value=True,
                                      info=help_text.get("student"), elem_id="student-spec")
            with gr.Accordion("Learn: what is knowledge distillation?", open=False):
                gr.Markdown(LEARN_SETUP)
            gr.Markdown(SPEC_HELP)
            check_btn = gr.Button("Check compatibility", variant="primary")
            report_md = gr.Markdown(elem_id="compat-report")
            with gr.Accordion("Raw report (JSON)", open=False):
                report_json = gr.JSON(label="compatibility report")

        with gr.Tab("Distill", id="distill"):
            pair_md = gr.Markdown(pair_markdown(teacher_default, student_default), elem_id="pair-note")
            with gr.Accordion("Learn: what a session does, and what to look for", open=False):
                gr.Markdown(LEARN_DISTILL)
            knob: dict[str, Any] = {}  # DistillConfig field -> its component
            with gr.Row(equal_height=True):
                preset = gr.Dropdown(preset_names(), value=QUICKSTART.stem, label="Preset (assets/configs/)",
                                     scale=1, elem_id="preset")
                preset_md = gr.Markdown(preset_markdown(QUICKSTART.stem, preset_description(QUICKSTART.stem)),
                                        elem_id="preset-note")
            with gr.Row():
                with gr.Column(scale=3):
                    gr.Markdown("#### Training")
                    with gr.Row():
                        knob["steps"] = gr.Number(defaults.steps, label="Steps", info=help_text.get("steps"),
                                                  maximum=cap("steps"), elem_id="steps")
                        knob["batch_size"] = gr.Number(defaults.batch_size, label="Batch size",
                                                       info=help_text.get("batch_size"), maximum=cap("batch_size"),
                                                       elem_id="batch-size")
                        knob["seq_len"] = gr.Number(defaults.seq_len, label="Sequence length",
                                                    info=help_text.get("seq_len"), maximum=cap("seq_len"),
                                                    elem_id="seq-len")
                    with gr.Row():
                        knob["learning_rate"] = gr.Number(defaults.learning_rate, label="Learning rate",
                                                          info=help_text.get("learning_rate"), elem_id="learning-rate")
                        knob["warmup_steps"] = gr.Number(defaults.warmup_steps, label="Warm-up steps",
                                                         info=help_text.get("warmup_steps"), elem_id="warmup-steps")
                        knob["seed"] = gr.Number(defaults.seed, label="Seed", info=help_text.get("seed"),
                                                 elem_id="seed")
            with gr.Accordion("Data and augmentation", open=False, elem_id="data-augmentation"):
                with gr.Row():
                    with gr.Column():
                        corpus_choice = gr.Radio(CORPUS_CHOICES, value=CORPUS_GENERATED, label="Training corpus",
                                                 info="Teacher-generated: the teacher continues assets/prompts.txt "
                                                      "(sequence-level KD; generated once, then cached: the first "
                                                      "time takes minutes on CPU).", elem_id="corpus-choice")
                        upload = gr.File(label="Corpus file (.txt, .jsonl, .json, .csv, .parquet; UTF-8)",
                                         file_types=sorted(corpora.CORPUS_FORMATS), type="filepath",
                                         visible=False, elem_id="corpus-upload")
                        pasted = gr.Textbox(label="Training text", lines=8, max_lines=16, visible=False,
                                            placeholder="Paste text here; blank lines separate documents.",
                                            elem_id="corpus-paste")
                        with gr.Group(visible=False, elem_id="corpus-hub") as hub_group:
                            with gr.Row():
                                hub_dataset = gr.Textbox(label="Dataset id", placeholder="wikitext",
                                                         elem_id="hub-dataset")
                                hub_config = gr.Textbox(label="Config (subset)", placeholder="wikitext-2-raw-v1",
                                                        elem_id="hub-config")
                            with gr.Row():
                                hub_split = gr.Textbox(defaults.hub_split, label="Split", elem_id="hub-split")
                                hub_max_rows = gr.Number(defaults.hub_max_rows, label="Rows read", precision=0,
                                                         minimum=1, maximum=cap("hub_max_rows"),
                                                         info=help_text.get("hub_max_rows"),
                                                         elem_id="hub-max-rows")
                        corpus_column = gr.Dropdown([], value=None, label="Text column", allow_custom_value=True,
                                                    visible=False, info=help_text.get("corpus_column"),
                                                    elem_id="corpus-column")
                        corpus_md = gr.Markdown(elem_id="corpus-info")
                    with gr.Column():
                        augment_methods = gr.CheckboxGroup(
                            [(augmenter_label(name), name) for name in augmentation.AUGMENTERS],
                            value=defaults.augment_methods, label="Augmenters",
                            info="Each adds changed copies of the training text (never of the held-out text); "
                                 "the teacher labels them like any text.", elem_id="augment-methods")
                        with gr.Row():
                            augment_strength = gr.Slider(0.01, 1, value=defaults.augment_strength, step=0.01,
                                                         label="Strength", info=help_text.get("augment_strength"),
                                                         elem_id="augment-strength")
                            augment_copies = gr.Number(defaults.augment_copies, label="Copies per method",
                                                       precision=0, minimum=1, maximum=cap("augment_copies"),
                                                       info=help_text.get("augment_copies"),
                                                       elem_id="augment-copies")
                        augment_btn = gr.Button("Preview augmentation", elem_id="augment-preview-btn")
                augment_note = gr.Markdown(elem_id="augment-note")
                augment_table = gr.HTML(elem_id="augment-preview")
            with gr.Accordion("Techniques", open=True, elem_id="techniques"):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("#### Soft targets (Hinton et al. 2015)")
                        knob["temperature"] = gr.Slider(0.5, 10, value=defaults.temperature, step=0.1,
                                                        label="Temperature T", info=help_text.get("temperature"),
                                                        elem_id="temperature")
                        knob["kd_weight"] = gr.Slider(0, 1, value=defaults.kd_weight, step=0.05,
                                                      label="KD weight α (soft targets vs hard labels)",
                                                      info=help_text.get("kd_weight"), elem_id="kd-weight")
                        knob["divergence"] = gr.Dropdown(list(DIVERGENCES), value=defaults.divergence,
                                                         label="Divergence", info=help_text.get("divergence"),
                                                         elem_id="divergence")
                        knob["jsd_beta"] = gr.Slider(0.01, 0.99, value=defaults.jsd_beta, step=0.01,
                                                     label="JSD β (divergence jsd)", info=help_text.get("jsd_beta"),
                                                     elem_id="jsd-beta")
                        knob["skew_alpha"] = gr.Slider(0, 0.99, value=defaults.skew_alpha, step=0.01,
                                                       label="Skew α (divergence skew_kl)",
                                                       info=help_text.get("skew_alpha"), elem_id="skew-alpha")
                    with gr.Column():
                        gr.Markdown("#### Top-k dark knowledge")
                        knob["top_k"] = gr.Number(defaults.top_k, label="Top-k teacher tokens (0 = all)",
                                                  info=help_text.get("top_k"), elem_id="top-k")
                        knob["teacher_cache"] = gr.Checkbox(defaults.teacher_cache, label="Cache the teacher's top-k",
                                                            info=help_text.get("teacher_cache"),
                                                            elem_id="teacher-cache")
                        gr.Markdown("#### Attention transfer")
                        knob["attention_weight"] = gr.Number(defaults.attention_weight, label="Attention weight",
                                                             info=help_text.get("attention_weight"),
                                                             elem_id="attention-weight")
                        knob["attention_loss"] = gr.Dropdown(list(ATTENTION_LOSSES), value=defaults.attention_loss,
                                                             label="Attention loss",
                                                             info=help_text.get("attention_loss"),
                                                             elem_id="attention-loss")
                        gr.Markdown("#### Freezing")
                        knob["freeze_embeddings"] = gr.Checkbox(defaults.freeze_embeddings, label="Freeze embeddings",
                                                                info=help_text.get("freeze_embeddings"),
                                                                elem_id="freeze-embeddings")
                        knob["freeze_layers"] = gr.Number(defaults.freeze_layers, label="Frozen layers",
                                                          info=help_text.get("freeze_layers"), elem_id="freeze-layers")
                    with gr.Column():
                        gr.Markdown("#### FitNets hints (Romero et al. 2015)")
                        knob["hidden_weight"] = gr.Number(defaults.hidden_weight, label="Hidden-state weight",
                                                          info=help_text.get("hidden_weight"), elem_id="hidden-weight")
                        knob["hidden_loss"] = gr.Dropdown(list(HIDDEN_LOSSES), value=defaults.hidden_loss,
                                                          label="Hidden-state loss", info=help_text.get("hidden_loss"),
                                                          elem_id="hidden-loss")
                        gr.Markdown("#### Layer map (attention transfer, FitNets)")
                        knob["layer_map"] = gr.Dropdown(list(LAYER_MAP_SPECS), value=defaults.layer_map,
                                                        allow_custom_value=True, label="Layer map (or pairs s:t,…)",
                                                        info=help_text.get("layer_map"), elem_id="layer-map")
                        layer_map_md = gr.Markdown(layer_map_if_known(teacher_default, student_default,
                                                                      defaults.layer_map), elem_id="layer-map-pairs")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn")
            status_md = gr.Markdown("Press **Run** to start a session.", elem_id="run-status")
            loss_plot = gr.Plot(visuals.loss_curves([]), label="Loss curves", show_label=False, elem_id="loss-plot")
            probe_plot = gr.Plot(label="Probe snapshot", show_label=False, visible=False, elem_id="probe-plot")
            summary_md = gr.Markdown(elem_id="run-summary")
            with gr.Group(elem_id="export"):
                gr.Markdown("#### Export\nThe last session's student as a zip of its `save_pretrained` folder (with "
                            "the tokenizer), and the YAML config that reruns the session through the command line.",
                            padding=True)
                with gr.Row(equal_height=True):
                    export_btn = gr.Button("Export the student", elem_id="export-btn", scale=1)
                    export_zip = gr.File(label="Student (.zip)", interactive=False, elem_id="export-zip", scale=2)
                    export_yaml = gr.File(label="Config (.yaml)", interactive=False, elem_id="export-config", scale=2)
                export_md = gr.Markdown(elem_id="export-note", padding=True)

        with gr.Tab("Student size", id="sizes"):
            gr.Markdown(
                "How much does size cost? Each student below is distilled in turn with the **Distill** tab's recipe "
                "(preset, knobs and corpus) from the teacher picked in **Setup**, then evaluated on the held-out "
                "text and timed generating. With the quickstart recipe on a laptop CPU that is a few minutes per "
                "student. The plot fills in as each one finishes."
            )
            with gr.Accordion("Learn: reading the size/quality plot", open=False):
                gr.Markdown(LEARN_SIZES)
            with gr.Row(equal_height=True):
                sweep_specs = gr.Textbox(DEFAULT_SWEEP_SPECS, label="Student specs",
                                         info="Comma-, semicolon- or line-separated, e.g. layers:10, layers:0,5,9, "
                                              "fresh:layers=4,hidden=256,heads=4", scale=3, elem_id="sweep-specs")
                with gr.Column(scale=1, min_width=220):
                    sweep_btn = gr.Button("Compare sizes", variant="primary", elem_id="sweep-btn")
                    sweep_stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="sweep-stop-btn")
            sweep_md = gr.Markdown("Press **Compare sizes** to start.", elem_id="sweep-status")
            size_plot = gr.Plot(visuals.size_quality_figure([]), show_label=False, elem_id="size-plot")
            size_rows = gr.Dataframe(headers=SWEEP_TABLE_HEADERS, value=[], label="Students", interactive=False,
                                     wrap=True, elem_id="size-table")
            with gr.Accordion("Plot an earlier sweep (students.json)", open=False):
                sweep_file = gr.File(label="students.json from a run folder", file_types=[".json"], type="filepath",
                                     elem_id="sweep-file")

        with gr.Tab("Dark knowledge", id="dark"):
            gr.Markdown(
                "The teacher's probabilities for the *wrong* next tokens say which answers it finds similar: the "
                "*dark knowledge* soft targets pass on. A higher temperature flattens the distributions and shows "
                "more of it. The pair is the one picked in **Setup**."
            )
            with gr.Accordion("Learn: dark knowledge (I ate an apple / orange / banana)", open=False):
                gr.Markdown(LEARN_DARK)
            with gr.Row():
                probe_text = gr.Textbox(PROBE_TEXT, label="Text", scale=3, elem_id="probe-text")
                position = gr.Number(-1, label="Position (-1 = last token)", precision=None, scale=1,
                                     elem_id="probe-position")
            with gr.Row():
                probe_temperature = gr.Slider(0.5, 10, value=1.0, step=0.1, label="Temperature T",
                                              info=f"1 = the model's own distribution; the session trains at "
                                                   f"T={defaults.temperature:g}. Recomputed as you move it.",
                                              elem_id="probe-temperature")
                top_k = gr.Slider(1, 30, value=10, step=1, label="Top-k per model", elem_id="probe-top-k")
            probe_btn = gr.Button("Show distributions", variant="primary", elem_id="probe-btn")
            tokens_view = gr.HTML(elem_id="probe-tokens")
            probe_note = gr.Markdown(elem_id="probe-note")
            bars_plot = gr.Plot(label="Next-token distributions", show_label=False, elem_id="bars-plot")
            stats_md = gr.Markdown(elem_id="probe-stats")
            wrong_plot = gr.Plot(label="Wrong-answer ranking", show_label=False, elem_id="wrong-plot")
            kl_plot = gr.Plot(label="KL to the teacher per position", show_label=False, elem_id="kl-plot")
            gr.Markdown(FIGURE_TIP)

        with gr.Tab("Attention", id="attention"):
            gr.Markdown(
                "Where does each model look? One text, a teacher layer and head, a student layer and head: their "
                "attention maps side by side (the student before and after distillation), the difference, and an "
                "overview of every layer and head. The pair is the one picked in **Setup**."
            )
            with gr.Accordion("Learn: reading attention maps (I ate an apple)", open=False):
                gr.Markdown(LEARN_ATTENTION)
            attention_text = gr.Textbox(ATTENTION_TEXT, label="Text", elem_id="attention-text")
            with gr.Row(equal_height=True):
                teacher_layer = gr.Number(-1, label="Teacher layer", precision=0, minimum=-1,
                                          info="-1: the layer map's last pair", elem_id="teacher-layer")
                teacher_head = gr.Number(0, label="Teacher head", precision=0, minimum=0, elem_id="teacher-head")
                student_layer = gr.Number(-1, label="Student layer", precision=0, minimum=-1,
                                          info="-1: the layer map's last pair", elem_id="student-layer")
                student_head = gr.Number(0, label="Student head", precision=0, minimum=0, elem_id="student-head")
                average_heads = gr.Checkbox(False, label="Average over heads",
                                            info="One map per layer: the mean of its heads", elem_id="average-heads")
            attention_btn = gr.Button("Show attention", variant="primary", elem_id="attention-btn")
            attention_note = gr.Markdown(elem_id="attention-note")
            attention_plot = gr.Plot(label="Attention maps", show_label=False, elem_id="attention-plot")
            with gr.Row():
                difference_plot = gr.Plot(label="Difference", show_label=False, elem_id="difference-plot")
                entropy_plot = gr.Plot(label="Every layer and head", show_label=False, elem_id="entropy-plot")
            gr.Markdown(FIGURE_TIP)

        with gr.Tab("Similarity", id="similarity"):
            gr.Markdown(
                "How alike are the two models' inner representations? Linear CKA between every teacher layer and "
                "every student layer on a probe text, before and after distillation; the mapped layer pairs; and how "
                "their similarity moved during the last session. The pair is the one picked in **Setup**."
            )
            with gr.Accordion("Learn: hidden-state similarity and CKA (and its caveats)", open=False):
                gr.Markdown(LEARN_SIMILARITY)
            similarity_input = gr.Textbox(similarity_text(), label="Probe text", lines=3, max_lines=8,
                                          info="At least 50 tokens give a steadier CKA. The first token is left out.",
                                          elem_id="similarity-text")
            similarity_btn = gr.Button("Compare hidden states", variant="primary", elem_id="similarity-btn")
            similarity_note = gr.Markdown(elem_id="similarity-note")
            cka_plot = gr.Plot(label="CKA", show_label=False, elem_id="cka-plot")
            pairs_plot = gr.Plot(label="Mapped pairs", show_label=False, elem_id="pairs-plot")
            steps_plot = gr.Plot(label="CKA over the steps", show_label=False, elem_id="cka-steps-plot")
            gr.Markdown(FIGURE_TIP)

        with gr.Tab("Evaluate", id="evaluate"):
            gr.Markdown(
                "What did the student keep of the teacher, at what cost? The teacher, the student before and the "
                "student after, measured now on the held-out text, then one prompt continued by all three. The pair "
                "is the one picked in **Setup**."
            )
            with gr.Accordion("Learn: perplexity, agreement, KL, speed; greedy and sampled text", open=False):
                gr.Markdown(LEARN_EVALUATE)
            evaluate_btn = gr.Button("Evaluate teacher and students", variant="primary", elem_id="evaluate-btn")
            evaluate_note = gr.Markdown(elem_id="evaluate-note")
            evaluate_md = gr.Markdown(elem_id="evaluate-table")
            with gr.Accordion("Measurements (JSON)", open=False):
                evaluate_json = gr.JSON(label="evaluation", elem_id="evaluate-json")
            gr.Markdown("### Generations side by side")
            with gr.Row(equal_height=True):
                generate_prompt = gr.Textbox(GENERATE_PROMPT, label="Prompt", scale=3, elem_id="generate-prompt")
                generate_tokens = gr.Number(40, label="New tokens", precision=0, minimum=1,
                                            maximum=cap("new_tokens") or 512, scale=1, elem_id="generate-tokens")
                generate_seed = gr.Number(0, label="Seed (sampling)", precision=0, scale=1, elem_id="generate-seed")
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            generate_note = gr.Markdown(elem_id="generate-note")
            generate_view = gr.HTML(elem_id="generate-view")
            with gr.Accordion("Continuations (JSON)", open=False):
                generate_json = gr.JSON(label="generations", elem_id="generate-json")

        # ---- wiring -----------------------------------------------------------------------
        knobs = [knob[name] for name in KNOBS]
        check_btn.click(check_compatibility, [teacher, student], [report_md, report_json], api_name="compatibility"
                        ).then(layer_map_if_known, [teacher, student, knob["layer_map"]], layer_map_md,
                               show_progress="hidden", **private)
        for picker in (teacher, student):
            picker.change(pair_markdown, [teacher, student], pair_md, show_progress="hidden", **private)
            picker.change(layer_map_if_known, [teacher, student, knob["layer_map"]], layer_map_md,
                          show_progress="hidden", **private)
        corpus_choice.change(corpus_visibility, corpus_choice, [upload, pasted, hub_group, corpus_column],
                             show_progress="hidden", **private)
        upload.upload(inspect_corpus_file, [upload, corpus_column, teacher, knob["seq_len"]], [corpus_column, corpus_md],
                      **private)
        upload.clear(lambda: (gr.update(choices=[], value=None), ""), None, [corpus_column, corpus_md],
                     show_progress="hidden", **private)
        corpus_column.input(inspect_corpus_file, [upload, corpus_column, teacher, knob["seq_len"]],
                            [corpus_column, corpus_md], **private)
        data = [corpus_column, hub_dataset, hub_config, hub_split, hub_max_rows, augment_methods, augment_strength,
                augment_copies]
        augment_btn.click(preview_augmentation,
                          [teacher, preset, knob["seed"], corpus_choice, upload, pasted, *data],
                          [augment_note, augment_table], api_name="augment_preview")
        preset.input(apply_preset, preset, [*knobs, preset_md], api_name="preset", show_progress="hidden")
        knob["layer_map"].change(layer_map_markdown, [teacher, student, knob["layer_map"]], layer_map_md,
                                 api_name="layer_map", show_progress="minimal")

        recipe = [preset, *knobs, corpus_choice, upload, pasted, *data, user]
        run_btn.click(gpu(run_distillation), [teacher, student, *recipe],
                      [status_md, loss_plot, probe_plot, summary_md, run_btn, stop_btn],
                      api_name="run_session", concurrency_limit=1, concurrency_id=DISTILLATION_QUEUE,
                      show_progress="minimal", show_progress_on=status_md)  # shows "queue: 2/3" while waiting
        stop_btn.click(request_stop, user, status_md, api_name="stop", show_progress="hidden")

        sweep_btn.click(gpu(run_size_sweep), [sweep_specs, teacher, *recipe],
                        [sweep_md, size_plot, size_rows, sweep_btn, sweep_stop_btn],
                        api_name="size_sweep", concurrency_limit=1, concurrency_id=DISTILLATION_QUEUE,
                        show_progress="minimal", show_progress_on=sweep_md)
        sweep_stop_btn.click(request_stop, user, sweep_md, show_progress="hidden", **private)
        sweep_file.upload(load_size_rows, sweep_file, [sweep_md, size_plot, size_rows], api_name="size_plot")

        probe_inputs = [probe_text, position, probe_temperature, top_k, teacher, student, user]
        probe_outputs = [tokens_view, probe_note, bars_plot, stats_md, kl_plot, wrong_plot]
        probe_btn.click(probe_dark_knowledge, probe_inputs, probe_outputs, api_name="dark_knowledge")
        probe_temperature.change(probe_dark_knowledge, probe_inputs, probe_outputs, trigger_mode="always_last",
                                 show_progress="hidden", **private)  # recomputes as the slider moves
        for trigger in (top_k.release, probe_text.submit, position.submit):
            trigger(probe_dark_knowledge, probe_inputs, probe_outputs, trigger_mode="always_last", **private)

        export_btn.click(export_run, user, [export_md, export_zip, export_yaml], api_name="export")

        attention_inputs = [attention_text, teacher_layer, teacher_head, student_layer, student_head, average_heads,
                            teacher, student, user]
        attention_outputs = [attention_note, attention_plot, difference_plot, entropy_plot]
        attention_btn.click(show_attention, attention_inputs, attention_outputs, api_name="attention")
        for trigger in (attention_text.submit, teacher_layer.submit, teacher_head.submit, student_layer.submit,
                        student_head.submit, average_heads.input):
            trigger(show_attention, attention_inputs, attention_outputs, trigger_mode="always_last", **private)

        similarity_inputs = [similarity_input, teacher, student, user]
        similarity_outputs = [similarity_note, cka_plot, pairs_plot, steps_plot]
        similarity_btn.click(show_similarity, similarity_inputs, similarity_outputs, api_name="similarity")
        similarity_input.submit(show_similarity, similarity_inputs, similarity_outputs, **private)

        evaluate_btn.click(evaluate_students, [teacher, student, user], [evaluate_note, evaluate_md, evaluate_json],
                           api_name="evaluate")
        generate_inputs = [generate_prompt, generate_tokens, generate_seed, teacher, student, user]
        generate_outputs = [generate_note, generate_view, generate_json]
        generate_btn.click(generate_side_by_side, generate_inputs, generate_outputs, api_name="generate")
        generate_prompt.submit(generate_side_by_side, generate_inputs, generate_outputs, **private)
    return demo


def launch_options() -> dict[str, Any]:
    """Extra `launch` arguments: in public mode the upload size cap, which Gradio enforces before a file
    reaches a handler."""
    options: dict[str, Any] = {}
    if hosting.public_mode():
        options["max_file_size"] = hosting.public_limits().upload_mb * 2**20
    return options


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False
          ) -> tuple[gr.Blocks, str]:
    """Build the app, queue it and serve it on host:port (None: a free port). With `block` this returns when
    the server stops; without, at once (tests, scripts/load_test.py: `demo.close()` stops it). Returns the
    Blocks and the app's URL."""
    port = free_port(host) if port is None else port
    demo = build_app().queue()
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, **launch_options())
    return demo, f"http://{host}:{port}/"


if __name__ == "__main__":
    serve(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
