"""A layer-subset student with each gap healed by a linear map before training (after ReplaceMe, Shopkhoev et al.
2025): a measurement script for the tries in the README's "Judged on real text", not a config field.

    .venv/bin/python scripts/linear_healing.py --out /tmp/healed                 # the quickstart's student
    .venv/bin/python scripts/linear_healing.py --student layers:0,1,2,3,7,... --out /tmp/healed
    .venv/bin/python -m distill_core distill --config assets/configs/quickstart.yaml --set student=/tmp/healed --out DIR

Where the student skips teacher layers a+1..b-1, the MLP of its layer a is followed by a map T fitted so that the
student's hidden state leaving layer a lands on the teacher's entering layer b: a ridge least-squares fit of
m T to (h_b - r) over the calibration tokens (m: the MLP's output, r: the residual stream it is added to), pulled
towards the identity (T = I is the plain student). T is folded into the MLP's down projection (W <- T^T W), so
the student keeps its shape. The gaps are fitted in order, each on the student's own states with the earlier
gaps healed. Calibration: the config's training documents (the first --tokens tokens, blocks of 128, the first
position of each block left out: its massive activations would dominate the fit). Prints the untrained student's
perplexity on the held-out and the real text before and after, and saves the healed student (a folder a session
names as its student).
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_core.config import DistillConfig  # noqa: E402
from distill_core.data import heldout_blocks, real_text_blocks  # noqa: E402
from distill_core.evaluate import score  # noqa: E402
from distill_core.layer_select import calibration_blocks, residual_stream  # noqa: E402
from distill_core.models import decoder_layers, load_teacher  # noqa: E402
from distill_core.students import corpus_documents, load_student  # noqa: E402

BATCH = 16


def teacher_states(model, blocks) -> list[torch.Tensor]:
    """The teacher's residual stream entering each layer (and leaving the last), (tokens, hidden), position 0 out."""
    parts = [residual_stream(model, blocks.input_ids[s:s + BATCH], blocks.attention_mask[s:s + BATCH])
             for s in range(0, len(blocks), BATCH)]
    return [torch.cat([p[i][:, 1:].reshape(-1, p[i].shape[-1]) for p in parts]) for i in range(len(parts[0]))]


def mlp_parts(model, layer_index: int, blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual r entering the MLP of the student's layer, that MLP's output m), each (tokens, hidden) in fp64."""
    layer = decoder_layers(model)[layer_index]
    seen: dict[str, list[torch.Tensor]] = {"r": [], "m": []}

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].reshape(-1, x.shape[-1])

    hooks = [layer.post_attention_layernorm.register_forward_pre_hook(lambda mod, args: seen["r"].append(flat(args[0]))),
             layer.mlp.register_forward_hook(lambda mod, args, out: seen["m"].append(flat(out)))]
    try:
        for s in range(0, len(blocks), BATCH):
            model.model(input_ids=blocks.input_ids[s:s + BATCH], attention_mask=blocks.attention_mask[s:s + BATCH],
                        use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(seen["r"]).double(), torch.cat(seen["m"]).double()


def heal(student, keep: list[int], states: list[torch.Tensor], blocks, ridge: float) -> None:
    for s_index, (a, b) in enumerate(zip(keep, keep[1:])):
        if b == a + 1:
            continue
        r, m = mlp_parts(student.model, s_index, blocks)
        target = states[b].double() - r
        eye = torch.eye(m.shape[1], dtype=torch.float64)
        lam = ridge * (m * m).sum() / m.shape[1]  # the ridge in units of the MLP output's mean energy per unit
        transform = torch.linalg.solve(m.T @ m + lam * eye, m.T @ target + lam * eye)
        before = ((m - target) ** 2).sum().item()
        after = ((m @ transform - target) ** 2).sum().item()
        down = decoder_layers(student.model)[s_index].mlp.down_proj
        down.weight.copy_((transform.T @ down.weight.double()).to(down.weight.dtype))
        print(f"gap {a + 1}-{b - 1}: squared error {before:.3e} -> {after:.3e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "assets" / "configs" / "quickstart.yaml"))
    parser.add_argument("--student", default="", help="a layers:... spec (default: the config's student)")
    parser.add_argument("--tokens", type=int, default=8192, help="calibration tokens")
    parser.add_argument("--ridge", type=float, default=1.0, help="pull towards the identity (1.0: the tries)")
    parser.add_argument("--out", required=True, help="folder for the healed student")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    config = DistillConfig.from_yaml(args.config)
    teacher = load_teacher(config.teacher)
    student = load_student(args.student or config.student, teacher, seed=config.seed)
    if student.layers_kept is None:
        sys.exit("--student must be a layers:... student derived from the teacher")
    texts = {"held-out": heldout_blocks(config, teacher.tokenizer), "real": real_text_blocks(config, teacher.tokenizer)}
    reference = {name: score(teacher.model, blocks)["ppl"] for name, blocks in texts.items()}

    def report(when: str) -> None:
        ppl = {name: score(student.model, blocks)["ppl"] for name, blocks in texts.items()}
        print(f"{when}: " + ", ".join(f"{k} {v:.2f} ({v / reference[k]:.2f}x)" for k, v in ppl.items()), flush=True)

    report("untrained")
    docs, _ = corpus_documents(config.teacher, config)
    blocks = calibration_blocks(teacher.tokenizer, docs, max_tokens=args.tokens, seq_len=128)
    heal(student, student.layers_kept, teacher_states(teacher.model, blocks), blocks, args.ridge)
    report("healed, untrained")
    student.model.save_pretrained(args.out)
    teacher.tokenizer.save_pretrained(args.out)


if __name__ == "__main__":
    main()
