"""A distill session in which only some of the student's parameters train: a measurement script, not a config field
(the tries in the README's "Judged on real text" that froze the MLPs, the attention, or all but the layers next to
a gap; each lost to training everything).

    .venv/bin/python scripts/frozen_parts.py --freeze mlp -- --config assets/configs/quickstart.yaml --out DIR
    .venv/bin/python scripts/frozen_parts.py --freeze self_attn -- --config assets/configs/quickstart.yaml --out DIR
    .venv/bin/python scripts/frozen_parts.py --train-layers 3,4,5,9,10,16,17 -- --config ... --out DIR

`--freeze REGEX` also freezes every parameter whose name matches; `--train-layers` freezes every decoder layer but
those (student indices). The config's own freezing (embeddings, `freeze_layers`) stays. Everything after `--`
goes to `python -m distill_core distill`.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_core import step  # noqa: E402
from distill_core.__main__ import main as distill_main  # noqa: E402

LAYER = re.compile(r"layers\.(\d+)\.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--freeze", default="", help="regular expression: matching parameters are frozen too")
    parser.add_argument("--train-layers", default="", help="comma-separated student layers that train; others freeze")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    train_layers = {int(i) for i in args.train_layers.split(",") if i.strip()}
    configured = step.frozen_parameters

    def frozen(model, config):
        ids = configured(model, config)
        for name, param in model.named_parameters():
            layer = LAYER.search(name)
            if (args.freeze and re.search(args.freeze, name)) or (
                    train_layers and layer is not None and int(layer.group(1)) not in train_layers):
                ids.add(id(param))
        trained = sum(p.numel() for p in model.parameters() if id(p) not in ids)
        print(f"frozen_parts: {trained:,} parameters train", file=sys.stderr)
        return ids

    step.frozen_parameters = frozen
    return distill_main(["distill", *rest])


if __name__ == "__main__":
    sys.exit(main())
