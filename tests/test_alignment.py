"""Two tokenizations of one text lined up by bytes, on hand-made texts and spans; two vocabularies by what each
token stands for."""

import pytest

from distill_core.alignment import (Group, align_groups, align_text, is_byte_level, one_to_one_share, token_bytes,
                                    token_spans, vocabulary_keys, vocabulary_match)


def test_groups_close_where_both_sides_end_at_the_same_byte():
    # teacher: "the" " breakfast"; student: "t" "he" " break" "fast"
    teacher = [(0, 3), (3, 13)]
    student = [(0, 1), (1, 3), (3, 9), (9, 13)]
    assert align_groups(teacher, student) == [Group((0, 0), (0, 1), 0, 3), Group((1, 1), (2, 3), 3, 13)]
    # boundaries that never coincide inside: one group over both tokens of each side
    assert align_groups([(0, 4), (4, 6)], [(0, 2), (2, 6)]) == [Group((0, 1), (0, 1), 0, 6)]
    # one to one throughout
    same = [(0, 2), (2, 5), (5, 6)]
    groups = align_groups(same, same)
    assert all(g.one_to_one for g in groups) and len(groups) == 3


def test_a_side_that_runs_out_leaves_an_unclosed_group():
    groups = align_groups([(0, 2), (2, 4)], [(0, 2), (2, 3)])
    assert groups[0] == Group((0, 0), (0, 0), 0, 2)
    assert groups[1] == Group((1, 1), (1, 1), 2, 4, closed=False) and not groups[1].one_to_one


def test_one_to_one_share_counts_bytes():
    groups = [Group((0, 0), (0, 0), 0, 3), Group((1, 1), (1, 2), 3, 13), Group((2, 2), (3, 3), 13, 15)]
    assert one_to_one_share(groups) == pytest.approx(5 / 15)


def test_token_spans_cover_every_byte_once_even_inside_a_character(two_tokenizers):
    teacher, student = two_tokenizers
    text = "Le café coûte 3 €, 你好!"
    raw = text.encode()
    for tokenizer in (teacher, student):
        assert is_byte_level(tokenizer)
        tokens = token_spans(tokenizer, text)
        assert tokens.spans[0][0] == 0 and tokens.spans[-1][1] == len(raw)
        assert all(a[1] == b[0] for a, b in zip(tokens.spans, tokens.spans[1:]))  # end to end
        assert b"".join(raw[a:b] for a, b in tokens.spans) == raw
    # a character of three bytes split over tokens: each token gets its own bytes, not the character's offsets
    pieces = token_spans(student, "你").pieces
    assert len(pieces) > 1 and pieces[0].startswith("⟨e4")


def test_align_text_on_two_tokenizers_and_on_one(two_tokenizers):
    teacher, student = two_tokenizers
    text = "The students of the small town kept bees."
    result = align_text(teacher, student, text)
    assert 0 < result["one_to_one_share"] < 1
    for g in result["groups"]:  # every group covers the same bytes on both sides
        t_first, t_last = g["teacher"]
        s_first, s_last = g["student"]
        assert result["teacher"]["spans"][t_first][0] == result["student"]["spans"][s_first][0] == g["start"]
        assert result["teacher"]["spans"][t_last][1] == result["student"]["spans"][s_last][1] == g["end"]
    assert sum(result["teacher"]["one_to_one"]) == sum(g["one_to_one"] for g in result["groups"])
    same = align_text(teacher, teacher, text)
    assert same["one_to_one_share"] == 1.0 and all(same["student"]["one_to_one"])


def test_the_vocabulary_match_pairs_tokens_of_the_same_bytes(two_tokenizers):
    teacher, student = two_tokenizers
    identity = vocabulary_match(teacher, teacher)
    assert identity.teacher_ids.tolist() == identity.student_ids.tolist() == list(range(len(teacher)))
    match = vocabulary_match(teacher, student)
    t_tokens = {i: t for t, i in teacher.get_vocab().items()}
    s_tokens = {i: t for t, i in student.get_vocab().items()}
    assert 256 < len(match) < len(student)  # the byte alphabet, the end token, and merges both made
    for t_id, s_id in zip(match.teacher_ids.tolist(), match.student_ids.tolist()):
        if t_id == teacher.eos_token_id:
            assert s_id == student.eos_token_id
        else:
            assert token_bytes(teacher, t_tokens[t_id]) == token_bytes(student, s_tokens[s_id])
    position = match.position_of("student")
    assert position[match.student_ids[5]] == 5 and (position == -1).sum() == len(student) - len(match)
    assert ("special", "<|endoftext|>") in vocabulary_keys(student)


def test_the_end_tokens_pair_with_each_other_before_any_same_named_token(tiny_teacher_dir, two_tokenizers):
    """SmolLM2-Instruct ends a document with <|im_end|> and also has an <|endoftext|>; a BPE student ends with its
    <|endoftext|>. The two end tokens pair (documents end alike); the teacher's <|endoftext|> stays unmatched."""
    from transformers import AutoTokenizer

    teacher, student = AutoTokenizer.from_pretrained(tiny_teacher_dir), two_tokenizers[1]
    assert teacher.eos_token == "<|im_end|>" and "<|endoftext|>" in teacher.get_vocab()
    pairs = dict(zip(*(ids.tolist() for ids in (vocabulary_match(teacher, student).teacher_ids,
                                                vocabulary_match(teacher, student).student_ids))))
    assert pairs[teacher.eos_token_id] == student.eos_token_id
    assert teacher.convert_tokens_to_ids("<|endoftext|>") not in pairs
    assert list(pairs.values()).count(student.eos_token_id) == 1


def test_a_vocabulary_is_read_once_per_tokenizer():
    from distill_core.alignment import vocabulary_fingerprint

    class Counting:
        """A tokenizer stand-in that counts how often its vocabulary is read."""

        def __init__(self, vocab):
            self.vocab, self.reads = vocab, 0

        def get_vocab(self):
            self.reads += 1
            return dict(self.vocab)

    one, same, other = Counting({"a": 0, "b": 1}), Counting({"a": 0, "b": 1}), Counting({"b": 0, "a": 1})
    assert vocabulary_fingerprint(one) == vocabulary_fingerprint(one) == vocabulary_fingerprint(same)
    assert vocabulary_fingerprint(other) != vocabulary_fingerprint(one)
    assert (one.reads, same.reads, other.reads) == (1, 1, 1)
