"""What the Evaluate tab computes once for everyone: the same continuation and the same evaluation rows for the
same models and inputs, kept with when they were measured; a model being trained is never kept."""

import pytest
import torch

from distill_core import shared_views
from distill_core.data import heldout_blocks
from distill_core.evaluate import evaluate_each, generate
from distill_core.models import load_model


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    loaded = load_model(str(tiny_teacher_dir))
    loaded.model.requires_grad_(False)
    return loaded


def test_a_continuation_is_the_engine_s_and_kept_for_the_next_user(teacher):
    model, tokenizer = teacher.model, teacher.tokenizer
    greedy = shared_views.generate_shared(model, tokenizer, "The river", 6, sample=False, seed=0)
    sampled = shared_views.generate_shared(model, tokenizer, "The river", 6, sample=True, seed=3)
    assert greedy["text"] == generate(model, tokenizer, "The river", 6)["text"]
    assert sampled["text"] == generate(model, tokenizer, "The river", 6, sample=True, seed=3)["text"]
    assert shared_views.generate_shared(model, tokenizer, "The river", 6, sample=True, seed=3) is sampled
    assert "measured_at" in sampled
    names = [name for name, _ in shared_views.generate_each({"teacher": model}, tokenizer, "The river", 6, 3)]
    assert names == ["teacher"]


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
    first = shared_views.generate_shared(training, teacher.tokenizer, "The river", 4, sample=False, seed=0)
    with torch.no_grad():
        training.lm_head.weight.mul_(-1)
    second = shared_views.generate_shared(training, teacher.tokenizer, "The river", 4, sample=False, seed=0)
    assert second is not first
