"""Corpus files for measuring real prose mixed into the teacher's corpus (README, "Judged on real text"): the
quickstart's teacher-generated texts as a plain corpus file, the same texts mixed with as many characters of
fortunes (Debian's `fortunes` package, BSD licence: quotations, literature, wisdom, science ...), and the
fortunes alone. Each is a corpus a session reads with `--set corpus=FILE` (the teacher then scores it at every
step, as for any corpus file). Also two prompts files: `openings.txt`, the first 5 to 10 words of as many fortunes
as the config has prompts, and `prompts+openings.txt`, the config's prompts then those (`--set prompts_file=FILE`:
the teacher continues openings of real prose as well as the project's prompts).

    sudo apt-get install --no-install-recommends fortunes
    .venv/bin/python scripts/prose_mix.py --out /tmp/mix      # teacher.txt, mix50.txt, fortunes.txt, openings.txt ...
"""

import argparse
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_core.config import DistillConfig  # noqa: E402
from distill_core.data import read_prompts  # noqa: E402
from distill_core.students import corpus_documents  # noqa: E402

FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("literature wisdom people art education humorists science love platitudes fortunes kids law medicine "
              "work food pets sports politics news miscellaneous magic songs-poems tao riddles").split()
"""The prose-like files of the package (not computers, linux, startrek, zippy, ascii-art, ...)."""


def fortunes(min_chars: int = 80, max_chars: int = 1200) -> list[str]:
    """Each fortune of CATEGORIES as one line of prose (attributions dropped), ASCII, of a sensible length."""
    docs = []
    for name in CATEGORIES:
        raw = (FORTUNES / name).read_text(encoding="utf-8", errors="replace")
        for entry in raw.split("\n%\n"):
            lines = [line.strip() for line in entry.strip().splitlines()]
            body = re.sub(r"\s+", " ", " ".join(line for line in lines if line and not line.startswith("--"))).strip()
            if min_chars <= len(body) <= max_chars and body.isascii():
                docs.append(body)
    return docs


def openings(count: int) -> list[str]:
    """The first 5 to 10 words (drawn for each) of `count` fortunes drawn with a fixed seed."""
    rng = random.Random(0)
    return [" ".join(text.split()[:rng.randint(5, 10)]) for text in rng.sample(fortunes(), count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "assets" / "configs" / "quickstart.yaml"))
    parser.add_argument("--out", required=True, help="folder for teacher.txt, mix50.txt and fortunes.txt")
    args = parser.parse_args()
    if not FORTUNES.is_dir():
        sys.exit("needs Debian's fortunes package: sudo apt-get install --no-install-recommends fortunes")
    config = DistillConfig.from_yaml(args.config)
    texts, _ = corpus_documents(config.teacher, config)  # the cached corpus (the teacher writes it if it is not)
    prose = fortunes()
    random.Random(0).shuffle(prose)
    mixed, chars, wanted = [], 0, sum(map(len, texts))
    for doc in prose:  # as many characters of fortunes as the teacher wrote
        if chars >= wanted:
            break
        mixed.append(doc)
        chars += len(doc)
    both = texts + mixed
    random.Random(1).shuffle(both)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, docs in (("teacher.txt", texts), ("mix50.txt", both), ("fortunes.txt", prose[:2 * len(mixed)])):
        (out / name).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        print(f"{out / name}: {len(docs)} documents")
    prompts = read_prompts(config.prompts_file)
    opened = openings(len(prompts))
    for name, lines in (("openings.txt", opened), ("prompts+openings.txt", prompts + opened)):
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{out / name}: {len(lines)} prompts")


if __name__ == "__main__":
    main()
