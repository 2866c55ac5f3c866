"""The real text: the packaged Book of Ruth read through `bible`, a text file, or none; a clear message when
the packages are missing."""

import shutil
from pathlib import Path

import pytest

from distill_core import realtext
from distill_core.errors import DistillError

FIXTURE = Path(__file__).parent / "fixtures" / "gettysburg.txt"
PRINTED = """
Ruth 1

  1 Now it came to pass in the days when the judges ruled, that there was a
famine in the land.
  2 And the name of the man was Elimelech.

Ruth 2

  1 And Naomi had a kinsman of her husband's.
"""


def test_plain_text_drops_verse_numbers_and_makes_each_chapter_a_paragraph():
    text = realtext.plain_text(PRINTED)
    chapters = text.strip().split("\n\n")
    assert chapters == ["Now it came to pass in the days when the judges ruled, that there was a famine in the land. "
                        "And the name of the man was Elimelech.", "And Naomi had a kinsman of her husband's."]
    # the one-line-per-verse form `bible` prints for short passages
    assert realtext.plain_text("Ge1:1 In the beginning God created the heaven and the earth.\n").strip() == \
        "In the beginning God created the heaven and the earth."


def test_a_file_or_none():
    assert realtext.real_text_path(str(FIXTURE)) == FIXTURE
    assert realtext.real_text_path("  ") is None
    assert realtext.describe(str(FIXTURE)) == str(FIXTURE)
    assert "public domain" in realtext.describe(realtext.PACKAGED)


def test_missing_packages_say_how_to_install_them(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DistillError, match="apt-get install --no-install-recommends bible-kjv bible-kjv-text"):
        realtext.real_text_path(realtext.PACKAGED)


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed (make setup)")
def test_the_packaged_text_is_the_book_of_ruth(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    path = realtext.real_text_path(realtext.PACKAGED)
    text = path.read_text(encoding="utf-8")
    assert path.parent.parent == tmp_path
    assert text.startswith("Now it came to pass in the days when the judges ruled")
    assert text.rstrip().endswith("and Jesse begat David.")
    assert len(text.split("\n\n")) == 4 and 2000 < len(text.split()) < 3000  # four chapters
    assert realtext.real_text_path(realtext.PACKAGED) == path  # cached
