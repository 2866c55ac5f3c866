"""Operator settings for hosting Distill Studio where strangers can reach it (e.g. Hugging Face Spaces).

Read from the environment, here and nowhere else, by the engine itself, so that the app, the CLI and
the Python API obey them alike:

- `DISTILL_TRUST_REMOTE_CODE=1` lets transformers run the Python code a model repository ships
  (`trust_remote_code`). Off unless the operator sets it, and ignored in public mode, where any
  visitor could name a repository whose code would then run on the host.
- `DISTILL_PUBLIC=1` (or `0`) turns public mode on (off). Default: on when `SPACE_ID` is set (Hugging
  Face Spaces sets it), off otherwise. In public mode
  * model specs that are local paths (a directory, a .gguf file) are refused; the bundled
    `smollm2-135m`, Hugging Face model ids and students derived from the teacher (`layers:...`,
    `fresh:...`) stay allowed;
  * files named by a config or a request (corpus, eval_text, prompts_file, an evaluation text, an
    uploaded sweep) are read only from the upload area (`upload_dir`, Gradio's upload folder) and the
    project's `assets/`;
  * the caps of `PublicLimits` apply (steps, batch, length, upload size, generation, model size, ...);
    `DISTILL_CAP_<NAME>` changes one (e.g. `DISTILL_CAP_STEPS=500`).
- `DISTILL_HUB_DEFAULTS=1` (or `0`): the app's Setup tab starts from the hub pair `HUB_DEFAULT_PAIR`
  instead of the bundled offline one. Default: on on Spaces, and when the bundled teacher's package is
  missing but the hub answers; see `use_hub_defaults`.

`spaces_gpu` is the `spaces.GPU` decorator (ZeroGPU) when the `spaces` package is importable, the
identity otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from distill_core.errors import DistillError
from distill_core.hub import bundled_gguf_path, hub_offline, hub_reachable_within
from distill_core.paths import ASSETS, cache_dir, project_path
from distill_core.specs import is_bundled, is_derived_spec

try:  # imported early (before any CUDA work), as ZeroGPU asks; absent outside Spaces
    import spaces as _SPACES
except ImportError:
    _SPACES = None

HUB_DEFAULT_PAIR = ("HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
"""The Setup tab's teacher and student when the hub is there (same tokenizer, 362 M -> 135 M parameters)."""


@dataclass(frozen=True)
class PublicLimits:
    """The caps of public mode: what one visitor may ask of the host. Each applies to the config field
    (or request value) of the same name; `DISTILL_CAP_<NAME>` (a positive integer) overrides one."""

    steps: int = 200
    """Optimizer steps of a session (the quickstart takes 22)."""
    batch_size: int = 16
    """Sequences per step."""
    seq_len: int = 256
    """Tokens per training sequence."""
    eval_max_tokens: int = 2048
    """Held-out tokens scored in each evaluation."""
    generation_tokens: int = 128
    """New tokens the teacher writes per prompt for the teacher-generated corpus."""
    hub_max_rows: int = 5000
    """Rows read from a Hugging Face dataset."""
    augment_copies: int = 2
    """Augmented copies of the training text per method."""
    upload_mb: int = 10
    """Size of an uploaded or read file, and of pasted training text, in MiB."""
    new_tokens: int = 128
    """New tokens per continuation in the Evaluate tab's side-by-side generation."""
    text_chars: int = 4000
    """Characters of a probe text or a generation prompt."""
    sweep_students: int = 4
    """Students in one size sweep."""
    model_params: int = 1_000_000_000
    """Parameters of a teacher or student (counted from its config before any weights are loaded)."""


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off; unset or empty: `default`.
    Anything else is an error (a typo in a security setting must not silently mean off)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise DistillError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def on_spaces() -> bool:
    """Running on Hugging Face Spaces (which sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID", "").strip())


def public_mode() -> bool:
    """Public mode: DISTILL_PUBLIC, by default on when running on Spaces."""
    return env_flag("DISTILL_PUBLIC", default=on_spaces())


def trust_remote_code() -> bool:
    """Whether transformers may run a model repository's own code: only when the operator sets
    DISTILL_TRUST_REMOTE_CODE=1, and never in public mode."""
    return env_flag("DISTILL_TRUST_REMOTE_CODE") and not public_mode()


def public_limits() -> PublicLimits:
    """The caps, with the operator's DISTILL_CAP_<NAME> overrides applied."""
    values: dict[str, int] = {}
    for item in fields(PublicLimits):
        variable = f"DISTILL_CAP_{item.name.upper()}"
        raw = os.environ.get(variable, "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise DistillError(f"{variable} must be a positive integer, got {raw!r}")
            values[item.name] = int(raw)
    return PublicLimits(**values)


def check_cap(name: str, value: int | float, what: str | None = None) -> None:
    """In public mode, refuse `value` above the cap `name` of PublicLimits with a message naming the cap."""
    if not public_mode():
        return
    cap = getattr(public_limits(), name)
    if value > cap:
        raise DistillError(f"{what or name} is {value:,}; public mode allows at most {cap:,} (the {name} cap; "
                           f"the operator sets it with DISTILL_CAP_{name.upper()})")


def check_text_size(text: str, what: str) -> None:
    """In public mode, refuse a text longer than the `text_chars` cap (a probe text, a prompt)."""
    check_cap("text_chars", len(text or ""), f"the length of the {what} (characters)")


def _check_bytes(size: int, what: str) -> None:
    limits = public_limits()
    if size > limits.upload_mb * 2**20:
        raise DistillError(f"{what} is {size / 2**20:.1f} MiB; public mode allows at most {limits.upload_mb} MiB "
                           "(the upload_mb cap; the operator sets it with DISTILL_CAP_UPLOAD_MB)")


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def upload_dir() -> Path:
    """The upload area: Gradio's upload folder (GRADIO_TEMP_DIR, else <system temp>/gradio), where it
    keeps the files visitors upload. The same rule as gradio.utils.get_upload_folder, without gradio."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def readable_roots() -> list[Path]:
    """The folders public mode reads files from: the upload area and the project's assets/."""
    return [upload_dir(), ASSETS.resolve()]


def check_readable(path: str | Path, what: str) -> None:
    """In public mode, refuse a file outside the upload area and assets/ (symbolic links and `..`
    resolved first), or one larger than the upload_mb cap. Outside public mode: nothing."""
    if not public_mode():
        return
    resolved = project_path(path).resolve()
    if not any(resolved.is_relative_to(root) for root in readable_roots()):
        raise DistillError(f"{what} {str(path)!r} is not an uploaded file: in public mode files are read only from "
                           "the upload area and the app's assets/ (upload the file instead)")
    if resolved.is_file():
        _check_bytes(resolved.stat().st_size, f"{what} {resolved.name}")


def is_local_model_spec(spec: str) -> bool:
    """Whether a (non-derived, non-bundled) model spec names something on this machine: a path
    (./, /, ~, more than one '/', a backslash), a .gguf file, or anything that exists here."""
    spec = spec.strip()
    path = Path(spec).expanduser()
    return (spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
            or path.suffix.lower() == ".gguf" or path.exists())


def check_model_spec(spec: str, what: str = "model spec") -> None:
    """In public mode, refuse a model spec that is a local path (`check_spec_allowed` lets the bundled
    teacher and derived students through before this)."""
    if public_mode() and is_local_model_spec(spec):
        raise DistillError(f"{what} {spec.strip()!r} is a local path; public mode loads no models from this "
                           "machine's files: use the bundled smollm2-135m, a Hugging Face model id, or a student "
                           "derived from the teacher (layers:N, fresh:...)")


def check_spec_allowed(spec: str, what: str = "model spec") -> None:
    """In public mode, refuse a spec that is a local path; the bundled teacher and students derived from
    the teacher are always allowed."""
    if not is_bundled(spec) and not is_derived_spec(spec):
        check_model_spec(spec, what)


def check_public(config: Any) -> None:
    """Every public-mode rule that a DistillConfig can break, checked before anything runs (called by
    DistillConfig.validate): the caps, local model specs, files outside the upload area."""
    if not public_mode():
        return
    for name in ("steps", "batch_size", "seq_len", "eval_max_tokens", "generation_tokens", "hub_max_rows",
                 "augment_copies"):
        check_cap(name, getattr(config, name))
    _check_bytes(len(config.corpus_text.encode("utf-8")), "the pasted training text")
    for name in ("teacher", "student"):
        check_spec_allowed(str(getattr(config, name)), f"{name} spec")
    not_files = {"corpus": ("", "teacher-generated"), "real_text": ("", "bible-kjv"), "rollout_prompts": ("",)}
    for name in ("corpus", "prompts_file", "eval_text", "real_text", "rollout_prompts", "sample_eval_prompts"):
        value = str(getattr(config, name)).strip()
        if value in not_files.get(name, ()):  # a built-in source, or none
            continue
        check_readable(value, name)
    for model in config.back_translation_models.split(","):
        if model.strip():
            check_model_spec(model, "back-translation model")


# ---------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------
GPU_DURATION_S = 300
"""Default length of one GPU call (spaces.GPU duration) of a session on ZeroGPU, seconds."""


def gpu_duration() -> int:
    """How long one GPU call of a session may hold a ZeroGPU GPU (`spaces.GPU(duration=...)`), seconds:
    DISTILL_GPU_DURATION_S, else GPU_DURATION_S. A longer session goes on in further calls (slices)."""
    raw = os.environ.get("DISTILL_GPU_DURATION_S", "").strip()
    if not raw:
        return GPU_DURATION_S
    if not raw.isdigit() or int(raw) < 1:
        raise DistillError(f"DISTILL_GPU_DURATION_S must be a positive number of seconds, got {raw!r}")
    return int(raw)


def browser_secret() -> str:
    """The key the app encrypts what it keeps in a visitor's browser with (the tokens of the visitor's runs):
    DISTILL_BROWSER_SECRET, else one made on first use and kept in the cache folder, so that a restarted
    app still reads what browsers kept (Gradio's default is a new key per start)."""
    given = os.environ.get("DISTILL_BROWSER_SECRET", "").strip()
    if given:
        return given
    path = cache_dir() / "browser-state-secret"
    if not path.is_file():
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def zerogpu_emulation() -> bool:
    """DISTILL_ZEROGPU_EMULATION=1: run as on a ZeroGPU Space, here (the GPU functions in a spawned child
    process, everything across pickled; child.emulated_gpu), for tests and for trying a Space locally."""
    return env_flag("DISTILL_ZEROGPU_EMULATION")


def zerogpu() -> bool:
    """On ZeroGPU hardware (Spaces sets SPACES_ZERO_GPU), or emulating it: a GPU is lent per call, for at
    most the call's duration."""
    return env_flag("SPACES_ZERO_GPU") or zerogpu_emulation()


def spaces_gpu(duration: int = 60) -> Callable[[Callable], Callable]:
    """A decorator for GPU work: `spaces.GPU(duration=...)` when the `spaces` package is importable
    (on ZeroGPU hardware it attaches a GPU while the function runs; elsewhere it has no effect), the
    identity otherwise."""
    if _SPACES is None:
        return lambda function: function
    return _SPACES.GPU(duration=duration)


def use_hub_defaults() -> bool:
    """Whether the app starts from HUB_DEFAULT_PAIR: DISTILL_HUB_DEFAULTS when set; else on Spaces; else
    when the bundled teacher's package is missing and the hub answers (one check of at most 1.8 s, made
    only then). Never with HF_HUB_OFFLINE set: offline, startup never waits for the network."""
    if hub_offline():
        return False
    explicit = os.environ.get("DISTILL_HUB_DEFAULTS", "").strip()
    if explicit:
        return env_flag("DISTILL_HUB_DEFAULTS")
    if on_spaces():
        return True
    return bundled_gguf_path() is None and hub_reachable_within()


# ---------------------------------------------------------------------------------------
# resources: memory, disk, idle browsers, threads (README, "A class on one machine")
# ---------------------------------------------------------------------------------------
MEMORY_SHARE = 0.6
"""The default memory budget: this share of the machine's memory (or of the container's limit)."""
MODEL_SHARE = 0.5
"""Loaded models may hold at most this share of the memory budget; the rest is for the Python runtime, a
training session's student, gradients and optimizer state, and the requests in flight."""
RUNS_DISK_SHARE = 0.5
"""The default cap of the runs folder: this share of the disk that holds it."""
SAVE_DTYPES = ("fp32", "bf16", "fp16")


def _positive(name: str, default: float) -> float:
    """A positive number from the environment variable `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistillError(f"{name} must be a positive number, got {raw!r}")
    return value


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's RAM, or the container's limit when it is lower
    (cgroup v2 `memory.max`, as on a Hugging Face Space)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def memory_budget_bytes() -> int:
    """The app's memory budget: DISTILL_MEMORY_MB, else MEMORY_SHARE of the machine's memory."""
    default_mb = MEMORY_SHARE * machine_memory_bytes() / 2**20
    return int(_positive("DISTILL_MEMORY_MB", default_mb) * 2**20)


def model_budget_bytes() -> int:
    """What the shared cache of loaded models (teachers, students before and after) may hold, in bytes of
    weights: MODEL_SHARE of the memory budget."""
    return int(MODEL_SHARE * memory_budget_bytes())


def runs_cap_bytes(folder: Path) -> int:
    """The cap on the runs folder's total size: DISTILL_RUNS_CAP_MB, else RUNS_DISK_SHARE of the disk that
    holds `folder` (the oldest finished runs are removed to stay under it: distill_core/retention.py)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
    default_mb = RUNS_DISK_SHARE * shutil.disk_usage(existing).total / 2**20
    return int(_positive("DISTILL_RUNS_CAP_MB", default_mb) * 2**20)


def shared_keep_s() -> float:
    """How long a shared run is kept whatever the disk cap: DISTILL_SHARED_KEEP_HOURS (default 24)."""
    return _positive("DISTILL_SHARED_KEEP_HOURS", 24.0) * 3600


def idle_expiry_s() -> float:
    """After how long without a request a browser's state (its opened run, its export) is dropped and its
    run no longer counts as looked at: DISTILL_IDLE_MINUTES (default 30)."""
    return _positive("DISTILL_IDLE_MINUTES", 30.0) * 60


def save_dtype() -> str:
    """The precision a session saves its student in: DISTILL_SAVE_DTYPE, `fp32` (default), `bf16` or `fp16`
    (half the disk; the training checkpoint stays fp32 so that a resumed run is exact)."""
    value = os.environ.get("DISTILL_SAVE_DTYPE", "").strip().lower() or "fp32"
    if value not in SAVE_DTYPES:
        raise DistillError(f"DISTILL_SAVE_DTYPE must be one of {', '.join(SAVE_DTYPES)}, got {value!r}")
    return value


def training_threads() -> int:
    """CPU threads of a training session: DISTILL_TRAIN_THREADS, else half the cores (at least one), so that
    the inspection views keep the other half (README, "Views under load": measured on 2 cores)."""
    return int(_positive("DISTILL_TRAIN_THREADS", max(1, (os.cpu_count() or 2) // 2)))


def view_threads() -> int:
    """CPU threads of one inspection request: DISTILL_VIEW_THREADS, else 1 (requests run side by side, one
    core each: two threads per request on a busy machine made them up to 10x slower, README)."""
    return int(_positive("DISTILL_VIEW_THREADS", 1))
