"""Text into token blocks: reading text files safely, packing documents into fixed-length blocks, the
held-out split, the shuffled batches of a session, and the held-out evaluation blocks everyone scores
on (`heldout_blocks`). Where the training text comes from is corpora.py's business."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill_core import hosting
from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.paths import project_path
from distill_core.realtext import PACKAGED, real_text_path

MAX_TEXT_BYTES = 20 * 1024 * 1024
"""Largest text file a session reads (20 MiB)."""
HELDOUT_FRACTION = 0.1
"""Share of the training corpus held out to show over-fitting."""


def checked_file(path: str | Path, what: str) -> Path:
    """A file a session may read: it exists, is at most MAX_TEXT_BYTES and, in public mode, lies in the
    upload area or assets/ within the upload cap (hosting.check_readable)."""
    path = project_path(path)
    hosting.check_readable(path, what)
    if not path.is_file():
        raise DistillError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DistillError(f"{what} {path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_TEXT_BYTES // 2**20} MiB")
    return path


def read_text_file(path: str | Path, what: str = "text file") -> str:
    """Read a UTF-8 text file, refusing missing, empty, binary, non-UTF-8 and oversized files."""
    path = checked_file(path, what)
    return check_text(decode_text(path.read_bytes(), f"{what} {path.name}"), f"{what} {path.name}")


def decode_text(raw: bytes, what: str) -> str:
    """UTF-8 (with or without a BOM) text from bytes, refusing binary data and other encodings."""
    if b"\x00" in raw[:65536]:
        raise DistillError(f"{what} looks binary (it contains NUL bytes); upload plain UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DistillError(f"{what} is not UTF-8 (byte {exc.start} is invalid); save it as UTF-8") from None


def check_text(text: str, what: str = "text") -> str:
    if text is None or not text.strip():
        raise DistillError(f"{what} is empty")
    return text


def read_prompts(path: str | Path) -> list[str]:
    text = read_text_file(path, "prompts file")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    return prompts


def split_documents(text: str) -> list[str]:
    """A user's text as documents: paragraphs separated by blank lines (or the whole text)."""
    docs = [d.strip() for d in text.replace("\r\n", "\n").split("\n\n")]
    return [d for d in docs if d]


@dataclass
class Blocks:
    """Token blocks of fixed length: input_ids and attention_mask, each (n_blocks, seq_len)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def scored_tokens(self) -> int:
        """Positions whose next token is in the block: what an evaluation scores (a block's last token has none)."""
        mask = self.attention_mask
        return int((mask[:, :-1] * mask[:, 1:]).sum())

    def select(self, index: torch.Tensor | slice | list[int]) -> "Blocks":
        return Blocks(self.input_ids[index], self.attention_mask[index])

    def digest(self) -> str:
        """SHA-256 of the exact token ids and masks: what the caches key a text by."""
        return tensors_digest(self.input_ids, self.attention_mask)


def tensors_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of integer tensors' shapes and values."""
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu", torch.int64).contiguous()
        digest.update(str(tuple(flat.shape)).encode())
        digest.update(flat.numpy())
    return digest.hexdigest()


def pack(tokenizer: Any, texts: list[str], seq_len: int, max_tokens: int | None = None, pad_last: bool = False) -> Blocks:
    """Concatenate documents (each followed by EOS) and cut into blocks of seq_len tokens.

    The final partial block is dropped, or padded and masked when `pad_last` (evaluation texts,
    where every token should count).
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(eos)
        if max_tokens is not None and len(stream) >= max_tokens:
            break
    if max_tokens is not None:
        stream = stream[:max_tokens]
    n_full, rest = divmod(len(stream), seq_len)
    ids = torch.tensor(stream[: n_full * seq_len], dtype=torch.long).view(n_full, seq_len)
    mask = torch.ones_like(ids)
    if pad_last and rest > 1:
        last = torch.full((1, seq_len), tokenizer.pad_token_id, dtype=torch.long)
        last[0, :rest] = torch.tensor(stream[n_full * seq_len :])
        last_mask = torch.zeros((1, seq_len), dtype=torch.long)
        last_mask[0, :rest] = 1
        ids, mask = torch.cat([ids, last]), torch.cat([mask, last_mask])
    if ids.shape[0] == 0:
        raise DistillError(f"the text has only {len(stream)} tokens, fewer than one block of seq_len={seq_len}: "
                           "give more text or a smaller seq_len")
    return Blocks(ids, mask)


def heldout_split(n_blocks: int, heldout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and the held-out blocks: shuffled with the seed, a fraction (at least one block)
    held out for validation."""
    if n_blocks < 2:
        raise DistillError("the corpus is too small: it needs at least two blocks (one to train, one held out); "
                           "give more text or a smaller seq_len")
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))
    n_heldout = max(1, int(round(n_blocks * heldout_fraction)))
    return order[n_heldout:], order[:n_heldout]


def train_heldout_split(blocks: Blocks, heldout_fraction: float, seed: int) -> tuple[Blocks, Blocks]:
    """The training and the held-out blocks (`heldout_split`)."""
    train, heldout = heldout_split(len(blocks), heldout_fraction, seed)
    return blocks.select(train), blocks.select(heldout)


def batch_indices(n_blocks: int, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
    """Endless shuffled batches of block indices: each epoch visits every block once, in a seeded order.

    `start` skips that many batches (a resumed session continues at its step): the same sequence
    from batch `start` on, without building the skipped batches."""
    generator = torch.Generator().manual_seed(seed)
    starts = range(0, n_blocks - batch_size + 1 if n_blocks >= batch_size else 1, batch_size)
    skip_epochs, skip = divmod(start, len(starts))
    for _ in range(skip_epochs):  # each epoch draws exactly one permutation
        torch.randperm(n_blocks, generator=generator)
    while True:
        order = torch.randperm(n_blocks, generator=generator)
        for first in starts[skip:]:
            yield order[first : first + batch_size]
        skip = 0


def batches(blocks: Blocks, batch_size: int, seed: int) -> Iterator[Blocks]:
    """Endless shuffled batches of blocks (see `batch_indices`)."""
    for index in batch_indices(len(blocks), batch_size, seed):
        yield blocks.select(index)


def heldout_blocks(config: DistillConfig, tokenizer: Any) -> Blocks:
    """The held-out evaluation blocks of a config (`eval_text`, at most `eval_max_tokens` tokens in blocks
    of `seq_len`, the last one padded so that every token counts): what a session, a sweep, the CLI's
    `evaluate` and the app's Evaluate tab all score on."""
    text = read_text_file(config.eval_text, "evaluation text")
    return pack(tokenizer, split_documents(text), config.seq_len, max_tokens=config.eval_max_tokens, pad_last=True)


def real_text_blocks(config: DistillConfig, tokenizer: Any) -> Blocks | None:
    """The real-text evaluation blocks of a config (`real_text`), packed like `heldout_blocks`; None when
    the config names none. DistillError (saying how to install it) when the packaged text is missing."""
    path = real_text_path(config.real_text)
    if path is None:
        return None
    # the packaged text lives in the cache, outside what public mode lets a config name: read it directly
    text = path.read_text(encoding="utf-8") if config.real_text.strip() == PACKAGED else read_text_file(path, "real text")
    return pack(tokenizer, split_documents(text), config.seq_len, max_tokens=config.eval_max_tokens, pad_last=True)


def real_text_or_note(config: DistillConfig, tokenizer: Any) -> tuple[Blocks | None, str | None]:
    """`real_text_blocks`, or (None, why) when the real text cannot be read (a view shows the reason and goes on)."""
    try:
        blocks = real_text_blocks(config, tokenizer)
    except DistillError as err:
        return None, str(err)
    return blocks, None if blocks is not None else "no real text configured"
