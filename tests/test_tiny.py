"""The tiny config-built teacher of the tests and the load test: a real checkpoint with a real tokenizer."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_core.tiny import build_tiny_teacher


def test_tiny_teacher_saves_a_loadable_checkpoint(bundled_dir, tmp_path):
    folder = build_tiny_teacher(bundled_dir, tmp_path / "tiny", layers=2, hidden=32, heads=2)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 32)
    assert model.config.vocab_size == len(tokenizer)
    again = build_tiny_teacher(bundled_dir, tmp_path / "again", layers=2, hidden=32, heads=2)
    assert (folder / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()  # seeded
