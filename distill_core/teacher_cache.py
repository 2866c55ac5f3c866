"""The teacher cache: the teacher's top-k next-token log-probabilities (plus the log-mass of the
rest) over a training corpus, computed once and kept on disk, so that a later session on the same
teacher, data and settings trains without building or running the teacher at all.

What a session asks of its teacher, and what the cache keeps for it:
- soft targets on every training block: top-k log-probs at the session's temperature, their token
  ids and the tail bucket (`losses.TopKTargets`); k = `top_k` of the config;
- the held-out evaluation (teacher perplexity, top-1 agreement, KL to the teacher): the teacher's
  full log-probs at the evaluation tokens (512 by default: 512 x vocab fp32, about 100 MB for
  SmolLM2's 49152-token vocabulary; exact, so cached and live evaluations agree);
- the dark-knowledge probe snapshots: the teacher's logits on the probe text;
- the teacher's parameter count.

Keyed by the teacher's weights (`ResolvedModel.fingerprint`: for a hub model its resolved revision,
the same online or offline), the dtype the teacher computed in, the exact token blocks, the probe text,
temperature and k. Every file's SHA-256 is recorded in the manifest and checked on load: a
damaged, truncated or mismatched cache is deleted and rebuilt, never used. The cache is written to
a temporary directory and renamed, so an interrupted build leaves no half-written cache.

Related work: DistillKit and NeMo offer offline top-k teacher logits for LLM distillation; Sanh et
al. 2019 and most LLM toolkits run the teacher at every step instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from distill_core.models import LoadedModel, ResolvedModel, count_parameters
from distill_core.paths import cache_dir
from distill_core.data import Blocks
from distill_core.evaluate import teacher_reference
from distill_core.losses import TopKTargets, teacher_topk

CACHE_VERSION = 2
FILES = ("train.safetensors", "eval.safetensors", "probe.safetensors")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ReplayTeacher(torch.nn.Module):
    """Stands in for the teacher network where a session only needs outputs the cache recorded
    (the probe text's logits). Any other input raises: the cache never invents an output."""

    def __init__(self, recorded: dict[bytes, torch.Tensor]):
        super().__init__()
        self.recorded = recorded

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        logits = self.recorded.get(input_ids.to(torch.int64).cpu().numpy().tobytes())
        if logits is None:
            raise RuntimeError("the teacher cache holds no teacher output for this input; load the teacher")
        return SimpleNamespace(logits=logits.unsqueeze(0))  # (1, t, vocab)


@dataclass
class CachedTeacher:
    """Everything a session needs from its teacher, read from the cache."""

    indices: torch.Tensor  # (n_blocks, seq, k) int32 token ids, most likely first
    logp: torch.Tensor  # (n_blocks, seq, k) log-probs at the temperature
    tail: torch.Tensor  # (n_blocks, seq, 1) log of the remaining mass
    reference: list[torch.Tensor]  # evaluate.teacher_reference's per-batch (n_counted, vocab) log-probs
    probe_ids: torch.Tensor  # (1, t)
    probe_logits: torch.Tensor  # (t, vocab)
    teacher_params: int
    path: Path

    def targets(self, index: torch.Tensor, device: torch.device) -> TopKTargets:
        """Soft targets for the training blocks at `index` (positions into the cached blocks)."""
        return TopKTargets(self.indices[index].to(device, torch.int64), self.logp[index].to(device),
                           self.tail[index].to(device))

    def as_teacher(self, tokenizer: Any, spec: str) -> LoadedModel:
        """A LoadedModel whose model replays the recorded probe outputs (for probe snapshots)."""
        replay = ReplayTeacher({self.probe_ids.numpy().tobytes(): self.probe_logits})
        return LoadedModel(replay, tokenizer, spec, f"teacher cache {self.path}")


class TeacherCache:
    """One cache entry: `load()` it, or `build()` it with the teacher loaded."""

    def __init__(self, resolved: ResolvedModel, train_blocks: Blocks, eval_blocks: Blocks, probe_ids: torch.Tensor,
                 temperature: float, top_k: int, eval_batch_size: int = 8, root: Path | None = None,
                 teacher_dtype: torch.dtype = torch.float32):
        self.train_blocks, self.eval_blocks = train_blocks, eval_blocks
        self.probe_ids = probe_ids.to(torch.int64).reshape(1, -1)
        self.temperature, self.top_k, self.eval_batch_size = float(temperature), int(top_k), eval_batch_size
        self.key = {
            "version": CACHE_VERSION,
            "teacher": resolved.spec,
            "teacher_weights": resolved.fingerprint(),
            "teacher_dtype": str(teacher_dtype),  # a bf16 teacher (on a GPU) gives other targets than fp32
            "train_blocks": train_blocks.digest(),
            "eval_blocks": eval_blocks.digest(),
            "eval_batch_size": eval_batch_size,
            "probe_ids": self.probe_ids.tolist(),
            "temperature": self.temperature,
            "top_k": self.top_k,
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:20]
        self.path = (root or cache_dir() / "teacher_topk") / digest

    # ---- reading --------------------------------------------------------------------
    def load(self) -> tuple[CachedTeacher | None, str]:
        """(the cached teacher, "") when the entry is complete and intact; else (None, why). A
        damaged or mismatched entry is deleted so that it is rebuilt."""
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            return None, "no teacher cache for this teacher, data and settings yet"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("key") != self.key:
                raise ValueError("it was written for other settings")
            for name in FILES:
                if _file_digest(self.path / name) != manifest["sha256"][name]:
                    raise ValueError(f"{name} does not match its checksum")
            train = load_file(str(self.path / "train.safetensors"))
            evals = load_file(str(self.path / "eval.safetensors"))
            probe = load_file(str(self.path / "probe.safetensors"))
            cached = CachedTeacher(train["indices"], train["logp"], train["tail"],
                                   list(evals["reference"].split(manifest["eval_counts"])),
                                   probe["input_ids"], probe["logits"], int(manifest["teacher_params"]), self.path)
            n, t = self.train_blocks.input_ids.shape
            if cached.indices.shape != (n, t, self.top_k) or not torch.equal(cached.probe_ids, self.probe_ids):
                raise ValueError("its shapes do not match the corpus")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            return None, f"the teacher cache at {self.path} was unusable ({exc}); it will be rebuilt"
        return cached, ""

    # ---- writing --------------------------------------------------------------------
    @torch.no_grad()
    def build(self, teacher: LoadedModel, batch_size: int = 16, report_every_s: float = 2.0
              ) -> Iterator[tuple[float, CachedTeacher | None]]:
        """Run the teacher over every training block, the evaluation blocks and the probe text;
        yields (fraction done, None) while it works and finally (1.0, the cached teacher)."""
        model = teacher.model
        was_training = model.training
        model.eval()
        device = model.device
        n = len(self.train_blocks)
        parts: list[TopKTargets] = []
        last_report = time.perf_counter()
        try:
            for start in range(0, n, batch_size):
                ids = self.train_blocks.input_ids[start : start + batch_size].to(device)
                attn = self.train_blocks.attention_mask[start : start + batch_size].to(device)
                logits = model(input_ids=ids, attention_mask=attn).logits.float()  # (b, t, vocab)
                top = teacher_topk(torch.log_softmax(logits / self.temperature, dim=-1), self.top_k)
                parts.append(TopKTargets(top.indices.to(torch.int32).cpu(), top.logp.cpu(), top.tail.cpu()))
                if time.perf_counter() - last_report >= report_every_s:
                    last_report = time.perf_counter()
                    yield min(start + batch_size, n) / (n + 1), None
            reference = [r.cpu() for r in teacher_reference(model, self.eval_blocks, self.eval_batch_size)]
            probe_logits = model(input_ids=self.probe_ids.to(device)).logits[0].float().cpu()  # (t, vocab)
        finally:
            model.train(was_training)
        tensors = {
            "train.safetensors": {"indices": torch.cat([p.indices for p in parts]).contiguous(),
                                  "logp": torch.cat([p.logp for p in parts]).contiguous(),
                                  "tail": torch.cat([p.tail for p in parts]).contiguous()},
            "eval.safetensors": {"reference": torch.cat(reference).contiguous()},
            "probe.safetensors": {"input_ids": self.probe_ids.contiguous(), "logits": probe_logits.contiguous()},
        }
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, content in tensors.items():
            save_file(content, str(tmp / name))
        manifest = {"key": self.key, "teacher_params": count_parameters(model),
                    "eval_counts": [int(r.shape[0]) for r in reference],
                    "sha256": {name: _file_digest(tmp / name) for name in FILES}}
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        shutil.rmtree(self.path, ignore_errors=True)
        tmp.rename(self.path)
        cached, why = self.load()
        if cached is None:
            raise RuntimeError(f"the teacher cache could not be read back: {why}")
        yield 1.0, cached

