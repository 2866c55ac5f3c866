"""The spec grammar: derived students, the depth rule, the spec that rebuilds a run's starting student, lists of specs."""

import pytest

from distill_core.errors import DistillError
from distill_core.specs import did_you_mean, initial_student_spec, parse_derived_spec, parse_student_list, select_layers


def test_parse_derived_specs():
    assert parse_derived_spec("layers:6") == ("layers", {"count": 6, "rule": "depth"})
    assert parse_derived_spec("layers:0,5,9") == ("layers", {"indices": [0, 5, 9]})
    assert parse_derived_spec("fresh:layers=2,hidden=64,heads=4") == ("fresh", {"layers": 2, "hidden": 64, "heads": 4})
    for bad, message in [("layers:0", "at least one layer"), ("layers:a", "expected layers"),
                         ("layers:3,1", "increasing"), ("layers:1,1", "twice"),
                         ("fresh:layers=2,hidden=65,heads=4", "divisible"), ("fresh:layers=2", "missing")]:
        with pytest.raises(DistillError, match=message):
            parse_derived_spec(bad)


def test_select_layers_rule():
    assert select_layers(30, 20) == list(range(12)) + list(range(22, 30))
    assert select_layers(30, 30) == list(range(30))
    assert select_layers(30, 1) == [29]
    assert select_layers(4, 2) == [0, 3]
    with pytest.raises(DistillError, match="more layers than the teacher"):
        select_layers(30, 31)


def test_parse_student_list():
    assert parse_student_list("layers:10,layers:15,layers:20") == ["layers:10", "layers:15", "layers:20"]
    assert parse_student_list("layers:0,5,9,layers:20:angular, layers:3") == ["layers:0,5,9", "layers:20:angular", "layers:3"]
    assert parse_student_list("fresh:layers=2,hidden=64,heads=4,layers:6") == ["fresh:layers=2,hidden=64,heads=4", "layers:6"]
    assert parse_student_list("layers:6,runs/a/student,org/model") == ["layers:6", "runs/a/student", "org/model"]
    assert parse_student_list("layers:10,5") == ["layers:10,5"]  # an index list, as in the spec syntax
    assert parse_student_list("layers:20:angular,5") == ["layers:20:angular", "5"]  # not an index list
    assert parse_student_list("layers:0,5,9; runs/a,b/student ;") == ["layers:0,5,9", "runs/a,b/student"]


def test_an_empty_student_list_is_refused():
    with pytest.raises(DistillError, match="student list is empty"):
        parse_student_list(" ; ;")


def test_did_you_mean_names_a_close_known_spec():
    assert did_you_mean("smollm2-13m") == " (did you mean 'smollm2-135m'?)"
    assert did_you_mean("smollm2-135m") == ""  # the spec itself: no suggestion
    assert did_you_mean("gpt2") == ""


def test_initial_student_spec_rebuilds_the_starting_student():
    """The depth rule is fixed, so `layers:N` stays; a measured choice comes back as its kept layers."""
    assert initial_student_spec({"student_spec": "layers:20", "student_layers_kept": [0, 1]}, "x") == "layers:20"
    kept = {"student_spec": "layers:3:angular", "student_layers_kept": [0, 1, 5]}
    assert initial_student_spec(kept, "layers:3:angular") == "layers:0,1,5"
    assert initial_student_spec({"student_spec": "fresh:layers=1,hidden=8,heads=2"}, "y") == "fresh:layers=1,hidden=8,heads=2"
    assert initial_student_spec(None, "layers:4") == "layers:4"  # no summary: the picked spec
    assert initial_student_spec({"student_spec": "layers:1:angular", "student_layers_kept": [3]}, "z") == \
        "layers:1:angular"  # one kept layer has no explicit list spec


@pytest.mark.parametrize("text, specs", [
    ("layers:10, layers:15, layers:20", ["layers:10", "layers:15", "layers:20"]),
    ("layers:0,5,9; layers:3", ["layers:0,5,9", "layers:3"]),
    ("fresh:layers=4,hidden=256,heads=4\nlayers:2\n\n", ["fresh:layers=4,hidden=256,heads=4", "layers:2"]),
    ("layers:2, layers:2", ["layers:2"]),
])
def test_parse_student_list_of_lines_and_repeats(text, specs):
    assert parse_student_list(text) == specs
