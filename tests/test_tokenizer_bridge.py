"""Which bridge a pair's vocabularies need, the refusals when none applies, and what each bridge allows."""

import pytest

from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.tokenizer_bridge import bridge_report, choose_bridge, vocabulary_relation


class SlowTokenizer:
    """A tokenizer that cannot say where its tokens sit (no Rust backend), over another tokenizer's vocabulary."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return self.vocab

    def __len__(self) -> int:
        return len(self.vocab)


def test_auto_picks_a_bridge_by_how_the_vocabularies_relate(two_tokenizers):
    teacher, student = two_tokenizers
    same = choose_bridge("auto", teacher, teacher, len(teacher), len(teacher))
    assert same.kind == "none" and not same.cross and same.shared_rows is None
    padded = choose_bridge("auto", teacher, teacher, len(teacher), len(teacher) + 64)  # padding rows
    assert padded.kind == "shared_ids" and padded.shared_rows == len(teacher)
    assert "output layers of 420 (teacher) and 484 (student) rows" in padded.reason
    across = choose_bridge("auto", teacher, student, len(teacher), len(student))
    assert across.kind == "span" and across.cross
    assert choose_bridge("uld", teacher, student, len(teacher), len(student)).kind == "uld"
    slow = SlowTokenizer(student.get_vocab())
    assert choose_bridge("auto", teacher, slow, len(teacher), len(slow)).kind == "uld"


def test_one_vocabulary_that_extends_the_other_shares_its_ids(two_tokenizers):
    teacher, _ = two_tokenizers
    vocab = teacher.get_vocab()
    first_ids = SlowTokenizer({token: i for token, i in vocab.items() if i < 300})
    assert vocabulary_relation(teacher, first_ids, 420, 300)[0] == "shared"
    swapped = dict(vocab)
    a, b = (token for token, i in vocab.items() if i in (40, 41))
    swapped[a], swapped[b] = vocab[b], vocab[a]
    relation, evidence = vocabulary_relation(teacher, SlowTokenizer(swapped), 420, 420)
    assert relation == "different" and "2 of the 420 ids both have stand for different tokens (id 40:" in evidence


def test_refusals_say_what_to_do(two_tokenizers):
    teacher, student = two_tokenizers
    with pytest.raises(DistillError, match=r"tokenizers differ \(different tokenizers \(420 tokens and 320\)\); "
                                           r"distillation needs the same vocabulary or a bridge: set tokenizer_bridge to "
                                           r"auto, uld or span"):
        choose_bridge("none", teacher, student, 420, 320)
    with pytest.raises(DistillError, match="set tokenizer_bridge to auto, shared_ids, uld or span"):
        choose_bridge("none", teacher, teacher, 420, 448)
    with pytest.raises(DistillError, match="shared_ids needs the same token at every id .*use uld or span"):
        choose_bridge("shared_ids", teacher, student, 420, 320)
    with pytest.raises(DistillError, match="a slow \\(Python\\) tokenizer does not say: use uld"):
        choose_bridge("span", teacher, SlowTokenizer(student.get_vocab()), 420, 320)
    with pytest.raises(DistillError, match="tokenizer_bridge must be one of auto, none, shared_ids, uld, span"):
        choose_bridge("sorted", teacher, student, 420, 320)


def test_settings_a_bridge_cannot_honour_are_refused(two_tokenizers):
    teacher, student = two_tokenizers
    uld = choose_bridge("uld", teacher, student, 420, 320)
    span = choose_bridge("span", teacher, student, 420, 320)
    shared = choose_bridge("shared_ids", teacher, teacher, 420, 448)
    with pytest.raises(DistillError, match="attention transfer is off with tokenizer_bridge=uld: ULD aligns positions"):
        uld.check_config(DistillConfig(attention_weight=1.0))
    with pytest.raises(DistillError, match="fitnets is off with tokenizer_bridge=uld"):
        uld.check_config(DistillConfig(hidden_weight=1.0))
    span.check_config(DistillConfig(attention_weight=1.0, hidden_weight=1.0))  # on the aligned text
    with pytest.raises(DistillError, match="teacher_cache keeps the teacher's top-k over its own token ids"):
        shared.check_config(DistillConfig(teacher_cache=True, top_k=8))
    with pytest.raises(DistillError, match="set top_k 0"):
        span.check_config(DistillConfig(top_k=8))
    with pytest.raises(DistillError, match="augmentation .* not available across tokenizers"):
        span.check_config(DistillConfig(augment="word_swap"))


def test_the_report_names_the_bridge_and_where_layer_wise_terms_work(two_tokenizers):
    teacher, student = two_tokenizers
    span = bridge_report(choose_bridge("auto", teacher, student, 420, 320), teacher, student, 420, 320, 0.42)
    assert span["bridge"] == "span" and span["one_to_one_share"] == 0.42 and 256 < span["shared_tokens"] < 320
    assert span["attention_transfer"] == "on: only among the tokens aligned one to one"
    assert span["fitnets"] == "on: only at the ends of aligned spans"
    uld = bridge_report(choose_bridge("uld", teacher, student, 420, 320), teacher, student, 420, 320, None)
    assert uld["fitnets"].startswith("off: ULD aligns positions by their index")
    same = bridge_report(choose_bridge("auto", teacher, teacher, 420, 420), teacher, teacher, 420, 420, 1.0)
    assert same["bridge"] == "none" and same["attention_transfer"] == "on: every token"
