"""Corpora for a session: teacher-generated text (sequence-level KD), a user's file or pasted text;
tokenisation and packing into fixed-length blocks; the held-out split.

Sequence-level knowledge distillation (Kim & Rush 2016): training on the teacher's own
continuations of prompts gives the student text drawn from the teacher's distribution, so the
hard-label term agrees with the soft targets instead of pulling elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria

from distill_core import hosting
from distill_core.checkpoints import LoadedModel, cache_dir
from distill_core.errors import DistillError

MAX_TEXT_BYTES = 20 * 1024 * 1024
"""Largest text file a session reads (20 MiB)."""


def checked_file(path: str | Path, what: str) -> Path:
    """A file a session may read: it exists, is at most MAX_TEXT_BYTES and, in public mode, lies in the
    upload area or assets/ within the upload cap (hosting.check_readable)."""
    path = Path(path)
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


def _corpus_cache_path(teacher: LoadedModel, prompts: list[str], new_tokens: int, seed: int, batch_size: int) -> Path:
    # batch composition changes which random numbers each prompt draws, so it is part of the key
    key = json.dumps({"teacher": teacher.spec, "source": teacher.source, "prompts": prompts,
                      "new_tokens": new_tokens, "seed": seed, "batch_size": batch_size, "version": 2})
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "corpora" / f"teacher-generated-{digest}.json"


def generate_corpus(
    teacher: LoadedModel, prompts: list[str], new_tokens: int, seed: int = 0, batch_size: int = 160,
    report_every_s: float = 2.0,
) -> Iterator[tuple[float, list[str] | None]]:
    """The teacher continues each prompt once (sampled, T=0.8, top-p 0.95), in batches of up to 160
    (on a CPU larger decode batches give more tokens/s: 160 prompts at once took 0.73x the time of
    32 at a time). Yields (fraction done, None) every `report_every_s` while it writes, and finally
    (1.0, texts).

    Cached on disk by teacher, prompts, length and seed, so later sessions reuse the same corpus;
    a damaged cache file is regenerated."""
    if not prompts:
        raise DistillError("the prompts file has no prompts")
    path = _corpus_cache_path(teacher, prompts, new_tokens, seed, batch_size)
    texts = cached_corpus(teacher, prompts, new_tokens, seed, batch_size)
    if texts is not None:
        yield 1.0, texts
        return
    chunks = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    decode_steps = [0]  # decode steps done in the current chunk, counted from generate's worker thread
    outcome: dict[str, Any] = {}
    abandoned = threading.Event()  # set when this generator is closed early (a Stop): the writer ends at once

    class CountSteps(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            decode_steps[0] += 1
            return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool, device=input_ids.device)

    def write_all() -> None:
        tok, model = teacher.tokenizer, teacher.model
        rng_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        tok.padding_side = "left"  # generation continues from the right end of every prompt
        texts: list[str] = []
        try:
            for index, chunk in enumerate(chunks):
                if abandoned.is_set():
                    return
                decode_steps[0] = 0
                outcome["chunk"] = index
                enc = tok(chunk, return_tensors="pt", padding=True).to(model.device)
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True, temperature=0.8, top_p=0.95,
                                         pad_token_id=tok.pad_token_id, stopping_criteria=[CountSteps()])  # (b, prompt + new)
                continuations = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                texts.extend(p + c for p, c in zip(chunk, continuations))
            outcome["texts"] = texts
        except BaseException as exc:  # surfaced in the caller's thread
            outcome["error"] = exc
        finally:
            tok.padding_side = "right"
            torch.random.set_rng_state(rng_state)

    worker = threading.Thread(target=write_all, name="teacher-corpus", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(report_every_s)
            if worker.is_alive():
                done = outcome.get("chunk", 0) * new_tokens + min(decode_steps[0], new_tokens)
                yield done / (len(chunks) * new_tokens), None
    finally:
        if worker.is_alive():  # closed while writing: stop the teacher after its current token; nothing is cached
            abandoned.set()
    if "error" in outcome:
        raise outcome["error"]
    texts = outcome["texts"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"teacher": teacher.spec, "texts": texts}, ensure_ascii=False, indent=0), encoding="utf-8")
    tmp.replace(path)
    yield 1.0, texts


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

    def select(self, index: torch.Tensor | slice | list[int]) -> "Blocks":
        return Blocks(self.input_ids[index], self.attention_mask[index])


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


def train_heldout_split(blocks: Blocks, heldout_fraction: float, seed: int) -> tuple[Blocks, Blocks]:
    """Shuffle blocks with the seed and hold out a fraction (at least one block) for validation."""
    if len(blocks) < 2:
        raise DistillError("the corpus is too small: it needs at least two blocks (one to train, one held out); "
                           "give more text or a smaller seq_len")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    n_heldout = max(1, int(round(len(blocks) * heldout_fraction)))
    return blocks.select(order[n_heldout:]), blocks.select(order[:n_heldout])


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


def cached_corpus(teacher: Any, prompts: list[str], new_tokens: int, seed: int = 0, batch_size: int = 160) -> list[str] | None:
    """The teacher-generated corpus if it is already cached, else None. `teacher` needs only
    `spec` and `source` (a LoadedModel or a checkpoints.ResolvedModel), so no model is loaded."""
    path = _corpus_cache_path(teacher, prompts, new_tokens, seed, batch_size)
    if not path.is_file():
        return None
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(texts, list) and len(texts) == len(prompts) and all(isinstance(t, str) for t in texts):
        return texts
    return None
