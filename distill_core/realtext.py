"""Real English text that nobody on this project wrote, for judging a student beyond the project's own
held-out text: the Book of Ruth in the King James Version (1611, public domain), from Debian's `bible-kjv`
and `bible-kjv-text` packages (`make setup` installs them, as it installs WordNet). The packages keep the
text compressed; their `bible` program prints it, and the plain text is cached on first use."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from distill_core.errors import DistillError
from distill_core.paths import cache_dir, project_path, write_text_atomic

PACKAGED = "bible-kjv"
"""The config value that names the packaged text (any other non-empty value is a text file)."""
PACKAGES = ("bible-kjv", "bible-kjv-text")
PASSAGE = "Ru1:1-4:22"
"""The whole Book of Ruth: a short narrative, four chapters, about 2,700 words."""
DESCRIPTION = "the Book of Ruth, King James Version (public domain; Debian package bible-kjv-text)"
_HEADING = re.compile(r"^[1-3]?\s?[A-Z][A-Za-z ]+ \d+$")  # "Ruth 1": a chapter starts
_VERSE = re.compile(r"^\s*(?:[A-Za-z0-9]+:)?\d+\s+")  # "  1 Now it came ..." or "Ru1:1 Now ..."


def missing_message() -> str:
    return (f"the real-text evaluation needs Debian's {' and '.join(PACKAGES)} packages: run `make setup` as root, "
            f"or `sudo apt-get install --no-install-recommends {' '.join(PACKAGES)}`")


def plain_text(printed: str) -> str:
    """`bible`'s output as plain prose: verse numbers dropped, each chapter one paragraph (a document)."""
    chapters: list[list[str]] = []
    for line in printed.splitlines():
        line = line.strip()
        if not line:
            continue
        if _HEADING.match(line) or not chapters:
            chapters.append([])
            if _HEADING.match(line):
                continue
        chapters[-1].append(_VERSE.sub("", line, count=1))
    return "\n\n".join(" ".join(words) for words in chapters if words) + "\n"


def passage_text(passage: str) -> str:
    """A KJV passage (`bible`'s notation, e.g. "Ru1:1-4:22") as plain prose; DistillError when the packages are
    not installed."""
    program = shutil.which("bible")
    if program is None or not Path("/usr/lib/bible.data").is_file():
        raise DistillError(missing_message())
    try:
        printed = subprocess.run([program, passage], capture_output=True, text=True, timeout=60, check=True,
                                 env={"COLUMNS": "100000", "PATH": "/usr/bin:/bin"}).stdout
    except (subprocess.SubprocessError, OSError) as err:
        raise DistillError(f"could not read the real text with `bible`: {err}. {missing_message()}") from err
    return plain_text(printed)


def packaged_text() -> Path:
    """The packaged passage as a plain-text file (written once into the cache); DistillError when the
    packages are not installed."""
    target = cache_dir() / "real_text" / "kjv-ruth.txt"
    if target.is_file():
        return target
    text = passage_text(PASSAGE)
    if len(text.split()) < 500:
        raise DistillError(f"`bible {PASSAGE}` printed too little text ({len(text.split())} words). {missing_message()}")
    write_text_atomic(target, text)
    return target


def real_text_path(value: str) -> Path | None:
    """The file a config's `real_text` names: the packaged text for `bible-kjv`, else the file given;
    None when empty (no real-text evaluation)."""
    if not value.strip():
        return None
    if value.strip() == PACKAGED:
        return packaged_text()
    return project_path(value)


def describe(value: str) -> str:
    """Where a config's real text comes from, in words."""
    return DESCRIPTION if value.strip() == PACKAGED else str(value)
