"""Several sessions with the same seed, data and steps: what each student size keeps of the teacher
(`student_sweep`), and what each distillation technique adds (`ablation`).

Both are generators: they yield every session event (tagged with the row it belongs to), then a
`{"kind": "row", "row": ...}` event per finished session, and rewrite their JSON file (the rows so
far, written atomically) after every row, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from distill_core import hosting
from distill_core.augment_methods import parse_methods
from distill_core.bits_per_byte import heldout_text, model_bits_per_byte
from distill_core.config import DistillConfig
from distill_core.corpora import load_corpus
from distill_core.data import heldout_blocks
from distill_core.device import resolve_device
from distill_core.errors import DistillError, first_line
from distill_core.evaluate import generation_speed, score
from distill_core.models import MODELS, LazyTeacher, ResolvedModel, count_parameters, load_saved_model, load_tokenizer
from distill_core.session import FINAL_KINDS, run_session, write_json_atomic

STUDENT_ROW_KEYS = ("spec", "params", "ppl_before", "ppl", "bpb_before", "bpb", "top1_agreement", "kl_to_teacher",
                    "tokens_per_s", "teacher_params", "teacher_ppl", "teacher_bits_per_byte", "teacher_tokens_per_s",
                    "wall_s", "error", "real_ppl_before", "real_ppl", "real_top1_agreement", "real_kl_to_teacher",
                    "real_teacher_ppl")
"""The keys of every row of `students.json`, in this order."""

ABLATION_WEIGHTS = {"attention_weight": 1.0, "hidden_weight": 1.0}
"""Technique weights an ablation row uses when the config leaves that technique off."""



def safe_name(spec: str) -> str:
    """A folder name for a spec: `layers:10` -> `layers-10`, `layers:0,5,9` -> `layers-0_5_9`,
    `org/name` -> `org_name`; long specs are cut and given a hash."""
    name = spec.strip().replace(":", "-")
    name = re.sub(r"[^A-Za-z0-9.=+-]+", "_", name).strip("._") or "student"
    if len(name) > 60:
        name = name[:48] + "-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
    return name


REAL_KEYS = ("real_ppl_before", "real_ppl", "real_top1_agreement", "real_kl_to_teacher", "real_teacher_ppl")
"""A row's real-text figures (summary.json's `real_text`), None when the session did not measure them."""


def real_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The real-text figures of a session's summary, as row fields (`REAL_KEYS`)."""
    real = summary.get("real_text") or {}
    before, after = real.get("before") or {}, real.get("after") or {}
    return {"real_ppl_before": before.get("ppl"), "real_ppl": after.get("ppl"),
            "real_top1_agreement": after.get("top1_agreement"), "real_kl_to_teacher": after.get("kl_to_teacher"),
            "real_teacher_ppl": (real.get("teacher") or {}).get("ppl")}


def _teacher_line(config, device, speed_tokens: int) -> dict[str, Any]:
    """The teacher's parameters, held-out perplexity (the sessions' evaluation text and packing), bits per byte
    (the same bytes as the students', bits_per_byte.py) and greedy-decoding speed, measured in this process on
    the sessions' device."""
    teacher = MODELS.teacher(config.teacher, device)  # the views' teacher on the CPU, a copy elsewhere
    blocks = heldout_blocks(config, teacher.tokenizer)
    text = heldout_text(config, teacher.tokenizer)
    return {"params": count_parameters(teacher.model), "ppl": score(teacher.model, blocks)["ppl"],
            "bits_per_byte": model_bits_per_byte(teacher.model, teacher.tokenizer, text, config.seq_len)["bits_per_byte"],
            "tokens_per_s": generation_speed(teacher.model, teacher.tokenizer, new_tokens=speed_tokens)}


def _student_speed(student_dir: Path, device, speed_tokens: int) -> float | None:
    """Greedy-decoding tokens/s of the student a session saved (None when it saved none)."""
    if not (student_dir / "config.json").is_file():
        return None
    model = load_saved_model(student_dir).to(device).eval()
    tokenizer = load_tokenizer(ResolvedModel(str(student_dir), str(student_dir), f"saved student {student_dir}"))
    try:
        return generation_speed(model, tokenizer, new_tokens=speed_tokens)
    finally:
        del model


def student_sweep(config, specs: list[str], out_dir: str | Path, stop: threading.Event | None = None,
                  speed_tokens: int = 32, session: Any = None) -> Iterator[dict[str, Any]]:
    """Distil each student spec with `config`'s recipe (same seed, data and steps), one session
    each in `out_dir/<safe_name(spec)>`; yield every session event with `"student": spec` added,
    then `{"kind": "row", "row": row}` (keys `STUDENT_ROW_KEYS`) and rewrite `out_dir/students.json`.

    The teacher's generation speed is measured once, in this process and on the same device, just
    before the first student, so `tokens_per_s / teacher_tokens_per_s` compares like with like
    (greedy decoding of `speed_tokens` new tokens at batch 1, best of two; `evaluate.generation_speed`).
    A student that fails (a bad spec, or an error during its session) gets a row with `error` and
    the sweep goes on; `stop` ends the sweep once the current session has stopped (its row is kept,
    with error "stopped at step k" and no speed). `session(config, out_dir, stop)` runs each student's
    session (default `run_session`; on ZeroGPU the app passes one that runs it in GPU calls, in slices)."""
    specs = [s.strip() for s in specs if s and s.strip()]
    if not specs:
        raise DistillError("a student sweep needs at least one student spec")
    hosting.check_cap("sweep_students", len(specs), "the number of students in the sweep")
    if speed_tokens < 1:
        raise DistillError(f"speed_tokens must be a positive integer, got {speed_tokens!r}")
    config.validate()
    stop = stop or threading.Event()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "students.json", [])  # not a previous sweep's rows
    started = time.perf_counter()

    def event(kind: str, **payload: Any) -> dict[str, Any]:
        return {"kind": kind, "elapsed_s": round(time.perf_counter() - started, 3), **payload}

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    yield event("status", message=f"Measuring the teacher {config.teacher} (perplexity, generation speed) …")
    teacher = _teacher_line(config, device, speed_tokens)
    yield event("teacher", **{f"teacher_{k}": v for k, v in teacher.items()},
                message=(f"teacher: {teacher['params'] / 1e6:.1f} M parameters, held-out ppl {teacher['ppl']:.2f}, "
                         f"{teacher['bits_per_byte']:.4f} bits/byte, {teacher['tokens_per_s']:.1f} tokens/s"))

    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for spec in specs:
        if stop.is_set():
            break
        name = safe_name(spec)
        while name in used:
            name += "_"
        used.add(name)
        row = yield from _student_row(config.with_overrides({"student": spec}), out / name, stop, teacher,
                                      (device, speed_tokens), event, session or run_session)
        rows.append(row)
        write_json_atomic(out / "students.json", rows)
        yield event("row", row=row, student=spec)


def _student_row(config: DistillConfig, run_dir: Path, stop: Any, teacher: dict[str, Any],
                 speed: tuple[torch.device, int], event: Any, session: Any) -> Any:
    """One student's session (its events tagged with the spec) and generation speed (on `speed`'s device, of
    that many tokens); returns its row."""
    spec, (device, speed_tokens) = config.student, speed
    row = dict.fromkeys(STUDENT_ROW_KEYS)
    row.update(spec=spec, teacher_params=teacher["params"], teacher_ppl=teacher["ppl"],
               teacher_bits_per_byte=teacher["bits_per_byte"], teacher_tokens_per_s=teacher["tokens_per_s"])
    t0 = time.perf_counter()
    final = None
    try:
        for ev in session(config, run_dir, stop):
            if ev["kind"] in FINAL_KINDS:
                final = ev
            yield {**ev, "student": spec}
        summary = final["summary"]
        row.update(params=summary["student"]["params"], ppl_before=summary["before"]["ppl"],
                   ppl=summary["after"]["ppl"], bpb_before=summary["before"].get("bits_per_byte"),
                   bpb=summary["after"].get("bits_per_byte"), top1_agreement=summary["after"]["top1_agreement"],
                   kl_to_teacher=summary["after"]["kl_to_teacher"], wall_s=summary["wall_s"],
                   teacher_ppl=summary["teacher"]["ppl"], error=None if final["kind"] == "done" else final["message"],
                   **real_fields(summary))
        if not stop.is_set():  # a stopped sweep ends without the extra measurement
            yield event("status", student=spec, message=f"Measuring the generation speed of {spec} …")
            row["tokens_per_s"] = _student_speed(run_dir / "student", device, speed_tokens)
    except DistillError as exc:
        row.update(error=str(exc), wall_s=round(time.perf_counter() - t0, 2))
    except Exception as exc:  # an unforeseen failure ends this row, not the sweep
        row.update(error=f"{type(exc).__name__}: {first_line(exc, 300)}", wall_s=round(time.perf_counter() - t0, 2))
    return row


def read_student_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a students.json an earlier sweep wrote (the app's Compare sizes or `ablate --students`),
    checked: a readable JSON list of rows with a `spec` each (in public mode only from the upload area)."""
    if not path:
        raise DistillError("no file: choose a students.json written by Compare sizes")
    hosting.check_readable(path, "sweep file")
    name = Path(path).name
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillError(f"{name} is not a readable JSON file: {first_line(exc)}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "spec" in r for r in rows):
        raise DistillError(f"{name} must hold a list of rows with a `spec` each, like the students.json that "
                           "Compare sizes writes")
    return rows


def ablation_rows(config, names: list[str] | None = None) -> list[tuple[str, Any]]:
    """ce_only, then soft targets, then soft targets plus each layer-wise technique, then all (only `names`,
    in that order, when given)."""
    soft = config.with_overrides({"attention_weight": 0.0, "hidden_weight": 0.0,
                                  "kd_weight": config.kd_weight or 0.9})
    attention = {"attention_weight": config.attention_weight or ABLATION_WEIGHTS["attention_weight"]}
    # raw hidden states of LLMs are large; an ablation that turns FitNets on uses the cosine distance
    fitnets = ({"hidden_weight": config.hidden_weight} if config.hidden_weight else
               {"hidden_weight": ABLATION_WEIGHTS["hidden_weight"], "hidden_loss": "cosine"})
    rows = [
        ("ce_only", soft.with_overrides({"kd_weight": 0.0})),
        ("soft_target", soft),
        ("attention", soft.with_overrides(attention)),
        ("fitnets", soft.with_overrides(fitnets)),
        ("all", soft.with_overrides({**attention, **fitnets})),
    ]
    if names is None:
        return rows
    unknown = sorted(set(names) - {name for name, _ in rows})
    if unknown or not names:
        raise DistillError(f"unknown ablation row {', '.join(unknown) or '(none given)'}: the rows are "
                           f"{', '.join(name for name, _ in rows)}")
    return [(name, row) for name, row in rows if name in names]


ON_POLICY_FRACTIONS = (0.5, 1.0)
"""GKD's λ of the on-policy ablation's rows, next to soft targets (λ = 0)."""


def on_policy_rows(config) -> list[tuple[str, Any]]:
    """Soft targets on the corpus, then the same recipe with a share λ of the steps on the student's own text
    (ON_POLICY_FRACTIONS): same seed, data and optimizer steps."""
    soft = dict(ablation_rows(config))["soft_target"].with_overrides({"on_policy_fraction": 0.0})
    return [("soft_target", soft)] + [(f"on_policy_{fraction:g}", soft.with_overrides({"on_policy_fraction": fraction}))
                                      for fraction in ON_POLICY_FRACTIONS]


SMALL_CORPUS_SENTENCES = 300
"""Sentences in the deliberately small training corpus of the augmentation ablation."""


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: split after . ! or ? followed by white space; those of fewer than three
    words are left out."""
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return [p.strip() for p in parts if len(p.split()) >= 3]


def small_corpus(config, sentences: int = SMALL_CORPUS_SENTENCES) -> Iterator[tuple[str, list[str] | None]]:
    """A deliberately small training corpus: `sentences` sentences drawn (seeded by `config.seed`) from
    the config's corpus (the teacher-generated one, a file, pasted text or a hub dataset, as a session
    would load it). Yields progress messages, then (description, the sentences)."""
    if not isinstance(sentences, int) or sentences < 2:
        raise DistillError(f"the small corpus needs at least 2 sentences, got {sentences!r}")
    corpus, source = None, ""
    for source, corpus in load_corpus(config, LazyTeacher(config.teacher, torch.device("cpu"))):
        if corpus is None:
            yield source, None
    docs = corpus.docs
    pool = [s for doc in docs for s in split_sentences(doc)]
    if len(pool) < 2:
        raise DistillError(f"the corpus ({source}) has fewer than 2 sentences")
    picked = sorted(random.Random(config.seed).sample(range(len(pool)), min(sentences, len(pool))))
    yield f"{len(picked)} sentences of {source}", [pool[i] for i in picked]


def augmentation_rows(config, methods: list[str] | str, sentences: list[str]) -> list[tuple[str, Any]]:
    """Soft targets without and with augmentation (`methods`, at the config's strength and copies) on
    the same small corpus (one sentence per document), same seed and steps."""
    methods = parse_methods(methods)
    if not methods:
        raise DistillError("the augmentation ablation needs at least one method, e.g. --augmentation synonym")
    soft = dict(ablation_rows(config))["soft_target"].with_overrides(
        {"corpus_text": "\n\n".join(sentences), "hub_dataset": "", "augment": ""})
    return [("soft_target", soft), ("soft_target+augment", soft.with_overrides({"augment": ",".join(methods)}))]


SEED_MARK = " seed="
"""Between a recipe's name and its seed in the rows of `seeded_rows`."""
SEED_MEAN_KEYS = ("ppl", "real_ppl", "kl_to_teacher", "real_kl_to_teacher", "top1_agreement")


def seeded_rows(rows: list[tuple[str, Any]], seeds: list[int]) -> list[tuple[str, Any]]:
    """Every row once per seed, named `name seed=S`, seed by seed (a comparison stopped early keeps whole seeds).
    The seed draws the teacher's corpus, the batches' order and any random student: recipes a few percent apart
    can swap places from one seed to the next (README, "Judged on real text"), so a choice needs several."""
    if len(set(seeds)) != len(seeds):
        raise DistillError(f"--seeds: each seed once, got {','.join(map(str, seeds))}")
    return [(f"{name}{SEED_MARK}{seed}", config.with_overrides({"seed": seed})) for seed in seeds
            for name, config in rows]


def seed_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe of `seeded_rows`' rows (in order of first appearance; rows with an error left out): `seeds`, and
    each of SEED_MEAN_KEYS's mean with its lowest and highest (`KEY_min`, `KEY_max`), None where a row lacks it."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if not row.get("error"):
            groups.setdefault(row["name"].split(SEED_MARK)[0], []).append(row)
    means = []
    for name, group in groups.items():
        entry: dict[str, Any] = {"name": name, "seeds": len(group)}
        for key in SEED_MEAN_KEYS:
            values = [row.get(key) for row in group]
            ok = all(v is not None for v in values)
            entry.update({key: sum(values) / len(values) if ok else None, f"{key}_min": min(values) if ok else None,
                          f"{key}_max": max(values) if ok else None})
        means.append(entry)
    return means


def ablation(config, out_dir: str | Path, rows: list[tuple[str, Any]] | None = None, stop: Any = None,
             session: Any = None) -> Iterator[dict[str, Any]]:
    """The technique ablation (`ablation_rows`, or the given (name, config) `rows`, e.g.
    `augmentation_rows`), one session each in `out_dir/<name>`: yields every session event with
    `"ablation": name` added, then `{"kind": "row", "row": row}` (name, ppl, bits_per_byte (and before, and the
    teacher's), top1_agreement, kl_to_teacher, sample_nll, sample_reverse_kl and sample_entropy (the
    teacher-scored measure of the student's own text, and the student's entropy there), teacher_sample_nll,
    on_policy_fraction, on_policy_steps, steps, wall_s, ppl_before, teacher_ppl, error, augmented, and the real
    text's `REAL_KEYS`) and rewrites
    `out_dir/ablation.json`. A DistillError from a session (bad input) ends the ablation. `stop` (set: the
    session running stops, its row is kept, and no further row starts) and `session(config, out_dir, stop)`
    (default `run_session`; the app's runs each on the GPU as a Run does) are those of `student_sweep`; a row's
    folder is `safe_name(name)` (a name may hold a colon, e.g. `preset:hinton`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop if stop is not None else threading.Event()
    rows_done = []
    write_json_atomic(out / "ablation.json", rows_done)  # not a previous comparison's rows; marks the rows' group
    for name, row_config in rows if rows is not None else ablation_rows(config):
        if stop.is_set():
            break
        final = None
        for ev in (session or run_session)(row_config, out / safe_name(name), stop):
            if ev["kind"] in FINAL_KINDS:
                final = ev
            yield {**ev, "ablation": name}
        summary = final["summary"]
        after, on_policy = summary["after"], summary.get("on_policy") or {}
        row = {"name": name, "ppl": after["ppl"], "bits_per_byte": after.get("bits_per_byte"),
               "bits_per_byte_before": summary["before"].get("bits_per_byte"),
               "teacher_bits_per_byte": summary["teacher"].get("bits_per_byte"),
               "top1_agreement": after["top1_agreement"],
               "kl_to_teacher": after["kl_to_teacher"], "sample_nll": after.get("sample_nll"),
               "sample_reverse_kl": after.get("sample_reverse_kl"), "sample_entropy": after.get("sample_entropy"),
               "teacher_sample_nll": summary["teacher"].get("sample_nll"),
               "on_policy_fraction": on_policy.get("fraction", 0.0), "on_policy_steps": on_policy.get("steps", 0),
               "steps": summary["steps_done"], "wall_s": summary["wall_s"],
               "ppl_before": summary["before"]["ppl"], "teacher_ppl": summary["teacher"]["ppl"],
               "error": summary["error"], "stopped_early": summary.get("stopped_early", False),
               "augmented": summary.get("augmented"), **real_fields(summary)}
        rows_done.append(row)
        write_json_atomic(out / "ablation.json", rows_done)
        yield {"kind": "row", "elapsed_s": ev["elapsed_s"], "ablation": name, "row": row}
