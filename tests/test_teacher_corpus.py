"""The teacher-generated corpus: one block per prompt, written once with progress, the teacher's targets captured
on exactly the context each block holds, cached, rebuilt when damaged; when the captured targets can serve."""

import hashlib
import json

import pytest
import torch

from distill_core import teacher_corpus
from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.losses import teacher_topk
from distill_core.models import load_teacher
from distill_core.teacher_corpus import (CAPTURE_TOP_K, Decoding, cached_corpus, captured_targets_blocked,
                                        generate_corpus, lead_ins)

PROMPTS = ["The river", "In the market", "My bicycle"]


def test_generate_corpus_reports_progress_and_caches(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    first = list(generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=24, new_tokens=40, seed=0))
    fractions = [f for f, _ in first]
    assert len(first) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(corpus is None for _, corpus in first[:-1])
    corpus = first[-1][1]
    assert len(corpus.texts) == 3 and all(t.startswith(p) and len(t) > len(p) for t, p in zip(corpus.texts, PROMPTS))
    assert corpus.blocks.input_ids.shape == (3, 24) and corpus.targets.indices.shape == (3, 24, CAPTURE_TOP_K)
    cached = list(generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=24, new_tokens=40, seed=0))
    assert len(cached) == 1 and cached[0][1].texts == corpus.texts  # from the cache: no generation, no progress
    assert torch.equal(cached[0][1].targets.logp, corpus.targets.logp)
    for damaged in tmp_path.joinpath("corpora").glob("*.safetensors"):
        damaged.write_bytes(damaged.read_bytes()[:-10])
    again = list(generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=24, new_tokens=40, seed=0))
    assert len(again) > 1 and again[-1][1].texts == corpus.texts  # rebuilt, same seed, same text


def test_each_block_is_the_context_its_captured_targets_saw(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    *_, (_, corpus) = generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=16, new_tokens=6, seed=1)
    blocks, targets = corpus.blocks, corpus.targets
    for row in range(len(PROMPTS)):
        length = int(blocks.attention_mask[row].sum())
        prompt = teacher.tokenizer(PROMPTS[row], add_special_tokens=False)["input_ids"]
        ids = blocks.input_ids[row, :length].tolist()
        start = next(i for i in range(length) if ids[i : i + len(prompt)] == prompt)
        assert start >= 2 and ids[start - 1] == teacher.tokenizer.eos_token_id  # a lead-in, then end of text
        assert length <= start + len(prompt) + 6  # at most new_tokens written; the block is padded after them
        with torch.no_grad():  # the teacher's own forward pass over the finished block
            logits = teacher.model(blocks.input_ids[row : row + 1, :length]).logits[0, :-1]
        expected = teacher_topk(torch.log_softmax(logits.float(), -1), CAPTURE_TOP_K)
        # the leading candidates exactly; deeper in the list near-ties may swap places between the cached
        # decoding and this full pass (float rounding), so there the values must agree
        assert torch.equal(targets.indices[row, : length - 1, :16].long(), expected.indices[..., :16])
        assert torch.allclose(targets.logp[row, : length - 1], expected.logp, atol=1e-4)
        assert torch.allclose(targets.tail[row, : length - 1], expected.tail, atol=1e-4)
        assert torch.isfinite(targets.logp[row]).all() and torch.isfinite(targets.tail[row]).all()


def test_greedy_writing_takes_the_teachers_most_likely_token_and_is_cached_apart(tiny_teacher_dir, tmp_path,
                                                                                   monkeypatch):
    """generation_temperature 0 writes greedily: every written token is the top one of the distribution captured
    before it. Each decoding is a corpus of its own in the cache."""
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    greedy = Decoding(temperature=0.0, top_p=1.0)
    *_, (_, corpus) = generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=16, new_tokens=6, seed=1,
                                      decoding=greedy)
    for row in range(len(PROMPTS)):
        length = int(corpus.blocks.attention_mask[row].sum())
        prompt = teacher.tokenizer(PROMPTS[row], add_special_tokens=False)["input_ids"]
        ids = corpus.blocks.input_ids[row, :length].tolist()
        written_from = next(i for i in range(length) if ids[i : i + len(prompt)] == prompt) + len(prompt)
        assert length > written_from  # the teacher wrote something
        for position in range(written_from, length):  # the token at `position` was chosen after position - 1
            assert ids[position] == int(corpus.targets.indices[row, position - 1, 0])
    assert cached_corpus("tiny-identity", PROMPTS, 16, 6, seed=1, decoding=greedy) is not None
    assert cached_corpus("tiny-identity", PROMPTS, 16, 6, seed=1) is None  # the default decoding: not written
    assert Decoding.of(DistillConfig(generation_temperature=0.0, generation_top_p=0.5, precision="fp32")) == Decoding(
        0.0, 0.5)
    with pytest.raises(DistillError, match="generation_temperature must be between 0"):
        DistillConfig(generation_temperature=-1.0)
    with pytest.raises(DistillError, match=r"generation_top_p must be in \(0, 1\]"):
        DistillConfig(generation_top_p=0.0)


def test_the_teacher_writes_in_the_sessions_precision_on_a_copy_cached_apart(tiny_teacher_dir, tmp_path, monkeypatch):
    """precision bf16 (auto on a CPU with bf16 instructions): a bf16 copy of the teacher writes, the teacher itself
    stays fp32, and the corpus is cached apart from the fp32 one, whose key is the one of before the field."""
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    half = Decoding.of(DistillConfig(precision="bf16"))
    assert half == Decoding(dtype="bf16") and Decoding.of(DistillConfig(precision="fp32")) == Decoding()
    writer = half.writer(teacher.model)
    assert next(writer.parameters()).dtype == torch.bfloat16 and next(teacher.model.parameters()).dtype == torch.float32
    assert Decoding().writer(teacher.model) is teacher.model
    *_, (_, corpus) = generate_corpus(teacher, "tiny-identity", PROMPTS, seq_len=16, new_tokens=6, seed=1,
                                      decoding=half)
    assert corpus.targets.logp.dtype == torch.float32 and torch.isfinite(corpus.targets.logp).all()
    assert cached_corpus("tiny-identity", PROMPTS, 16, 6, seed=1, decoding=half) is not None
    assert cached_corpus("tiny-identity", PROMPTS, 16, 6, seed=1) is None
    assert teacher_corpus._cache_key("t", ["p"], 16, 6, 0, Decoding()) == hashlib.sha256(json.dumps(
        {"teacher": "t", "prompts": ["p"], "seq_len": 16, "new_tokens": 6, "seed": 0, "top_k": CAPTURE_TOP_K,
         "sampling": {"temperature": 0.8, "top_p": 0.95}, "version": teacher_corpus.CORPUS_VERSION}).encode()
    ).hexdigest()[:16]  # fp32 corpora cached before keep their key


def test_a_prompt_longer_than_the_block_is_refused(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    with pytest.raises(DistillError, match="shorter than half of seq_len=8"):
        list(generate_corpus(teacher, "tiny-identity", ["a prompt of four tokens or more"], seq_len=8, new_tokens=8))


def test_lead_ins_are_another_prompts_last_tokens_then_end_of_text():
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    leads = lead_ins(prompts, eos_token_id=0, seed=3)
    assert leads == lead_ins(prompts, eos_token_id=0, seed=3)  # seeded
    for i, lead in enumerate(leads):
        assert lead[-1] == 0 and len(lead) >= 2
        tail = lead[:-1]
        sources = [p for j, p in enumerate(prompts) if j != i and p[-len(tail):] == tail and len(tail) < len(p)]
        assert sources, (i, lead)  # a proper suffix of another prompt


@pytest.mark.parametrize("changes, reason", [
    ({}, ""),
    ({"temperature": 2.0}, "at T=1"),
    ({"attention_weight": 0.1}, "attention maps"),
    ({"hidden_weight": 0.1}, "hidden states"),
    ({"augment": "word_swap"}, "did not write"),
    ({"top_k": CAPTURE_TOP_K + 1}, "more than the"),
    ({"top_k": 8}, ""),
])
def test_when_the_captured_targets_can_serve(changes, reason):
    config = DistillConfig(**{"temperature": 1.0, **changes})
    blocked = captured_targets_blocked(config)
    assert (reason in blocked) if reason else blocked == ""
