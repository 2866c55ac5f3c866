"""Where a trained student falls behind the teacher on the held-out and the real text: its per-token loss gap split
into tokens already seen earlier in the block (copying) and new ones, the tokens with the largest gaps, and its
perplexity with its logits divided by a temperature (is it over- or under-confident?). A measurement script for
the README's "Judged on real text".

    .venv/bin/python scripts/real_text_gap.py runs/DIR/student
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_core.config import DistillConfig  # noqa: E402
from distill_core.data import heldout_blocks, real_text_blocks  # noqa: E402
from distill_core.models import load_model, load_teacher  # noqa: E402

TEMPERATURES = (0.8, 0.9, 1.0, 1.1, 1.2)


def seen_before(ids: torch.Tensor) -> torch.Tensor:
    """(blocks, t - 1) bool: whether the token at position i + 1 already occurs in positions 0..i of its block."""
    seen = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    for b in range(ids.shape[0]):
        earlier: set[int] = set()
        for i in range(ids.shape[1] - 1):
            earlier.add(int(ids[b, i]))
            seen[b, i] = int(ids[b, i + 1]) in earlier
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student", help="a trained student's folder (a session's OUT/student)")
    parser.add_argument("--config", default=str(ROOT / "assets" / "configs" / "quickstart.yaml"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    config = DistillConfig.from_yaml(args.config)
    teacher, student = load_teacher(config.teacher), load_model(args.student)
    tok = teacher.tokenizer
    for name, blocks in (("held-out", heldout_blocks(config, tok)), ("real", real_text_blocks(config, tok))):
        ids, mask = blocks.input_ids, blocks.attention_mask
        valid = (mask[:, 1:] * mask[:, :-1]).bool()
        logits = {who: m(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
                  for who, m in (("teacher", teacher.model), ("student", student.model))}
        nll = {who: -torch.log_softmax(x, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) for who, x in logits.items()}
        gap = nll["student"] - nll["teacher"]
        seen = seen_before(ids)
        print(f"{name}: the student {gap[valid].mean():.3f} nats/token behind the teacher")
        for label, part in (("seen earlier in the block", valid & seen), ("new", valid & ~seen)):
            print(f"  {label}: {int(part.sum())} tokens, {gap[part].mean():.3f} nats behind, "
                  f"{gap[part].sum() / gap[valid].sum():.0%} of the gap")
        worst = gap[valid].argsort(descending=True)[:20]
        targets = ids[:, 1:][valid]
        print("  largest gaps: " + ", ".join(f"{tok.decode([int(targets[i])])!r} {gap[valid][i]:.1f}" for i in worst))
        by_t = {t: torch.exp(-torch.log_softmax(logits["student"] / t, -1).gather(
            -1, ids[:, 1:, None]).squeeze(-1)[valid].mean()) for t in TEMPERATURES}
        print("  the student's perplexity at temperature " + ", ".join(f"{t}: {p:.2f}" for t, p in by_t.items()))


if __name__ == "__main__":
    main()
