import json
import re

import pytest
import torch

from distill_core.data import Blocks, batches, pack, read_text_file, split_documents, train_heldout_split
from distill_core.errors import DistillError
from tests.conftest import SAMPLE_TEXT


class CharTokenizer:
    eos_token_id, pad_token_id = 0, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_pack_and_pad():
    blocks = pack(CharTokenizer(), ["abcd", "efg"], seq_len=3)
    # stream: a b c d 0 e f g 0 -> 3 full blocks
    assert blocks.input_ids.tolist() == [[97, 98, 99], [100, 0, 101], [102, 103, 0]]
    padded = pack(CharTokenizer(), ["abcde"], seq_len=4, pad_last=True)
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    with pytest.raises(DistillError, match="fewer than one block"):
        pack(CharTokenizer(), ["a"], seq_len=8)


def test_split_and_batches():
    blocks = Blocks(torch.arange(40).view(20, 2), torch.ones(20, 2, dtype=torch.long))
    train, held = train_heldout_split(blocks, 0.1, seed=0)
    assert len(train) == 18 and len(held) == 2
    assert not set(train.input_ids[:, 0].tolist()) & set(held.input_ids[:, 0].tolist())
    it = batches(train, 4, seed=0)
    first_epoch = [next(it) for _ in range(4)]
    seen = torch.cat([b.input_ids[:, 0] for b in first_epoch]).tolist()
    assert len(set(seen)) == 16  # no block twice within an epoch


def test_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DistillError, match="empty"):
        read_text_file(tmp_path / "empty.txt")
    with pytest.raises(DistillError, match="binary"):
        read_text_file(tmp_path / "binary.bin")
    with pytest.raises(DistillError, match="not UTF-8"):
        read_text_file(tmp_path / "latin1.txt")
    with pytest.raises(DistillError, match="not found"):
        read_text_file(tmp_path / "missing.txt")


def test_split_documents():
    assert split_documents("one\n\n\ntwo\r\n\r\nthree") == ["one", "two", "three"]


def test_generate_corpus_reports_progress_and_caches(tiny_teacher_dir, tmp_path, monkeypatch):
    from distill_core.checkpoints import load_teacher
    from distill_core.data import generate_corpus

    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    prompts = ["The river", "In the market", "My bicycle"]
    first = list(generate_corpus(teacher, prompts, new_tokens=40, seed=0, batch_size=2, report_every_s=0.01))
    fractions = [f for f, _ in first]
    assert len(first) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(texts is None for _, texts in first[:-1])
    texts = first[-1][1]
    assert len(texts) == 3 and all(text.startswith(p) and len(text) > len(p) for text, p in zip(texts, prompts))
    cached = list(generate_corpus(teacher, prompts, new_tokens=40, seed=0, batch_size=2))
    assert cached == [(1.0, texts)]  # from the cache: no generation, no progress steps
    [cache_file] = (tmp_path / "corpora").glob("*.json")
    cache_file.write_text("{not json")
    assert list(generate_corpus(teacher, prompts, new_tokens=40, seed=0, batch_size=2))[-1][1] == texts  # rebuilt, same seed


# ---- corpus files and sources (distill_core/corpora.py) ----------------------------------------------

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
    from distill_core.corpora import read_corpus_file, text_columns

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
    from distill_core import corpora, data
    from distill_core.corpora import read_corpus_file

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
    monkeypatch.setattr(corpora, "MAX_TEXT_BYTES", 64)
    monkeypatch.setattr(data, "MAX_TEXT_BYTES", 64)
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps({"text": "word " * 20}) for _ in range(3)))
    for path in (big, paths["txt"].with_name("big.txt")):
        path.write_text("word " * 40)
        with pytest.raises(DistillError, match="the limit is 0 MiB"):
            read_corpus_file(path)
    assert json.dumps(loaded) == snapshot  # a failed read changes nothing already loaded


def test_hub_dataset_offline_fails_at_once(monkeypatch):
    import socket
    import time

    from distill_core.corpora import load_hub_dataset

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    start = time.perf_counter()
    with pytest.raises(DistillError, match="Hugging Face dataset 'wikitext' is not available here: the hub is unreachable"):
        load_hub_dataset("wikitext", "wikitext-2-raw-v1", "train", "text")
    assert time.perf_counter() - start < 2.0
    with pytest.raises(DistillError, match="not a Hugging Face dataset id"):
        load_hub_dataset("../etc/passwd")


def test_hub_dataset_rows_and_column(monkeypatch):
    """With the hub reachable (simulated): streamed rows, the column picked like a file's."""
    import datasets

    from distill_core import corpora

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
    from distill_core.corpora import corpus_stats
    from distill_core.session import run_session

    rows = [{"id": i, "review": paragraph} for i, paragraph in enumerate(split_documents(SAMPLE_TEXT))]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = tiny_config.with_overrides({"corpus_text": "", "corpus": str(path), "corpus_column": "review",
                                         "steps": 1, "eval_every": 0, "probe_every": 0})
    events = list(run_session(config, None))
    corpus = next(e for e in events if e["kind"] == "corpus")
    assert corpus["source"] == "file reviews.jsonl, column review" and corpus["documents"] == len(rows)
    assert events[-1]["kind"] == "done"
    from transformers import AutoTokenizer

    stats = corpus_stats(AutoTokenizer.from_pretrained(tiny_config.teacher), [r["review"] for r in rows], config.seq_len)
    assert (stats["train_tokens"], stats["val_tokens"]) == (corpus["train_tokens"], corpus["val_tokens"])
    with pytest.raises(DistillError, match="no column 'body'"):
        list(run_session(config.with_overrides({"corpus_column": "body"}), None))
