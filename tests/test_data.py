import pytest
import torch

from distill_core.data import Blocks, batches, pack, read_text_file, split_documents, train_heldout_split
from distill_core.errors import DistillError


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
