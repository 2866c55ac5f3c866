"""Students derived from the teacher (layer subsets with copied weights, fresh models) or loaded and checked."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from distill_core.errors import DistillError
from distill_core.models import decoder_layers, load_teacher
from distill_core.students import derive_student, load_student


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


def test_tokenizer_mismatch_is_refused(tiny_teacher_dir, tmp_path):
    teacher = load_teacher(str(tiny_teacher_dir))
    vocab = {"<unk>": 0, "a": 1, "b": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<unk>")
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path)
    with pytest.raises(DistillError, match=r"tokenizers differ \(.*\); distillation needs the same vocabulary or a "
                                           r"bridge: set tokenizer_bridge to auto, uld or span"):
        load_student(str(tmp_path), teacher, tokenizer_bridge="none")
    with pytest.raises(DistillError, match="tokenizer_bridge=shared_ids needs the same token at every id"):
        load_student(str(tmp_path), teacher, tokenizer_bridge="shared_ids")
    assert load_student(str(tmp_path), teacher).tokenizer.get_vocab() == vocab  # auto: a bridge applies


def test_a_configs_training_documents_are_its_texts(tiny_teacher_dir):
    """What a BPE student trains its vocabulary on, and the views' student before: plain texts, not the corpus
    object a session reads."""
    from distill_core.config import DistillConfig
    from distill_core.data import split_documents
    from distill_core.students import corpus_documents

    text = "The first document of the corpus.\n\nThe second one, a little longer than the first."
    docs, source = corpus_documents(str(tiny_teacher_dir), DistillConfig(teacher=str(tiny_teacher_dir), corpus_text=text))
    assert docs == split_documents(text) and all(isinstance(d, str) for d in docs)
    assert source.startswith("pasted text")
