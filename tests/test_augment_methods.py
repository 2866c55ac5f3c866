"""The catalogue of augmentation methods and the config's method lists."""

import pytest

from distill_core.augment_methods import AUGMENTERS, parse_methods
from distill_core.errors import DistillError


def test_parse_methods_keeps_order_and_drops_repeats():
    assert parse_methods("synonym, word_swap synonym") == ["synonym", "word_swap"]
    assert parse_methods(["char_ocr"]) == ["char_ocr"] and parse_methods(None) == [] and parse_methods(" ") == []
    with pytest.raises(DistillError, match="unknown augmentation method 'shuffle'; choose from word_swap"):
        parse_methods("shuffle")


def test_every_method_is_described():
    for name, method in AUGMENTERS.items():
        assert method.name == name and method.family and method.description
    assert not AUGMENTERS["back_translation"].offline and AUGMENTERS["synonym"].offline
