"""One step across tokenizers (cross_step.CrossTokenizerStep): with one tokenizer on both sides it is the ordinary
step; across two it trains on the bridge's loss; layer-wise terms on the aligned text; `shared_ids` distils over
the ids both output layers have."""

import copy

import pytest
import torch

from distill_core.config import DistillConfig
from distill_core.cross_losses import shared_tokens, span_aligned_loss, uld_loss
from distill_core.cross_step import CrossTokenizerStep, make_step, one_to_one_maps
from distill_core.data import Blocks, split_documents
from distill_core.losses import FitNetsProjection, hard_label_ce, shift_for_next_token, soft_target_loss
from distill_core.models import LoadedModel
from distill_core.paired_data import pack_pairs
from distill_core.step import DistillStep
from distill_core.tokenizer_bridge import choose_bridge
from tests.conftest import SAMPLE_TEXT, tiny_lm

DOCS = split_documents(SAMPLE_TEXT)
PAIRS = [(0, 0), (1, 1)]


def config(**changes) -> DistillConfig:
    # fp32 on every CPU (auto is bf16 on one with bf16 instructions): the expected losses below are computed in fp32
    return DistillConfig(**{"kd_weight": 0.6, "temperature": 2.0, "learning_rate": 1e-2, "freeze_embeddings": False,
                            "loss_chunk_tokens": 0, "precision": "fp32", **changes})


def step_with(kind, cfg, teacher, student, bridge, shared, layer_wise=False):
    student = copy.deepcopy(student)
    student.model.train()
    projection = None
    params = list(student.model.parameters())
    if layer_wise:
        torch.manual_seed(0)
        projection = FitNetsProjection(len(PAIRS), 32, 32)
        params += list(projection.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.learning_rate)
    options = dict(layer_pairs=PAIRS, projection=projection)
    step = (CrossTokenizerStep(cfg, teacher, student, optimizer, bridge, shared, **options) if kind == "cross"
            else DistillStep(cfg, teacher, student, optimizer, **options))
    return step, student


@pytest.mark.parametrize("layer_wise", [False, True], ids=["soft-targets", "attention+fitnets"])
def test_one_tokenizer_across_the_bridge_is_the_ordinary_step(two_tokenizers, layer_wise):
    tokenizer = two_tokenizers[0]
    teacher = LoadedModel(tiny_lm(len(tokenizer), seed=1), tokenizer, "teacher", "test")
    student = LoadedModel(tiny_lm(len(tokenizer), seed=2), tokenizer, "student", "test")
    paired = pack_pairs(tokenizer, tokenizer, DOCS, seq_len=20).select(slice(0, 4))
    cfg = config(attention_weight=1.0 if layer_wise else 0.0, hidden_weight=0.0)
    span = choose_bridge("span", tokenizer, tokenizer, len(tokenizer), len(tokenizer))
    shared = shared_tokens(torch.arange(len(tokenizer)), torch.arange(len(tokenizer)), len(tokenizer), len(tokenizer))
    cross, cross_student = step_with("cross", cfg, teacher, student, span, shared, layer_wise)
    plain, plain_student = step_with("plain", cfg, teacher, student, span, shared, layer_wise)
    across = cross(paired)
    ordinary = plain(Blocks(paired.input_ids, paired.attention_mask))
    for term in ("loss", "kd_loss", "ce_loss", *(["attention_loss"] if layer_wise else [])):
        assert across[term] == pytest.approx(ordinary[term], rel=1e-5)
    for (name, a), (_, b) in zip(cross_student.model.named_parameters(), plain_student.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("kind", ["span", "uld"])
def test_across_two_tokenizers_the_step_trains_on_the_bridge(two_tokenizers, kind):
    t_tok, s_tok = two_tokenizers
    teacher = LoadedModel(tiny_lm(len(t_tok), seed=1), t_tok, "teacher", "test")
    student = LoadedModel(tiny_lm(len(s_tok), seed=2), s_tok, "student", "test")
    batch = pack_pairs(t_tok, s_tok, DOCS, seq_len=20).select(slice(0, 4))
    bridge = choose_bridge(kind, t_tok, s_tok, len(t_tok), len(s_tok))
    shared = shared_tokens(torch.arange(10), torch.arange(10), len(t_tok), len(s_tok))  # bytes 0-9 of both
    cfg = config()
    before = copy.deepcopy(student.model)
    with torch.no_grad():  # the loss by hand, from the models as they are before the step
        t_logits = teacher.model(input_ids=batch.teacher_ids, attention_mask=batch.teacher_mask).logits
        s_logits = before(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        labels, mask = shift_for_next_token(batch.input_ids, batch.attention_mask)
        if kind == "span":
            kd = span_aligned_loss(s_logits, t_logits, batch.input_ids, batch.teacher_ids, batch.aligned_spans(),
                                   shared, cfg.temperature)
        else:
            kd = uld_loss(s_logits, t_logits, mask, shift_for_next_token(batch.teacher_ids, batch.teacher_mask)[1],
                          cfg.temperature)
        ce = hard_label_ce(s_logits, labels, mask)
    step, trained = step_with("cross", cfg, teacher, student, bridge, shared)
    terms = step(batch)
    assert terms["kd_loss"] == pytest.approx(kd.item(), rel=1e-5) and terms["ce_loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert terms["loss"] == pytest.approx(0.6 * kd.item() + 0.4 * ce.item(), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), trained.model.parameters()))


def test_layer_wise_terms_on_the_aligned_text(two_tokenizers):
    t_tok, s_tok = two_tokenizers
    teacher = LoadedModel(tiny_lm(len(t_tok), seed=1), t_tok, "teacher", "test")
    student = LoadedModel(tiny_lm(len(s_tok), seed=2), s_tok, "student", "test")
    batch = pack_pairs(t_tok, s_tok, DOCS, seq_len=20).select(slice(0, 3))
    bridge = choose_bridge("span", t_tok, s_tok, len(t_tok), len(s_tok))
    shared = shared_tokens(torch.arange(10), torch.arange(10), len(t_tok), len(s_tok))
    step, _ = step_with("cross", config(attention_weight=1.0, hidden_weight=1.0), teacher, student, bridge, shared,
                        layer_wise=True)
    terms = step(batch)
    assert terms["attention_loss"] > 0 and terms["fitnets_loss"] > 0
    # the maps cut to the one-to-one tokens: rows renormalised, padded rows empty
    maps = torch.rand(3, 2, 20, 20).tril()
    positions = batch.one_to_one_tokens()
    cut, query_mask = one_to_one_maps([maps], positions, 1)
    k = len(positions[0][1])
    assert torch.allclose(cut[0][0, :, :k, :k].sum(-1), torch.ones(2, k))
    assert query_mask[0].sum() == k and cut[0].shape[-1] == max(len(p[1]) for p in positions)


def test_shared_ids_distil_over_the_rows_both_output_layers_have(two_tokenizers):
    tokenizer = two_tokenizers[0]
    teacher = LoadedModel(tiny_lm(len(tokenizer), seed=1), tokenizer, "teacher", "test")
    student = LoadedModel(tiny_lm(len(tokenizer) + 12, seed=2), tokenizer, "student", "test")  # 12 padding rows
    bridge = choose_bridge("auto", tokenizer, tokenizer, len(tokenizer), len(tokenizer) + 12)
    assert bridge.kind == "shared_ids"
    blocks = pack_pairs(tokenizer, tokenizer, DOCS, seq_len=16).select(slice(0, 3))
    batch = Blocks(blocks.input_ids, blocks.attention_mask)
    for chunk in (0, 5):  # full logits, and the chunked output-layer loss
        cfg = config(loss_chunk_tokens=chunk)
        trained = copy.deepcopy(student)
        step = make_step(cfg, teacher, trained, torch.optim.SGD(trained.model.parameters(), lr=0.01), bridge, None)
        assert type(step) is DistillStep and step.vocab_rows == len(tokenizer)
        with torch.no_grad():
            t_logits = teacher.model(input_ids=batch.input_ids).logits
            s_logits = student.model(input_ids=batch.input_ids).logits[..., : len(tokenizer)]
        _, mask = shift_for_next_token(batch.input_ids, batch.attention_mask)
        expected = soft_target_loss(s_logits, t_logits, cfg.temperature, mask)
        assert step(batch)["kd_loss"] == pytest.approx(expected.item(), rel=1e-5)
