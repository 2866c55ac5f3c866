"""Which augmentation methods exist and what each does (the implementations are in augment.py), and
`parse_methods`, which reads a config's `augment` list. Kept apart from augment.py so that the config,
at the bottom of the engine, can check method names without importing nlpaug's machinery."""

from __future__ import annotations

import re
from dataclasses import dataclass

from distill_core.errors import DistillError


@dataclass(frozen=True)
class Augmenter:
    name: str
    family: str
    description: str
    offline: bool
    """Whether it works without the Hugging Face hub (given the setup's Debian packages)."""


AUGMENTERS: dict[str, Augmenter] = {a.name: a for a in [
    Augmenter("word_swap", "word noise", "swaps a share of words with a neighbour (nlpaug RandomWordAug, swap)", True),
    Augmenter("word_delete", "word noise", "deletes a share of words (nlpaug RandomWordAug, delete)", True),
    Augmenter("word_substitute", "word noise", "replaces a share of words with random words drawn from the texts "
              "being augmented (nlpaug RandomWordAug, substitute)", True),
    Augmenter("word_split", "word noise", "splits a share of words of 4+ letters in two (nlpaug SplitAug)", True),
    Augmenter("char_keyboard", "character noise", "typos: letters replaced by a QWERTY neighbour (nlpaug KeyboardAug)", True),
    Augmenter("char_ocr", "character noise", "OCR errors: characters replaced by look-alikes, e.g. o/0, l/1 "
              "(nlpaug OcrAug)", True),
    Augmenter("char_random", "character noise", "letters replaced by random letters (nlpaug RandomCharAug)", True),
    Augmenter("synonym", "synonyms", "replaces a share of content words with a WordNet 3.0 synonym (nlpaug "
              "SynonymAug; WordNet from Debian's wordnet packages, offline)", True),
    Augmenter("back_translation", "paraphrase", "paraphrases through German and back with MarianMT (nlpaug "
              "BackTranslationAug; needs Helsinki-NLP/opus-mt-en-de and -de-en from the hub or local folders)", False),
    Augmenter("teacher_substitute", "teacher-guided", "replaces a share of content words with words the teacher "
              "itself ranks likely after their left context (TinyBERT-style, for a causal LM; offline with the "
              "bundled teacher)", True),
]}
"""Every augmentation method by name, with a one-line description."""


def parse_methods(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Method names from a list or a comma/space-separated string, in order, without repeats;
    DistillError naming the valid ones for an unknown name."""
    if value is None:
        return []
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else [str(v) for v in value]
    methods: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item not in AUGMENTERS:
            raise DistillError(f"unknown augmentation method {item!r}; choose from {', '.join(AUGMENTERS)}")
        if item not in methods:
            methods.append(item)
    return methods
