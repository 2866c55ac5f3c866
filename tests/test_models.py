"""Resolving and loading models, and the one cache of teachers that sessions and views share."""

import gc
import socket
import weakref

import pytest
import torch
from transformers import BertConfig

from distill_core.budget import ByteBudgetCache, model_bytes
from distill_core.errors import DistillError
from distill_core.hub import bundled_gguf_path
from distill_core.models import (MODELS, LazyTeacher, ModelCache, ModelKey, ResolvedModel, TeacherWeights,
                                 conversion_pending, load_model, load_teacher, resolve_model, spec_problem,
                                 tokenizer_of)


def test_unknown_spec_fails_fast_offline(monkeypatch):
    """Offline, an unknown spec fails at once: no connection is even tried (so nothing can retry)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a connection was attempted while offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DistillError, match="unknown model spec 'smollm2-999'.*offline"):
        load_model("smollm2-999")
    with pytest.raises(DistillError, match="local model path not found"):
        load_model("./no/such/dir")
    with pytest.raises(DistillError, match="derives a student"):
        load_model("layers:3")


def test_spec_problem_says_what_loading_would_without_loading(monkeypatch, tiny_teacher_dir):
    """A misspelled spec gets the engine's own message (with its "did you mean") before anything loads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded")

    with pytest.raises(DistillError) as loading:
        load_model("smollm2-13m")
    monkeypatch.setattr("distill_core.models._load_pretrained", no_load)
    problem = spec_problem("smollm2-13m")
    assert problem.startswith("unknown model spec 'smollm2-13m' (did you mean 'smollm2-135m'?)")
    assert str(loading.value) == problem  # the same words as a Run would say
    assert "did you mean 'smollm2-135m'" in spec_problem(" smollm2-135", "student")
    assert spec_problem(str(tiny_teacher_dir)) is None and spec_problem(str(tiny_teacher_dir), "student") is None
    assert "derives a student" in spec_problem("layers:3")
    assert spec_problem("layers:3", "student") is None and spec_problem("fresh:layers=1,hidden=8,heads=2", "student") is None
    assert "missing heads" in spec_problem("fresh:layers=1,hidden=8", "student")
    assert spec_problem("  ", "student") == "the student spec is empty" and spec_problem(None) == "the teacher spec is empty"
    assert "local model path not found" in spec_problem("./no/such/dir", "student")


def test_directory_without_config(tmp_path):
    with pytest.raises(DistillError, match="no config.json"):
        load_model(str(tmp_path))


def test_not_a_causal_lm(tmp_path):
    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path)
    with pytest.raises(DistillError, match="not a causal language model"):
        load_model(str(tmp_path))


def test_bundled_teacher_loads_from_cache(bundled_dir):
    """The real bundled teacher: converted once, then a load from the safetensors cache."""
    teacher = load_model("smollm2-135m")
    c = teacher.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (30, 576, 9, 49152)
    assert "cached at" in teacher.source


def test_conversion_is_pending_only_for_a_gguf_not_yet_converted(bundled_dir, tiny_teacher_dir, tmp_path):
    assert not conversion_pending("smollm2-135m")  # bundled_dir converted it
    assert not conversion_pending(str(tiny_teacher_dir)) and not conversion_pending("/no/such/model.gguf")
    fresh = tmp_path / "other.gguf"
    fresh.write_bytes(b"GGUF")
    assert conversion_pending(str(fresh))


def test_local_gguf_file_spec(bundled_dir):
    """A .gguf path is a spec of its own: dequantised once into the same safetensors cache."""
    loaded = load_model(str(bundled_gguf_path()))
    assert loaded.source.startswith("GGUF file") and loaded.model.config.num_hidden_layers == 30
    with pytest.raises(DistillError, match="GGUF file not found"):
        load_model("/no/such/model.gguf")


def test_the_cache_shares_one_teacher_and_copies_it_for_another_form(tiny_teacher_dir):
    """The views' entry (fp32, CPU) is loaded once and shared; another dtype or a compiled form is a
    separate copy, and making it leaves the shared entry as it was."""
    cache = ModelCache()
    spec = str(tiny_teacher_dir)
    base = cache.teacher(spec)
    assert cache.teacher(spec) is base  # shared, not reloaded
    assert not base.model.training and not any(p.requires_grad for p in base.model.parameters())
    before = {name: p.detach().clone() for name, p in base.model.state_dict().items()}
    half = cache.teacher(spec, "cpu", torch.bfloat16)
    assert half is not base and half.model is not base.model
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in base.model.parameters()} == {torch.float32}
    after = base.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert cache.teacher(spec, "cpu", torch.bfloat16) is half


def test_the_cache_is_bounded_and_keeps_what_callers_hold(tiny_teacher_dir):
    """A byte budget of one fp32 teacher: its bf16 copy evicts it; whoever holds the evicted one keeps it whole,
    and asking for it again hands back that same object (never a second copy in memory); once nobody holds it,
    it is loaded again."""
    spec = str(tiny_teacher_dir)
    one = model_bytes(load_model(spec).model)
    cache = ModelCache(ByteBudgetCache(int(one * 1.2)))
    base = cache.teacher(spec)
    half = cache.teacher(spec, "cpu", torch.bfloat16)  # copied from the base entry, which it then evicts
    assert half.model is not base.model and cache.store.keys() == [ModelKey(spec, "cpu", "bfloat16")]
    assert cache.store.bytes <= cache.store.budget and cache.store.evictions == 1
    assert next(base.model.parameters()).dtype == torch.float32  # a holder's model stays whole
    assert cache.teacher(spec) is base  # still alive: handed back, not loaded twice
    cache.teacher(spec, "cpu", torch.bfloat16)  # evicts the base again
    held = weakref.ref(base.model)
    del base
    gc.collect()
    assert held() is None  # evicted and held by nobody: freed, the cache keeps no hidden reference
    assert ModelKey(spec) not in cache.store.keys() and cache.teacher(spec).model is not None  # loaded again
    assert cache.store.bytes <= cache.store.budget


def test_lazy_teacher_loads_only_when_asked(tiny_teacher_dir):
    teacher = LazyTeacher(str(tiny_teacher_dir), torch.device("cpu"))
    assert teacher.loaded is None
    assert teacher.tokenizer is not None and teacher.config().num_hidden_layers == 4  # no weights needed
    fingerprint = teacher.fingerprint()
    assert teacher.loaded is None  # identified without its weights
    assert teacher.get() is MODELS.teacher(str(tiny_teacher_dir)) is load_teacher(str(tiny_teacher_dir))
    assert teacher.loaded.resolved.fingerprint() == fingerprint


def test_tokenizer_of_a_spec_loads_no_weights(tiny_teacher_dir):
    tokenizer = tokenizer_of(str(tiny_teacher_dir))
    assert tokenizer is tokenizer_of(f"  {tiny_teacher_dir}".strip())
    assert tokenizer.pad_token_id is not None and len(tokenizer) > 1000


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_teacher(tiny_teacher_dir, tmp_path, monkeypatch):
    """The tiny teacher as if downloaded from the hub as `org/tiny`: a snapshot in a Hugging Face cache,
    the machine offline."""
    import huggingface_hub.constants

    repo = tmp_path / "hf" / "models--org--tiny"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    for file in tiny_teacher_dir.iterdir():
        (repo / "snapshots" / COMMIT / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return "org/tiny"


def test_a_hub_model_is_identified_by_its_revision_online_or_offline(hub_teacher, monkeypatch):
    from distill_core import models

    offline = resolve_model(hub_teacher)
    assert offline.local_only and offline.source.endswith("(local cache)")
    assert offline.local_folder().name == COMMIT
    asked = []
    real = models.snapshot_download

    def up_to_date_cache(repo_id, **kwargs):  # online with the cache current: the same snapshot
        asked.append(kwargs["local_files_only"])
        return real(repo_id, **{**kwargs, "local_files_only": True})

    monkeypatch.setattr(models, "snapshot_download", up_to_date_cache)
    online = ResolvedModel(hub_teacher, hub_teacher, f"Hugging Face hub {hub_teacher}", local_only=False)
    assert online.fingerprint() == offline.fingerprint()
    assert asked == [False, True]  # online it asked the hub for the current revision, offline only the cache


def test_teacher_weights_read_a_hub_snapshot_from_the_cache(hub_teacher, tiny_teacher_dir):
    weights = TeacherWeights(resolve_model(hub_teacher))
    state = load_teacher(str(tiny_teacher_dir)).model.state_dict()
    assert weights.config.num_hidden_layers == 4
    assert all(torch.equal(weights.state_dict()[name], tensor) for name, tensor in state.items())


def test_a_complete_teacher_cache_with_a_hub_teacher_runs_again_without_it(hub_teacher, tiny_config, tmp_path,
                                                                          monkeypatch):
    """The dark-knowledge-topk recipe on a Space (its teacher from the hub): the second run reads the cache
    and derives its `layers:` student from the snapshot's weights without loading the teacher."""
    from distill_core.session import run_session

    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    config = tiny_config.with_overrides({"teacher": hub_teacher, "teacher_cache": True, "top_k": 8, "steps": 2,
                                         "eval_every": 0, "probe_every": 0})
    first = list(run_session(config, tmp_path / "first"))
    assert first[-1]["kind"] == "done" and first[-1]["summary"]["teacher_loaded"]

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although the cache is complete")

    monkeypatch.setattr(MODELS, "teacher", no_teacher)
    second = list(run_session(config, tmp_path / "second"))
    assert second[-1]["kind"] == "done" and not second[-1]["summary"]["teacher_loaded"]
    assert second[-1]["summary"]["after"] == pytest.approx(first[-1]["summary"]["after"], rel=1e-6)
