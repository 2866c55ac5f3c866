"""The compatibility report of a pair, and the layer pairs a layer map resolves to for it."""

import pytest

from distill_core import students
from distill_core.compat import PAIR_SHAPES, check_pair, compatibility_report, layer_pairs_for, pair_alignment
from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.models import load_teacher
from distill_core.students import load_student
from tests.conftest import SAMPLE_TEXT


def test_compatibility_report(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("layers:2", teacher)
    report = compatibility_report(teacher, student)
    assert report["tokenizer"]["same_vocabulary"] is True
    assert report["teacher"]["layers"] == 4 and report["student"]["layers"] == 2
    assert report["student"]["layers_kept"] == [0, 3]
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["techniques"]["soft_targets"] is True


def test_check_pair_remembers_the_shape_for_the_layer_map(tiny_teacher_dir):
    teacher = str(tiny_teacher_dir)
    PAIR_SHAPES.remember("other", "pair", 1, 1, None)
    assert layer_pairs_for(teacher, "layers:0,2,3", "kept", load=False) is None  # not checked yet: no load
    report = check_pair(teacher, "layers:0,2,3")
    assert report["student"]["layers_kept"] == [0, 2, 3]
    pairs, n_student, n_teacher = layer_pairs_for(teacher, "layers:0,2,3", "kept", load=False)
    assert (pairs, n_student, n_teacher) == ([(0, 0), (1, 2), (2, 3)], 3, 4)
    assert layer_pairs_for(teacher, "layers:0,2,3", "last", load=False)[0] == [(2, 3)]
    with pytest.raises(DistillError, match="the teacher has layers 0..3"):
        layer_pairs_for(teacher, "layers:0,2,3", "0:9", load=False)
    assert layer_pairs_for(teacher, "layers:2", "uniform", load=True)[0] == [(0, 1), (1, 3)]  # loads the pair


def test_a_pair_across_tokenizers_is_reported_with_its_bridge(tiny_teacher_dir, monkeypatch):
    docs = [d for d in SAMPLE_TEXT.split("\n\n") if d.strip()]
    monkeypatch.setattr(students, "corpus_documents", lambda spec, config=None: (docs, "the sample text"))
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("fresh:layers=2,hidden=32,heads=2,vocab=bpe:400", teacher)
    report = compatibility_report(teacher, student)
    assert report["tokenizer"]["same_vocabulary"] is False and report["tokenizer"]["student_vocab_size"] == 400
    bridge = report["tokenizer_bridge"]
    assert bridge["bridge"] == "span" and bridge["requested"] == "auto" and 256 < bridge["shared_tokens"] < 400
    assert 0 < bridge["one_to_one_share"] < 1  # on the held-out text
    assert bridge["fitnets"] == "on: only at the ends of aligned spans" and report["techniques"]["soft_targets"]
    uld = compatibility_report(teacher, student, DistillConfig(tokenizer_bridge="uld"))
    assert uld["tokenizer_bridge"]["bridge"] == "uld" and uld["techniques"]["attention_transfer"] is False
    alignment = pair_alignment(str(tiny_teacher_dir), "fresh:layers=2,hidden=32,heads=2,vocab=bpe:400",
                               "For breakfast I ate an apple and a banana.")
    assert alignment["bridge"] == "span" and alignment["student_tokens"] == 400
    assert alignment["bytes"] == 42 and 0 < alignment["one_to_one_share"] < 1
    same = pair_alignment(str(tiny_teacher_dir), "layers:2", "For breakfast I ate an apple.")
    assert same["bridge"] == "none" and same["one_to_one_share"] == 1.0
    with pytest.raises(DistillError, match="the alignment view shows at most 2000"):
        pair_alignment(str(tiny_teacher_dir), "layers:2", "x" * 2001)
