"""Data-parallel sessions under `accelerate launch` (DDP): which process this is, and the few
collectives the session needs.

A plain `python -m distill_core distill ...` is one process: `Processes.current()` then never
imports accelerate and every helper here is the identity, so a single-process run computes exactly
what it always did. Under `accelerate launch --multi_gpu --num_processes N -m distill_core distill ...`
(torchrun underneath; on a machine without CUDA, or with `device: cpu`, the processes talk over gloo)
each process takes its share of every batch (`shard`), the student's forward goes through the DDP
wrapper (`wrap`) so that its gradients are averaged over the processes during backward, the FitNets
projection's gradients are averaged after it (`average_gradients`), and only the main process writes
files and prints.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from distill_core.errors import DistillError


def launched() -> bool:
    """True in a process started by a multi-process launcher (accelerate launch / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def is_main_process() -> bool:
    """The process that prints and writes files: rank 0, or the only process."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@dataclass
class Processes:
    """The processes of this run: one, or the DDP group of an `accelerate launch`."""

    world: int = 1
    rank: int = 0
    backend: str | None = None
    device: torch.device | None = None
    accelerator: Any = None

    @classmethod
    def current(cls, device_name: str) -> "Processes":
        """One process (no accelerate import) unless started by a multi-process launcher; then the
        accelerate state (initialises the process group: NCCL on CUDA, gloo on the CPU)."""
        if not launched():
            return cls()
        from accelerate import Accelerator

        cpu = device_name == "cpu" or not torch.cuda.is_available()
        if device_name == "cuda" and cpu:
            raise DistillError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
        # precision is the config's business, not the launcher's: the student is wrapped as it is
        accelerator = Accelerator(cpu=cpu, mixed_precision="no")
        device = torch.device("cpu") if cpu else accelerator.device
        return cls(accelerator.num_processes, accelerator.process_index, accelerator.state.backend, device, accelerator)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        if self.distributed and batch_size % self.world:
            raise DistillError(f"batch_size {batch_size} does not split evenly over {self.world} processes: "
                               f"use a multiple of {self.world}")

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's share of a batch's block indices (the whole batch in a single process)."""
        return index[self.rank :: self.world] if self.distributed else index

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The module training forwards must go through: the DDP wrapper (gradients all-reduced during
        backward) in a group; None in a single process (the step calls the model's parts itself, e.g.
        for the chunked output-layer loss). Call it after requires_grad is set."""
        return self.accelerator.prepare_model(model) if self.distributed else None

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True when `flag` is true in any process (e.g. a stop request), so all stop together."""
        if not self.distributed:
            return flag
        value = torch.tensor([1 if flag else 0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-process floats (loss terms of each shard) averaged over the processes."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(stacked)
        return dict(zip(keys, (stacked / self.world).tolist()))

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of parameters outside the DDP wrapper (the FitNets projection)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.distributed or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order ([value] in a single process)."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out


def all_processes(flag: torch.Tensor | bool) -> bool:
    """True when `flag` holds in every process of the group (the flag itself without one): a step
    whose loss is not finite in one process is skipped in all, so none waits for the others' gradients."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_world_size() < 2:
        return bool(flag)
    device = flag.device if isinstance(flag, torch.Tensor) else torch.device("cpu")
    value = torch.tensor([1 if bool(flag) else 0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


def state_checksum(model: torch.nn.Module) -> str:
    """sha256 of a model's state_dict (names, shapes, dtypes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
