"""Bits per byte: every token of the held-out text predicted once, the same bytes for every tokenizer, and the
value a uniform model must have."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill_core.bits_per_byte import ByteText, bits_per_byte, byte_windows, cut_documents, heldout_text
from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from tests.conftest import tiny_lm

TEXT = ByteText(["The bees of the town were kept in a garden.", "Café, 你好 and a river."])


def text_tokens(tokenizer, text: ByteText) -> int:
    return sum(len(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in text.documents)


def test_windows_predict_every_text_token_once(two_tokenizers):
    for tokenizer in two_tokenizers:
        for seq_len in (4, 7, 64):
            windows = byte_windows(tokenizer, TEXT, seq_len)
            assert int(windows.counted.sum()) == text_tokens(tokenizer, TEXT)
            assert windows.n_bytes == len(TEXT.documents[0].encode()) + len(TEXT.documents[1].encode())
            assert windows.input_ids[0, 0] == tokenizer.eos_token_id  # the first token has a context
            if len(windows.input_ids) > 1:  # each window starts with the last token of the one before
                assert windows.input_ids[1, 0] == windows.input_ids[0, -1]


def test_a_uniform_model_needs_log2_vocab_bits_per_token(two_tokenizers):
    teacher, student = two_tokenizers
    for tokenizer in (teacher, student):
        model = tiny_lm(len(tokenizer))
        with torch.no_grad():
            model.lm_head.weight.zero_()  # every logit 0: the uniform distribution
        result = bits_per_byte(model, byte_windows(tokenizer, TEXT, 5))
        tokens = text_tokens(tokenizer, TEXT)
        assert result["tokens"] == tokens
        assert result["bits_per_byte"] == pytest.approx(tokens * math.log2(len(tokenizer)) / TEXT.n_bytes, rel=1e-5)


def test_one_window_is_the_whole_stream_by_hand(two_tokenizers):
    tokenizer = two_tokenizers[1]
    model = tiny_lm(len(tokenizer), seed=3)
    eos = tokenizer.eos_token_id
    first, second = (tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in TEXT.documents)
    stream = torch.tensor([[eos, *first, eos, *second]])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=stream).logits[0, :-1], -1)
    nll = -logp.gather(-1, stream[0, 1:, None]).squeeze(-1)
    counted = torch.ones_like(nll, dtype=torch.bool)
    counted[len(first)] = False  # the end token between the documents stands for no byte
    expected = float(nll[counted].sum()) / math.log(2) / TEXT.n_bytes
    assert bits_per_byte(model, byte_windows(tokenizer, TEXT, 256))["bits_per_byte"] == pytest.approx(expected, rel=1e-5)


def test_the_held_out_bytes_are_cut_by_the_teachers_tokens(two_tokenizers, tmp_path):
    teacher = two_tokenizers[0]
    docs = ["one two three four five six", "seven eight"]
    whole = len(teacher(docs[0], add_special_tokens=False)["input_ids"])
    assert cut_documents(docs, teacher, 100).documents == docs
    cut = cut_documents(docs, teacher, 3)
    assert len(cut.documents) == 1 and docs[0].startswith(cut.documents[0]) and len(cut.documents[0]) < len(docs[0])
    assert len(teacher(cut.documents[0], add_special_tokens=False)["input_ids"]) == 3 < whole
    path = tmp_path / "heldout.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    config = DistillConfig(eval_text=str(path), eval_max_tokens=whole + 1)
    assert heldout_text(config, teacher).documents == docs[:1]
    with pytest.raises(DistillError, match="seq_len must be at least 2"):
        byte_windows(teacher, TEXT, 1)
