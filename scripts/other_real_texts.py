"""Real texts besides the one every evaluation reports, for checking that a choice made on the Book of Ruth holds
elsewhere: two other books of the King James Version from the same Debian packages (Jonah; Esther 1-2) and a
modern one in a register far from both the corpus and the KJV, the GNU GPL version 3 as Debian ships it (its
preamble on). Written as plain-text files for `evaluate --text FILE` (README, "Older English in the corpus").

    .venv/bin/python scripts/other_real_texts.py --out DIR
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_core.realtext import passage_text  # noqa: E402

PASSAGES = {"jonah": "Jonah1:1-4:11", "esther": "Esther1:1-2:23"}
GPL = Path("/usr/share/common-licenses/GPL-3")
GPL_FROM = "When we speak of free software"


def gpl() -> str:
    """The licence from its preamble's first full paragraph, each paragraph on one line."""
    paragraphs = [" ".join(p.split()) for p in GPL.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    start = next(i for i, p in enumerate(paragraphs) if p.startswith(GPL_FROM))
    return "\n\n".join(paragraphs[start:]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = {name: passage_text(passage) for name, passage in PASSAGES.items()} | {"gpl3": gpl()}
    for name, text in texts.items():
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"{args.out / name}.txt: {len(text.split())} words")


if __name__ == "__main__":
    main()
