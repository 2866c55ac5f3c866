"""A session's training text from its source (`load_corpus`): pasted text, a Hugging Face dataset, a file
(.txt, .jsonl/.json, .csv, .parquet) or the teacher-generated corpus (teacher_corpus.py); token counts of a
corpus before a session, and the first texts of a source for a preview.

    texts, info = read_corpus_file("reviews.csv", column="review")   # one document per row
    text_columns("reviews.csv")                                       # ['title', 'review'] for a picker
    texts, info = load_hub_dataset("wikitext", "wikitext-2-raw-v1", "train", "text", max_rows=2000)

Tables are read through Hugging Face `datasets` (its packaged json/csv/parquet builders, which need no
network) into a temporary cache that is removed afterwards, so uploads do not pile up on disk. Every
reader checks the file first (missing, empty, over `MAX_TEXT_BYTES`, binary, not UTF-8, not Parquet)
and raises a `DistillError` with a message for the user; a failed read changes nothing, so whatever a
caller loaded before is kept. A hub dataset needs the hub: offline it fails at once (no retries).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_core.config import DistillConfig
from distill_core.data import (HELDOUT_FRACTION, Blocks, check_text, checked_file, decode_text, read_prompts,
                               read_text_file, split_documents)
from distill_core.errors import DistillError, first_line
from distill_core.losses import TopKTargets
from distill_core.hub import hub_reachable_within
from distill_core.models import LazyTeacher, resolve_model
from distill_core.paths import cache_dir, project_path
from distill_core.teacher_corpus import Decoding, cached_corpus, cached_texts, generate_corpus

CORPUS_FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json",
                  ".csv": "csv", ".parquet": "parquet"}
"""File suffix -> how it is read. Text files: paragraphs (blank-line separated) are documents; the
table formats: one document per row of the text column."""
PREFERRED_COLUMNS = ("text", "content", "document", "sentence", "body")
"""Without a column given, the first of these that is a text column is read (else the only text column)."""
DEFAULT_HUB_ROWS = 2000
"""Rows read from a Hugging Face dataset unless told otherwise (streamed: a large dataset is not downloaded whole)."""

_STRING_DTYPES = ("string", "large_string")


@dataclass
class Corpus:
    """A session's training text: its documents and, for the teacher-generated corpus, its blocks as the
    teacher wrote them (one per prompt) with the teacher's top-k captured at every position."""

    docs: list[str]
    blocks: Blocks | None = None
    targets: TopKTargets | None = None


def corpus_format(path: str | Path) -> str:
    """`text`, `json`, `csv` or `parquet` from the file's suffix; DistillError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in CORPUS_FORMATS:
        known = ", ".join(sorted(CORPUS_FORMATS))
        raise DistillError(f"corpus file {Path(path).name}: unknown file type {suffix or '(no extension)'!r}; "
                           f"use one of {known}")
    return CORPUS_FORMATS[suffix]


def _checked_bytes(path: Path, fmt: str, what: str) -> bytes:
    """The file's bytes after the checks every format shares (and the text ones: no NUL, UTF-8)."""
    size = checked_file(path, what).stat().st_size
    if size == 0:
        raise DistillError(f"{what} {path.name} is empty")
    raw = path.read_bytes()
    if fmt == "parquet":
        if len(raw) < 12 or raw[:4] != b"PAR1" or raw[-4:] != b"PAR1":
            raise DistillError(f"{what} {path.name} is not a Parquet file (no PAR1 marker); export it again as Parquet")
        return raw
    check_text(decode_text(raw, f"{what} {path.name}"), f"{what} {path.name}")
    return raw


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    logging = datasets.utils.logging
    was_enabled, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield datasets
    finally:
        logging.set_verbosity(level)
        if was_enabled:
            logging.enable_progress_bar()


def _load_table(path: Path, fmt: str, what: str) -> tuple[dict[str, str], Any]:
    """(column name -> dtype, an in-memory `datasets.Dataset`) of a json/csv/parquet file."""
    raw = _checked_bytes(path, fmt, what)
    if fmt == "json" and path.suffix.lower() == ".json":
        try:  # a plain JSON list of strings is a corpus too
            values = json.loads(raw.decode("utf-8-sig"))
        except ValueError:
            values = None
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            from datasets import Dataset

            return {"text": "string"}, Dataset.from_dict({"text": values})
    scratch = cache_dir() / "datasets-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(dir=scratch) as tmp:
        try:
            table = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=tmp,
                                          keep_in_memory=True)
        except Exception as exc:
            if "corresponds to no data" in str(exc):  # e.g. a CSV file with a header line only
                raise DistillError(f"{what} {path.name} has no rows") from None
            cause = exc.__cause__ or exc.__context__ or exc
            detail = first_line(cause, 200) or first_line(exc, 200) or type(exc).__name__
            raise DistillError(f"{what} {path.name} could not be read as {fmt.upper()}: {detail}") from None
    if table.num_rows == 0:
        raise DistillError(f"{what} {path.name} has no rows")
    columns = {name: getattr(feature, "dtype", type(feature).__name__) for name, feature in table.features.items()}
    return columns, table


def _pick_column(columns: dict[str, str], column: str | None, where: str) -> str:
    """The text column to read: `column` when given (checked), else a preferred name or the only one."""
    texts = [name for name, dtype in columns.items() if dtype in _STRING_DTYPES]
    listed = ", ".join(texts) if texts else "none"
    if column:
        if column not in columns:
            raise DistillError(f"{where} has no column {column!r}; its text columns: {listed}"
                               + (f" (all columns: {', '.join(columns)})" if set(columns) - set(texts) else ""))
        if column not in texts:
            raise DistillError(f"column {column!r} of {where} holds {columns[column]}, not text; its text columns: {listed}")
        return column
    if not texts:
        raise DistillError(f"{where} has no text column (columns: {', '.join(columns)})")
    for name in PREFERRED_COLUMNS:
        if name in texts:
            return name
    if len(texts) == 1:
        return texts[0]
    raise DistillError(f"{where} has several text columns ({listed}); pick the one to train on")


def _column_texts(values: list[Any], column: str, where: str) -> tuple[list[str], int]:
    """Non-empty texts of a column (stripped), and how many rows were empty."""
    texts = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        raise DistillError(f"column {column!r} of {where} has no text (every row is empty)")
    return texts, len(values) - len(texts)


def text_columns(path: str | Path) -> list[str]:
    """The text (string) columns of a .jsonl/.json/.csv/.parquet file, for a column picker; [] for a
    text file (it has no columns). Raises DistillError for a file that cannot be read."""
    path = project_path(path)
    fmt = corpus_format(path)
    if fmt == "text":
        return []
    columns, _ = _load_table(path, fmt, "corpus file")
    return [name for name, dtype in columns.items() if dtype in _STRING_DTYPES]


def read_corpus_file(path: str | Path, column: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """A corpus file as documents, and what was read.

    .txt/.text/.md: UTF-8 text, paragraphs (separated by blank lines) are documents. .jsonl/.json,
    .csv and .parquet: one document per non-empty row of the text `column` (default: `text`,
    `content`, ... or the only text column; a .json file may also be a plain list of strings).
    info: `format`, `documents`, `characters`, and for tables `column`, `columns` (the text columns),
    `rows`, `empty_rows`."""
    path = project_path(path)
    fmt = corpus_format(path)
    if fmt == "text":
        docs = split_documents(read_text_file(path, "corpus file"))
        return docs, {"format": "text", "documents": len(docs), "characters": sum(map(len, docs))}
    where = f"corpus file {path.name}"
    columns, table = _load_table(path, fmt, "corpus file")
    if column and columns.get(column, "string") not in _STRING_DTYPES and all(
            v is None or (isinstance(v, float) and math.isnan(v)) for v in table[column]):
        raise DistillError(f"column {column!r} of {where} has no text (every row is empty)")
    name = _pick_column(columns, column, where)
    texts, empty = _column_texts(table[name], name, where)
    return texts, {"format": fmt, "column": name, "columns": [c for c, d in columns.items() if d in _STRING_DTYPES],
                   "rows": table.num_rows, "empty_rows": empty, "documents": len(texts),
                   "characters": sum(map(len, texts))}


_HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?")


def load_hub_dataset(dataset_id: str, config: str | None = None, split: str = "train", column: str | None = None,
                     max_rows: int = DEFAULT_HUB_ROWS) -> tuple[list[str], dict[str, Any]]:
    """The first `max_rows` rows of a Hugging Face dataset's `split` (streamed), one document per
    non-empty row of the text `column` (chosen as in `read_corpus_file`). Needs the hub: when it is
    unreachable (or HF_HUB_OFFLINE is set) this fails at once, before `datasets` tries anything."""
    dataset_id = (dataset_id or "").strip()
    if not dataset_id:
        raise DistillError("no Hugging Face dataset id given")
    if not _HUB_DATASET_ID.fullmatch(dataset_id):
        raise DistillError(f"{dataset_id!r} is not a Hugging Face dataset id (like `wikitext` or `org/name`)")
    if not isinstance(max_rows, int) or max_rows < 1:
        raise DistillError(f"max_rows must be a positive integer, got {max_rows!r}")
    if not hub_reachable_within():
        raise DistillError(f"Hugging Face dataset {dataset_id!r} is not available here: the hub is unreachable "
                           "(offline). Upload the text as a .txt, .jsonl, .csv or .parquet file instead.")
    split = (split or "train").strip()
    where = f"Hugging Face dataset {dataset_id}" + (f" ({config})" if config else "") + f", split {split}"
    with _quiet_datasets() as datasets:
        try:
            stream = datasets.load_dataset(dataset_id, config or None, split=split, streaming=True,
                                           cache_dir=str(cache_dir() / "datasets"))
            rows = list(itertools.islice(iter(stream), max_rows))
        except Exception as exc:
            raise DistillError(f"cannot read {where}: {first_line(exc, 300) or type(exc).__name__}") from None
    if not rows:
        raise DistillError(f"{where} has no rows")
    features = getattr(stream, "features", None)
    if features:
        columns = {name: getattr(f, "dtype", type(f).__name__) for name, f in features.items()}
    else:  # streaming datasets may not know their features: look at the rows
        columns = {name: ("string" if all(isinstance(r.get(name), (str, type(None))) for r in rows) else "other")
                   for name in rows[0]}
    name = _pick_column(columns, column, where)
    texts, empty = _column_texts([r.get(name) for r in rows], name, where)
    return texts, {"format": "hub", "dataset": dataset_id, "config": config or None, "split": split, "column": name,
                   "columns": [c for c, d in columns.items() if d in _STRING_DTYPES], "rows": len(rows),
                   "empty_rows": empty, "documents": len(texts), "characters": sum(map(len, texts))}


def corpus_stats(tokenizer: Any, texts: list[str], seq_len: int, heldout_fraction: float | None = None) -> dict[str, Any]:
    """Token counts of a corpus as a session would pack it (each document + EOS, blocks of seq_len):
    `documents`, `tokens`, `blocks`, and the split into `train_blocks`/`val_blocks` with their tokens
    (the session holds out `heldout_fraction` of the blocks, at least one). For a preview before a run;
    the session's `corpus` event reports the same counts."""
    fraction = HELDOUT_FRACTION if heldout_fraction is None else heldout_fraction
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    blocks = tokens // seq_len
    val = max(1, int(round(blocks * fraction))) if blocks >= 2 else 0
    return {"documents": len(texts), "tokens": tokens, "blocks": blocks, "train_blocks": blocks - val,
            "val_blocks": val, "train_tokens": (blocks - val) * seq_len, "val_tokens": val * seq_len,
            "enough": blocks >= 2}


def load_corpus(config: DistillConfig, teacher: LazyTeacher) -> Iterator[tuple[str, Corpus | None]]:
    """A session's training text from the config's source. Yields progress messages as (message, None), then
    (description of the source, the corpus)."""
    if config.corpus_text.strip():
        docs = split_documents(check_text(config.corpus_text, "pasted text"))
        yield f"pasted text ({len(config.corpus_text)} characters)", Corpus(docs)
    elif config.hub_dataset.strip():
        yield f"Reading the Hugging Face dataset {config.hub_dataset} …", None
        texts, info = load_hub_dataset(config.hub_dataset, config.hub_config or None, config.hub_split,
                                       config.corpus_column or None, config.hub_max_rows)
        yield (f"Hugging Face dataset {info['dataset']}" + (f" ({info['config']})" if info["config"] else "")
               + f", split {info['split']}, column {info['column']}: {info['documents']} rows"), Corpus(texts)
    elif config.corpus == "teacher-generated":
        yield from _teacher_generated(config, teacher)
    else:
        docs, info = read_corpus_file(config.corpus, config.corpus_column or None)
        yield f"file {Path(config.corpus).name}" + (f", column {info['column']}" if "column" in info else ""), Corpus(docs)


def _writing_settings(config: DistillConfig) -> tuple[list[str], int, int, int, Decoding]:
    """What a teacher-generated corpus is written from, and cached under besides the teacher: (prompts, block
    length, new tokens at most, seed, decoding), in `teacher_corpus`'s argument order."""
    return (read_prompts(config.prompts_file), config.seq_len, config.generation_tokens, config.seed,
            Decoding.of(config))


def _teacher_generated(config: DistillConfig, teacher: LazyTeacher) -> Iterator[tuple[str, Corpus | None]]:
    settings = _writing_settings(config)
    prompts = settings[0]
    source = (f"teacher-generated: {len(prompts)} prompts, each continued to a block of {config.seq_len} tokens "
              f"(at most {config.generation_tokens} new)")
    cached = cached_corpus(teacher.fingerprint(), *settings)
    if cached is not None:  # no teacher needed to read it
        yield source, Corpus(cached.texts, cached.blocks, cached.targets)
        return
    if teacher.loaded is None:
        yield f"Loading teacher {config.teacher} to write the corpus …", None
    for fraction, written in generate_corpus(teacher.get(), teacher.fingerprint(), *settings):
        if written is None:
            yield (f"The teacher is writing its corpus, {len(prompts)} continuations (once; then cached): "
                   f"{fraction:.0%} …"), None
        else:
            yield source, Corpus(written.texts, written.blocks, written.targets)


def first_texts(config: DistillConfig, rows: int) -> tuple[list[str], str]:
    """The first training texts of the config's corpus source, and a phrase naming them, for a preview
    before any session. For the teacher-generated corpus: the cached corpus if it has been written, else
    the prompts (no model is loaded)."""
    if config.corpus_text.strip():
        return split_documents(config.corpus_text), "the pasted text"
    if config.hub_dataset.strip():
        texts, info = load_hub_dataset(config.hub_dataset, config.hub_config or None, config.hub_split,
                                       config.corpus_column or None, min(config.hub_max_rows, rows))
        return texts, f"Hugging Face dataset `{config.hub_dataset}`, column `{info['column']}`"
    if config.corpus != "teacher-generated":
        texts, _ = read_corpus_file(config.corpus, config.corpus_column or None)
        return texts, f"`{Path(config.corpus).name}`"
    settings = _writing_settings(config)
    prompts = settings[0]
    generated = cached_texts(resolve_model(config.teacher).fingerprint(), *settings)
    if generated is not None:
        return generated, "the teacher-generated corpus"
    return prompts, ("the prompts the teacher will continue (its corpus is not generated yet: a session writes it "
                     "once, then it is cached)")
