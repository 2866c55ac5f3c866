"""`layers:N:angular`: angular distances between the residual stream entering and leaving a block of
layers (Gromov et al. 2024), checked on a toy model whose hidden states are known exactly."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from distill_core import layer_select
from distill_core.compat import compatibility_report
from distill_core.models import LoadedModel, decoder_layers, load_teacher
from distill_core.specs import parse_derived_spec
from distill_core.students import derive_student, load_student
from distill_core.errors import DistillError
from distill_core.layer_select import (
    angular_distances,
    angular_distances_from_states,
    angular_selection,
    residual_stream,
    select_layers_angular,
)

ANGLES = [0.5, 0.1, 0.2, 0.6]
"""Toy layer i rotates the hidden state by ANGLES[i] radians in the plane of its first two coordinates."""
SCALES = [2.0, 0.5, 3.0, 1.5]
"""... and scales it (the cosine must not care)."""
PAD = 0


class Rotate(torch.nn.Module):
    """A decoder layer with a known effect: rotate by `angle` in the (0, 1) plane, then scale."""

    def __init__(self, angle: float, scale: float):
        super().__init__()
        self.angle, self.scale = angle, scale

    def forward(self, hidden_states, *args, **kwargs):
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = hidden_states[..., 0], hidden_states[..., 1]
        out = hidden_states.clone()
        out[..., 0], out[..., 1] = c * x - s * y, s * x + c * y
        return out * self.scale


@pytest.fixture(scope="module")
def toy(bundled_dir):
    """A 4-'layer' Llama whose layers are `Rotate`s and whose token embeddings lie in the rotation
    plane (random directions), except the pad token's, which is orthogonal to it: a distance that
    counted padding would come out smaller. The final norm has a wild weight: a distance measured
    after it (transformers' last `hidden_states`) would come out different."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=PAD, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        phi = torch.rand(config.vocab_size) * 2 * math.pi
        weight = torch.zeros(config.vocab_size, 8)
        weight[:, 0], weight[:, 1] = torch.cos(phi), torch.sin(phi)
        weight[PAD] = 0.0
        weight[PAD, 2] = 1.0
        model.model.embed_tokens.weight.copy_(weight)
        model.model.norm.weight.copy_(torch.tensor([1.0, 50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    model.model.layers = torch.nn.ModuleList(Rotate(a, s) for a, s in zip(ANGLES, SCALES))
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model, tokenizer, "toy", "toy model for tests")


def expected(n: int) -> list[float]:
    return [sum(ANGLES[l : l + n]) / math.pi for l in range(len(ANGLES) - n + 1)]


def test_distances_from_states_by_hand():
    # four 2-d states of one token at angles 0, 30, 90 and 180 degrees, arbitrary lengths
    degrees, lengths = [0, 30, 90, 180], [1.0, 4.0, 0.2, 7.0]
    states = [torch.tensor([[[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]]])
              for a, r in zip(degrees, lengths)]
    mask = torch.ones(1, 1, dtype=torch.bool)
    sums, count = angular_distances_from_states(states, mask, 1)
    assert count == 1 and sums == pytest.approx([30 / 180, 60 / 180, 90 / 180])
    sums, _ = angular_distances_from_states(states, mask, 2)
    assert sums == pytest.approx([90 / 180, 150 / 180])
    sums, _ = angular_distances_from_states(states, mask, 3)
    assert sums == pytest.approx([1.0])


def test_angular_distances_on_the_toy_model(toy):
    ids = torch.tensor([[5, 9, 100, 7, 8], [11, 12, 13, PAD, PAD]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for n in (1, 2, 3, 4):
        got = angular_distances(toy.model, ids, attn, n)
        assert got == pytest.approx(expected(n), abs=1e-6), n
        assert angular_distances(toy.model, ids, attn, n, positions="last") == pytest.approx(expected(n), abs=1e-6)
    # batching the rows differently gives the same average
    assert angular_distances(toy.model, ids, attn, 2, batch_blocks=1) == pytest.approx(expected(2), abs=1e-6)
    # counting the pad positions (orthogonal, never rotated: distance 0) would have lowered it
    assert angular_distances(toy.model, ids, torch.ones_like(attn), 2)[0] < expected(2)[0] - 0.01
    with pytest.raises(DistillError, match="1 to 4 layers"):
        angular_distances(toy.model, ids, attn, 5)


def test_residual_stream_matches_hidden_states_before_the_final_norm(tiny_teacher_dir):
    """On a real Llama the hooks see what output_hidden_states reports, except that the last entry
    is taken before the final norm."""
    teacher = load_teacher(str(tiny_teacher_dir))
    model = teacher.model
    ids, attn = torch.tensor([[3, 50, 700, 9, 21, 4]]), torch.ones(1, 6, dtype=torch.long)
    states = residual_stream(model, ids, attn)
    with torch.no_grad():
        reported = model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    assert len(states) == len(reported) == 5
    for mine, theirs in zip(states[:-1], reported[:-1]):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert torch.allclose(model.model.norm(states[-1]), reported[-1], atol=1e-5)
    assert not torch.allclose(states[-1], reported[-1], atol=1e-3)


def test_selection_drops_the_argmin_block(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    texts = ["The baker opened the oven and took out the bread.", "Rivers shape valleys over millions of years."]
    for count, keep in [(3, [0, 2, 3]), (2, [0, 3]), (1, [3])]:
        n = 4 - count
        got_keep, distances = select_layers_angular(toy, count, texts)
        assert distances == pytest.approx(expected(n), abs=1e-6)
        start = min(range(len(distances)), key=distances.__getitem__)
        assert got_keep == keep == [i for i in range(4) if not start <= i < start + n]
    selection = angular_selection(toy, 4, texts)  # nothing to drop: no measurement
    assert selection.keep == [0, 1, 2, 3] and selection.distances == []


def test_selection_is_cached(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    calls = {"n": 0}
    real = layer_select.residual_stream

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_select, "residual_stream", counting)
    texts = ["One calibration text that is long enough to measure on."]
    first = angular_selection(toy, 2, texts)
    assert calls["n"] == 1 and not first.cached
    second = angular_selection(toy, 2, texts)
    assert calls["n"] == 1 and second.cached  # no forward pass
    assert (second.keep, second.distances, second.tokens) == (first.keep, first.distances, first.tokens)
    files = list((tmp_path / "layer_select").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["distances"] == pytest.approx(first.distances)
    # another size or another calibration text is measured anew
    angular_selection(toy, 3, texts)
    angular_selection(toy, 2, ["A different calibration text."])
    assert calls["n"] == 3
    # a damaged cache file is measured again and rewritten
    for damage in ["{not json", json.dumps({"distances": [0.1], "tokens": 5}), json.dumps({"distances": "x"})]:
        files[0].write_text(damage)
        again = angular_selection(toy, 2, texts)
        assert not again.cached and again.keep == first.keep
        assert json.loads(files[0].read_text())["distances"] == pytest.approx(first.distances)
    assert calls["n"] == 6
    # a teacher given only as weights (no network to run) can still use a cached choice
    weights_only = LoadedModel(SimpleNamespace(config=toy.model.config), toy.tokenizer, toy.spec, toy.source)
    assert angular_selection(weights_only, 2, texts).keep == first.keep
    with pytest.raises(DistillError, match="needs the teacher loaded"):
        angular_selection(weights_only, 1, texts)


def test_parse_angular_specs():
    assert parse_derived_spec("layers:20:angular") == ("layers", {"count": 20, "rule": "angular"})
    assert parse_derived_spec(" layers: 20 : angular ") == ("layers", {"count": 20, "rule": "angular"})
    assert parse_derived_spec("layers:20:depth") == ("layers", {"count": 20, "rule": "depth"})
    assert parse_derived_spec("layers:20") == ("layers", {"count": 20, "rule": "depth"})
    for bad, message in [("layers:20:gromov", "unknown layer-selection rule 'gromov'"),
                         ("layers:20:", "unknown layer-selection rule ''"),
                         ("layers:0:angular", "at least one layer"),
                         ("layers:0,5:angular", "rule goes with a count"),
                         ("layers:x:angular", "expected layers:N")]:
        with pytest.raises(DistillError, match=message):
            parse_derived_spec(bad)


def test_derive_angular_student(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    texts = ["The old lighthouse keeper climbed the stairs and looked out at the sea.",
             "Photosynthesis is the process by which plants turn light into sugar."]
    keep, distances = select_layers_angular(teacher, 2, texts)
    student = derive_student(teacher, "layers:2:angular", calibration=texts, calibration_source="the test corpus")
    assert student.layers_kept == keep and len(distances) == 3
    start = min(range(3), key=distances.__getitem__)
    assert keep == [i for i in range(4) if not start <= i < start + 2]
    note = student.notes[-1]
    assert f"drops block {start}-{start + 1}" in note and "the test corpus" in note and "(cached)" in note
    assert f"{distances[start]:.3f}" in note
    t_layers, s_layers = decoder_layers(teacher.model), decoder_layers(student.model)
    for s_index, t_index in enumerate(keep):
        for (name, s_param), (_, t_param) in zip(s_layers[s_index].named_parameters(),
                                                 t_layers[t_index].named_parameters()):
            assert torch.equal(s_param, t_param), name
    report = compatibility_report(teacher, student)
    selection = report["student"]["layer_selection"]
    assert selection["rule"] == "angular" and selection["start"] == start and selection["n"] == 2
    assert selection["distances"] == pytest.approx(distances) and selection["calibration"] == "the test corpus"
    assert report["student"]["layers_kept"] == keep
    # without calibration text: the lines of assets/prompts.txt
    default = load_student("layers:3:angular", teacher)
    assert "assets/prompts.txt (default calibration)" in default.notes[-1]
    assert default.layer_selection["tokens"] > 100
    # the explicit depth rule is the plain one; an angular student of every layer is the teacher
    assert derive_student(teacher, "layers:2:depth").layers_kept == derive_student(teacher, "layers:2").layers_kept == [0, 3]
    assert derive_student(teacher, "layers:4:angular").layers_kept == [0, 1, 2, 3]


def test_bad_angular_specs(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    with pytest.raises(DistillError, match=r"layers:5:angular asks for more layers than the teacher has \(4\)"):
        derive_student(teacher, "layers:5:angular")
    with pytest.raises(DistillError, match="unknown layer-selection rule 'best'"):
        derive_student(teacher, "layers:2:best")
    with pytest.raises(DistillError, match="calibration text for layers:N:angular or layers:N:ppl is empty"):
        derive_student(teacher, "layers:2:angular", calibration=["", "  \n\n "])
    assert len(derive_student(teacher, "layers:2:angular", calibration=["a"]).layers_kept) == 2  # 2 tokens (+EOS)


def test_a_ppl_student_drops_the_layers_whose_removal_alone_costs_least(tiny_teacher_dir, tmp_path, monkeypatch):
    """`layers:N:ppl` (Kim et al. 2024): each layer's cost is the calibration loss of the teacher without it, minus
    the loss with it: the same as a model built without that layer (checked here), measured on a private copy
    (the shared teacher keeps its weights and gets no hook), cached for every student size."""
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    texts = ["The old lighthouse keeper climbed the stairs and looked out at the sea.",
             "Photosynthesis is the process by which plants turn light into sugar."]
    weights = {name: value.clone() for name, value in teacher.model.state_dict().items()}
    hooks = [list(layer._forward_hooks) for layer in decoder_layers(teacher.model)]  # transformers keeps its own
    blocks = layer_select.calibration_blocks(teacher.tokenizer, texts, max_tokens=layer_select.PPL_CALIBRATION_TOKENS)
    base = layer_select.calibration_loss(teacher.model, blocks)
    without = [derive_student(teacher, "layers:" + ",".join(str(j) for j in range(4) if j != i)) for i in range(4)]
    by_hand = [layer_select.calibration_loss(student.model, blocks) - base for student in without]
    student = derive_student(teacher, "layers:2:ppl", calibration=texts, calibration_source="the test corpus")
    increases = student.layer_selection["increases"]
    assert increases == pytest.approx(by_hand, abs=1e-4) and len(set(round(v, 6) for v in increases)) == 4
    cheapest = sorted(range(4), key=increases.__getitem__)
    assert student.layers_kept == sorted(cheapest[2:])
    assert "layer rule ppl" in student.notes[-1] and "the test corpus" in student.notes[-1]
    assert all(torch.equal(weights[name], value) for name, value in teacher.model.state_dict().items())
    assert [list(layer._forward_hooks) for layer in decoder_layers(teacher.model)] == hooks
    again = derive_student(teacher, "layers:3:ppl", calibration=texts)
    assert "(cached)" in again.notes[-1] and again.layers_kept == sorted(cheapest[1:])
    assert parse_derived_spec("layers:3:ppl") == ("layers", {"count": 3, "rule": "ppl"})


def test_greedy_removal_drops_one_layer_at_a_time_each_the_cheapest_given_those_before(tiny_teacher_dir):
    """The perplexity criterion iterated: the first layer dropped is the one-shot rule's cheapest; the second is
    the cheapest of the three-layer model left, each loss checked against a model built without those layers."""
    teacher = load_teacher(str(tiny_teacher_dir))
    texts = ["The old lighthouse keeper climbed the stairs and looked out at the sea.",
             "Photosynthesis is the process by which plants turn light into sugar."]
    blocks = layer_select.calibration_blocks(teacher.tokenizer, texts, max_tokens=layer_select.PPL_CALIBRATION_TOKENS)
    weights = {name: value.clone() for name, value in teacher.model.state_dict().items()}
    rounds = []
    dropped = layer_select.greedy_removal(teacher.model, blocks, 2, progress=lambda i, loss: rounds.append((i, loss)))
    _, increases = layer_select.removal_increases(teacher.model, blocks)
    assert len(dropped) == 2 == len(rounds) and dropped[0] == min(range(4), key=increases.__getitem__)

    def built_without(*layers):
        spec = "layers:" + ",".join(str(j) for j in range(4) if j not in layers)
        return layer_select.calibration_loss(derive_student(teacher, spec).model, blocks)

    second = {i: built_without(dropped[0], i) for i in range(4) if i != dropped[0]}
    assert dropped[1] == min(second, key=second.__getitem__)
    assert rounds[1] == (dropped[1], pytest.approx(second[dropped[1]], abs=1e-4))
    assert all(torch.equal(weights[name], value) for name, value in teacher.model.state_dict().items())
