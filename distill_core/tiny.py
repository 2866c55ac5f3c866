"""A tiny config-built causal LM with a real tokenizer, saved like any checkpoint: sessions that take seconds
on a CPU, for the tests, the load test (scripts/load_test.py --tiny) and quick demos of the machinery. Its
weights are random (initialised wide, so that its next-token distributions are peaked, not uniform): it
teaches nothing, it only runs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def build_tiny_teacher(tokenizer_dir: str | Path, out_dir: str | Path, layers: int = 4, hidden: int = 64,
                       heads: int = 4, seed: int = 0) -> Path:
    """A `layers`-layer, `hidden`-wide Llama with the tokenizer of `tokenizer_dir` (e.g. the bundled
    teacher's converted folder), saved with that tokenizer into `out_dir`; returns `out_dir`."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512,
        tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
