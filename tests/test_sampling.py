"""Batched sampling with a KV cache: the same text as the full forward pass would give, the captured top-k equal to
the model's own distributions over the written text, rows that stop early, reproducible with a seed."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill_core.errors import DistillError
from distill_core.losses import teacher_topk
from distill_core.sampling import nucleus_sample, sample_continuations

PROMPTS = [[5, 9, 11], [7], [3, 4, 5, 6, 8, 2]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         initializer_range=0.3)
    return LlamaForCausalLM(config).eval()


def run(gen):
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration as stop:
        return stop.value, progress


def test_greedy_matches_the_full_forward_pass_of_each_row_alone(model):
    samples, _ = run(sample_continuations(model, PROMPTS, 5, temperature=0.0))
    for i, prompt in enumerate(PROMPTS):
        ids = samples.row(i)
        alone = list(prompt)
        with torch.no_grad():
            for _ in range(5):  # no cache, no padding, no batch: the reference
                alone.append(int(model(torch.tensor([alone])).logits[0, -1].argmax()))
        assert ids.tolist() == alone


@pytest.mark.parametrize("plain_head", [True, False])
def test_captured_targets_are_the_models_distributions_over_the_written_text(model, plain_head, monkeypatch):
    # a plain linear output layer: the prompt's log-probs are made a few positions at a time; else from full logits
    monkeypatch.setattr("distill_core.sampling.OutputHead.supported", staticmethod(lambda m: plain_head))
    samples, _ = run(sample_continuations(model, PROMPTS, 6, seed=3, capture_top_k=8))
    assert samples.targets.indices.dtype == torch.int32 and samples.targets.indices.shape[-1] == 8
    for i in range(len(PROMPTS)):
        ids = samples.row(i)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[None]).logits[0, :-1].float(), -1)  # (length - 1, vocab)
        expected = teacher_topk(logp, 8)
        targets = samples.targets.take(i).take(slice(0, len(ids) - 1))
        assert torch.equal(targets.indices.long(), expected.indices)
        assert torch.allclose(targets.logp, expected.logp, atol=1e-4)
        assert torch.allclose(targets.tail, expected.tail, atol=1e-4)


def test_rows_stop_at_the_block_length_and_at_the_end_token(model):
    samples, progress = run(sample_continuations(model, PROMPTS, 20, max_length=8, temperature=0.0))
    assert samples.lengths == [8, 8, 8]
    assert progress[-1] == samples.new_tokens == 5 + 7 + 2 and progress == sorted(progress)
    first = samples.ids[0][3].item()  # the first token row 0 writes greedily: make it the end token
    stopped, _ = run(sample_continuations(model, PROMPTS, 20, max_length=8, temperature=0.0, eos_token_id=first))
    assert stopped.row(0).tolist() == PROMPTS[0] + [first] and stopped.lengths[1:] == [8, 8]


def test_sampling_is_reproducible_with_a_seed_and_varies_with_it(model):
    a, _ = run(sample_continuations(model, PROMPTS, 12, seed=1, temperature=1.0, top_p=1.0))
    b, _ = run(sample_continuations(model, PROMPTS, 12, seed=1, temperature=1.0, top_p=1.0))
    c, _ = run(sample_continuations(model, PROMPTS, 12, seed=2, temperature=1.0, top_p=1.0))
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


def test_nucleus_keeps_the_smallest_set_that_reaches_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = {int(nucleus_sample(logits, 1.0, 0.8, torch.Generator().manual_seed(s))) for s in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.8: the rest is never drawn
    assert int(nucleus_sample(logits, 0.0, 0.8, torch.Generator())) == 0


def test_a_nucleus_wider_than_the_candidates_draws_from_the_whole_vocabulary(monkeypatch):
    monkeypatch.setattr("distill_core.sampling.NUCLEUS_CANDIDATES", 2)
    logits = torch.zeros(1, 10)  # uniform: the nucleus at top_p 0.95 holds all ten tokens
    draws = {int(nucleus_sample(logits, 1.0, 0.95, torch.Generator().manual_seed(s))) for s in range(300)}
    assert draws == set(range(10))


def test_prompts_that_cannot_start_a_block_are_refused(model):
    with pytest.raises(DistillError, match="shorter than the 4-token block"):
        run(sample_continuations(model, [[1, 2, 3, 4, 5]], 3, max_length=4))
    with pytest.raises(DistillError, match="at least one token"):
        run(sample_continuations(model, [[]], 3))


def test_top_p_one_draws_from_the_whole_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([nucleus_sample(logits, 1.0, 1.0, generator) for _ in range(2000)])
    counts = torch.bincount(draws.flatten(), minlength=3) / 2000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.04)
