"""Where the time of one distillation step goes: torch.profiler over the engine's own step
(`distill_core.step.DistillStep`, through `bench.engine_step`) with a config's settings (default: the quickstart session), after a warm-up step.

    .venv/bin/python scripts/profile_step.py [--config FILE] [--set key=value ...] [--steps 2] [--rows 15]

Prints the operators with the most self time, and the share of the step spent in the output layers
and loss (the matmuls against the vocabulary-wide head, softmaxes, the divergence) against the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_core.bench import engine_step, engine_teacher  # noqa: E402
from distill_core.config import DistillConfig  # noqa: E402
from distill_core.data import Blocks  # noqa: E402
from distill_core.device import resolve_device  # noqa: E402
from distill_core.models import load_teacher  # noqa: E402
from distill_core.paths import CONFIGS  # noqa: E402
from distill_core.students import load_student  # noqa: E402

QUICKSTART = CONFIGS / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(QUICKSTART))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps after one warm-up step")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    config = DistillConfig.from_yaml(args.config).with_overrides(args.set)
    device = resolve_device(config.device)
    teacher = load_teacher(config.teacher)  # the shared CPU copy; engine_teacher makes the session's own
    student = load_student(config.student, teacher, seed=config.seed)
    student.model.to(device)
    ids = torch.randint(0, teacher.model.config.vocab_size, (config.batch_size, config.seq_len),
                        generator=torch.Generator().manual_seed(0))
    step = engine_step(engine_teacher(teacher, config, device), student, config, Blocks(ids, torch.ones_like(ids)),
                       device)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            with record_function("step"):
                step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    vocab = teacher.model.config.vocab_size
    by_shape = prof.key_averages(group_by_input_shape=True)
    vocab_wide = sum(e.self_cpu_time_total for e in by_shape
                     if any(vocab in (shape or []) for shape in (e.input_shapes or [])))
    print(f"{config.teacher} -> {config.student}, batch {config.batch_size} x {config.seq_len}, "
          f"{torch.get_num_threads()} threads, teacher_cache={config.teacher_cache}, "
          f"loss_chunk_tokens={config.loss_chunk_tokens}; {args.steps} steps, "
          f"{total / 1e6 / args.steps:.2f} s of operator time per step")
    print(f"vocabulary-wide operators (output layers, softmaxes, divergence; an input dimension = {vocab}): "
          f"{vocab_wide / total:.1%} of the step; the rest (decoder layers, optimizer, ...): {1 - vocab_wide / total:.1%}")
    print(f"{'operator':<44} {'self s/step':>11} {'share':>6} {'calls':>6}")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        print(f"{event.key[:44]:<44} {event.self_cpu_time_total / 1e6 / args.steps:>11.3f} "
              f"{event.self_cpu_time_total / total:>6.1%} {event.count // args.steps:>6}")


if __name__ == "__main__":
    main()
