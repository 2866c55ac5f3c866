"""What the Evaluate tab computes once for everyone: the same continuation and the same evaluation rows for the
same models and inputs, kept with when they were measured; a model being trained is never kept."""

import time

import pytest
import torch

from distill_core import shared_views
from distill_core.data import heldout_blocks
from distill_core.errors import DistillError
from distill_core.evaluate import evaluate_each, generate
from distill_core.models import load_model


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    loaded = load_model(str(tiny_teacher_dir))
    loaded.model.requires_grad_(False)
    return loaded


@pytest.mark.parametrize("seed", [0, 3])
def test_both_continuations_are_what_generate_gives_and_are_kept(teacher, seed):
    """Decoded side by side, the greedy and the sampled continuation are evaluate.generate's (the sampled one
    from its own generator seeded as generate seeds torch's); the next user asking gets them back."""
    model, tokenizer = teacher.model, teacher.tokenizer
    both = shared_views.continue_both(model, tokenizer, "The river", 12, seed)
    assert both["greedy"]["text"] == generate(model, tokenizer, "The river", 12)["text"]
    assert both["sampled"]["text"] == generate(model, tokenizer, "The river", 12, sample=True, seed=seed)["text"]
    assert both["greedy"]["new_tokens"] == 12 and both["sampled"]["tokens_per_s"] > 0
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    shared_views.continue_both(model, tokenizer, "The river", 4, seed)
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global generator untouched
    first = dict(shared_views.generate_each({"teacher": model}, tokenizer, "The river", 12, seed))
    again = dict(shared_views.generate_each({"teacher": model}, tokenizer, "The river", 12, seed))
    assert again == first and first["teacher"]["sampled"]["text"] == both["sampled"]["text"]
    assert first["teacher"]["greedy"]["measured_at"] <= time.time()


def test_a_continuation_stops_at_the_end_of_sequence(teacher, monkeypatch):
    model, tokenizer = teacher.model, teacher.tokenizer
    greedy = generate(model, tokenizer, "The river", 3)
    first = tokenizer(greedy["text"], add_special_tokens=False)["input_ids"][0]
    monkeypatch.setattr(model.generation_config, "eos_token_id", first)  # the greedy row's first token ends it
    both = shared_views.continue_both(model, tokenizer, "The river", 5, 0)
    ended = generate(model, tokenizer, "The river", 5)  # transformers stops there too
    assert both["greedy"]["new_tokens"] == ended["new_tokens"] == 1 and both["greedy"]["text"] == ended["text"]
    with pytest.raises(DistillError, match="new tokens must be between 1 and 512"):
        shared_views.continue_both(model, tokenizer, "The river", 0, 0)


def test_evaluation_rows_are_the_engine_s_and_kept(teacher, tiny_config, tiny_teacher_dir):
    blocks = heldout_blocks(tiny_config, teacher.tokenizer)
    student = load_model(str(tiny_teacher_dir)).model.requires_grad_(False)
    rows = dict(shared_views.evaluate_each(teacher.model, {"student": student}, teacher.tokenizer, blocks,
                                           speed_tokens=4))
    engine = dict(evaluate_each(teacher.model, {"student": student}, teacher.tokenizer, blocks, speed_tokens=4))
    for name in ("teacher", "student"):
        for key in ("ppl", "top1_agreement", "kl_to_teacher", "params", "size_bytes"):
            assert rows[name][key] == pytest.approx(engine[name][key], rel=1e-5, abs=1e-6)
    again = dict(shared_views.evaluate_each(teacher.model, {"student": student}, teacher.tokenizer, blocks,
                                            speed_tokens=4))
    assert again["student"] is rows["student"] and again["teacher"] is rows["teacher"]


def test_a_model_being_trained_is_measured_afresh(teacher, tiny_teacher_dir):
    training = load_model(str(tiny_teacher_dir)).model.train()
    first = dict(shared_views.generate_each({"student": training}, teacher.tokenizer, "The river", 4, 0))
    with torch.no_grad():
        training.lm_head.weight.mul_(-1)
    second = dict(shared_views.generate_each({"student": training}, teacher.tokenizer, "The river", 4, 0))
    assert second["student"]["greedy"]["text"] != first["student"]["greedy"]["text"]  # measured afresh
    assert training.training


def test_several_models_are_asked_at_once_and_answered_in_their_order(teacher, tiny_teacher_dir):
    """generate_each asks every model at once (each joins its own model's next batch) and yields them in the
    models' order, each what evaluate.generate gives for it."""
    other = load_model(str(tiny_teacher_dir)).model.eval()
    with torch.no_grad():
        other.lm_head.weight.mul_(-1)  # another model, frozen like a shared one
    for parameter in other.parameters():
        parameter.requires_grad_(False)
    models = {"teacher": teacher.model, "other": other}
    answered = list(shared_views.generate_each(models, teacher.tokenizer, "The baker opened", 6, 5))
    assert [name for name, _ in answered] == ["teacher", "other"]
    for name, runs in answered:
        expected = generate(models[name], teacher.tokenizer, "The baker opened", 6, sample=True, seed=5)["text"]
        assert runs["sampled"]["text"] == expected
        assert runs["greedy"]["text"] == generate(models[name], teacher.tokenizer, "The baker opened", 6)["text"]
    assert answered[0][1]["greedy"]["text"] != answered[1][1]["greedy"]["text"]
