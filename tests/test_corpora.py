"""Corpus sources: files (.txt, .jsonl/.json, .csv, .parquet), Hugging Face datasets, pasted text and the
teacher-generated corpus, as a session loads them (`load_corpus`) and as a preview shows them (`first_texts`)."""

import json
import re
import socket

import pytest
import torch
from transformers import AutoTokenizer

from distill_core import corpora, data
from distill_core.corpora import corpus_stats, first_texts, load_corpus, load_hub_dataset, read_corpus_file, text_columns
from distill_core.data import split_documents
from distill_core.errors import DistillError
from distill_core.models import LazyTeacher
from distill_core.session import run_session
from tests.conftest import SAMPLE_TEXT

ROWS = [{"title": "Garden", "text": "The garden sits behind the house.", "n": 1},
        {"title": "Beds", "text": "Each year the crops move one bed along.", "n": 2},
        {"title": "Empty", "text": "", "n": 3}]


def write_formats(folder):
    """The same three rows as .jsonl, .json (records), .csv and .parquet, and a .txt of two paragraphs."""
    import pandas as pd

    frame = pd.DataFrame(ROWS)
    paths = {"jsonl": folder / "rows.jsonl", "json": folder / "rows.json", "csv": folder / "rows.csv",
             "parquet": folder / "rows.parquet", "txt": folder / "notes.txt"}
    paths["jsonl"].write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    paths["json"].write_text(json.dumps(ROWS), encoding="utf-8")
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    paths["txt"].write_text("First paragraph,\nstill the first.\n\nSecond paragraph.\n", encoding="utf-8")
    return paths


def test_each_corpus_format_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))

    paths = write_formats(tmp_path)
    for fmt in ("jsonl", "json", "csv", "parquet"):
        texts, info = read_corpus_file(paths[fmt])
        assert texts == [ROWS[0]["text"], ROWS[1]["text"]], fmt  # the `text` column; the empty row is skipped
        assert info["column"] == "text" and info["rows"] == 3 and info["empty_rows"] == 1 and info["documents"] == 2
        assert text_columns(paths[fmt]) == ["title", "text"], fmt
        assert read_corpus_file(paths[fmt], column="title")[0] == ["Garden", "Beds", "Empty"]
    texts, info = read_corpus_file(paths["txt"])
    assert texts == ["First paragraph,\nstill the first.", "Second paragraph."] and info["format"] == "text"
    assert text_columns(paths["txt"]) == []
    strings = tmp_path / "list.json"
    strings.write_text(json.dumps(["one document", "another one"]))
    assert read_corpus_file(strings)[0] == ["one document", "another one"]
    assert (tmp_path / "cache" / "datasets-scratch").is_dir()
    assert not any((tmp_path / "cache" / "datasets-scratch").iterdir())  # the temporary table caches are gone


def test_bad_corpus_files_give_clear_errors_and_lose_nothing(tmp_path, monkeypatch):
    paths = write_formats(tmp_path)
    loaded = read_corpus_file(paths["csv"])  # what a user had already loaded
    snapshot = json.dumps(loaded)
    bad = {
        "empty.csv": (b"", "is empty"),
        "blank.jsonl": (b"  \n\n", "is empty"),
        "binary.jsonl": (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "looks binary"),
        "latin1.csv": ("text\ncaf\xe9\n".encode("latin-1"), "is not UTF-8"),
        "fake.parquet": (b"text\nnot parquet\n", "is not a Parquet file"),
        "header.csv": (b"text,title\n", "has no rows"),
        "broken.jsonl": (b'{"text": "a"\n', "could not be read as JSON"),
        "notes.docx": (b"PK\x03\x04", "unknown file type '.docx'"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DistillError, match=re.escape(message)):
            read_corpus_file(tmp_path / name)
    with pytest.raises(DistillError, match=r"no column 'body'; its text columns: title, text \(all columns: title, text, n\)"):
        read_corpus_file(paths["csv"], column="body")
    with pytest.raises(DistillError, match="column 'n' of corpus file rows.parquet holds int64, not text; its text columns: title, text"):
        read_corpus_file(paths["parquet"], column="n")
    (tmp_path / "blank_column.csv").write_text("text,note\nhello there,\nsecond row,\n")
    with pytest.raises(DistillError, match="column 'note' of corpus file blank_column.csv has no text"):
        read_corpus_file(tmp_path / "blank_column.csv", column="note")
    (tmp_path / "two.csv").write_text("question,answer\nwhy?,because\n")
    with pytest.raises(DistillError, match="several text columns \\(question, answer\\); pick the one"):
        read_corpus_file(tmp_path / "two.csv")
    with pytest.raises(DistillError, match="not found"):
        read_corpus_file(tmp_path / "missing.jsonl")
    monkeypatch.setattr(data, "MAX_TEXT_BYTES", 64)
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps({"text": "word " * 20}) for _ in range(3)))
    for path in (big, paths["txt"].with_name("big.txt")):
        path.write_text("word " * 40)
        with pytest.raises(DistillError, match="the limit is 0 MiB"):
            read_corpus_file(path)
    assert json.dumps(loaded) == snapshot  # a failed read changes nothing already loaded


def test_hub_dataset_offline_fails_at_once(monkeypatch):
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(DistillError, match="Hugging Face dataset 'wikitext' is not available here: the hub is unreachable"):
        load_hub_dataset("wikitext", "wikitext-2-raw-v1", "train", "text")
    assert len(attempts) <= 1  # one reachability check, no retries (datasets itself is never asked)
    with pytest.raises(DistillError, match="not a Hugging Face dataset id"):
        load_hub_dataset("../etc/passwd")


def test_hub_dataset_rows_and_column(monkeypatch):
    """With the hub reachable (simulated): streamed rows, the column picked like a file's."""
    import datasets

    streamed = datasets.Dataset.from_list(ROWS).to_iterable_dataset()
    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return streamed

    monkeypatch.setattr(corpora, "hub_reachable_within", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    texts, info = corpora.load_hub_dataset("org/notes", "default", "train", None, max_rows=2)
    assert texts == [ROWS[0]["text"], ROWS[1]["text"]] and info["rows"] == 2 and info["column"] == "text"
    assert calls[0][0] == ("org/notes", "default") and calls[0][1]["streaming"] and calls[0][1]["split"] == "train"
    with pytest.raises(DistillError, match="no column 'body'"):
        corpora.load_hub_dataset("org/notes", column="body")


def test_session_reads_a_table_corpus_and_reports_tokens(tiny_config, tmp_path):
    rows = [{"id": i, "review": paragraph} for i, paragraph in enumerate(split_documents(SAMPLE_TEXT))]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = tiny_config.with_overrides({"corpus_text": "", "corpus": str(path), "corpus_column": "review",
                                         "steps": 1, "eval_every": 0, "probe_every": 0})
    events = list(run_session(config, None))
    corpus = next(e for e in events if e["kind"] == "corpus")
    assert corpus["source"] == "file reviews.jsonl, column review" and corpus["documents"] == len(rows)
    assert events[-1]["kind"] == "done"
    stats = corpus_stats(AutoTokenizer.from_pretrained(tiny_config.teacher), [r["review"] for r in rows], config.seq_len)
    assert (stats["train_tokens"], stats["val_tokens"]) == (corpus["train_tokens"], corpus["val_tokens"])
    with pytest.raises(DistillError, match="no column 'body'"):
        list(run_session(config.with_overrides({"corpus_column": "body"}), None))


def test_load_corpus_picks_the_source_and_first_texts_previews_it(tiny_config, tmp_path):
    """Pasted text wins over a file; the file's rows are the documents; the preview shows the same texts."""
    teacher = LazyTeacher(tiny_config.teacher, torch.device("cpu"))
    steps = list(load_corpus(tiny_config, teacher))
    (source, corpus), = steps
    docs = corpus.docs
    assert source.startswith("pasted text (") and docs == split_documents(SAMPLE_TEXT) and corpus.blocks is None
    assert first_texts(tiny_config, 2) == (docs, "the pasted text")
    paths = write_formats(tmp_path)
    from_file = tiny_config.with_overrides({"corpus_text": "", "corpus": str(paths["csv"]), "corpus_column": "text"})
    (source, corpus), = list(load_corpus(from_file, teacher))
    docs = corpus.docs
    assert source == "file rows.csv, column text" and docs == [ROWS[0]["text"], ROWS[1]["text"]]
    assert first_texts(from_file, 1) == (docs, "`rows.csv`")
    assert teacher.loaded is None  # no model was loaded for any of this


def test_first_texts_of_an_unwritten_teacher_corpus_are_its_prompts(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river\nIn the market\n")
    config = tiny_config.with_overrides({"corpus_text": "", "corpus": "teacher-generated", "prompts_file": str(prompts)})
    texts, where = first_texts(config, 3)
    assert texts == ["The river", "In the market"] and where.startswith("the prompts the teacher will continue")


def test_the_teacher_generated_corpus_comes_in_blocks_with_its_targets(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river\nIn the market\nMy bicycle\n")
    config = tiny_config.with_overrides({"corpus_text": "", "corpus": "teacher-generated", "prompts_file": str(prompts),
                                         "generation_tokens": 12})
    steps = list(load_corpus(config, LazyTeacher(config.teacher, torch.device("cpu"))))
    source, corpus = steps[-1]
    assert "3 prompts, each continued to a block of 32 tokens (at most 12 new)" in source
    assert corpus.blocks.input_ids.shape == (3, 32) and corpus.targets.indices.shape[:2] == (3, 32)
    texts, where = first_texts(config, 3)
    assert texts == corpus.docs and where == "the teacher-generated corpus"
    teacher = LazyTeacher(config.teacher, torch.device("cpu"))
    (_, again), = list(load_corpus(config, teacher))  # cached: read without loading the teacher
    assert again.docs == corpus.docs and teacher.loaded is None
