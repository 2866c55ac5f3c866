"""The model card of a distilled student: README.md in the Hugging Face convention (YAML metadata, then
the recipe, the teacher against the student before and after, the corpus and the command that reproduces
it), written into every session's student/ folder and so into every export. The metadata is built with
huggingface_hub's ModelCardData (base_model, library_name, license where known, tags, the held-out
results as a model-index)."""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill_core.config import DistillConfig
from distill_core.specs import BUNDLED_HUB_ID, is_bundled, is_derived_spec

KNOWN_LICENSES = {BUNDLED_HUB_ID: "apache-2.0", "HuggingFaceTB/SmolLM2-360M-Instruct": "apache-2.0",
                  "HuggingFaceTB/SmolLM2-1.7B-Instruct": "apache-2.0"}
"""Licences of teachers this project knows (SmolLM2: Apache 2.0); a distilled student inherits its teacher's."""
RECIPE_FIELDS = ("student", "steps", "batch_size", "seq_len", "learning_rate", "warmup_steps", "temperature",
                 "kd_weight", "divergence", "tokenizer_bridge", "top_k", "attention_weight", "hidden_weight", "layer_map",
                 "freeze_embeddings", "freeze_layers", "augment", "precision", "seed")
"""The config fields the card's recipe table shows (config.yaml beside it holds every field)."""
RERUN = "python -m distill_core distill --config config.yaml --out runs/again"


def base_model(teacher_spec: str) -> str | None:
    """The teacher's Hugging Face id: the bundled teacher's hub twin, a hub id as given, None for a local path."""
    spec = teacher_spec.strip()
    if is_bundled(spec):
        return BUNDLED_HUB_ID
    looks_like_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not spec.endswith(".gguf")
    return spec if looks_like_id and not is_derived_spec(spec) else None


def model_card(config: DistillConfig, summary: dict[str, Any], corpus: dict[str, Any], name: str) -> str:
    """README.md of the student a session saved (`summary`: its summary.json; `corpus`: description,
    documents and sha256 of the training text)."""
    teacher = base_model(config.teacher)
    after = summary["after"]
    results = [EvalResult(task_type="text-generation", dataset_type="held-out", dataset_name=config.eval_text,
                          metric_type=metric, metric_name=label, metric_value=round(float(after[key]), 4))
               for key, metric, label in (("ppl", "perplexity", "held-out perplexity"),
                                          ("bits_per_byte", "bits_per_byte", "held-out bits per byte"),
                                          ("top1_agreement", "accuracy", "top-1 agreement with the teacher"),
                                          ("kl_to_teacher", "kl_divergence", "KL(teacher || student), nats/token"))
               if after.get(key) is not None]
    data = ModelCardData(base_model=teacher, library_name="transformers", license=KNOWN_LICENSES.get(teacher),
                         tags=["knowledge-distillation", "distill-studio", "text-generation"],
                         pipeline_tag="text-generation", model_name=name, eval_results=results)
    sections = [f"# {name}", _summary_line(config, summary), _recipe(config), _before_after(summary),
                _corpus(corpus, config), _use(name)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n").content


def _summary_line(config: DistillConfig, summary: dict[str, Any]) -> str:
    student = summary["student"]
    return (f"A student of {student['params'] / 1e6:.1f} M parameters distilled from `{config.teacher}` "
            f"({summary['teacher']['params'] / 1e6:.1f} M) with Distill Studio in "
            f"{summary['steps_done']} steps ({summary['train_s']:.0f} s of training): soft targets at temperature "
            f"{config.temperature:g} mixed with hard labels (weight {config.kd_weight:g} on the soft targets).")


def _recipe(config: DistillConfig) -> str:
    rows = [f"| `{name}` | `{getattr(config, name)!s}` |" for name in ("teacher", *RECIPE_FIELDS)]
    return "## Recipe\n\n| field | value |\n|---|---|\n" + "\n".join(rows) + \
        "\n\nEvery field is in `config.yaml` beside this card."


def _before_after(summary: dict[str, Any]) -> str:
    teacher, before, after = summary["teacher"], summary["before"], summary["after"]
    bpb = lambda row: "—" if row.get("bits_per_byte") is None else f"{row['bits_per_byte']:.4f}"  # noqa: E731
    rows = [("held-out perplexity ↓", f"{teacher['ppl']:.2f}", f"{before['ppl']:.2f}", f"{after['ppl']:.2f}"),
            ("bits per byte ↓", bpb(teacher), bpb(before), bpb(after)),
            ("top-1 agreement with the teacher ↑", "—", f"{before['top1_agreement']:.1%}",
             f"{after['top1_agreement']:.1%}"),
            ("KL(teacher ‖ student), nats/token ↓", "—", f"{before['kl_to_teacher']:.3f}",
             f"{after['kl_to_teacher']:.3f}")]
    bridge = (summary.get("tokenizer_bridge") or {}).get("bridge", "none")
    own = "" if bridge in ("none", "shared_ids") else (
        f" The student has a tokenizer of its own (distilled across tokenizers, bridge `{bridge}`): perplexities are "
        "per each model's own tokens; bits per byte, of the same held-out bytes, compare them.")
    lines = ["## Teacher, student before and after",
             f"Measured on {summary['eval_tokens']:,} held-out tokens the student never trained on.{own}", "",
             "| | teacher | student before | student after |", "|---|---:|---:|---:|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def _corpus(corpus: dict[str, Any], config: DistillConfig) -> str:
    return (f"## Training text\n\n{corpus['description']}: {corpus['documents']:,} documents, sha256 "
            f"`{corpus['sha256']}` (of the documents joined by blank lines). Seed {config.seed}.")


def _use(name: str) -> str:
    return ("## Use and reproduce\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n```\n\n'
            f"From a Distill Studio checkout, `{RERUN}` runs the same session again (`summary.json` beside this "
            "card holds every figure).")
