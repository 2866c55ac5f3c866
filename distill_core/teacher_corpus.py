"""The teacher-generated corpus (sequence-level knowledge distillation, Kim & Rush 2016): the teacher continues
each prompt, and the student trains on those continuations. Text drawn from the teacher's own distribution makes
the hard-label term agree with the soft targets instead of pulling elsewhere.

One block per prompt. Each block begins as a block cut from packed text does (`data.pack`): the last tokens of
another prompt (a lead-in of random length), the end-of-text token, then the prompt and the teacher's continuation,
written until the block is full (`seq_len` tokens), the teacher has written `new_tokens`, or it ends the text.
Without the lead-in every block would start at a text's first word, unlike the packed text the student is judged
on, and it learns measurably less (README, "The first result sooner"). While it writes, the teacher computes its next-token
distribution at every position anyway; its top-k (with the tail mass, as the teacher cache keeps them) are kept
(`TeacherCorpus.targets`), so training on this corpus needs no teacher forward pass: each block is exactly the
context those distributions saw. Written once per teacher, prompts, block length, length and seed, then cached
on disk (text, token blocks and targets, checked by their SHA-256)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load, save_file

from distill_core.config import DistillConfig
from distill_core.data import Blocks
from distill_core.device import HALF, autocast_dtype, resolve_device
from distill_core.errors import DistillError
from distill_core.losses import TopKTargets
from distill_core.models import LoadedModel
from distill_core.paths import cache_dir, write_text_atomic
from distill_core.sampling import Samples, sample_continuations

CAPTURE_TOP_K = 1024
"""Teacher tokens kept per position while it writes (plus the tail bucket); chosen by measurement (README,
"The first result sooner"): at 64 or 256 the quickstart student ends measurably further from the teacher
(KL 1.117, 1.095) than at 1024 (1.084). About 84 MB on disk per 160 blocks (the quickstart writes 341)."""
CORPUS_VERSION = 5


@dataclass(frozen=True)
class Decoding:
    """How the teacher writes (the config's generation_temperature and generation_top_p). The default: sampled, a
    little cooler than its own distribution, the unlikely tail cut."""

    temperature: float = 0.8
    top_p: float = 0.95
    dtype: str = "fp32"
    """The precision the teacher writes in: the session's autocast dtype (`device.autocast_dtype`), so bf16 on a
    CPU with bf16 instructions (311 prompts: 58 s instead of 75-87 s on 2 cores) and on a recent GPU."""

    @classmethod
    def of(cls, config: DistillConfig) -> Decoding:
        dtype = autocast_dtype(config, resolve_device(config.device))
        names = {torch_dtype: name for name, torch_dtype in HALF.items()}
        return cls(config.generation_temperature, config.generation_top_p, names.get(dtype, "fp32"))

    def writer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The teacher in this precision: itself when it is held in it (on a GPU), else a copy (the session's
        teacher stays fp32 on a CPU: its own perplexity is measured in fp32)."""
        dtype = HALF.get(self.dtype, torch.float32)
        return model if next(model.parameters()).dtype == dtype else copy.deepcopy(model).to(dtype)


@dataclass
class TeacherCorpus:
    """The teacher's continuations: as text, as blocks (one per prompt, right-padded), and the teacher's top-k
    next-token log-probabilities at T=1 at every position of every block (padding positions hold a uniform
    placeholder: they never count)."""

    texts: list[str]
    blocks: Blocks
    targets: TopKTargets
    """indices (n, seq_len, k) int32, logp (n, seq_len, k), tail (n, seq_len, 1)."""


def _cache_key(identity: str, prompts: list[str], seq_len: int, new_tokens: int, seed: int,
               decoding: Decoding) -> str:
    sampling = asdict(decoding)
    if sampling["dtype"] == "fp32":  # the key of corpora written before the field (in fp32)
        del sampling["dtype"]
    key = json.dumps({"teacher": identity, "prompts": prompts, "seq_len": seq_len, "new_tokens": new_tokens,
                      "seed": seed, "top_k": CAPTURE_TOP_K, "sampling": sampling, "version": CORPUS_VERSION})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _cache_paths(identity: str, prompts: list[str], seq_len: int, new_tokens: int, seed: int,
                 decoding: Decoding) -> tuple[Path, Path]:
    key = _cache_key(identity, prompts, seq_len, new_tokens, seed, decoding)
    stem = cache_dir() / "corpora" / f"teacher-generated-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def as_blocks(samples: Samples, seq_len: int, pad_token_id: int) -> tuple[Blocks, TopKTargets]:
    """Each sampled row as one block of `seq_len` tokens (right-padded and masked) with its captured targets;
    positions without a target hold a uniform placeholder (no -inf: nothing times a zero mask must stay 0)."""
    n, longest = samples.ids.shape
    ids = torch.full((n, seq_len), pad_token_id, dtype=torch.long)
    ids[:, :longest] = samples.ids
    lengths = torch.tensor(samples.lengths)
    mask = (torch.arange(seq_len) < lengths[:, None]).long()
    ids[mask == 0] = pad_token_id
    has_target = (torch.arange(seq_len) < lengths[:, None] - 1)[..., None]  # (n, seq_len, 1)
    k = samples.targets.indices.shape[-1]
    uniform = torch.tensor(-math.log(k + 1))
    pad = torch.zeros((n, seq_len - longest, 1))
    indices = torch.cat([samples.targets.indices, pad.expand(-1, -1, k).int()], 1) * has_target
    logp = torch.where(has_target, torch.cat([samples.targets.logp, pad.expand(-1, -1, k)], 1), uniform)
    tail = torch.where(has_target, torch.cat([samples.targets.tail, pad], 1), uniform)
    return Blocks(ids, mask), TopKTargets(indices.to(torch.int32), logp, tail)


def lead_ins(prompt_ids: list[list[int]], eos_token_id: int, seed: int) -> list[list[int]]:
    """For each prompt, the last 1 to n-1 tokens of another prompt (n its length) and the end-of-text token:
    the start of a block cut mid-text from a packed stream, seeded."""
    g = torch.Generator().manual_seed(seed)
    n = len(prompt_ids)
    leads = []
    for i in range(n):
        other = prompt_ids[(i + 1 + int(torch.randint(max(1, n - 1), (1,), generator=g))) % n] if n > 1 else []
        keep = 1 + int(torch.randint(max(1, len(other) - 1), (1,), generator=g))
        leads.append(other[-keep:] + [eos_token_id] if other else [])
    return leads


def generate_corpus(teacher: LoadedModel, identity: str, prompts: list[str], seq_len: int, new_tokens: int,
                    seed: int = 0, decoding: Decoding = Decoding()) -> Iterator[tuple[float, TeacherCorpus | None]]:
    """The teacher continues every prompt at once (rows leave the batch as their blocks fill). Yields (fraction
    of the tokens to write done, None) after each new token, and finally (1.0, the corpus). From the disk cache
    when it was written before (keyed by the teacher's `identity`, `ResolvedModel.fingerprint`: the same weights
    online or offline); a damaged cache is written again. Closing the generator stops the teacher at once."""
    if not prompts:
        raise DistillError("the prompts file has no prompts")
    cached = cached_corpus(identity, prompts, seq_len, new_tokens, seed, decoding)
    if cached is not None:
        yield 1.0, cached
        return
    tok = teacher.tokenizer
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    longest = max(len(p) for p in prompt_ids)
    if longest >= seq_len // 2:
        raise DistillError(f"a prompt is {longest} tokens long: each prompt must be shorter than half of "
                           f"seq_len={seq_len}, the block it starts after a lead-in; shorten it or raise seq_len")
    leads = lead_ins(prompt_ids, tok.eos_token_id, seed)
    contexts = [lead + ids for lead, ids in zip(leads, prompt_ids)]
    total = sum(min(new_tokens, seq_len - len(c)) for c in contexts)
    writing = sample_continuations(decoding.writer(teacher.model), contexts, new_tokens, max_length=seq_len,
                                   seed=seed, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                   capture_top_k=CAPTURE_TOP_K, temperature=decoding.temperature,
                                   top_p=decoding.top_p)
    yield 0.0, None  # the teacher first reads every prompt (seconds): say so before it starts
    try:
        while True:
            yield min(next(writing) / total, 0.999), None
    except StopIteration as done:
        samples = done.value
    blocks, targets = as_blocks(samples, seq_len, tok.pad_token_id)
    texts = [tok.decode(samples.row(i)[len(lead):], skip_special_tokens=True) for i, lead in enumerate(leads)]
    corpus = TeacherCorpus(texts, blocks, targets)
    _write(corpus, teacher.spec, *_cache_paths(identity, prompts, seq_len, new_tokens, seed, decoding))
    yield 1.0, corpus


def _write(corpus: TeacherCorpus, spec: str, meta: Path, tensors: Path) -> None:
    """Tensors first, then the text and their checksum; each to a temporary name renamed into place."""
    meta.parent.mkdir(parents=True, exist_ok=True)
    tmp = tensors.with_suffix(f".tmp{os.getpid()}")
    save_file({"input_ids": corpus.blocks.input_ids, "attention_mask": corpus.blocks.attention_mask,
               "indices": corpus.targets.indices, "logp": corpus.targets.logp, "tail": corpus.targets.tail}, str(tmp))
    tmp.replace(tensors)
    digest = hashlib.sha256(tensors.read_bytes()).hexdigest()
    write_text_atomic(meta, json.dumps({"teacher": spec, "texts": corpus.texts, "sha256": digest},
                                       ensure_ascii=False, indent=0))


def _cached_meta(meta: Path, n_prompts: int) -> dict | None:
    """The cache's metadata (`texts`, `sha256`) when it holds one text per prompt, else None."""
    try:
        payload = json.loads(meta.read_text(encoding="utf-8"))
        texts = payload["texts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(texts, list) and len(texts) == n_prompts and all(isinstance(t, str) for t in texts)
    return payload if ok else None


def cached_texts(identity: str, prompts: list[str], seq_len: int, new_tokens: int, seed: int = 0,
                 decoding: Decoding = Decoding()) -> list[str] | None:
    """The teacher-generated corpus's texts if it has been written (no model is loaded, no tensors read), else None."""
    meta, _ = _cache_paths(identity, prompts, seq_len, new_tokens, seed, decoding)
    payload = _cached_meta(meta, len(prompts))
    return None if payload is None else payload["texts"]


def cached_corpus(identity: str, prompts: list[str], seq_len: int, new_tokens: int, seed: int = 0,
                  decoding: Decoding = Decoding()) -> TeacherCorpus | None:
    """The whole cached corpus (texts, blocks, targets) when it is complete and intact, else None. Each file is
    read once: the tensors' bytes are checked against their checksum, then loaded from those bytes."""
    meta, tensors = _cache_paths(identity, prompts, seq_len, new_tokens, seed, decoding)
    payload = _cached_meta(meta, len(prompts))
    if payload is None or not tensors.is_file():
        return None
    try:
        raw = tensors.read_bytes()
        if hashlib.sha256(raw).hexdigest() != payload["sha256"]:
            return None
        t = load(raw)
        blocks = Blocks(t["input_ids"], t["attention_mask"])
        targets = TopKTargets(t["indices"], t["logp"], t["tail"])
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    if blocks.input_ids.shape != (len(prompts), seq_len) or targets.indices.shape[:2] != (len(prompts), seq_len):
        return None
    return TeacherCorpus(payload["texts"], blocks, targets)


def captured_targets_blocked(config: DistillConfig) -> str:
    """'' when the targets the teacher captured while writing can train a session with `config`; else why not
    (the teacher then runs at every step, as for any other corpus)."""
    if config.temperature != 1.0:
        return (f"they are the teacher's distributions at T=1 and this session softens them at "
                f"T={config.temperature:g}")
    if config.attention_weight > 0:
        return "attention transfer needs the teacher's attention maps at every step"
    if config.hidden_weight > 0:
        return "FitNets hints need the teacher's hidden states at every step"
    if config.augment_methods:
        return "augmented copies are text the teacher did not write"
    if config.top_k > CAPTURE_TOP_K:
        return f"top_k={config.top_k} asks for more than the {CAPTURE_TOP_K} tokens kept per position"
    return ""


@dataclass
class CapturedTargets:
    """The captured targets of the training blocks, handed to each step as the teacher cache's are: the top
    `top_k` (all kept when 0) with the rest of the mass in the tail bucket."""

    kept: TopKTargets
    """(n_blocks, seq_len, CAPTURE_TOP_K) for the session's training blocks."""
    top_k: int = 0

    def targets(self, index: torch.Tensor, device: torch.device) -> TopKTargets:
        """Soft targets for the training blocks at `index` (positions into the training blocks)."""
        t = self.kept.take(index).truncate(self.top_k)
        return TopKTargets(t.indices.to(device, torch.int64), t.logp.to(device), t.tail.to(device))
