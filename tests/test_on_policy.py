"""On-policy distillation: λ = 0 is the off-policy session exactly; on an on-policy batch the loss sees only the
positions whose next token the student wrote (the reverse KL there, computed by hand and its gradient checked
numerically); rollouts and the schedule are reproducible from the seed; a session mixes both kinds of step."""

import copy
import json

import pytest
import torch

from distill_core import on_policy as on_policy_module
from distill_core.data import Blocks
from distill_core.errors import DistillError
from distill_core.losses import distillation_loss, divergence, shift_for_next_token
from distill_core.models import load_teacher
from distill_core.on_policy import OnPolicy
from distill_core.session import run_session
from distill_core.step import DistillStep, prepare_student
from distill_core.students import load_student


@pytest.fixture()
def tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    return teacher, load_student("layers:2", teacher, seed=0)


def _final_weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "student" / "model.safetensors"))


def _steps(events):
    return [{k: v for k, v in e.items() if k not in ("elapsed_s", "tokens_per_s", "eta_s")}
            for e in events if e["kind"] == "step"]


def test_lambda_zero_is_the_off_policy_session_exactly(tiny_config, tmp_path, monkeypatch):
    """λ = 0 never samples and trains bit for bit as the session without on-policy settings: same losses and
    the same weights whatever the rollout settings say."""
    base = tiny_config.with_overrides({"steps": 5, "sample_eval_tokens": 0})
    plain = list(run_session(base, tmp_path / "plain"))

    def no_rollout(*args, **kwargs):
        raise AssertionError("λ = 0 must not sample")

    monkeypatch.setattr(on_policy_module.OnPolicy, "rollout", no_rollout)
    zero = list(run_session(base.with_overrides({"on_policy_fraction": 0.0, "rollout_tokens": 7,
                                                 "rollout_temperature": 0.5, "on_policy_divergence": "jsd"}),
                            tmp_path / "zero"))
    assert _steps(plain) == _steps(zero) and len(_steps(zero)) == 5
    assert all("on_policy" not in e for e in _steps(zero))
    a, b = _final_weights(tmp_path / "plain"), _final_weights(tmp_path / "zero")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("chunk", [0, 5], ids=["full-logits", "chunked"])
@pytest.mark.parametrize("top_k", [0, 8], ids=["whole-distribution", "top8"])
def test_an_on_policy_step_scores_only_the_continuation(tiny_models, tiny_config, chunk, top_k):
    """The on-policy term is the reverse KL at the positions whose next token the student wrote, averaged over
    them alone: the prompt's positions and the padding count for nothing (by hand, from both models' logits)."""
    teacher, student = tiny_models
    student = copy.deepcopy(student)
    config = tiny_config.with_overrides({"loss_chunk_tokens": chunk, "top_k": top_k, "temperature": 1.0})
    ids = torch.randint(0, teacher.model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(4))
    attn = torch.ones_like(ids)
    attn[1, 8:] = 0  # the second row is shorter
    continuation = torch.zeros_like(ids)
    continuation[0, 3:9] = 1  # prompt of 4 tokens, 6 written
    continuation[1, 5:7] = 1  # prompt of 6 tokens, 2 written
    step = DistillStep(config, teacher, student, torch.optim.SGD(prepare_student(student, config), lr=0.0))
    terms = step(Blocks(ids, attn), None, continuation)
    with torch.no_grad():
        t_logp = teacher.model(input_ids=ids, attention_mask=attn).logits.log_softmax(-1)
        s_logp = student.model(input_ids=ids, attention_mask=attn).logits.log_softmax(-1)
    labels, mask = shift_for_next_token(ids, attn)
    by_hand = distillation_loss(s_logp, t_logp, labels, mask * continuation, 1.0, 1.0, "reverse_kl", top_k)
    per_position = divergence(t_logp, s_logp, "reverse_kl")
    if top_k == 0:
        assert by_hand.total.item() == pytest.approx(float(per_position[continuation.bool()].mean()), rel=1e-5)
    assert set(terms) == {"loss", "on_policy_kd_loss", "grad_norm"}
    assert terms["on_policy_kd_loss"] == pytest.approx(by_hand.total.item(), rel=1e-4)
    assert terms["loss"] == pytest.approx(by_hand.total.item(), rel=1e-4)


def test_the_on_policy_loss_gradient_is_the_numerical_one():
    """The masked reverse KL the on-policy step minimises, differentiated by autograd, against finite differences
    (float64), prompt positions masked out: their logits get no gradient."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 5, 7, dtype=torch.float64, generator=generator)
    labels = torch.zeros(2, 5, dtype=torch.long)
    continuation = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])

    def loss(s):
        return distillation_loss(s, teacher, labels, continuation, 1.0, 1.0, "reverse_kl").total

    assert torch.autograd.gradcheck(loss, (student,))
    loss(student).backward()
    assert torch.all(student.grad[continuation == 0] == 0) and torch.all(student.grad[continuation == 1].abs().sum(-1) > 0)


def test_rollouts_and_the_schedule_come_from_the_seed(tiny_models, tiny_config):
    teacher, student = tiny_models
    config = tiny_config.with_overrides({"on_policy_fraction": 0.5, "rollout_tokens": 6, "batch_size": 3})
    plan = OnPolicy(config, teacher.tokenizer)
    assert [plan.is_on_policy(step) for step in range(1, 9)] == [False, True] * 4  # every second step
    quarter = OnPolicy(config.with_overrides({"on_policy_fraction": 0.25}), teacher.tokenizer)
    assert [s for s in range(1, 13) if quarter.is_on_policy(s)] == [4, 8, 12]
    third = OnPolicy(config.with_overrides({"on_policy_fraction": 0.3}), teacher.tokenizer)
    assert sum(third.is_on_policy(s) for s in range(1, 101)) == 30
    assert all(OnPolicy(config.with_overrides({"on_policy_fraction": 1.0}), teacher.tokenizer).is_on_policy(s)
               for s in range(1, 20))
    assert not any(OnPolicy(config.with_overrides({"on_policy_fraction": 0.0}), teacher.tokenizer).is_on_policy(s)
                   for s in range(1, 20))
    student.model.train()  # as a session holds it
    indices = plan.prompts_for(4)
    assert indices == plan.prompts_for(4) and len(set(indices)) == 3 and indices != plan.prompts_for(5)
    first, again = plan.rollout(student.model, 4, indices), plan.rollout(student.model, 4, indices)
    assert torch.equal(first.blocks.input_ids, again.blocks.input_ids)
    other = plan.rollout(student.model, 5, indices)
    assert not torch.equal(other.blocks.input_ids, first.blocks.input_ids)
    samples = first.samples
    for row, prompt in enumerate(indices):
        assert samples.ids[row, : samples.prompt_lengths[row]].tolist() == plan.prompts[prompt]
        written = first.continuation[row].nonzero().squeeze(-1).tolist()
        # position i predicts token i + 1: the first written token's position is the prompt's last
        assert written == list(range(samples.prompt_lengths[row] - 1, samples.lengths[row] - 1))
        assert first.blocks.attention_mask[row].sum() == samples.lengths[row] <= config.seq_len
    assert student.model.training  # sampling (in eval mode) leaves the student as it found it


def test_a_session_mixes_on_policy_and_off_policy_steps(tiny_config, tmp_path):
    config = tiny_config.with_overrides({"steps": 6, "on_policy_fraction": 0.5, "rollout_tokens": 8,
                                         "sample_eval_tokens": 4, "log_every": 1})
    events = list(run_session(config, tmp_path))
    assert events[-1]["kind"] == "done"
    steps = [e for e in events if e["kind"] == "step"]
    on = [e["step"] for e in steps if e["on_policy"]]
    assert on == [2, 4, 6]  # half the steps, every second one
    for e in steps:
        if e["on_policy"]:
            assert {"on_policy_kd_loss", "rollout_s", "rollout_tokens"} <= set(e) and "ce_loss" not in e
        else:
            assert {"kd_loss", "ce_loss"} <= set(e)
    rollouts = [e for e in events if e["kind"] == "rollout"]
    assert [e["step"] for e in rollouts] == on
    for e in rollouts:
        n = len(e["tokens"])
        assert 0 < n <= 8 and len(e["teacher_prob"]) == len(e["reverse_kl"]) == len(e["teacher_top"]) == n
        assert all(0 < p <= 1 for p in e["teacher_prob"])
    summary = events[-1]["summary"]
    assert summary["on_policy"]["steps"] == len(on) and summary["on_policy"]["fraction"] == 0.5
    assert summary["on_policy"]["divergence"] == "reverse_kl"
    for when in ("before", "after"):
        assert summary[when]["sample_nll"] > 0 and summary[when]["sample_reverse_kl"] >= 0
    assert summary["teacher"]["sample_nll"] > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if e["kind"] == "rollout"] == on  # a reopened run has them too


def test_on_policy_steps_run_the_teacher_even_with_a_complete_teacher_cache(tiny_config, tmp_path):
    config = tiny_config.with_overrides({"steps": 2, "top_k": 8, "teacher_cache": True, "sample_eval_tokens": 0})
    list(run_session(config, tmp_path / "fill"))  # writes the cache
    events = list(run_session(config.with_overrides({"on_policy_fraction": 1.0, "rollout_tokens": 4}),
                              tmp_path / "on"))
    assert events[-1]["kind"] == "done"
    assert all(e["on_policy"] for e in events if e["kind"] == "step")


def test_no_prompt_fits_the_block(tiny_models, tiny_config, tmp_path):
    teacher, _ = tiny_models
    prompts = tmp_path / "long.txt"
    prompts.write_text("word " * 40 + "\n", encoding="utf-8")
    config = tiny_config.with_overrides({"on_policy_fraction": 1.0, "rollout_prompts": str(prompts), "seq_len": 16})
    with pytest.raises(DistillError, match="no prompt of .* leaves room"):
        OnPolicy(config, teacher.tokenizer)


def test_a_student_with_its_own_vocabulary_gets_no_on_policy_steps_and_no_own_text_measure(tiny_config, tmp_path):
    """The teacher scores the student's samples as its own token ids: across tokenizers an on-policy session is
    refused before training, and the teacher-scored measure is skipped with a status saying why."""
    own_vocabulary = {"student": "fresh:layers=2,hidden=32,heads=2,vocab=bpe:400", "steps": 2, "eval_every": 0,
                      "probe_every": 0}
    with pytest.raises(DistillError, match="on-policy steps need a student that reads the teacher's tokens"):
        list(run_session(tiny_config.with_overrides({**own_vocabulary, "on_policy_fraction": 0.5}), tmp_path / "op"))
    events = list(run_session(tiny_config.with_overrides({**own_vocabulary, "sample_eval_tokens": 4}), tmp_path / "m"))
    assert events[-1]["kind"] == "done", events[-1]
    assert any("student reads other tokens than the teacher" in e.get("message", "") for e in events)
    assert "sample_nll" not in events[-1]["summary"]["after"]
    # the real text is scored per token in the teacher's tokens too: a note instead, the session goes on
    assert "reads another vocabulary" in events[-1]["summary"]["real_text"]["note"]
