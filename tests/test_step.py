"""One distillation step (step.DistillStep) in its three parts, and its fast paths: the chunked
output-layer loss, the shared frozen prefix, gradient checkpointing, bf16 autocast and compiled layers
give the step the plain computation gives (to float rounding)."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill_core.config import DistillConfig
from distill_core.data import Blocks
from distill_core.losses import FitNetsProjection, distillation_loss, shift_for_next_token, teacher_topk
from distill_core.models import LoadedModel, compile_layers, load_teacher
from distill_core.step import DistillStep, SharedPrefix, frozen_parameters, prepare_student
from distill_core.students import load_student


@pytest.fixture()
def tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("layers:2", teacher, seed=0)
    return teacher, student


def _one_step(teacher, student, config, batch, targets=None):
    """A copy of the student, one `DistillStep` with `config`: (terms, updated parameters). Plain SGD:
    the update is the gradient itself, so near-zero gradients that differ by float rounding stay near
    zero (Adam's first step would turn each into a full +-lr step)."""
    student = copy.deepcopy(student)
    trainable = prepare_student(student, config)
    projection = None
    pairs = [(0, 0), (1, 3)]
    if config.hidden_weight > 0:
        torch.manual_seed(0)
        projection = FitNetsProjection(len(pairs), 64, 64)
        trainable += list(projection.parameters())
    shared = SharedPrefix.create(teacher, student, config, batch) if config.freeze_layers and targets is None else None
    optimizer = torch.optim.SGD(trainable, lr=config.learning_rate)
    step = DistillStep(config, teacher, student, optimizer, layer_pairs=pairs, projection=projection,
                       shared_prefix=shared)
    terms = step(batch, targets)
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
    config = tiny_config.with_overrides({"precision": "bf16"})
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    batch = Blocks(ids, torch.ones_like(ids))
    fp32, _, _ = _one_step(teacher, student, tiny_config, batch)
    bf16, after, _ = _one_step(teacher, student, config, batch)
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)
    assert bf16["loss"] != fp32["loss"]  # it really computed in bf16
    assert all(p.dtype == torch.float32 for p in after.values())  # master weights stay fp32


def test_compiled_layers_give_the_same_steps():
    """compile=True: every decoder layer of teacher and student torch.compiled; three steps match eager."""
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
        t.model.eval().requires_grad_(False)
        if compiled:  # what models.ModelCache does for a compiled entry
            compile_layers(t.model)
        step = DistillStep(config, t, s, torch.optim.SGD(prepare_student(s, config), lr=0.1))
        losses[compiled] = [step(batch)["loss"] for _ in range(3)]
        layer = s.model.model.layers[0]
        assert (getattr(layer, "_compiled_call_impl", None) is not None) == compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)




def test_the_step_in_three_parts(tiny_models, tiny_config):
    """The teacher's targets, the student's outputs and the loss terms are what `distillation_loss` gives on
    the two models' logits, and the step's returned terms are those values before its update."""
    teacher, student = tiny_models
    student = copy.deepcopy(student)
    config = tiny_config.with_overrides({"loss_chunk_tokens": 0, "temperature": 2.0, "kd_weight": 0.7})
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(8))
    attn = torch.ones_like(ids)
    labels, mask = shift_for_next_token(ids, attn)
    step = DistillStep(config, teacher, student, torch.optim.SGD(prepare_student(student, config), lr=0.0))
    targets = step.teacher_targets(ids, attn, None, chunked=False)
    outputs = step.student_outputs(ids, attn, targets, chunked=False)
    total, terms = step.loss_terms(targets, outputs, labels, mask, attn, chunked=False)
    with torch.no_grad():
        t_logits = teacher.model(input_ids=ids).logits
        s_logits = student.model(input_ids=ids).logits
    assert torch.allclose(targets.distribution, t_logits) and torch.allclose(outputs.final, s_logits, atol=1e-6)
    by_hand = distillation_loss(s_logits, t_logits, labels, mask, 2.0, 0.7)
    assert total.item() == pytest.approx(by_hand.total.item(), rel=1e-6)
    assert set(terms) == {"kd_loss", "ce_loss"}
    logged = step(Blocks(ids, attn))
    assert logged["loss"] == pytest.approx(by_hand.total.item(), rel=1e-6) and logged["grad_norm"] > 0


def test_frozen_parameters_and_the_trainable_set(tiny_models, tiny_config):
    _, student = tiny_models
    student = copy.deepcopy(student)
    config = tiny_config.with_overrides({"freeze_embeddings": True, "freeze_layers": 1})
    frozen = frozen_parameters(student.model, config)
    trainable = prepare_student(student, config)
    assert id(student.model.get_input_embeddings().weight) in frozen
    assert all(id(p) not in frozen for p in trainable) and trainable
    assert not any(p.requires_grad for p in student.model.model.layers[0].parameters())
    assert all(p.requires_grad for p in student.model.model.layers[1].parameters())
    with pytest.raises(Exception, match="would freeze all 2 student layers"):
        prepare_student(student, config.with_overrides({"freeze_layers": 2}))


def test_a_non_finite_loss_makes_no_update(tiny_models, tiny_config):
    teacher, student = tiny_models
    student = copy.deepcopy(student)
    step = DistillStep(tiny_config, teacher, student, torch.optim.SGD(prepare_student(student, tiny_config), lr=0.1))
    before = {name: p.detach().clone() for name, p in student.model.named_parameters()}
    assert step.update(torch.tensor(float("nan"), requires_grad=True), {}) is None
    assert all(torch.equal(before[name], p) for name, p in student.model.named_parameters())


def test_fp16_steps_scale_the_loss_and_an_overflow_only_skips_the_update(tiny_models, tiny_config):
    """Below compute capability 8.0 the session computes in fp16 with a gradient scaler (here on the CPU):
    the steps train, and an overflowing gradient skips that update and lowers the scale, the run goes on."""
    teacher, student = tiny_models
    student = copy.deepcopy(student)
    config = tiny_config.with_overrides({"precision": "fp16"})
    step = DistillStep(config, teacher, student, torch.optim.SGD(prepare_student(student, config), lr=1e-3))
    assert step.scaler is not None and step.dtype == torch.float16
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(9))
    batch = Blocks(ids, torch.ones_like(ids))
    first = step(batch)
    assert first is not None and torch.isfinite(torch.tensor(first["loss"]))
    scale = step.scaler.get_scale()
    before = {name: p.detach().clone() for name, p in student.model.named_parameters()}
    overflow = torch.tensor(1e35, requires_grad=True) * next(p for p in student.model.parameters() if p.requires_grad).sum()
    skipped = step.update(overflow, {})
    assert skipped is not None and skipped["grad_norm"] == float("inf")  # not an error: the session goes on
    assert step.scaler.get_scale() < scale  # the scale came down
    assert all(torch.equal(before[name], p) for name, p in student.model.named_parameters())  # no update
    assert step(batch) is not None


def test_the_shared_prefix_stays_on_with_a_bf16_teacher(tiny_teacher_dir, tiny_config):
    """On a GPU the teacher is held in bf16: its states agree with the student's own frozen layers only to
    bf16's precision, and the check allows exactly that (at fp32's 1e-4 it would turn itself off)."""
    from distill_core.models import MODELS

    held = MODELS.teacher(str(tiny_teacher_dir), "cpu", torch.bfloat16)
    student = load_student("layers:0,1,3", load_teacher(str(tiny_teacher_dir)), seed=0)
    config = tiny_config.with_overrides({"precision": "bf16", "freeze_layers": 1, "freeze_embeddings": True})
    ids = torch.randint(0, held.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(10))
    batch = Blocks(ids, torch.ones_like(ids))
    prefix = SharedPrefix.create(held, student, config, batch)
    assert prefix is not None and prefix.residual_dtype == torch.float32
    step = DistillStep(config, held, student, torch.optim.SGD(prepare_student(student, config), lr=1e-3),
                       shared_prefix=prefix)
    assert torch.isfinite(torch.tensor(step(batch)["loss"]))
    other = load_student("layers:0,2,3", load_teacher(str(tiny_teacher_dir)), seed=0)  # layer 1 is not a copy
    assert SharedPrefix.create(held, other, config.with_overrides({"freeze_layers": 2}), batch) is None


def test_compiled_layers_with_attention_transfer_compile_once():
    """Attention transfer switches the mapped layers to eager attention at every step; the compiled layers
    must not recompile for it: the count of compiled graphs stays flat after the first step."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    shapes = dict(vocab_size=256, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    teacher = LoadedModel(LlamaForCausalLM(LlamaConfig(hidden_size=64, **shapes)).eval().requires_grad_(False),
                          None, "teacher", "config")
    student = LoadedModel(LlamaForCausalLM(LlamaConfig(hidden_size=32, **shapes)), None, "student", "config")
    config = DistillConfig(teacher="t", student="s", compile=True, attention_weight=1.0, freeze_embeddings=False)
    step = DistillStep(config, teacher, student, torch.optim.SGD(prepare_student(student, config), lr=0.1),
                       layer_pairs=[(0, 0), (1, 1)])
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(6))
    batch = Blocks(ids, torch.ones_like(ids))
    step(batch)
    compiled = counters["stats"]["unique_graphs"]
    assert compiled > 0  # the layers were compiled
    for _ in range(3):
        step(batch)
    assert counters["stats"]["unique_graphs"] == compiled
