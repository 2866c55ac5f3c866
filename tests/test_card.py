"""The model card of a distilled student: Hugging Face metadata that validates, the recipe, the figures."""

from huggingface_hub import ModelCard

from distill_core.card import base_model, model_card
from distill_core.config import DistillConfig

SUMMARY = {"steps_done": 22, "train_s": 103.0, "eval_tokens": 504,
           "teacher": {"ppl": 63.68, "params": 134_515_008}, "student": {"params": 99_128_000},
           "before": {"ppl": 327.18, "top1_agreement": 0.296, "kl_to_teacher": 2.084},
           "after": {"ppl": 121.06, "top1_agreement": 0.44, "kl_to_teacher": 1.073}}
CORPUS = {"description": "teacher-generated: 160 prompts x 96 new tokens", "documents": 160, "sha256": "ab" * 32}


def test_the_card_carries_valid_metadata_and_the_figures():
    card = ModelCard(model_card(DistillConfig(), SUMMARY, CORPUS, "run-student"))
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.license == "apache-2.0"
    assert data.library_name == "transformers" and "knowledge-distillation" in data.tags
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [
        ("perplexity", 121.06), ("accuracy", 0.44), ("kl_divergence", 1.073)]
    text = card.text
    assert "| held-out perplexity ↓ | 63.68 | 327.18 | 121.06 |" in text
    assert "| `temperature` | `2.0` |" in text and "`" + "ab" * 32 + "`" in text
    assert "python -m distill_core distill --config config.yaml" in text


def test_base_model_of_each_kind_of_teacher():
    assert base_model("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert base_model("/models/teacher") is None and base_model("model.gguf") is None
    card = ModelCard(model_card(DistillConfig(teacher="/models/teacher"), SUMMARY, CORPUS, "x"))
    assert card.data.base_model is None and card.data.license is None  # unknown: left out, not guessed
