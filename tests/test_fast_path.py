"""The fast training path: the chunked output-layer loss, gradient checkpointing and bf16 autocast
give the step the plain computation gives (exactly in fp64, to float rounding in fp32)."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill_core.checkpoints import load_student, load_teacher
from distill_core.data import Blocks
from distill_core.losses import (
    DIVERGENCES,
    OutputHead,
    chunked_distillation_loss,
    distillation_loss,
    shift_for_next_token,
    teacher_topk,
)
from distill_core.session import SharedPrefix, _prepare_trainable, _train_step, autocast_dtype


def _tiny_pair(student_width=32, teacher_width=48, bias=False):
    torch.manual_seed(0)
    base = dict(vocab_size=101, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=not bias)
    student = LlamaForCausalLM(LlamaConfig(hidden_size=student_width, **base)).double()
    teacher = LlamaForCausalLM(LlamaConfig(hidden_size=teacher_width, **base)).double()
    if bias:  # an untied head with a bias, as some architectures have
        student.lm_head = torch.nn.Linear(student_width, 101, bias=True).double()
    return student, teacher


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("top_k, cached", [(0, False), (7, False), (7, True)], ids=["full", "top7", "cached-top7"])
def test_chunked_loss_equals_the_full_logits_loss(kind, top_k, cached):
    student, teacher = _tiny_pair(bias=kind == "jsd")
    ids = torch.randint(0, 101, (3, 9), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    attn[1, 6:] = 0  # padding must not count
    labels, mask = shift_for_next_token(ids, attn)
    t_logits = teacher(input_ids=ids, attention_mask=attn).logits.detach()
    targets = teacher_topk(torch.log_softmax(t_logits / 2.0, -1), top_k) if cached else t_logits

    reference = distillation_loss(student(input_ids=ids, attention_mask=attn).logits, targets, labels, mask, 2.0, 0.7,
                                  kind, 0 if cached else top_k)
    reference.total.backward()
    expected = {name: p.grad.clone() for name, p in student.named_parameters()}
    student.zero_grad()

    hidden = student.model(input_ids=ids, attention_mask=attn).last_hidden_state
    t_hidden = teacher.model(input_ids=ids, attention_mask=attn).last_hidden_state.detach()
    chunked = chunked_distillation_loss(hidden, OutputHead(student), targets if cached else (t_hidden, OutputHead(teacher)),
                                        labels, mask, 2.0, 0.7, kind, 0 if cached else top_k, chunk_tokens=5)
    chunked.total.backward()
    assert torch.allclose(chunked.total, reference.total, rtol=1e-12, atol=1e-12)
    for term in ("kd_loss", "ce_loss"):
        assert torch.allclose(chunked.terms[term], reference.terms[term], rtol=1e-12, atol=1e-12)
    for name, p in student.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-10, atol=1e-13), name


def test_chunked_loss_with_a_frozen_head_and_no_counted_position():
    student, teacher = _tiny_pair()
    student.lm_head.weight.requires_grad_(False)  # tied: the embeddings are frozen too
    ids = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(2))
    labels, mask = shift_for_next_token(ids, torch.ones_like(ids))
    hidden = student.model(input_ids=ids).last_hidden_state
    t_hidden = teacher.model(input_ids=ids).last_hidden_state.detach()
    loss = chunked_distillation_loss(hidden, OutputHead(student), (t_hidden, OutputHead(teacher)), labels, mask, 1.0, 0.5)
    loss.total.backward()
    assert student.lm_head.weight.grad is None
    assert student.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    nothing = torch.zeros_like(mask)
    empty = chunked_distillation_loss(student.model(input_ids=ids).last_hidden_state, OutputHead(student),
                                      (t_hidden, OutputHead(teacher)), labels, nothing, 1.0, 0.5)
    assert empty.total.item() == 0.0
    empty.total.backward()  # still a graph: no error


@pytest.fixture()
def tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("layers:2", teacher, seed=0)
    return teacher, student


def _one_step(teacher, student, config, batch, targets=None):
    """A copy of the student, one `_train_step` with `config`: (terms, updated parameters). Plain SGD:
    the update is the gradient itself, so near-zero gradients that differ by float rounding stay near
    zero (Adam's first step would turn each into a full +-lr step)."""
    student = copy.deepcopy(student)
    trainable = _prepare_trainable(student, config)
    projection = None
    pairs = [(0, 0), (1, 3)]
    if config.hidden_weight > 0:
        from distill_core.losses import FitNetsProjection

        torch.manual_seed(0)
        projection = FitNetsProjection(len(pairs), 64, 64)
        trainable += list(projection.parameters())
    shared = SharedPrefix.create(teacher, student, config, batch) if config.freeze_layers and targets is None else None
    optimizer = torch.optim.SGD(trainable, lr=config.learning_rate)
    terms = _train_step(teacher, student, batch, config, optimizer, torch.device("cpu"), shared, projection, pairs,
                        targets=targets)
    return terms, dict(student.model.named_parameters()), shared


@pytest.mark.parametrize("overrides", [
    {},
    {"freeze_layers": 1, "freeze_embeddings": True},
    {"attention_weight": 1.0, "hidden_weight": 1.0, "top_k": 16},
    {"divergence": "jsd", "top_k": 16, "teacher_cache": True},
], ids=["soft-targets", "shared-prefix", "attention+fitnets", "cached-top16"])
def test_the_chunked_step_equals_the_full_logits_step(tiny_models, tiny_config, overrides):
    teacher, student = tiny_models
    ids = torch.randint(0, teacher.model.config.vocab_size, (3, 24), generator=torch.Generator().manual_seed(3))
    attn = torch.ones_like(ids)
    attn[2, 18:] = 0
    batch = Blocks(ids, attn)
    config = tiny_config.with_overrides({**overrides, "loss_chunk_tokens": 7})
    targets = None
    if config.teacher_cache:
        with torch.no_grad():
            logits = teacher.model(input_ids=ids, attention_mask=attn).logits
        targets = teacher_topk(torch.log_softmax(logits / config.temperature, -1), config.top_k)
    chunked, after_chunked, shared = _one_step(teacher, student, config, batch, targets)
    full, after_full, _ = _one_step(teacher, student, config.with_overrides({"loss_chunk_tokens": 0}), batch, targets)
    if overrides.get("freeze_layers"):
        assert shared is not None  # the shared-prefix path really ran
    assert chunked.keys() == full.keys()
    for key in full:
        assert chunked[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key
    for name, p in after_full.items():
        assert torch.allclose(after_chunked[name], p, rtol=1e-4, atol=1e-6), name
    assert any(not torch.equal(p, q) for p, q in zip(after_full.values(), student.model.parameters())), "no update"


def test_gradient_checkpointing_gives_the_same_step(tiny_models, tiny_config):
    teacher, student = tiny_models
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(4))
    batch = Blocks(ids, torch.ones_like(ids))
    plain, after_plain, _ = _one_step(teacher, student, tiny_config, batch)
    checkpointed, after_ckpt, _ = _one_step(teacher, student, tiny_config.with_overrides({"gradient_checkpointing": True}),
                                            batch)
    assert checkpointed["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert checkpointed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)
    for name, p in after_plain.items():
        assert torch.allclose(after_ckpt[name], p, rtol=1e-4, atol=1e-6), name


def test_bf16_autocast_step_is_close_to_fp32(tiny_models, tiny_config):
    teacher, student = tiny_models
    assert autocast_dtype(tiny_config, torch.device("cpu")) is None  # auto: fp32 on CPU
    config = tiny_config.with_overrides({"precision": "bf16"})
    assert autocast_dtype(config, torch.device("cpu")) == torch.bfloat16
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    batch = Blocks(ids, torch.ones_like(ids))
    fp32, _, _ = _one_step(teacher, student, tiny_config, batch)
    bf16, after, _ = _one_step(teacher, student, config, batch)
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)
    assert bf16["loss"] != fp32["loss"]  # it really computed in bf16
    assert all(p.dtype == torch.float32 for p in after.values())  # master weights stay fp32


def test_compiled_layers_give_the_same_steps():
    """compile=True: every decoder layer of teacher and student torch.compiled; three steps match eager."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill_core.checkpoints import LoadedModel
    from distill_core.config import DistillConfig
    from distill_core.session import prepare_teacher

    torch.manual_seed(0)
    shapes = dict(vocab_size=256, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    teacher = LoadedModel(LlamaForCausalLM(LlamaConfig(hidden_size=64, **shapes)), None, "teacher", "config")
    student = LoadedModel(LlamaForCausalLM(LlamaConfig(hidden_size=32, **shapes)), None, "student", "config")
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(6))
    batch = Blocks(ids, torch.ones_like(ids))
    losses = {}
    for compiled in (False, True):
        config = DistillConfig(teacher="t", student="s", compile=compiled, freeze_embeddings=False)
        t, s = copy.deepcopy(teacher), copy.deepcopy(student)
        prepare_teacher(t, config, torch.device("cpu"))
        optimizer = torch.optim.SGD(_prepare_trainable(s, config), lr=0.1)
        losses[compiled] = [_train_step(t, s, batch, config, optimizer, torch.device("cpu"))["loss"] for _ in range(3)]
        layer = s.model.model.layers[0]
        assert (getattr(layer, "_compiled_call_impl", None) is not None) == compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_chunked_loss_gives_each_gradient_in_its_parameters_dtype():
    """bf16 weights (no fp32 master copy): the head's gradients, summed over chunks in fp32, come back bf16."""
    student, teacher = _tiny_pair(bias=True)
    student, teacher = student.to(torch.bfloat16), teacher.to(torch.bfloat16)
    ids = torch.randint(0, 101, (2, 7), generator=torch.Generator().manual_seed(7))
    labels, mask = shift_for_next_token(ids, torch.ones_like(ids))
    hidden = student.model(input_ids=ids).last_hidden_state
    t_hidden = teacher.model(input_ids=ids).last_hidden_state.detach()
    loss = chunked_distillation_loss(hidden, OutputHead(student), (t_hidden, OutputHead(teacher)), labels, mask,
                                     2.0, 0.5, chunk_tokens=4)
    loss.total.backward()
    assert student.lm_head.weight.grad.dtype == torch.bfloat16 and student.lm_head.bias.grad.dtype == torch.bfloat16
    assert torch.isfinite(student.lm_head.bias.grad.float()).all() and student.lm_head.bias.grad.abs().sum() > 0
