import pytest
import torch

from distill_core.data import (Blocks, batches, heldout_blocks, pack, read_text_file, split_documents,
                               train_heldout_split)
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




def test_heldout_blocks_are_the_configs_eval_text_padded(tiny_config, tmp_path):
    text = tmp_path / "heldout.txt"
    text.write_text("abcdefghij\n\nklmno")
    config = tiny_config.with_overrides({"eval_text": str(text), "seq_len": 4, "eval_max_tokens": 100})
    blocks = heldout_blocks(config, CharTokenizer())
    # 10 + EOS + 5 + EOS = 17 tokens: four full blocks of 4 and a last block of one token is dropped (pad_last
    # keeps a partial block of 2 or more)
    assert blocks.input_ids.shape == (4, 4) and blocks.n_tokens == 16
    capped = heldout_blocks(config.with_overrides({"eval_max_tokens": 6}), CharTokenizer())
    assert capped.n_tokens == 6 and capped.attention_mask[-1].tolist() == [1, 1, 0, 0]
