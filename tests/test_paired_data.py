"""One text in two tokenizations, block by block: the same bytes on both sides, cut where both have a boundary."""

import pytest
import torch

from distill_core.alignment import token_spans
from distill_core.data import pack, split_documents
from distill_core.errors import DistillError
from distill_core.paired_data import pack_pairs
from tests.conftest import SAMPLE_TEXT

DOCS = split_documents(SAMPLE_TEXT)


def block_text(tokenizer, ids, mask) -> str:
    return tokenizer.decode([int(i) for i, m in zip(ids, mask) if m])


def test_each_block_holds_the_same_text_in_both_tokenizations(two_tokenizers):
    teacher, student = two_tokenizers
    blocks = pack_pairs(teacher, student, DOCS, seq_len=24)
    assert len(blocks) > 10 and blocks.input_ids.shape[1] == 24
    assert int(blocks.attention_mask.sum(1).min()) >= 2
    differ = 0
    for k in range(len(blocks)):
        s_text = block_text(student, blocks.input_ids[k], blocks.attention_mask[k])
        t_text = block_text(teacher, blocks.teacher_ids[k], blocks.teacher_mask[k])
        assert s_text == t_text  # the end tokens are the same string in both (<|endoftext|>)
        differ += int(blocks.attention_mask[k].sum()) != int(blocks.teacher_mask[k].sum())
    assert differ > 0  # the two tokenizers do cut the text differently
    assert 0 < blocks.one_to_one_share < 1


def test_groups_index_tokens_of_their_own_block(two_tokenizers):
    teacher, student = two_tokenizers
    blocks = pack_pairs(teacher, student, DOCS[:3], seq_len=32)
    spans = blocks.aligned_spans()
    assert len(spans) > 0 and bool((spans.teacher_first >= 1).all()) and bool((spans.student_first >= 1).all())
    s_len, t_len = blocks.attention_mask.sum(1), blocks.teacher_mask.sum(1)
    assert bool((spans.student_last < s_len[spans.row]).all()) and bool((spans.teacher_last < t_len[spans.row]).all())
    # a group's two sides decode to the same text
    for g in range(0, len(spans), 7):
        row = int(spans.row[g])
        t = teacher.decode(blocks.teacher_ids[row, spans.teacher_first[g] : spans.teacher_last[g] + 1])
        s = student.decode(blocks.input_ids[row, spans.student_first[g] : spans.student_last[g] + 1])
        assert t == s
    selected = blocks.select(torch.tensor([1, 0]))
    assert torch.equal(selected.teacher_ids[1], blocks.teacher_ids[0]) and torch.equal(selected.groups[0], blocks.groups[1])


def test_one_tokenizer_gives_the_ordinary_blocks(two_tokenizers):
    teacher, _ = two_tokenizers
    paired = pack_pairs(teacher, teacher, DOCS, seq_len=16)
    ordinary = pack(teacher, DOCS, 16)
    assert torch.equal(paired.input_ids, ordinary.input_ids) and torch.equal(paired.teacher_ids, ordinary.input_ids)
    assert paired.one_to_one_share == 1.0
    one_to_one = paired.one_to_one_tokens()
    assert all(torch.equal(t, s) for t, s in one_to_one) and len(one_to_one[0][0]) == 16


def test_too_little_text_is_refused(two_tokenizers):
    teacher, student = two_tokenizers
    with pytest.raises(DistillError, match="fewer than one block of seq_len=64"):
        pack_pairs(teacher, student, ["a short text"], seq_len=64)
    last = pack_pairs(teacher, student, ["a short text"], seq_len=64, pad_last=True)
    assert len(last) == 1 and int(last.attention_mask.sum()) == len(token_spans(student, "a short text")) + 1
