import time

import pytest
import torch

from distill_core.checkpoints import (
    compatibility_report,
    decoder_layers,
    derive_student,
    load_model,
    load_student,
    load_teacher,
    parse_derived_spec,
    select_layers,
)
from distill_core.errors import DistillError


def test_parse_derived_specs():
    assert parse_derived_spec("layers:6") == ("layers", {"count": 6, "rule": "depth"})
    assert parse_derived_spec("layers:0,5,9") == ("layers", {"indices": [0, 5, 9]})
    assert parse_derived_spec("fresh:layers=2,hidden=64,heads=4") == ("fresh", {"layers": 2, "hidden": 64, "heads": 4})
    for bad, message in [("layers:0", "at least one layer"), ("layers:a", "expected layers"),
                         ("layers:3,1", "increasing"), ("layers:1,1", "twice"),
                         ("fresh:layers=2,hidden=65,heads=4", "divisible"), ("fresh:layers=2", "missing")]:
        with pytest.raises(DistillError, match=message):
            parse_derived_spec(bad)


def test_select_layers_rule():
    assert select_layers(30, 20) == list(range(12)) + list(range(22, 30))
    assert select_layers(30, 30) == list(range(30))
    assert select_layers(30, 1) == [29]
    assert select_layers(4, 2) == [0, 3]
    with pytest.raises(DistillError, match="more layers than the teacher"):
        select_layers(30, 31)


def test_derived_student_copies_teacher_layers(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:0,3")
    t_layers, s_layers = decoder_layers(teacher.model), decoder_layers(student.model)
    assert len(s_layers) == 2 and student.layers_kept == [0, 3]
    for s_index, t_index in enumerate([0, 3]):
        for (name, s_param), (_, t_param) in zip(s_layers[s_index].named_parameters(), t_layers[t_index].named_parameters()):
            assert torch.equal(s_param, t_param), name
    assert torch.equal(student.model.get_input_embeddings().weight, teacher.model.get_input_embeddings().weight)
    # the copy is independent: training the student never changes the teacher
    with torch.no_grad():
        s_layers[0].mlp.down_proj.weight.add_(1.0)
    assert not torch.equal(s_layers[0].mlp.down_proj.weight, t_layers[0].mlp.down_proj.weight)
    # a student of all the teacher's layers computes exactly the teacher's function
    full = derive_student(teacher, "layers:4")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(full.model(input_ids=ids).logits, teacher.model(input_ids=ids).logits, atol=1e-5)


def test_fresh_student_shape(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "fresh:layers=1,hidden=32,heads=2", seed=1)
    c = student.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (1, 32, 2, teacher.model.config.vocab_size)
    logits = student.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, c.vocab_size)


def test_out_of_range_layers(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    with pytest.raises(DistillError, match="more layers than the teacher has"):
        derive_student(teacher, "layers:99")
    with pytest.raises(DistillError, match="layer 7 does not exist"):
        derive_student(teacher, "layers:0,7")


def test_unknown_spec_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DistillError, match="unknown model spec 'smollm2-999'.*offline"):
        load_model("smollm2-999")
    assert time.perf_counter() - start < 10  # generous: it must not retry for a minute
    with pytest.raises(DistillError, match="local model path not found"):
        load_model("./no/such/dir")
    with pytest.raises(DistillError, match="derives a student"):
        load_model("layers:3")


def test_directory_without_config(tmp_path):
    with pytest.raises(DistillError, match="no config.json"):
        load_model(str(tmp_path))


def test_not_a_causal_lm(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path)
    with pytest.raises(DistillError, match="not a causal language model"):
        load_model(str(tmp_path))


def test_compatibility_report(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = load_student("layers:2", teacher)
    report = compatibility_report(teacher, student)
    assert report["tokenizer"]["same_vocabulary"] is True
    assert report["teacher"]["layers"] == 4 and report["student"]["layers"] == 2
    assert report["student"]["layers_kept"] == [0, 3]
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["techniques"]["soft_targets"] is True


def test_tokenizer_mismatch_is_refused(tiny_teacher_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    teacher = load_teacher(str(tiny_teacher_dir))
    vocab = {"<unk>": 0, "a": 1, "b": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<unk>")
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path)
    with pytest.raises(DistillError, match="tokenizers differ"):
        load_student(str(tmp_path), teacher)


def test_bundled_teacher_loads_from_cache(bundled_dir):
    """The real bundled teacher: converted once, then a load from the safetensors cache."""
    start = time.perf_counter()
    teacher = load_model("smollm2-135m")
    elapsed = time.perf_counter() - start
    c = teacher.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (30, 576, 9, 49152)
    assert "cached at" in teacher.source
    print(f"bundled teacher load from cache: {elapsed:.1f}s")


def test_local_gguf_file_spec(bundled_dir):
    """A .gguf path is a spec of its own: dequantised once into the same safetensors cache."""
    from distill_core.checkpoints import bundled_gguf_path

    loaded = load_model(str(bundled_gguf_path()))
    assert loaded.source.startswith("GGUF file") and loaded.model.config.num_hidden_layers == 30
    with pytest.raises(DistillError, match="GGUF file not found"):
        load_model("/no/such/model.gguf")
