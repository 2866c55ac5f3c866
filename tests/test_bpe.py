"""A student's own vocabulary: a byte-level BPE trained offline on the corpus, cached by corpus and settings."""

import pytest

from distill_core.bpe import END_OF_TEXT, bpe_tokenizer, cache_folder, corpus_digest, load_bpe
from distill_core.errors import DistillError
from distill_core.specs import own_vocabulary, parse_derived_spec
from tests.conftest import SAMPLE_TEXT

DOCS = [d for d in SAMPLE_TEXT.split("\n\n") if d.strip()]


def test_a_bpe_is_trained_on_the_corpus_cached_and_reloaded():
    tokenizer = bpe_tokenizer(DOCS, 360)
    assert 256 < len(tokenizer) <= 360  # the byte alphabet, the end token and merges, at most as many as asked
    assert tokenizer.eos_token == tokenizer.pad_token == END_OF_TEXT and tokenizer.eos_token_id == 0
    folder = cache_folder(DOCS, 360)
    assert (folder / "tokenizer.json").is_file()
    again = load_bpe(folder)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert bpe_tokenizer(DOCS, 360).get_vocab() == tokenizer.get_vocab()  # from the cache
    assert cache_folder(DOCS[:2], 360) != folder and cache_folder(DOCS, 400) != folder  # keyed by corpus and size


def test_byte_level_encodes_any_text_and_merges_frequent_words():
    tokenizer = bpe_tokenizer(DOCS, 360)
    text = "Naïve café, 你好 — emoji 🙂 and tabs\t!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # no unknown token: every byte has one
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1  # " the" is frequent in the corpus: one merged token
    assert len(tokenizer("xqzv", add_special_tokens=False)["input_ids"]) >= 2


def test_digest_depends_on_every_document_and_their_order():
    assert corpus_digest(["ab", "c"]) != corpus_digest(["a", "bc"]) != corpus_digest(["c", "ab"])
    with pytest.raises(DistillError, match="corpus is empty"):
        bpe_tokenizer(["  ", ""], 300)


def test_the_spec_names_the_vocabulary():
    assert parse_derived_spec("fresh:layers=2,hidden=64,heads=4,vocab=bpe:8000")[1]["vocab"] == 8000
    assert own_vocabulary("fresh:layers=2,hidden=64,heads=4,vocab=bpe:8000") == 8000
    assert own_vocabulary("fresh:layers=2,hidden=64,heads=4") is None and own_vocabulary("layers:3") is None
    with pytest.raises(DistillError, match="vocab must be bpe:N"):
        parse_derived_spec("fresh:layers=2,hidden=64,heads=4,vocab=wordpiece:100")
    with pytest.raises(DistillError, match="between 300 and 200000 tokens"):
        parse_derived_spec("fresh:layers=2,hidden=64,heads=4,vocab=bpe:50")
