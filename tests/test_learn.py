"""The Learn panels' worked examples are what the bundled teacher gives (assets/learn/examples.yaml): each
probability and attention weight they quote, measured on the real model, and the panels quote them."""

import numpy as np
import pytest
import torch
import yaml

from distill_core.models import load_teacher
from distill_core.paths import ASSETS
from distill_core.probes import attention_maps, dark_knowledge, encode
from ui import dark
from ui.common import prose

EXAMPLES = yaml.safe_load((ASSETS / "learn" / "examples.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def teacher(bundled_dir):
    return load_teacher("smollm2-135m")


def test_the_dark_knowledge_example_is_the_teachers(teacher):
    example = EXAMPLES["dark"]
    ids = encode(teacher.tokenizer, example["text"])
    with torch.no_grad():
        p = teacher.model(input_ids=ids).logits[0, -1].softmax(-1)
    panel = prose("dark", "learn")
    assert f'"{example["text"]}"' in panel
    for token, (low, high) in example["next_token"].items():
        (token_id,) = teacher.tokenizer(token, add_special_tokens=False)["input_ids"]
        assert low <= float(p[token_id]) <= high, (token, float(p[token_id]))
        assert f'"{token.strip()}"' in panel, token


def test_the_dark_knowledge_view_opens_on_the_example_with_its_star(teacher):
    example = EXAMPLES["dark"]
    assert (dark.PROBE_TEXT, dark.PROBE_POSITION) == (example["view_text"], example["view_position"])
    result = dark_knowledge(teacher, {}, dark.PROBE_TEXT, dark.PROBE_POSITION)
    assert result["context"] == example["text"] and result["actual"] == " apple"  # the ★
    assert result["actual_rank"]["teacher"] == 2  # after " entire"
    assert " banana" not in result["candidates"][:10] and " orange" in result["candidates"]


def test_the_attention_example_is_the_teachers(teacher):
    example = EXAMPLES["attention"]
    ids = encode(teacher.tokenizer, example["text"])
    tokens = [teacher.tokenizer.decode([i]) for i in ids[0]]
    query, key = tokens.index(example["query"]), tokens.index(example["key"])
    maps = attention_maps(teacher.model, ids)  # (layers, heads, t, t)
    low, high = example["weight"]
    assert low <= maps[example["layer"], example["head"], query, key] <= high
    assert int((maps[:, :, query, 0] > 0.5).sum()) >= example["sink_heads_at_least"]
    panel = prose("attention", "learn")
    assert f"layer {example['layer']}, head {example['head']}" in panel
    assert f"about {round(100 * float(maps[example['layer'], example['head'], query, key]))}%" in panel
    assert np.isclose(maps[example["layer"], example["head"], query].sum(), 1.0, atol=1e-4)
