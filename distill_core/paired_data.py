"""One text, two tokenizations, block by block: the training data of a pair whose tokenizers differ. Each block
holds the student's tokens (at most seq_len, what the student trains on) and the teacher's tokens of exactly
the same bytes, cut where both tokenizations have a token boundary, and the groups that align them
(alignment.align_groups), so a step runs each model on its own tokens and the loss compares them span by span
(cross_losses.py).

Documents are joined as the ordinary packing joins them (data.pack): each followed by its tokenizer's end token;
both end tokens stand on one virtual byte after the document, so they align with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distill_core.alignment import align_groups, token_spans
from distill_core.cross_losses import AlignedSpans
from distill_core.data import Blocks
from distill_core.errors import DistillError


@dataclass
class PairedBlocks(Blocks):
    """`Blocks` of the student's tokens (input_ids, attention_mask: (n, seq_len)) with the teacher's tokens of the
    same bytes (teacher_ids, teacher_mask: (n, teacher_len), padded to the longest block) and the aligned groups
    (groups: (n, G, 4) long: teacher first, teacher last, student first, student last; -1 rows pad)."""

    teacher_ids: torch.Tensor = None
    teacher_mask: torch.Tensor = None
    groups: torch.Tensor = None
    one_to_one_share: float = 1.0
    """The share of the packed bytes whose tokens align one to one."""

    def select(self, index: torch.Tensor | slice | list[int]) -> "PairedBlocks":
        return PairedBlocks(self.input_ids[index], self.attention_mask[index], self.teacher_ids[index],
                            self.teacher_mask[index], self.groups[index], self.one_to_one_share)

    def teacher_blocks(self) -> Blocks:
        """The teacher's side alone, as ordinary blocks."""
        return Blocks(self.teacher_ids, self.teacher_mask)

    def aligned_spans(self) -> AlignedSpans:
        """The groups both models predict (each side's first token has a position before it in the block)."""
        g = self.groups
        usable = (g[..., 0] >= 1) & (g[..., 2] >= 1)
        row, index = usable.nonzero(as_tuple=True)
        picked = g[row, index]  # (G, 4)
        return AlignedSpans(row, picked[:, 0], picked[:, 1], picked[:, 2], picked[:, 3])

    def one_to_one_tokens(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the teacher and the student positions of the tokens that align one to one (in order)."""
        pairs = []
        for groups in self.groups:
            single = (groups[:, 0] >= 0) & (groups[:, 0] == groups[:, 1]) & (groups[:, 2] == groups[:, 3])
            pairs.append((groups[single, 0], groups[single, 2]))
        return pairs


@dataclass
class _Stream:
    """A tokenizer's tokens over all documents: ids and (start, end) bytes in one coordinate where document i
    starts at `offsets[i]` and its end token covers the byte after it."""

    ids: list[int]
    spans: list[tuple[int, int]]


def _stream(tokenizer: Any, documents: list[str], offsets: list[int]) -> _Stream:
    ids, spans = [], []
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DistillError(f"the tokenizer {type(tokenizer).__name__} has no end-of-text token to separate documents")
    for doc, offset in zip(documents, offsets):
        tokens = token_spans(tokenizer, doc)
        ids.extend(tokens.ids)
        spans.extend((offset + a, offset + b) for a, b in tokens.spans)
        end = offset + len(doc.encode("utf-8"))
        ids.append(eos)
        spans.append((end, end + 1))
    return _Stream(ids, spans)


def _cuts(student: _Stream, teacher: _Stream, seq_len: int, pad_last: bool) -> list[tuple[int, int]]:
    """Student token ranges [a, b) of the blocks: at most seq_len tokens each, ending where the teacher also has
    a token boundary (else at seq_len tokens); the last partial block only with `pad_last`."""
    common = {end for _, end in teacher.spans} & {end for _, end in student.spans}
    cuts, start, n = [], 0, len(student.ids)
    while start < n:
        limit = start + seq_len
        if limit >= n:
            if pad_last and n - start > 1:
                cuts.append((start, n))
            break
        end = next((j for j in range(limit, start + 1, -1) if student.spans[j - 1][1] in common), limit)
        cuts.append((start, end))
        start = end
    return cuts


def pack_pairs(teacher_tokenizer: Any, student_tokenizer: Any, documents: list[str], seq_len: int,
               pad_last: bool = False) -> PairedBlocks:
    """The documents in both tokenizations, cut into aligned blocks of at most `seq_len` student tokens (see the
    module's docstring). The final partial block is dropped, or kept padded with `pad_last`."""
    offsets, position = [], 0
    for doc in documents:
        offsets.append(position)
        position += len(doc.encode("utf-8")) + 1
    student = _stream(student_tokenizer, documents, offsets)
    teacher = _stream(teacher_tokenizer, documents, offsets)
    blocks, t_index = [], 0
    for a, b in _cuts(student, teacher, seq_len, pad_last):
        start, end = student.spans[a][0], student.spans[b - 1][1]
        while t_index < len(teacher.ids) and teacher.spans[t_index][0] < start:
            t_index += 1  # a teacher token across the previous cut (only where no common boundary was found)
        t_end = t_index
        while t_end < len(teacher.ids) and teacher.spans[t_end][1] <= end:
            t_end += 1
        blocks.append((list(range(a, b)), list(range(t_index, t_end))))
        t_index = t_end
    if not blocks:
        raise DistillError(f"the text has only {len(student.ids)} student tokens, fewer than one block of "
                           f"seq_len={seq_len}: give more text or a smaller seq_len")
    return _tensors(blocks, student, teacher, seq_len, (student_tokenizer.pad_token_id or 0,
                                                         teacher_tokenizer.pad_token_id or 0))


def _tensors(blocks: list[tuple[list[int], list[int]]], student: _Stream, teacher: _Stream, seq_len: int,
             pads: tuple[int, int]) -> PairedBlocks:
    teacher_len = max(len(t) for _, t in blocks)
    n = len(blocks)
    s_ids, s_mask = torch.full((n, seq_len), pads[0], dtype=torch.long), torch.zeros((n, seq_len), dtype=torch.long)
    t_ids, t_mask = torch.full((n, teacher_len), pads[1], dtype=torch.long), torch.zeros((n, teacher_len), dtype=torch.long)
    all_groups, aligned, total = [], 0, 0
    for k, (s_tokens, t_tokens) in enumerate(blocks):
        s_ids[k, : len(s_tokens)] = torch.tensor([student.ids[i] for i in s_tokens])
        s_mask[k, : len(s_tokens)] = 1
        t_ids[k, : len(t_tokens)] = torch.tensor([teacher.ids[i] for i in t_tokens], dtype=torch.long)
        t_mask[k, : len(t_tokens)] = 1
        groups = [g for g in align_groups([teacher.spans[i] for i in t_tokens], [student.spans[i] for i in s_tokens])
                  if g.closed]
        all_groups.append([[*g.teacher, *g.student] for g in groups])
        aligned += sum(g.end - g.start for g in groups if g.one_to_one)
        total += sum(g.end - g.start for g in groups)
    width = max(1, max(len(g) for g in all_groups))
    group_tensor = torch.full((n, width, 4), -1, dtype=torch.long)
    for k, groups in enumerate(all_groups):
        if groups:
            group_tensor[k, : len(groups)] = torch.tensor(groups, dtype=torch.long)
    return PairedBlocks(s_ids, s_mask, t_ids, t_mask, group_tensor, aligned / total if total else 1.0)
