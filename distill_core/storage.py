"""How a session's folders reach the disk: written beside their target and swapped in, so that a write that
fails half way (a full disk, a killed process) leaves the previous checkpoint or student whole; a full disk
said in words; students saved in the operator's precision (DISTILL_SAVE_DTYPE: half precision halves each
saved student).

    with swapped_in(out / "checkpoint", "the checkpoint of step 40") as tmp:
        save_file(weights, tmp / "trainable.safetensors")   # fails: tmp is removed, out/checkpoint unchanged
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from distill_core import hosting
from distill_core.errors import DISK_FULL_ADVICE, DistillError, is_disk_full

LOW_SPACE_BYTES = 16 * 2**20
"""A write that fails while less than this is free on its disk failed for want of space (torch.save says only
"unexpected pos" or "file write failed" when the disk fills)."""
SAVE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def failed_for_space(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write into `folder` failed because the disk is full."""
    return is_disk_full(exc) or free_bytes(folder) < LOW_SPACE_BYTES


@contextlib.contextmanager
def swapped_in(target: Path, what: str) -> Iterator[Path]:
    """Write the folder `target`: fill the folder this yields (TARGET.tmp); when the block ends, TARGET becomes
    TARGET.old, TARGET.tmp becomes TARGET and TARGET.old is removed (only renames, which need no space; a reader
    finds the previous folder as TARGET.old while the swap is under way). When the block fails, TARGET.tmp is
    removed (its space freed) and TARGET is untouched; a full disk raises DistillError saying that `what` could
    not be written."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
    except BaseException as exc:
        full = failed_for_space(exc, target.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = "what was there before is kept" if target.exists() else "nothing was replaced"
            raise DistillError(f"the disk is full: {what} could not be written to {target} ({kept}); "
                               f"{DISK_FULL_ADVICE}") from exc
        raise
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_dtype() -> torch.dtype:
    """The dtype a session saves its student's weights in (the operator's DISTILL_SAVE_DTYPE; fp32 default)."""
    return SAVE_DTYPES[hosting.save_dtype()]


def weights_to_save(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The model's state dict in the save dtype for `save_pretrained(state_dict=...)`, floating tensors
    converted (tied weights stay one tensor, so they are saved once); None when that is the model's own
    (fp32: save as it is)."""
    dtype = save_dtype()
    state = model.state_dict()
    if all(not t.is_floating_point() or t.dtype == dtype for t in state.values()):
        return None
    converted: dict[int, torch.Tensor] = {}  # by storage: tied weights share one converted tensor
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = tensor.untyped_storage().data_ptr() + tensor.storage_offset()
        if key not in converted:
            converted[key] = tensor.detach().to(dtype)
        out[name] = converted[key]
    return out
