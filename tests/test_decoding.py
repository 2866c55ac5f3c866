"""Continuations decoded together: each prompt's greedy and sampled continuation in one left-padded batch is
what transformers' generate gives for it alone (the sampled one with the same seed), whoever else is in the
batch, and torch's global random generator is left alone."""

import pytest
import torch

from distill_core.decoding import decode_together
from distill_core.evaluate import generate
from distill_core.models import load_model


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return load_model(str(tiny_teacher_dir))


def test_a_batch_of_prompts_continues_each_as_generate_does(teacher):
    model, tokenizer = teacher.model, teacher.tokenizer
    prompts = [("The river", 6, 0), ("For breakfast I ate an apple and", 4, 7), ("A", 8, 3)]
    requests = [(tokenizer(p, return_tensors="pt")["input_ids"][0], n, seed) for p, n, seed in prompts]
    state = torch.random.get_rng_state()
    together = decode_together(model, requests)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (prompt, n, seed), result in zip(prompts, together):
        greedy = generate(model, tokenizer, prompt, n)
        sampled = generate(model, tokenizer, prompt, n, sample=True, seed=seed)
        assert tokenizer.decode(result["greedy"]["ids"], skip_special_tokens=True) == greedy["text"]
        assert tokenizer.decode(result["sampled"]["ids"], skip_special_tokens=True) == sampled["text"]
        assert len(result["greedy"]["ids"]) == greedy["new_tokens"] and result["rows"] == 6
        assert result["greedy"]["seconds"] > 0
    alone = decode_together(model, requests[1:2])[0]
    assert alone["sampled"]["ids"] == together[1]["sampled"]["ids"] and alone["rows"] == 2
