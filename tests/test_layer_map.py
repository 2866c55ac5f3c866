import pytest

from distill_core.errors import DistillError
from distill_core.layer_map import resolve_layer_map


def test_uniform_ends_on_the_last_layers():
    pairs = resolve_layer_map("uniform", 20, 30)
    assert len(pairs) == 20 and pairs[-1] == (19, 29) and pairs[0] == (0, 1)
    assert resolve_layer_map("uniform", 2, 4) == [(0, 1), (1, 3)]
    assert [t for _, t in pairs] == sorted(t for _, t in pairs)


def test_kept_last_auto_and_explicit():
    kept = [0, 1, 5, 9]
    assert resolve_layer_map("kept", 4, 10, kept) == [(0, 0), (1, 1), (2, 5), (3, 9)]
    assert resolve_layer_map("auto", 4, 10, kept) == resolve_layer_map("kept", 4, 10, kept)
    assert resolve_layer_map("auto", 4, 10, None) == resolve_layer_map("uniform", 4, 10)
    assert resolve_layer_map("last", 4, 10) == [(3, 9)]
    assert resolve_layer_map("0:0, 3:9", 4, 10) == [(0, 0), (3, 9)]


@pytest.mark.parametrize("spec, message", [
    ("0:0,4:9", "student has layers 0..3"), ("0:10", "teacher has layers 0..9"), ("0:1,0:2", "listed twice"),
    ("every", "expected auto, kept"), ("kept", "needs a student derived"),
])
def test_bad_layer_maps(spec, message):
    with pytest.raises(DistillError, match=message):
        resolve_layer_map(spec, 4, 10)
