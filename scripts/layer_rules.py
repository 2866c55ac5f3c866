"""What each layer-selection rule starts the student from: untrained students of one size, scored on the held-out
text and on the real text, as a ratio to the teacher.

    .venv/bin/python scripts/layer_rules.py                      # the quickstart's teacher, corpus and size
    .venv/bin/python scripts/layer_rules.py --layers 22 --config assets/configs/quickstart.yaml
    .venv/bin/python scripts/layer_rules.py --greedy   # also the criterion iterated (about 12 minutes on 2 cores)
    .venv/bin/python scripts/layer_rules.py --greedy --tokens 2048 --every 9   # spread over the corpus (18 minutes)
    .venv/bin/python scripts/layer_rules.py --greedy --tokens 2048 --every 3 --fortunes --bf16   # the quickstart's

The measured rules (`angular`, `ppl`) calibrate on the config's training documents, as a session does. `--greedy`
adds `greedy`: the `ppl` criterion applied one layer at a time (layer_select.greedy_removal) on the first
`--tokens` tokens of those documents in blocks of `--block`; its kept layers, as a `layers:...` spec, are what a
config names. `--fortunes` interleaves the documents with fortunes (real prose from Debian's `fortunes` package,
scripts/prose_mix.py), one by one, so the layers are chosen on prose of many registers as well as the teacher's own
(the quickstart's student comes from the last command above, 17 minutes on 2 cores). `--bf16` runs the greedy
choice's passes under bf16 autocast (2.5 times faster on a CPU with bf16 instructions). Prints one line per rule
and, last, one JSON object with the same figures.
"""

import argparse
import contextlib
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from prose_mix import FORTUNES, fortunes  # noqa: E402

from distill_core.config import DistillConfig  # noqa: E402
from distill_core.data import heldout_blocks, real_text_blocks  # noqa: E402
from distill_core.evaluate import score  # noqa: E402
from distill_core.layer_select import calibration_blocks, greedy_removal  # noqa: E402
from distill_core.models import load_teacher  # noqa: E402
from distill_core.specs import explicit_layers_spec  # noqa: E402
from distill_core.students import corpus_documents, load_student  # noqa: E402

RULES = ("depth", "angular", "ppl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "assets" / "configs" / "quickstart.yaml"))
    parser.add_argument("--layers", type=int, default=None, help="the student's layers (default: the config's count)")
    parser.add_argument("--greedy", action="store_true", help="also the ppl criterion iterated, one layer at a time")
    parser.add_argument("--tokens", type=int, default=1024, help="calibration tokens of --greedy")
    parser.add_argument("--block", type=int, default=128, help="calibration block length of --greedy")
    parser.add_argument("--every", type=int, default=1, help="--greedy calibrates on every N-th training document "
                        "(default 1: the first documents, up to --tokens)")
    parser.add_argument("--fortunes", action="store_true", help="--greedy: a fortune before each of those documents")
    parser.add_argument("--bf16", action="store_true", help="--greedy under bf16 autocast")
    args = parser.parse_args()
    if args.fortunes and not FORTUNES.is_dir():
        sys.exit("--fortunes needs Debian's fortunes package: sudo apt-get install --no-install-recommends fortunes")
    config = DistillConfig.from_yaml(args.config)
    teacher = load_teacher(config.teacher)
    count = args.layers or len(load_student(config.student, teacher).layers_kept)
    texts = {"held-out": heldout_blocks(config, teacher.tokenizer), "real": real_text_blocks(config, teacher.tokenizer)}
    docs, source = corpus_documents(config.teacher, config)
    reference = {name: score(teacher.model, blocks)["ppl"] for name, blocks in texts.items()}
    print(f"teacher {config.teacher}: " + ", ".join(f"{k} {v:.2f}" for k, v in reference.items())
          + f"; calibration: {source}")
    specs = {rule: f"layers:{count}:{rule}" for rule in RULES}
    if args.greedy:
        calibration = docs[::args.every]
        if args.fortunes:  # shuffled with a fixed seed: the same choice on every run
            prose = fortunes()
            random.Random(1).shuffle(prose)
            calibration = [t for pair in zip(prose, calibration) for t in pair]
        blocks = calibration_blocks(teacher.tokenizer, calibration, max_tokens=args.tokens, seq_len=args.block)
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
        with precision:
            dropped = greedy_removal(teacher.model, blocks, count, progress=lambda layer, loss: print(
                f"greedy: drops layer {layer}, calibration loss {loss:.4f}", flush=True))
        n_teacher = teacher.model.config.num_hidden_layers
        specs["greedy"] = explicit_layers_spec([i for i in range(n_teacher) if i not in dropped])
    rows = {}
    for rule, spec in specs.items():
        student = load_student(spec, teacher, seed=config.seed, calibration=docs, calibration_source=source)
        ppl = {name: score(student.model, blocks)["ppl"] for name, blocks in texts.items()}
        rows[rule] = {"kept": student.layers_kept, **{f"{k}_ppl": round(v, 2) for k, v in ppl.items()},
                      **{f"{k}_ratio": round(v / reference[k], 2) for k, v in ppl.items()}}
        print(f"{rule:<8} held-out {ppl['held-out']:8.2f} ({ppl['held-out'] / reference['held-out']:.2f}x)"
              f"  real {ppl['real']:8.2f} ({ppl['real'] / reference['real']:.2f}x)  {student.notes[-1]}")
    print(json.dumps({"teacher": {k: round(v, 2) for k, v in reference.items()}, "layers": count, "rules": rows}))


if __name__ == "__main__":
    main()
