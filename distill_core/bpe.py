"""A student's own vocabulary, offline: a byte-level BPE (Sennrich et al. 2016, the byte-level variant of
GPT-2, Radford et al. 2019) trained with Hugging Face `tokenizers` on the session's training corpus, for the
derived spec `fresh:layers=L,hidden=H,heads=A,vocab=bpe:N`. Its tokens differ from the teacher's, so that
pair distils across tokenizers (tokenizer_bridge.py) with no hub.

Trained once per corpus and settings and cached on disk (keyed by the corpus's sha256, the vocabulary size,
the minimum pair frequency and this module's version); the student saves and exports it like any tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from distill_core.errors import DistillError
from distill_core.paths import cache_dir

END_OF_TEXT = "<|endoftext|>"
"""The tokenizer's one special token: end of a document (also its padding and start token), id 0."""
MIN_FREQUENCY = 2
"""A pair is merged only when it occurs at least twice: a merge seen once would memorise the corpus."""
VERSION = 1
"""Part of the cache key: a change to how the tokenizer is trained invalidates the cached ones."""
_TRAIN_LOCK = threading.Lock()


def corpus_digest(documents: list[str]) -> str:
    """sha256 of the documents as a session packs them (in order, each one whole)."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def cache_folder(documents: list[str], vocab_size: int) -> Path:
    key = hashlib.sha256(f"{corpus_digest(documents)}:{vocab_size}:{MIN_FREQUENCY}:{VERSION}".encode()).hexdigest()
    return cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{key[:16]}"


def bpe_tokenizer(documents: list[str], vocab_size: int) -> Any:
    """The byte-level BPE of at most `vocab_size` tokens trained on `documents` (from the cache when it was
    trained before), as a transformers tokenizer with END_OF_TEXT as its end, start and padding token. The
    trainer stops early when no pair occurs MIN_FREQUENCY times: a small corpus gives fewer tokens."""
    if not documents or not any(doc.strip() for doc in documents):
        raise DistillError("a BPE vocabulary needs training text; the corpus is empty")
    folder = cache_folder(documents, vocab_size)
    with _TRAIN_LOCK:
        if not (folder / "tokenizer.json").is_file():
            _train(documents, vocab_size, folder)
    return load_bpe(folder)


def _train(documents: list[str], vocab_size: int, folder: Path) -> None:
    tokenizer = Tokenizer(models.BPE())
    # byte-level: every text encodes (no unknown token), and every token is a sequence of bytes
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(documents, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT,
                                      pad_token=END_OF_TEXT)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    wrapped.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)


def load_bpe(folder: str | Path) -> Any:
    """A BPE tokenizer saved by `bpe_tokenizer` (or with a student), local files only."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a damaged cache entry: say where it is
        raise DistillError(f"cannot read the BPE tokenizer in {folder}: {exc}") from None
