"""The compatibility report of a pair, and the layer pairs a layer map resolves to for it."""

import pytest

from distill_core.compat import PAIR_SHAPES, check_pair, compatibility_report, layer_pairs_for
from distill_core.errors import DistillError
from distill_core.models import load_teacher
from distill_core.students import load_student


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
