"""One configuration schema for a distillation session, shared by the CLI, the UI and the API.

Every field documents itself (litgpt style): the docstring under it says what it is.
`DistillConfig.from_yaml` / `to_yaml` round-trip a session, and `with_overrides`
applies `key=value` strings (the CLI's `--set`) with type checking.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from distill_core.augment_methods import parse_methods
from distill_core.errors import DistillError
from distill_core.hosting import check_public
from distill_core.layer_map import LAYER_MAP_SPECS
from distill_core.losses import ATTENTION_LOSSES, DIVERGENCES, HIDDEN_LOSSES
from distill_core.paths import ASSETS, relative_to_project
from distill_core.tokenizer_bridge import BRIDGES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CHOICES: dict[str, tuple[str, ...]] = {"divergence": DIVERGENCES, "on_policy_divergence": DIVERGENCES,
                                       "attention_loss": ATTENTION_LOSSES, "hidden_loss": HIDDEN_LOSSES,
                                       "precision": PRECISIONS, "device": DEVICES, "tokenizer_bridge": BRIDGES}
"""The values a choice field accepts (the UI's dropdowns and the CLI's choices come from here)."""
SUGGESTIONS: dict[str, tuple[str, ...]] = {"layer_map": LAYER_MAP_SPECS}
PATH_FIELDS = ("corpus", "prompts_file", "eval_text", "real_text", "rollout_prompts", "sample_eval_prompts")
"""The fields that name files (read through paths.project_path; `portable` writes them project-relative)."""
"""Named values of a free-form field (layer_map also takes explicit pairs like 0:0,5:12)."""
UPPER_LIMITS = {"steps": 1_000_000, "batch_size": 4096, "generation_tokens": 4096, "eval_max_tokens": 1_000_000,
                "hub_max_rows": 1_000_000, "augment_copies": 100, "rollout_tokens": 4096, "sample_eval_tokens": 4096}
"""Largest values the integer fields accept: beyond these a value is a typo (an extra zero or two), not a plan."""
MIN_TEMPERATURE = 0.01
"""Smallest temperature accepted: below it the scaled logits overflow and the loss becomes NaN."""

RESUME_FIELDS = ("log_every", "eval_every", "probe_every", "probe_text", "checkpoint_every", "threads", "device")
"""Config fields that may differ between a training checkpoint and the run that resumes it (`distill
--resume DIR --set ...`, or an edited DIR/config.yaml): they change what is logged, probed and saved,
or where it runs, not what is trained. Every other field (`steps` too: the learning-rate schedule is
built on it) must stay as the checkpoint was written."""


@dataclass
class DistillConfig:
    teacher: str = "smollm2-135m"
    """Teacher model spec: `smollm2-135m` (bundled), a Hugging Face id, a local directory or a .gguf file."""
    student: str = "layers:20"
    """Student model spec: any teacher spec, or one derived from the teacher: `layers:N` (`layers:N:angular`, `layers:N:ppl`: chosen by measurement), `layers:0,5,9`, `fresh:layers=L,hidden=H,heads=A` (add `,vocab=bpe:N` for its own byte-level BPE vocabulary of N tokens, trained on the corpus)."""

    corpus: str = "teacher-generated"
    """Training text: `teacher-generated` (the teacher continues assets/prompts.txt; sequence-level KD), or a corpus file: UTF-8 .txt (paragraphs are documents), .jsonl/.json, .csv or .parquet (one document per row of `corpus_column`)."""
    corpus_column: str = ""
    """Text column of a .jsonl/.json/.csv/.parquet corpus file or of `hub_dataset` (empty: `text`, `content`, ... or the only text column)."""
    corpus_text: str = ""
    """Pasted training text; when non-empty it is used instead of `corpus` and `hub_dataset`."""
    hub_dataset: str = ""
    """Hugging Face dataset id for the training text, e.g. `wikitext`; when non-empty it is used instead of `corpus`. Needs the hub: offline it fails at once."""
    hub_config: str = ""
    """Configuration (subset) of `hub_dataset`, e.g. `wikitext-2-raw-v1`; empty: the dataset's default."""
    hub_split: str = "train"
    """Split of `hub_dataset` to read."""
    hub_max_rows: int = 2000
    """At most this many rows of `hub_dataset` are read (streamed, so a large dataset is not downloaded whole)."""
    augment: str = ""
    """Augmentation of the training text, comma-separated methods: word_swap, word_delete, word_substitute, word_split, char_keyboard, char_ocr, char_random, synonym (WordNet), back_translation (MarianMT, needs the hub or local models), teacher_substitute (TinyBERT-style, the teacher picks words); empty: none. The teacher labels the augmented copies like any text; held-out text is never augmented."""
    augment_strength: float = 0.1
    """Share of words (character noise: of words and of their letters) each augmentation method changes, in (0, 1]."""
    augment_copies: int = 1
    """Augmented copies of the training text per method."""
    back_translation_models: str = "Helsinki-NLP/opus-mt-en-de,Helsinki-NLP/opus-mt-de-en"
    """The two MarianMT models of back-translation (to German, back to English): hub ids or local folders, comma-separated."""
    prompts_file: str = str(ASSETS / "prompts.txt")
    """Prompts the teacher continues when `corpus` is `teacher-generated`."""
    generation_tokens: int = 96
    """New tokens the teacher writes per prompt for the teacher-generated corpus."""
    generation_temperature: float = 0.8
    """Sampling temperature of the teacher writing that corpus (0: greedy, its most likely token each time; 1: its own distribution)."""
    generation_top_p: float = 0.95
    """Top-p (nucleus) of the teacher writing that corpus, in (0, 1]; 1 samples its whole distribution."""
    eval_text: str = str(ASSETS / "texts" / "heldout.txt")
    """Held-out text (never trained on) for perplexity, agreement and KL to the teacher."""
    eval_max_tokens: int = 512
    """At most this many tokens of `eval_text` are scored in each evaluation."""
    real_text: str = "bible-kjv"
    """Real English text nobody on this project wrote, scored like `eval_text` and reported next to it: `bible-kjv` (the Book of Ruth, King James Version, from Debian's bible-kjv-text package), a text file, or empty for none."""
    sample_eval_prompts: str = str(ASSETS / "texts" / "heldout_prompts.txt")
    """Held-out prompts (one per line, never trained on) the student continues before and after the session; the teacher scores every token it wrote (its negative log-likelihood per token, and the reverse KL there), next to the teacher's own continuations as the floor."""
    sample_eval_tokens: int = 16
    """New tokens written per held-out prompt for that measure (sampled at rollout_temperature and rollout_top_p from `seed`); 0 skips it. 16 keeps the quickstart's two measures to about 7 s on 2 CPU cores; `ablate --on-policy --set sample_eval_tokens=32` halves the noise of a comparison."""

    steps: int = 60
    """Optimizer steps in the session."""
    batch_size: int = 8
    """Sequences per step."""
    seq_len: int = 64
    """Tokens per sequence (the corpus is packed into blocks of this length)."""
    learning_rate: float = 3e-4
    """Peak learning rate of AdamW (linear warm-up, then cosine decay)."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    temperature: float = 2.0
    """Softmax temperature T for the soft targets (Hinton et al. 2015); the KD term is scaled by T^2."""
    kd_weight: float = 0.9
    """Weight alpha of the soft-target term; the hard-label cross-entropy gets 1 - alpha."""
    divergence: str = "forward_kl"
    """Soft-target divergence: forward_kl (Hinton et al. 2015), reverse_kl, jsd (generalized, see jsd_beta) or skew_kl (see skew_alpha)."""
    jsd_beta: float = 0.5
    """beta of the generalized JSD: mixture m = beta p_teacher + (1 - beta) q_student; strictly between 0 and 1."""
    skew_alpha: float = 0.1
    """alpha of the skew KL, KL(p || alpha p + (1 - alpha) q); in [0, 1), 0 is forward KL."""
    tokenizer_bridge: str = "auto"
    """How soft targets cross between the two vocabularies: auto (none for the same vocabulary, shared_ids for the same tokens with output layers of different sizes, span for different tokenizers), none, shared_ids, uld (Universal Logit Distillation: sorted probabilities, positions aligned by index) or span (tokens aligned by the text they cover; shared tokens compared directly, the rest by ULD)."""
    top_k: int = 0
    """Distil on the teacher's top-k next tokens plus one tail bucket for the rest of the mass (0: the whole distribution)."""
    teacher_cache: bool = False
    """Compute the teacher's top-k log-probs (+ tail mass) over the corpus once and keep them on disk; a run whose cache is complete never builds or runs the teacher. Needs top_k > 0 and no attention/FitNets terms."""
    attention_weight: float = 0.0
    """Weight of attention transfer: the student's head-averaged attention maps match the teacher's on the layer_map pairs; 0 disables it."""
    attention_loss: str = "kl"
    """Attention-transfer distance per query row: kl (KL of teacher row to student row) or mse."""
    hidden_weight: float = 0.0
    """Weight of the FitNets hint loss on mapped hidden states through a learned projection (Romero et al. 2015); 0 disables it."""
    hidden_loss: str = "mse"
    """FitNets distance between projected student and teacher hidden states: mse or cosine."""
    layer_map: str = "auto"
    """Student-to-teacher layer pairs for FitNets and attention transfer: auto (kept for layers: students, else uniform), kept, uniform, last, or pairs like 0:0,5:12."""
    freeze_embeddings: bool = True
    """Keep the student's (teacher-copied) token embeddings and output layer fixed: fewer trainable parameters, faster CPU steps."""
    freeze_layers: int = 0
    """Keep the student's first N layers fixed (for a `layers:` student they are copies of the teacher's first layers); backward stops above them."""
    on_policy_fraction: float = 0.0
    """On-policy distillation (GKD's student-data fraction λ, Agarwal et al. 2024): the share of steps whose batch is the student's own continuations of prompts, every token of which the teacher scores, instead of the corpus (spread evenly: 0.5 is every second step). 0 trains on the corpus alone (off-policy), 1 on the student's own text alone."""
    on_policy_divergence: str = "reverse_kl"
    """Divergence on an on-policy batch, over the tokens the student wrote only (no hard labels there: they would be its own tokens): reverse_kl (mode-seeking; MiniLLM, Gu et al. 2024), forward_kl, jsd or skew_kl."""
    rollout_prompts: str = ""
    """Prompts the student continues on an on-policy step, one per line (empty: `prompts_file`)."""
    rollout_tokens: int = 32
    """New tokens the student writes per prompt on an on-policy step (a block ends at seq_len)."""
    rollout_temperature: float = 1.0
    """Sampling temperature of the student's continuations (1: its own distribution, which on-policy distillation corrects)."""
    rollout_top_p: float = 1.0
    """Top-p (nucleus) of the student's continuations, in (0, 1]; 1 samples its whole distribution."""

    eval_every: int = 20
    """Run the held-out evaluation every this many steps (and at the end)."""
    probe_every: int = 20
    """Take a dark-knowledge probe snapshot every this many steps (0 disables)."""
    probe_text: str = "For breakfast I ate an"
    """Text whose next-token distribution is probed during the session."""
    log_every: int = 1
    """Log step metrics every this many steps."""
    checkpoint_every: int = 100
    """Write a training checkpoint (OUT/checkpoint: trainable weights, optimizer and schedule state, data position, random states) every this many steps, and always when a session stops or fails, so that `distill --resume OUT` can continue it; 0: only when it stops or fails. Removed when the session completes."""

    seed: int = 0
    """Random seed for student initialisation, data order and sampling (the student's continuations on an on-policy step: this seed and the step's number)."""
    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu` or `cuda`."""
    threads: int = 0
    """CPU threads for torch (0 keeps torch's default)."""
    precision: str = "auto"
    """Arithmetic: auto (on a CUDA GPU: bf16 autocast over fp32 master weights from compute capability 8.0, fp16 autocast with a gradient scaler below it, the frozen teacher held in that dtype; on a CPU, bf16 autocast where it has bf16 instructions (AVX512-BF16 or AMX), else fp32; evaluation scores in fp32 either way), fp32, bf16 or fp16 (autocast on any device)."""
    loss_chunk_tokens: int = 1024
    """Positions per chunk when the output layers and the loss are computed: the (positions x vocabulary) logits of teacher and student are never whole in memory, and only counted positions are scored. 0 computes full logits for the whole batch."""
    gradient_checkpointing: bool = False
    """Recompute the student's layer activations during backward instead of keeping them: less memory for long sequences, about a third more compute."""
    compile: bool = False
    """torch.compile each decoder layer of teacher and student (pays on a GPU after a warm-up of a few steps; slow to start on CPU)."""

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -----------------------------------------------------------------
    def validate(self) -> None:
        """Raise DistillError naming the first field whose value cannot work."""
        self._validate_integers()
        self._validate_numbers()
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise DistillError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self._validate_combinations()
        parse_methods(self.augment)
        if len([m for m in self.back_translation_models.split(",") if m.strip()]) != 2:
            raise DistillError("back_translation_models must be two models, comma-separated (to German, back to "
                               f"English), got {self.back_translation_models!r}")
        for name in ["teacher", "student"]:
            if not str(getattr(self, name)).strip():
                raise DistillError(f"{name} spec is empty")
        check_public(self)  # public mode (DISTILL_PUBLIC): caps, no local model paths, files only from uploads

    def _validate_integers(self) -> None:
        positive_ints = ["generation_tokens", "eval_max_tokens", "steps", "batch_size", "seq_len", "hub_max_rows",
                         "augment_copies", "rollout_tokens"]
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DistillError(f"{name} must be a positive integer, got {value!r}")
        for name, limit in UPPER_LIMITS.items():
            if getattr(self, name) > limit:
                raise DistillError(f"{name} {getattr(self, name)} is too large (use at most {limit:,})")
        for name in ["top_k", "loss_chunk_tokens", "freeze_layers", "warmup_steps", "eval_every", "probe_every",
                     "log_every", "threads", "seed", "checkpoint_every", "sample_eval_tokens"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DistillError(f"{name} must be a non-negative integer, got {value!r}")
        if self.log_every < 1:
            raise DistillError(f"log_every must be at least 1, got {self.log_every!r}")
        if self.seq_len > 8192:
            raise DistillError(f"seq_len {self.seq_len} exceeds the 8192-token context of the default models")

    def _validate_numbers(self) -> None:
        for name in ["learning_rate", "temperature"]:
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise DistillError(f"{name} must be a positive finite number, got {value!r}")
        if self.learning_rate > 1.0:
            raise DistillError(f"learning_rate {self.learning_rate} is far too large (use at most 1.0)")
        if self.temperature > 100:
            raise DistillError(f"temperature {self.temperature} is too large (use at most 100)")
        if self.temperature < MIN_TEMPERATURE:
            raise DistillError(f"temperature {self.temperature} is too small (use at least {MIN_TEMPERATURE}; "
                               "1 is the models' own distribution)")
        if not _finite(self.kd_weight) or not 0.0 <= self.kd_weight <= 1.0:
            raise DistillError(f"kd_weight must be between 0 and 1, got {self.kd_weight!r}")
        if not _finite(self.jsd_beta) or not 0.0 < self.jsd_beta < 1.0:
            raise DistillError(f"jsd_beta must be strictly between 0 and 1, got {self.jsd_beta!r}")
        if not _finite(self.skew_alpha) or not 0.0 <= self.skew_alpha < 1.0:
            raise DistillError(f"skew_alpha must be in [0, 1), got {self.skew_alpha!r}")
        for name in ["weight_decay", "grad_clip", "hidden_weight", "attention_weight"]:
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise DistillError(f"{name} must be a non-negative finite number, got {value!r}")
        if not _finite(self.augment_strength) or not 0.0 < self.augment_strength <= 1.0:
            raise DistillError(f"augment_strength must be in (0, 1], got {self.augment_strength!r}")
        if not _finite(self.on_policy_fraction) or not 0.0 <= self.on_policy_fraction <= 1.0:
            raise DistillError(f"on_policy_fraction must be between 0 and 1, got {self.on_policy_fraction!r}")
        if not _finite(self.rollout_temperature) or not MIN_TEMPERATURE <= self.rollout_temperature <= 100:
            raise DistillError(f"rollout_temperature must be between {MIN_TEMPERATURE} and 100, got "
                               f"{self.rollout_temperature!r}")
        for name in ("rollout_top_p", "generation_top_p"):
            if not _finite(getattr(self, name)) or not 0.0 < getattr(self, name) <= 1.0:
                raise DistillError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if not _finite(self.generation_temperature) or not 0.0 <= self.generation_temperature <= 100:
            raise DistillError(f"generation_temperature must be between 0 (greedy) and 100, got "
                               f"{self.generation_temperature!r}")

    def _validate_combinations(self) -> None:
        if self.teacher_cache and self.top_k < 1:
            raise DistillError("teacher_cache needs top_k > 0 (the whole distribution is too large to keep: one "
                               "vocabulary-wide row per token); set top_k, e.g. 64")
        if self.teacher_cache and (self.attention_weight > 0 or self.hidden_weight > 0):
            raise DistillError("teacher_cache keeps only the teacher's output distribution; attention transfer and "
                               "FitNets need its attention maps and hidden states at every step: turn one of them off")

    # ---- (de)serialisation ----------------------------------------------------------
    @property
    def augment_methods(self) -> list[str]:
        """The `augment` field as a list of method names."""
        return parse_methods(self.augment)

    @property
    def translation_models(self) -> tuple[str, str]:
        """The `back_translation_models` field as (to German, back to English)."""
        first, second = (m.strip() for m in self.back_translation_models.split(",") if m.strip())
        return first, second

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def portable(self) -> "DistillConfig":
        """The same config with the project's own files (its assets, a corpus inside the checkout) named
        relative to the project's root: what a run's config.yaml holds, so that it reruns from another
        checkout (paths.project_path reads them back)."""
        changes = {name: relative_to_project(getattr(self, name)) for name in PATH_FIELDS
                   if getattr(self, name) and getattr(self, name) != "teacher-generated"}
        return dataclasses.replace(self, **changes)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DistillError(f"unknown config field(s): {', '.join(unknown)}")
        hints = get_type_hints(cls)
        coerced = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
        return cls(**coerced)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DistillConfig":
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DistillError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise DistillError(f"config file {path} must hold a mapping of field: value")
        return cls.from_dict(values)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "DistillConfig":
        """Return a copy with `key=value` strings (or a dict) applied and validated."""
        if isinstance(overrides, dict):
            updates = dict(overrides)
        else:
            updates = {}
            for item in overrides:
                if "=" not in item:
                    raise DistillError(f"override {item!r} is not of the form key=value")
                key, value = item.split("=", 1)
                updates[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        merged = self.to_dict()
        merged.update(updates)
        return DistillConfig.from_dict(merged)


def field_help() -> dict[str, str]:
    """Field name -> the docstring written under it (for UI tooltips and `--help`)."""
    tree = ast.parse(inspect.getsource(DistillConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = following.value.value  # type: ignore[union-attr]
    return docs


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn YAML/UI values into the field's type, or raise a DistillError naming the field."""
    if annotation in (int, float) and (value is None or (isinstance(value, str) and not value.strip())):
        raise DistillError(f"{name} is empty: enter a number")
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if annotation is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation is str:
            if isinstance(value, (list, tuple)):  # e.g. `augment: [synonym, word_swap]` in YAML
                return ",".join(str(v).strip() for v in value)
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    kind = getattr(annotation, "__name__", str(annotation))
    raise DistillError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")
