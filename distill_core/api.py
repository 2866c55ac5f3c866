"""The engine as the app and the command line use it: one import, the top layer.

Sessions and sweeps (`run_session`, `session_in_child`, `student_sweep`, `ablation`) are generators of
plain, picklable events; a `StopSignal` stops them across processes. The views compare models through
`Comparison` and measure them with `dark_knowledge`, `attention_probe`, `similarity_probe`,
`evaluate_models` and `generate` (`evaluate_each` and `generate_each`: model by model, as each finishes).
Everything raises `DistillError` with a message meant for the user.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from distill_core.augment import WordChanges, changed_words
from distill_core.augment import preview as augmentation_preview
from distill_core.augment_methods import AUGMENTERS, parse_methods
from distill_core.batcher import FORWARDS
from distill_core.bench import GPU_DEFAULTS, run_bench
from distill_core.bridged_probes import pair_dark_knowledge
from distill_core.child import emulated_gpu, run_in_child, session_in_child
from distill_core.comparison import AFTER, BEFORE, Comparison
from distill_core.compat import check_pair, compatibility_report, layer_pairs_for, pair_alignment
from distill_core.config import CHOICES, RESUME_FIELDS, SUGGESTIONS, DistillConfig, field_help
from distill_core.corpora import CORPUS_FORMATS, corpus_stats, first_texts, read_corpus_file, text_columns
from distill_core.data import check_text, heldout_blocks, read_text_file, real_text_or_note
from distill_core.distributed import is_main_process
from distill_core.end_to_end import end_to_end
from distill_core.errors import DistillError, describe_failure, first_line
from distill_core.evaluate import (evaluate_each, evaluate_models, evaluate_pair, generate, generate_each,
                                   real_text_report, speed_conditions, trade_sentence)
from distill_core.export import export_config, export_run, export_student, safe_filename
from distill_core.fair_eval import byte_trade_sentence
from distill_core.fair_eval import evaluate_each as evaluate_rows
from distill_core.fair_eval import evaluate_pair as evaluate_student
from distill_core.grading import grade_continuations, heldout_prompts, own_text_report
from distill_core.hosting import (HUB_DEFAULT_PAIR, browser_secret, check_readable, gpu_duration, idle_expiry_s,
                                  memory_budget_bytes, public_limits, public_mode, spaces_gpu, use_hub_defaults,
                                  zerogpu, zerogpu_emulation)
from distill_core.layer_map import LAYER_MAP_SPECS
from distill_core.lessons import Lesson, lesson_names, load_lesson
from distill_core.models import LOADED, load_teacher, resolve_model, spec_problem, tokenizer_of
from distill_core.paths import CONFIGS, ROOT, runs_dir
from distill_core.presets import QUICKSTART, preset_config, preset_description, preset_names
from distill_core.retention import delete_run, look_at, make_room
from distill_core.runs import finished_runs, open_run, run_config, run_events, run_summary, running
from distill_core.runs import new_run as _new_run_folder
from distill_core.probes import attention_probe, dark_knowledge, similarity_probe
from distill_core.realtext import describe as describe_real_text
from distill_core.recipes import (MAX_RECIPES, MIN_RECIPES, PRESET_PREFIX, builtin_recipes, comparison_rows,
                                  parse_setting, ranked, read_comparison_rows, saved_recipe)
from distill_core.session import FINAL_KINDS, PAUSED, StopSignal, run_in_slices, run_session, write_json_atomic
from distill_core.session_queue import SessionQueue, Ticket
from distill_core.share import OWNER, VIEWER, link_query, open_for, share_run, sharing, unshare_run
from distill_core.shared_views import evaluate_each as evaluate_shared
from distill_core.shared_views import generate_each as generate_shared
from distill_core.specs import parse_student_list
from distill_core.students import load_student
from distill_core.sweep import (SMALL_CORPUS_SENTENCES, ablation, ablation_rows, augmentation_rows, on_policy_rows,
                                read_student_rows, seed_means, seeded_rows, small_corpus, student_sweep)
from distill_core.threads import for_views, thread_settings, training_steps
from distill_core.tokenizer_bridge import CROSS_BRIDGES
from distill_core.tracking import dashboard_command, start_dashboard, tracker_dir, tracking_enabled, tracking_project

__all__ = [
    "AFTER", "AUGMENTERS", "BEFORE", "CHOICES", "CONFIGS", "CORPUS_FORMATS", "CROSS_BRIDGES", "Comparison",
    "DistillConfig", "DistillError", "FINAL_KINDS", "FORWARDS", "GPU_DEFAULTS", "HUB_DEFAULT_PAIR", "LAYER_MAP_SPECS",
    "LOADED", "Lesson", "MAX_RECIPES", "MIN_RECIPES", "OWNER", "PAUSED", "PRESET_PREFIX", "QUICKSTART",
    "RESUME_FIELDS", "ROOT", "SLICE_SHARE", "SMALL_CORPUS_SENTENCES", "SUGGESTIONS", "SessionQueue", "StopSignal",
    "Ticket", "VIEWER", "WordChanges", "ablation", "ablation_rows", "attention_probe", "augmentation_preview",
    "augmentation_rows", "browser_secret", "builtin_recipes", "byte_trade_sentence", "cache_stats", "changed_words",
    "check_pair", "check_readable", "check_text", "comparison_rows", "compatibility_report", "corpus_stats",
    "dark_knowledge", "dashboard_command", "delete_run", "describe_failure", "describe_real_text", "end_to_end",
    "evaluate_each", "evaluate_models", "evaluate_pair", "evaluate_rows", "evaluate_shared", "evaluate_student",
    "export_config", "export_run", "export_student", "field_help", "finished_runs", "first_line", "first_texts",
    "for_views", "generate", "generate_each", "generate_shared", "gpu", "gpu_duration", "grade_continuations",
    "heldout_blocks", "heldout_prompts", "idle_expiry_s", "is_main_process", "layer_pairs_for", "lesson_names",
    "link_query", "load_lesson", "load_student", "load_teacher", "look_at", "make_room", "memory_budget_bytes",
    "new_run", "new_run_dir", "on_policy_rows", "open_for", "open_run", "own_text_report", "pair_alignment",
    "pair_dark_knowledge", "parse_methods", "parse_setting", "parse_student_list", "preset_config",
    "preset_description", "preset_names", "public_limits", "public_mode", "ranked", "read_comparison_rows",
    "read_corpus_file", "read_student_rows", "read_text_file", "real_text_or_note", "real_text_report",
    "resolve_model", "run_bench", "run_config", "run_events", "run_in_child", "run_in_slices", "run_session",
    "run_summary", "running", "runs_dir", "safe_filename", "saved_recipe", "seed_means", "seeded_rows",
    "session_in_child", "share_run", "sharing", "similarity_probe", "slice_limit", "sliced", "small_corpus",
    "spaces_gpu", "spec_problem", "speed_conditions", "start_dashboard", "student_sweep", "text_columns",
    "thread_settings", "tokenizer_of", "tracker_dir", "tracking_enabled", "tracking_project", "trade_sentence",
    "training_steps", "unshare_run", "use_hub_defaults", "write_json_atomic", "zerogpu",
]


SLICE_SHARE = 0.8
"""On ZeroGPU a call trains for at most this share of its GPU duration, leaving the rest for the last
checkpoint (and, in the last call, the evaluation and the save)."""


def gpu(duration: int) -> Callable[[Callable], Callable]:
    """The decorator for GPU work: `spaces.GPU(duration=...)` on Spaces (the identity elsewhere), or with
    DISTILL_ZEROGPU_EMULATION=1 its emulation (a spawned child process, arguments and values pickled)."""
    return emulated_gpu(duration) if zerogpu_emulation() else spaces_gpu(duration)


def slice_limit(duration: int) -> float | None:
    """How long one GPU call of a session may train (`run_in_slices`): on ZeroGPU a share of the call's
    duration, so that a longer session goes on in the next call; elsewhere no limit."""
    return duration * SLICE_SHARE if zerogpu() else None


def sliced(run: Callable, duration: int) -> Callable:
    """`run` (a GPU-wrapped run_session) as a whole session: in calls of at most `slice_limit(duration)`
    that resume from each other's checkpoint (one call where time is not lent per call)."""
    return functools.partial(run_in_slices, run=run, time_limit_s=slice_limit(duration))


def new_run() -> tuple[Path, str]:
    """A fresh folder for one session or sweep, runs/<timestamp>-<random id>/, and its token; the runs folder
    is first brought under the operator's cap (retention.make_room: the oldest finished runs go)."""
    make_room()
    return _new_run_folder()


def new_run_dir() -> Path:
    """A fresh folder for one session or sweep, runs/<timestamp>-<random id>/ (its token dropped)."""
    return new_run()[0]


def cache_stats() -> dict[str, dict[str, int]]:
    """What the shared caches hold: the loaded models (bytes, budget, evictions) and the views' forward results."""
    return {"models": LOADED.stats(), "forwards": {**FORWARDS.results.stats(), "passes": FORWARDS.passes,
                                                   "batched_rows": FORWARDS.batched_rows}}
