"""Bits per byte: a model's total negative log-likelihood of a text, in bits, divided by the text's UTF-8
bytes. Perplexity is per token, and a token of one tokenizer is not a token of another (a model that cuts the
text into more, smaller tokens has an easier job per token), so perplexities of models with different
tokenizers do not compare; the bits a model needs to encode the same bytes do (the measure of the Pile, Gao et
al. 2020, and of lm-evaluation-harness's `bits_per_byte`).

Every model scores the same bytes: the held-out documents, cut where the teacher's `eval_max_tokens` tokens end
(`heldout_text`), each read in the model's own tokens. Every token of every document is predicted exactly once:
the stream starts with the end-of-text token (the context of the first token) and is read in windows of
`seq_len` tokens that overlap by one, so no window's first token goes unpredicted. The end-of-text tokens
between documents are predicted but not counted: they stand for no byte of the text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from distill_core.data import read_text_file, split_documents
from distill_core.errors import DistillError


@dataclass
class ByteText:
    """The documents a bits-per-byte measurement scores, whole (the last one possibly cut)."""

    documents: list[str]

    @property
    def n_bytes(self) -> int:
        return sum(len(doc.encode("utf-8")) for doc in self.documents)


def cut_documents(documents: list[str], teacher_tokenizer: Any, max_tokens: int) -> ByteText:
    """The documents as the teacher's packing would read them within `max_tokens` tokens (each document and its
    end token), the last one cut after its last whole token: the same bytes, whichever model reads them."""
    kept, used = [], 0
    for doc in documents:
        encoding = teacher_tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        n = len(encoding["input_ids"])
        if used + n + 1 <= max_tokens:
            kept.append(doc)
            used += n + 1
            continue
        room = max_tokens - used
        if room > 0:
            kept.append(doc[: encoding["offset_mapping"][room - 1][1]])
        break
    kept = [doc for doc in kept if doc]
    if not kept:
        raise DistillError(f"no text to score within {max_tokens} tokens")
    return ByteText(kept)


def heldout_text(config: Any, teacher_tokenizer: Any) -> ByteText:
    """The held-out bytes of a config (`eval_text`, what its `eval_max_tokens` teacher tokens cover)."""
    text = read_text_file(config.eval_text, "evaluation text")
    return cut_documents(split_documents(text), teacher_tokenizer, config.eval_max_tokens)


@dataclass
class ByteWindows:
    """A text in one tokenizer's tokens, as overlapping windows: input_ids and attention_mask (n, seq_len), and
    counted (n, seq_len): 1 where the position's next token is a token of the text (not an end token or padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    counted: torch.Tensor
    n_bytes: int


def byte_windows(tokenizer: Any, text: ByteText, seq_len: int) -> ByteWindows:
    """`text` in `tokenizer`'s tokens: end token, document, end token, document, ..., in windows of `seq_len`
    tokens, each starting with the last token of the one before."""
    if seq_len < 2:
        raise DistillError(f"seq_len must be at least 2 to score a text, got {seq_len}")
    eos = tokenizer.eos_token_id
    stream, is_text = [eos], [False]
    for index, doc in enumerate(text.documents):
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        is_text.extend([True] * len(ids))
        if index + 1 < len(text.documents):
            stream.append(eos)
            is_text.append(False)
    step = seq_len - 1
    starts = range(0, max(1, len(stream) - 1), step)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.full((len(starts), seq_len), pad, dtype=torch.long)
    mask = torch.zeros((len(starts), seq_len), dtype=torch.long)
    counted = torch.zeros((len(starts), seq_len), dtype=torch.long)
    for row, start in enumerate(starts):
        window = stream[start : start + seq_len]
        ids[row, : len(window)] = torch.tensor(window)
        mask[row, : len(window)] = 1
        targets = is_text[start + 1 : start + len(window)]
        counted[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
    return ByteWindows(ids, mask, counted, text.n_bytes)


@torch.no_grad()
def bits_per_byte(model: Any, windows: ByteWindows, batch_size: int = 8) -> dict[str, Any]:
    """The model's bits per byte on `windows`: sum of -log2 p(token) over the counted positions / bytes.
    Also `bits` (the total) and `tokens` (how many tokens of the text it read them as)."""
    was_training = model.training
    model.eval()
    total_nll, tokens = 0.0, 0
    device = next(model.parameters()).device
    try:
        for start in range(0, windows.input_ids.shape[0], batch_size):
            ids = windows.input_ids[start : start + batch_size].to(device)
            attn = windows.attention_mask[start : start + batch_size].to(device)
            counted = windows.counted[start : start + batch_size, :-1].to(device).bool()
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (b, t-1, vocab)
            nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(counted)
            total_nll += float(nll[counted].sum())
            tokens += int(counted.sum())
    finally:
        model.train(was_training)
    bits = total_nll / math.log(2)
    return {"bits_per_byte": bits / max(1, windows.n_bytes), "bits": bits, "bytes": windows.n_bytes, "tokens": tokens}


def model_bits_per_byte(model: Any, tokenizer: Any, text: ByteText, seq_len: int) -> dict[str, Any]:
    """`bits_per_byte` of a model reading `text` in its own tokens, in windows of `seq_len`."""
    return bits_per_byte(model, byte_windows(tokenizer, text, seq_len))
