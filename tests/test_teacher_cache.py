"""The teacher cache: same loss as the live top-k, a complete cache loads no teacher, damage is rebuilt."""

import pytest
import torch

from distill_core import models
from distill_core.config import DistillConfig
from distill_core.errors import DistillError
from distill_core.losses import TopKTargets, soft_target_loss, teacher_topk
from distill_core.session import run_session


def test_cached_targets_give_the_live_top_k_loss_and_gradient():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 11, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    for kind in ("forward_kl", "reverse_kl", "jsd", "skew_kl"):
        live = soft_target_loss(student, teacher, 2.0, mask, kind, top_k=4)
        targets = teacher_topk(torch.log_softmax(teacher / 2.0, -1), 4)
        cached = soft_target_loss(student, targets, 2.0, mask, kind)
        assert cached.item() == pytest.approx(live.item(), rel=1e-12)
        g_live, = torch.autograd.grad(live, student)
        g_cached, = torch.autograd.grad(cached, student)
        assert torch.allclose(g_live, g_cached)
    # buckets sum to one
    assert torch.allclose(targets.buckets().exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_teacher_cache_needs_top_k_and_no_layer_wise_terms():
    with pytest.raises(DistillError, match="top_k"):
        DistillConfig(teacher_cache=True, top_k=0)
    with pytest.raises(DistillError, match="attention"):
        DistillConfig(teacher_cache=True, top_k=8, attention_weight=1.0)


@pytest.fixture()
def cache_config(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    return tiny_config.with_overrides({"teacher_cache": True, "top_k": 8, "steps": 6, "eval_every": 3, "probe_every": 3})


def _run(config, out):
    events = list(run_session(config, out))
    assert events[-1]["kind"] == "done", events[-1]
    return events


def test_a_complete_cache_loads_no_teacher_and_reproduces_the_run(cache_config, tmp_path, monkeypatch):
    first = _run(cache_config, tmp_path / "first")
    summary = first[-1]["summary"]
    assert summary["teacher_loaded"] and summary["teacher_cache"]

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although the cache is complete")

    monkeypatch.setattr(models.MODELS, "teacher", no_teacher)
    second = _run(cache_config, tmp_path / "second")
    again = second[-1]["summary"]
    assert not again["teacher_loaded"]
    assert [e for e in second if e["kind"] == "cache"][0]["teacher_loaded"] is False
    losses = lambda events: [e["loss"] for e in events if e["kind"] == "step"]  # noqa: E731
    assert losses(second) == pytest.approx(losses(first), rel=1e-6)
    assert again["after"] == pytest.approx(summary["after"], rel=1e-6)
    assert again["before"] == pytest.approx(summary["before"], rel=1e-6)
    assert again["teacher"] == summary["teacher"]
    # the probe snapshots replay the teacher's recorded distribution
    probe = lambda events: [e for e in events if e["kind"] == "probe"][0]["teacher_probs"]  # noqa: E731
    assert probe(second) == pytest.approx(probe(first))


def test_cached_run_matches_a_live_top_k_run(cache_config, tmp_path):
    cached = _run(cache_config, tmp_path / "cached")
    live = _run(cache_config.with_overrides({"teacher_cache": False}), tmp_path / "live")
    losses = lambda events: [e["loss"] for e in events if e["kind"] == "step"]  # noqa: E731
    # the same top-k targets, computed in other batch shapes: equal up to float rounding
    assert losses(cached) == pytest.approx(losses(live), rel=1e-4)
    assert cached[-1]["summary"]["after"]["ppl"] == pytest.approx(live[-1]["summary"]["after"]["ppl"], rel=1e-4)


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_a_damaged_cache_is_rebuilt_not_used(cache_config, tmp_path, damage):
    first = _run(cache_config, tmp_path / "first")
    path = first[-1]["summary"]["teacher_cache"]
    from pathlib import Path

    train = Path(path) / "train.safetensors"
    if damage == "flip":
        data = bytearray(train.read_bytes())
        data[-5] ^= 0xFF
        train.write_bytes(bytes(data))
    elif damage == "truncate":
        train.write_bytes(train.read_bytes()[:100])
    else:
        (Path(path) / "manifest.json").write_text("{not json", encoding="utf-8")
    second = _run(cache_config, tmp_path / "second")
    statuses = " ".join(e.get("message", "") for e in second if e["kind"] == "status")
    assert "unusable" in statuses and "rebuilt" in statuses
    assert second[-1]["summary"]["teacher_loaded"]  # rebuilt with the teacher
    losses = lambda events: [e["loss"] for e in events if e["kind"] == "step"]  # noqa: E731
    assert losses(second) == pytest.approx(losses(first), rel=1e-6)


def test_other_settings_use_another_cache(cache_config, tmp_path):
    a = _run(cache_config, tmp_path / "a")[-1]["summary"]["teacher_cache"]
    b = _run(cache_config.with_overrides({"temperature": 3.0}), tmp_path / "b")[-1]["summary"]
    assert b["teacher_cache"] != a and b["teacher_loaded"]
    c = _run(cache_config.with_overrides({"top_k": 4}), tmp_path / "c")[-1]["summary"]
    assert c["teacher_cache"] not in (a, b["teacher_cache"])


def test_topk_targets_roundtrip_shapes():
    logp = torch.log_softmax(torch.randn(2, 5, 30), -1)
    t = teacher_topk(logp, 6)
    assert isinstance(t, TopKTargets)
    assert t.indices.shape == (2, 5, 6) and t.tail.shape == (2, 5, 1)
    assert torch.all(t.logp[..., :-1] >= t.logp[..., 1:])  # most likely first


def test_the_cache_key_holds_the_teachers_dtype(tiny_teacher_dir, tmp_path):
    """A cache built from the bf16 teacher of a GPU session is not the fp32 CPU teacher's, and the reverse."""
    from distill_core.data import Blocks
    from distill_core.models import resolve_model
    from distill_core.teacher_cache import TeacherCache

    ids = torch.arange(32).view(2, 16)
    blocks = Blocks(ids, torch.ones_like(ids))
    entries = {dtype: TeacherCache(resolve_model(str(tiny_teacher_dir)), blocks, blocks, ids[:1], 2.0, 8, root=tmp_path,
                                   teacher_dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    assert entries[torch.float32].path != entries[torch.bfloat16].path
    assert entries[torch.bfloat16].key["teacher_dtype"] == "torch.bfloat16"


def test_a_converted_gguf_is_keyed_by_its_dtype(bundled_dir, monkeypatch):
    from distill_core.hub import bundled_gguf_path

    gguf = bundled_gguf_path()
    assert models._converted_dir(gguf) == bundled_dir  # the cache the suite converted into
    monkeypatch.setattr(models, "CONVERTED_DTYPE", torch.bfloat16)
    assert models._converted_dir(gguf) != bundled_dir  # another dtype: another converted copy
