"""Data augmentation for distillation: more training text, relabelled by the teacher.

TinyBERT (Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding", §3.3)
distils on augmented task data: words are replaced by candidates the teacher ranks high in context,
and the student learns the teacher's soft targets on the new text. Here every augmented copy joins
the *training* text before packing, so the teacher scores it like any other text (soft targets, and
the teacher cache, which is keyed on the exact token blocks, covers it); the held-out part of the
corpus is never augmented (see `augment_blocks`).

Methods (`AUGMENTERS`; `strength` in (0, 1] is the share of words changed):
- word noise, nlpaug (Ma 2019, https://github.com/makcedward/nlpaug) 1.1.11: `word_swap`,
  `word_delete`, `word_substitute` (RandomWordAug; substitute draws from the words of the texts being
  augmented), `word_split` (SplitAug);
- character noise, nlpaug: `char_keyboard` (KeyboardAug), `char_ocr` (OcrAug), `char_random`
  (RandomCharAug); strength is both the share of words touched and of letters changed in each;
- `synonym`: nlpaug SynonymAug on WordNet 3.0, offline (see "WordNet" below);
- `back_translation`: nlpaug BackTranslationAug, English -> German -> English with MarianMT
  (`Helsinki-NLP/opus-mt-en-de`, `-de-en`) from the hub or local directories; offline and without
  local copies it fails at once with "back-translation is not available here: ...";
- `teacher_substitute`: TinyBERT's word replacement for a causal teacher (see `_teacher_substitute`);
  works offline with the bundled teacher.

Determinism: every text is augmented under its own seed, derived from (seed, method, copy, index),
with Python's `random`, numpy's and torch's generators seeded around the call and restored after, so
the same inputs give the same outputs, and a preview of the first texts shows exactly what a session
trains on. Model-based methods (`teacher_substitute`, `back_translation`) cache their outputs under
`<cache>/augmented/`, so a later session with a complete teacher cache still never loads the teacher.

WordNet: Debian's `wordnet-base` + `wordnet-sense-index` (WordNet 3.0, in /usr/share/wordnet;
`WORDNET_DIR` overrides) are copied once into `<cache>/nltk_data/corpora/wordnet/` with the
`lexnames` file NLTK's reader also wants (the 45 lexicographer files of WordNet 3.0, listed below),
and that root is put first on `nltk.data.path` (NLTK refuses corpus files outside its data path,
including symlinks and hard links to them, hence the copy). Nothing is downloaded at run time:
`nltk.download` is refused while an augmenter runs. `make setup` (as root) and `.ci/run` install the
Debian packages; otherwise the synonym augmenter's error names the command.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import os
import random
import re
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_core import hosting
from distill_core.augment_methods import AUGMENTERS, parse_methods
from distill_core.data import Blocks, pack
from distill_core.errors import DistillError, first_line
from distill_core.hub import hub_reachable_within
from distill_core.paths import cache_dir, write_text_atomic


MODEL_METHODS = ("teacher_substitute", "back_translation")
"""Methods that run a model; their outputs are cached on disk."""

BACK_TRANSLATION_MODELS = ("Helsinki-NLP/opus-mt-en-de", "Helsinki-NLP/opus-mt-de-en")
"""English -> German and German -> English MarianMT checkpoints (hub ids or local directories)."""
BACK_TRANSLATION_MAX_LENGTH = 256
"""Longest translation generated, in tokens."""
TEACHER_TOP_K = 15
"""teacher_substitute draws among the teacher's top this-many whole-word candidates (TinyBERT: K = 15)."""
TEACHER_MAX_TOKENS = 512
"""teacher_substitute looks at most this many tokens into each text."""
TEACHER_BATCH = 16
"""Texts per teacher forward pass in teacher_substitute."""

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves also may might must shall us
across along among around behind beside beyond near onto per since toward towards upon via within without
although though yet however
""".split())
"""Function words the synonym and teacher-guided augmenters leave alone."""

WORDNET_DEBIAN_DIR = "/usr/share/wordnet"
WORDNET_PACKAGES = ("wordnet-base", "wordnet-sense-index")
WORDNET_FILES = ("cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb", "data.adj",
                 "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc")
"""The WordNet 3.0 database files NLTK's WordNetCorpusReader opens (besides `lexnames`)."""
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl")
"""WordNet 3.0's 45 lexicographer files, numbered 00-44 (lexnames(5WN)); Debian ships no `lexnames` file."""
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


# ---- methods and seeds -------------------------------------------------------------------------

def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise DistillError(f"augmentation strength must be in (0, 1], got {strength!r}")
    return float(strength)


def text_seed(seed: int, method: str, copy: int, index: int) -> int:
    """The seed one text is augmented under: stable across processes and machines."""
    return zlib.crc32(f"{seed}:{method}:{copy}:{index}".encode())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's `random`, numpy's global and torch's CPU generators seeded with `seed` inside, and
    restored to their previous states after (nlpaug draws from `random` and numpy)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """nlpaug calls nltk.download when NLTK data is missing; here that is an error, never a download."""
    import nltk

    def refuse(*args, **kwargs):
        raise DistillError(f"augmentation needs NLTK data {args[0] if args else ''!r} that is not installed; "
                           "nothing is downloaded at run time")

    original = nltk.download
    nltk.download = refuse
    try:
        yield
    finally:
        nltk.download = original


# ---- nlpaug: word and character noise, synonyms -------------------------------------------------

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def _tokenize(text: str) -> list[str]:
    """Words (contractions kept whole) and single punctuation marks; nlpaug's default splits "don't"."""
    return _TOKEN.findall(text)


def _detokenize(tokens: list[str]) -> str:
    from nlpaug.util.text.tokenizer import Tokenizer

    return Tokenizer.reverse_tokenizer(tokens)


def _nlpaug_augmenter(method: str, strength: float, texts: list[str]) -> Any:
    io = {"tokenizer": _tokenize, "reverse_tokenizer": _detokenize}
    if method.startswith("char_"):
        import nlpaug.augmenter.char as nac

        chars = {"aug_word_p": strength, "aug_word_max": None, "aug_char_p": strength, "aug_char_max": None,
                 "stopwords": None, **io}
        if method == "char_keyboard":
            return nac.KeyboardAug(include_special_char=False, include_numeric=False, include_upper_case=False, **chars)
        if method == "char_ocr":
            return nac.OcrAug(**chars)
        return nac.RandomCharAug(action="substitute", candidates=list("abcdefghijklmnopqrstuvwxyz"), **chars)
    import nlpaug.augmenter.word as naw

    words = {"aug_p": strength, "aug_max": None, **io}
    if method in ("word_swap", "word_delete"):
        return naw.RandomWordAug(action=method.removeprefix("word_"), **words)
    if method == "word_substitute":
        vocabulary = sorted({w for t in texts for w in _tokenize(t) if w.isalpha()})
        return naw.RandomWordAug(action="substitute", target_words=vocabulary or ["_"], **words)
    if method == "word_split":
        return naw.SplitAug(**words)
    if method == "synonym":
        ensure_wordnet()
        stop = sorted(STOPWORDS | {w.capitalize() for w in STOPWORDS})
        return _synonym_class()(aug_src="wordnet", stopwords=stop, **words)
    raise DistillError(f"{method} is not an nlpaug method")


def _nlpaug_one(augmenter: Any, text: str) -> str:
    out = augmenter.augment(text)
    if isinstance(out, list):
        out = out[0] if out else text
    return out if isinstance(out, str) else text


# ---- WordNet, offline ---------------------------------------------------------------------------

def wordnet_source() -> Path:
    """Where the WordNet 3.0 database files are read from (Debian's, unless WORDNET_DIR says otherwise)."""
    return Path(os.environ.get("WORDNET_DIR") or WORDNET_DEBIAN_DIR)


def wordnet_install_hint() -> str:
    return f"apt-get install {' '.join(WORDNET_PACKAGES)}"


def ensure_wordnet() -> Path:
    """NLTK's view of WordNet 3.0, built once from the Debian files: `<cache>/nltk_data/corpora/wordnet/`
    holds copies of `WORDNET_FILES` and a `lexnames` file written from `WORDNET_LEXNAMES`; its root is
    put first on `nltk.data.path`. Rebuilt when the source files change. DistillError naming the
    install command when WordNet is not installed."""
    import nltk

    source = wordnet_source()
    missing = [f for f in WORDNET_FILES if not (source / f).is_file()]
    if missing:
        raise DistillError(
            f"synonym augmentation needs WordNet 3.0, which is not installed here ({source} lacks "
            f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}): install Debian's packages with "
            f"`sudo {wordnet_install_hint()}` (`make setup` does it when run as root); nothing is downloaded at run time")
    root = cache_dir() / "nltk_data"
    target = root / "corpora" / "wordnet"
    stamp = json.dumps({f: [(source / f).stat().st_size, int((source / f).stat().st_mtime)] for f in WORDNET_FILES},
                       sort_keys=True)
    stamp_file = target / "SOURCE.json"
    if not (stamp_file.is_file() and stamp_file.read_text(encoding="utf-8") == stamp):
        tmp = target.with_name(f"wordnet.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in WORDNET_FILES:
            shutil.copyfile(source / name, tmp / name)  # plain copies: NLTK refuses links out of its data path
        (tmp / "lexnames").write_text(
            "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(WORDNET_LEXNAMES)),
            encoding="utf-8")
        (tmp / "SOURCE.json").write_text(stamp, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another process built it at the same moment
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return target


def _wordnet() -> Any:
    ensure_wordnet()
    from nltk.corpus import wordnet

    return wordnet


def _perceptron_tagger_available() -> bool:
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
        return True
    except LookupError:
        return False


SYNONYM_SENSES = 2
"""The synonym augmenter draws from at most this many of a word's WordNet senses, the most frequent first."""
_PENN = {"n": "NN", "v": "VB", "a": "JJ", "r": "RB"}
_EXCEPTION_FILES = {"n": "noun.exc", "v": "verb.exc", "a": "adj.exc", "r": "adv.exc"}
_DOUBLED_FINAL = re.compile(r"^[^aeiou]*[aeiou][bdgklmnprtv]$")
"""A one-syllable word ending consonant-vowel-consonant (stop, plan): it doubles its last letter when
inflected (stopped), which `_inflect` does not do, so such a synonym is left out when it needs a suffix."""


def _sense_count(synset: Any, base: str) -> int:
    return sum(lemma.count() for lemma in synset.lemmas() if lemma.name().lower() == base)


@functools.lru_cache(maxsize=65536)
def common_synsets(base: str, pos: str) -> tuple[Any, ...]:
    """The senses of a word (its base form) in one part of speech (WordNet's n, v, a, r) that its synonyms
    are drawn from: the most frequent sense (WordNet lists senses by frequency in its tagged corpus) and, up
    to `SYNONYM_SENSES`, the next ones where the word is used at least half as often. A word out of context
    is most likely meant in its common senses; the rare ones (wall -> rampart) are the wrong-sense guesses."""
    synsets = _wordnet().synsets(base, pos=pos)
    if not synsets:
        return ()
    first = _sense_count(synsets[0], base)
    more = [s for s in synsets[1:SYNONYM_SENSES] if 0 < _sense_count(s, base) and 2 * _sense_count(s, base) >= first]
    return (synsets[0], *more)


@functools.lru_cache(maxsize=8)
def _irregular(pos: str) -> frozenset[str]:
    """Base forms with an irregular inflection in this part of speech (WordNet's exception lists)."""
    lines = (ensure_wordnet() / _EXCEPTION_FILES[pos]).read_text(encoding="utf-8").splitlines()
    return frozenset(base for line in lines for base in line.split()[1:])


def _suffix(word: str, base: str) -> str | None:
    """How `word` inflects `base` regularly: '' (it is the base), 's' (plural, third person), 'ed' or 'ing';
    None for anything else (an irregular form such as made, a doubled consonant, a comparative)."""
    if word == base:
        return ""
    for stem in (base, base[:-1] if base.endswith(("e", "y")) else None):
        if stem and word.startswith(stem):
            ending = word[len(stem):]
            if ending in ("s", "es", "ies"):
                return "s"
            if ending in ("ed", "d", "ied"):
                return "ed"
            if ending == "ing":
                return "ing"
    return None


def _inflect(word: str, suffix: str) -> str | None:
    """`word` with a regular English `suffix` ('s', 'ed', 'ing'); None where the rules here would be wrong."""
    if not suffix:
        return word
    if _DOUBLED_FINAL.match(word):
        return None
    consonant_y = word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou"
    if suffix == "s":
        return word[:-1] + "ies" if consonant_y else word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")
    if suffix == "ed":
        return word[:-1] + "ied" if consonant_y else word + ("d" if word.endswith("e") else "ed")
    if word.endswith("ie"):
        return word[:-2] + "ying"
    return word[:-1] + "ing" if word.endswith("e") and not word.endswith("ee") else word + "ing"


def _is_plural_noun(word: str) -> bool:
    """Whether a noun lemma is already a plural (works, steps): WordNet also has it without the final s."""
    singular = word[:-1]
    return word.endswith("s") and any(lemma.name().lower() == singular for synset in _wordnet().synsets(singular, "n")
                                      for lemma in synset.lemmas())


@functools.lru_cache(maxsize=65536)
def synonyms(word: str, pos: str | None) -> tuple[str, ...]:
    """Synonyms of `word` used as part of speech `pos` (WordNet's n, v, a, r): the other lemmas of its common
    senses (`common_synsets`), inflected as the word is (walls -> barriers, climbed -> mounted); a synonym that
    would need an irregular or doubled inflection is left out, and so is every synonym of a word that is
    itself irregularly inflected (made). `_` in a lemma stays (nlpaug makes it a space); the inflected word
    of a multi-word lemma is a noun's last, a verb's first."""
    if pos not in _PENN:  # nlpaug asks again with "s" for adjectives ("a" covers them), and without a part of speech
        return ()
    lower = word.lower()
    base = _wordnet().morphy(lower, pos)
    suffix = None if base is None else _suffix(lower, base)
    if suffix is None:
        return ()
    found: list[str] = []
    for synset in common_synsets(base, pos):
        for lemma in synset.lemmas():
            parts = lemma.name().split("_")
            head = -1 if pos == "n" else 0
            if lemma.name().lower() == base or (suffix and parts[head].lower() in _irregular(pos)):
                continue
            plural = suffix == "s" and pos == "n" and _is_plural_noun(parts[head].lower())
            parts[head] = parts[head] if plural else _inflect(parts[head], suffix) or ""
            name = "_".join(parts)
            if parts[head] and name not in found:
                found.append(name)
    return tuple(found)


@functools.lru_cache(maxsize=65536)
def wordnet_pos(word: str) -> str:
    """A Penn tag for `word` from WordNet alone, for when NLTK's POS tagger data is not installed: the one
    part of speech (NN, VB, JJ, RB) WordNet has the word in (after its morphology: `climbed` can only be
    a verb), or, where it has several, the one WordNet's sense counts (cntlist) use it in at least two
    times in three (`plant`: a noun). `DT` (which SynonymAug skips) for stop-words, non-words, words whose
    part of speech is a toss-up out of context (`love`, `sound`, `change`) and words without a synonym in
    theirs: a synonym is never taken from another part of speech."""
    lower = word.lower()
    if not lower.isalpha() or lower in STOPWORDS:
        return "DT"
    wn = _wordnet()
    uses = {}
    for pos in _PENN:
        base = wn.morphy(lower, pos)
        synsets = wn.synsets(base, pos=pos) if base else []
        if synsets:
            uses[pos] = sum(_sense_count(s, base) for s in synsets)
    if not uses:
        return "DT"
    pos = max(uses, key=uses.get)
    total = sum(uses.values())
    clear = len(uses) == 1 or (total >= 3 and 3 * uses[pos] >= 2 * total)
    return _PENN[pos] if clear and synonyms(lower, pos) else "DT"


@functools.lru_cache(maxsize=1)
def _synonym_class() -> type:
    """nlpaug's SynonymAug with a WordNet model that never downloads. Different from stock nlpaug:
    WordNet comes from `ensure_wordnet` (Debian's files); when NLTK's `averaged_perceptron_tagger_eng` is
    not installed (it is not on PyPI or in Debian), each word's part of speech comes from `wordnet_pos`
    (WordNet's own sense frequencies, no context) instead of the tagger; and a word's candidates are
    `synonyms`: its common senses in that part of speech only, inflected like the word (stock nlpaug draws
    from every sense, uninflected). Which words, which candidate, capitalisation: nlpaug's."""
    import nlpaug.augmenter.word as naw
    import nlpaug.model.word_dict as nmw
    import nltk

    class OfflineWordNet(nmw.WordNet):
        def read(self):
            return _wordnet()

        def predict(self, word, pos=None):
            return list(synonyms(word, pos))

        @classmethod
        def pos_tag(cls, tokens):
            if _perceptron_tagger_available():
                return nltk.pos_tag(tokens)
            return [(token, wordnet_pos(token)) for token in tokens]

    class OfflineSynonymAug(naw.SynonymAug):
        @classmethod
        def get_model(cls, aug_src, lang, dict_path, force_reload):
            return OfflineWordNet(lang=lang, is_synonym=True)

    return OfflineSynonymAug


# ---- back-translation ---------------------------------------------------------------------------

def _cached_hub_snapshot(repo_id: str) -> str | None:
    """The local snapshot folder of a hub model already in the Hugging Face cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def resolve_translation_models(models: tuple[str, str] | list[str] | None = None) -> tuple[str, str]:
    """Where the two MarianMT checkpoints load from: a local directory, the local Hugging Face cache,
    or the hub when it is reachable. Otherwise DistillError "back-translation is not available here"
    at once (before anything is imported or built: a hub check of at most 1.8 s)."""
    names = tuple(models or BACK_TRANSLATION_MODELS)
    if len(names) != 2 or not all(str(n).strip() for n in names):
        raise DistillError(f"back-translation needs two models (to German and back), got {list(names)!r}")
    resolved: list[str] = []
    online: bool | None = None
    for name in (str(n).strip() for n in names):
        hosting.check_model_spec(name, "back-translation model")
        path = Path(name).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            resolved.append(str(path))
            continue
        local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
        snapshot = None if local else _cached_hub_snapshot(name)
        if snapshot is not None:
            resolved.append(snapshot)
            continue
        if not local:
            online = hub_reachable_within() if online is None else online
            if online:
                resolved.append(name)
                continue
        raise DistillError(
            "back-translation is not available here: it needs the MarianMT checkpoints "
            f"{names[0]} and {names[1]} from the Hugging Face hub (unreachable from this machine) or a local path "
            f"({name} is neither a local model folder nor in the local Hugging Face cache)")
    return resolved[0], resolved[1]


def _back_translate(texts: list[str], models: tuple[str, str]) -> list[str]:
    import nlpaug.augmenter.word as naw

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        augmenter = naw.BackTranslationAug(from_model_name=models[0], to_model_name=models[1], device=device,
                                           max_length=BACK_TRANSLATION_MAX_LENGTH, batch_size=16)
        out = augmenter.augment(list(texts))
    except DistillError:
        raise
    except Exception as exc:
        raise DistillError(f"back-translation failed with {models[0]} / {models[1]}: "
                           f"{first_line(exc, 300) or type(exc).__name__}") from None
    if len(out) != len(texts):
        raise DistillError(f"back-translation returned {len(out)} texts for {len(texts)}")
    return [o.strip() or t for o, t in zip(out, texts)]


# ---- teacher-guided substitution ----------------------------------------------------------------

_WORD = re.compile(r"(?<=\s)[A-Za-z]+(?=[\s.,;:!?)\]\"]|$)")


@functools.lru_cache(maxsize=4)
def _whole_word_tokens(tokenizer: Any) -> tuple[list[str | None], torch.Tensor, torch.Tensor, dict[str, list[int]]]:
    """For every token id: the word it spells when it is a whole word after a space (` apple`), else
    None; masks of such tokens (not stop-words) starting lower case and upper case; lower-cased word ->
    its token ids."""
    ids = list(range(len(tokenizer)))
    decoded = tokenizer.batch_decode([[i] for i in ids])
    raw = tokenizer.convert_ids_to_tokens(ids)
    words: list[str | None] = []
    for text, token in zip(decoded, raw):
        word = text[1:] if text.startswith(" ") else (token[1:] if token and token[0] in "Ġ▁" else None)
        words.append(word if word and len(word) >= 2 and word.isascii() and word.isalpha() else None)
    content = [w is not None and w.lower() not in STOPWORDS for w in words]  # content words replace content words
    lower = torch.tensor([c and w[0].islower() for c, w in zip(content, words)], dtype=torch.float32)
    upper = torch.tensor([c and w[0].isupper() for c, w in zip(content, words)], dtype=torch.float32)
    by_word: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        if w is not None:
            by_word.setdefault(w.lower(), []).append(i)
    return words, lower, upper, by_word


def _teacher_substitute(texts: list[str], strength: float, seeds: list[int], teacher: Any) -> list[str]:
    """TinyBERT's word replacement (Jiao et al. 2020), for a causal LM: TinyBERT masks a word and takes
    the masked LM's top-K words; a causal teacher sees only the left context, so for a chosen word
    the teacher's next-token distribution after the text before it (the text starts after EOS, as a
    document does in the packed training stream) is taken, restricted to tokens that are a whole
    content word after a space (alphabetic, not a stop-word, same initial case, not the word itself),
    and a replacement is drawn from its top `TEACHER_TOP_K` in proportion to the teacher's
    probabilities. Chosen: a `strength` share (at least one) of the words that follow a space and are
    not stop-words. All replacements in a text use the original left context; texts go through the
    teacher in batches of `TEACHER_BATCH` (one pass each)."""
    model, tokenizer = teacher.model, teacher.tokenizer
    words, lower_mask, upper_mask, by_word = _whole_word_tokens(tokenizer)
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    plans = []  # per text: (ids with EOS first, chosen [(match, position of the logits that predict it)])
    for text, seed in zip(texts, seeds):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                        max_length=TEACHER_MAX_TOKENS)
        # text token j sits at position j + 1 (after EOS), so the logits at position j predict it
        starts = {start: j for j, (start, end) in enumerate(enc["offset_mapping"]) if end > start}
        eligible = []
        for match in _WORD.finditer(text):
            j = starts.get(match.start() - 1, starts.get(match.start()))
            if j is not None and match.group().lower() not in STOPWORDS:
                eligible.append((match, j))
        chosen = []
        if eligible:
            picked = random.Random(seed).sample(eligible, max(1, round(strength * len(eligible))))
            chosen = sorted(picked, key=lambda m: m[1])
        plans.append(([eos, *enc["input_ids"]], chosen))
    probs_of: dict[int, torch.Tensor] = {}
    todo = [i for i, (_, chosen) in enumerate(plans) if chosen]
    for start in range(0, len(todo), TEACHER_BATCH):
        batch = todo[start : start + TEACHER_BATCH]
        width = max(len(plans[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        keep = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, i in enumerate(batch):
            seq, chosen = plans[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            keep[row, [j for _, j in chosen]] = True
        ids, attention, keep = ids.to(device), attention.to(device), keep.to(device)
        with torch.no_grad():
            try:
                logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits  # (kept, vocab)
            except (TypeError, IndexError, RuntimeError):  # a model without boolean logits_to_keep
                logits = model(input_ids=ids, attention_mask=attention).logits[keep]
        probs = torch.softmax(logits.float(), dim=-1).cpu()  # row-major: text by text, position by position
        offset = 0
        for i in batch:
            n = len(plans[i][1])
            probs_of[i] = probs[offset : offset + n]
            offset += n
    out = []
    for i, (text, seed) in enumerate(zip(texts, seeds)):
        chosen = plans[i][1]
        if not chosen:
            out.append(text)
            continue
        generator = torch.Generator().manual_seed(seed)
        replacements = []
        for (match, _), p in zip(chosen, probs_of[i]):
            word = match.group()
            p = p * (upper_mask if word[0].isupper() else lower_mask)
            p[by_word.get(word.lower(), [])] = 0.0
            top = torch.topk(p, TEACHER_TOP_K)
            ok = top.values > 0
            if ok.any():
                pick = top.indices[ok][torch.multinomial(top.values[ok], 1, generator=generator)].item()
                replacements.append((match.start(), match.end(), words[pick]))
        pieces, last = [], 0
        for begin, end, new in sorted(replacements):
            pieces += [text[last:begin], new]
            last = end
        out.append("".join(pieces) + text[last:])
    return out


def _teacher_model(teacher: Any) -> Any:
    """A LoadedModel from a LoadedModel or from a handle that loads it on demand (models.LazyTeacher)."""
    if teacher is None:
        raise DistillError("teacher-guided substitution needs the teacher (pass teacher=...)")
    return teacher.get() if hasattr(teacher, "get") else teacher


def _teacher_identity(teacher: Any) -> list[str]:
    """The teacher's weights, for the cache key: a session's lazy teacher or a loaded one alike."""
    if hasattr(teacher, "fingerprint"):
        return [teacher.fingerprint()]
    if getattr(teacher, "resolved", None) is not None:
        return [teacher.resolved.fingerprint()]
    return [str(getattr(teacher, "spec", "")), str(getattr(teacher, "source", ""))]


# ---- the common interface -----------------------------------------------------------------------

def _cache_path(method: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]
    return cache_dir() / "augmented" / f"{method}-{digest}.json"


def _read_cache(path: Path, n: int) -> list[str] | None:
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return texts if isinstance(texts, list) and len(texts) == n and all(isinstance(t, str) for t in texts) else None


def augment(texts: list[str], method: str, strength: float = 0.1, seed: int = 0, teacher: Any = None,
            copy: int = 0, translation_models: tuple[str, str] | list[str] | None = None,
            cache: bool = True) -> list[str]:
    """One augmented version of each text by `method` (see `AUGMENTERS`), in order; a text that
    cannot change (too short, no eligible word) comes back as it was. `strength` in (0, 1]: the share
    of words changed. `copy` numbers the copies of the same texts (each copy draws differently).
    `teacher` (teacher_substitute): a LoadedModel, or a handle with `get()` and `fingerprint()` that is
    asked for the model only when the cached result is missing. `translation_models`
    (back_translation): two hub ids or local folders, default `BACK_TRANSLATION_MODELS`.
    Raises DistillError with a message for the user (e.g. back-translation offline)."""
    if method not in AUGMENTERS:
        raise DistillError(f"unknown augmentation method {method!r}; choose from {', '.join(AUGMENTERS)}")
    strength = _check_strength(strength)
    texts = [str(t) for t in texts]
    if not texts:
        return []
    seeds = [text_seed(seed, method, copy, i) for i in range(len(texts))]
    if method in MODEL_METHODS:
        translating = method == "back_translation"
        key = {"method": method, "strength": strength, "seed": seed, "copy": copy, "version": 1,
               "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
               "model": list(translation_models or BACK_TRANSLATION_MODELS) if translating else _teacher_identity(teacher)}
        path = _cache_path(method, key)
        found = _read_cache(path, len(texts)) if cache else None
        if found is not None:
            return found
        if translating:
            models = resolve_translation_models(translation_models)
            with seeded(seed):
                result = _back_translate(texts, models)
        else:
            loaded = _teacher_model(teacher)
            result = _teacher_substitute(texts, strength, seeds, loaded)
        if cache:
            write_text_atomic(path, json.dumps({"method": method, "texts": result}, ensure_ascii=False))
        return result
    with _no_downloads():
        augmenter = _nlpaug_augmenter(method, strength, texts)
        out = []
        for text, text_seed_ in zip(texts, seeds):
            with seeded(text_seed_):
                out.append(_nlpaug_one(augmenter, text) if text.strip() else text)
    return out


def preview(texts: list[str], methods: str | list[str], strength: float = 0.1, seed: int = 0, teacher: Any = None,
            n: int = 3, translation_models: tuple[str, str] | list[str] | None = None) -> list[dict[str, Any]]:
    """Rows for a preview table: for each method and each of the first `n` texts,
    `{"method", "original", "augmented", "error"}`; a method that fails (e.g. back-translation
    offline) gives one row with its `error` and `augmented` None, and the other methods still run.
    Each text is augmented as a session augments its training text (a session takes that text block by
    block, split at document ends)."""
    sample = [t for t in texts if t and t.strip()][:n]
    rows: list[dict[str, Any]] = []
    for method in parse_methods(methods):
        try:
            augmented = augment(sample, method, strength, seed, teacher=teacher, translation_models=translation_models)
        except DistillError as exc:
            rows.append({"method": method, "original": sample[0] if sample else "", "augmented": None, "error": str(exc)})
            continue
        except Exception as exc:  # an unforeseen failure of one method does not hide the others
            rows.append({"method": method, "original": sample[0] if sample else "", "augmented": None,
                         "error": f"{type(exc).__name__}: {first_line(exc, 300)}"})
            continue
        rows += [{"method": method, "original": o, "augmented": a, "error": None} for o, a in zip(sample, augmented)]
    return rows


@dataclass(frozen=True)
class WordChanges:
    """How an augmented text differs from its original, counted on words: `changed` words of the
    original's `words` (replaced or deleted, and words inserted); `punctuation` marks added, dropped or
    moved, not counted as words; and where each change is in either text, as (start, end, kind) character
    spans with kind "word" or "punctuation", for marking them. Spacing is no change: nlpaug re-joins its
    tokens (`"Martha` comes back as `" Martha`), and a session tokenizes the text again anyway."""

    words: int
    changed: int
    punctuation: int
    original_spans: list[tuple[int, int, str]]
    augmented_spans: list[tuple[int, int, str]]


def changed_words(original: str, augmented: str) -> WordChanges:
    """`WordChanges` of `augmented` against `original`. Both are split as the augmenters split them
    (`_TOKEN`: words, contractions whole, and single punctuation marks). The words alone are aligned
    (difflib); each differing stretch counts the original's words it replaced or dropped, else the words
    it inserted (a word split in two is one word changed, two swapped words are two). Between two words
    kept in both, the punctuation marks are compared: one added, dropped or moved past a word is a
    punctuation change, one whose spacing alone differs is none."""
    old, new = list(_TOKEN.finditer(original)), list(_TOKEN.finditer(augmented))
    old_words, new_words = [m for m in old if _is_word(m.group())], [m for m in new if _is_word(m.group())]
    matcher = difflib.SequenceMatcher(a=[m.group() for m in old_words], b=[m.group() for m in new_words],
                                      autojunk=False)
    changed = 0
    old_spans: list[tuple[int, int, str]] = []
    new_spans: list[tuple[int, int, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changed += (i2 - i1) or (j2 - j1)
            old_spans += [(m.start(), m.end(), "word") for m in old_words[i1:i2]]
            new_spans += [(m.start(), m.end(), "word") for m in new_words[j1:j2]]
    anchors = [(-1, -1)] + [(block.a + k, block.b + k) for block in matcher.get_matching_blocks()
                            for k in range(block.size)] + [(len(old_words), len(new_words))]
    punctuation = 0
    for (i0, j0), (i1, j1) in zip(anchors, anchors[1:]):
        old_marks = _marks_between(old, old_words, i0, i1)
        new_marks = _marks_between(new, new_words, j0, j1)
        marks = difflib.SequenceMatcher(a=[m.group() for m in old_marks], b=[m.group() for m in new_marks],
                                        autojunk=False)
        for tag, a1, a2, b1, b2 in marks.get_opcodes():
            if tag != "equal":
                punctuation += max(a2 - a1, b2 - b1)
                old_spans += [(m.start(), m.end(), "punctuation") for m in old_marks[a1:a2]]
                new_spans += [(m.start(), m.end(), "punctuation") for m in new_marks[b1:b2]]
    return WordChanges(len(old_words), changed, punctuation, _joined(original, old_spans),
                       _joined(augmented, new_spans))


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _marks_between(tokens: list[re.Match], words: list[re.Match], after: int, before: int) -> list[re.Match]:
    """The punctuation marks between word `after` and word `before` (indices into `words`; -1 and
    len(words) for the ends of the text)."""
    start = words[after].end() if after >= 0 else 0
    end = words[before].start() if before < len(words) else None
    return [m for m in tokens if not _is_word(m.group()) and start <= m.start() and (end is None or m.start() < end)]


def _joined(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Spans in text order, neighbours of one kind with only spaces between them made one."""
    joined: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if joined and joined[-1][2] == kind and not text[joined[-1][1]:start].strip():
            joined[-1] = (joined[-1][0], end, kind)
        else:
            joined.append((start, end, kind))
    return joined


def block_segments(tokenizer: Any, blocks: Any) -> list[str]:
    """The text of token blocks, split at EOS (document ends): what augmentation starts from. Pieces of
    fewer than three words are left out."""
    segments = []
    eos = tokenizer.eos_token_id
    for ids, mask in zip(blocks.input_ids.tolist(), blocks.attention_mask.tolist()):
        piece: list[int] = []
        for token, keep in zip(ids + [eos], mask + [1]):
            if token == eos or not keep:
                text = tokenizer.decode(piece, skip_special_tokens=True).strip() if piece else ""
                if len(text.split()) >= 3:
                    segments.append(text)
                piece = []
            else:
                piece.append(token)
    return segments


def augment_blocks(tokenizer: Any, blocks: Any, methods: list[str], strength: float, copies: int, seed: int,
                   seq_len: int, teacher: Any = None,
                   translation_models: tuple[str, str] | list[str] | None = None) -> Iterator[tuple[str | None, Any]]:
    """Augment the training blocks of a session: their text (split at document ends) is augmented
    `copies` times by each method, the copies that differ from their source are packed into blocks of
    `seq_len` and appended. Only these blocks are augmented, never the held-out ones, so validation
    text is never an augmented copy of training text (and the original training blocks stay exactly
    those of a session without augmentation, for a like-for-like comparison).

    Yields (status message, None) before each method, then (None, (blocks, report)) with report
    `{"methods": {method: texts produced}, "texts": n, "blocks": n, "tokens": n}`."""
    segments = block_segments(tokenizer, blocks)
    produced: list[str] = []
    counts: dict[str, int] = {}
    for method in methods:
        yield (f"Augmenting the training text: {method}, {copies} cop{'y' if copies == 1 else 'ies'} of "
               f"{len(segments)} pieces …"), None
        counts[method] = 0
        for copy in range(copies):
            out = augment(segments, method, strength, seed, teacher=teacher, copy=copy,
                          translation_models=translation_models)
            changed = [a for a, s in zip(out, segments) if a.strip() and a != s]
            produced += changed
            counts[method] += len(changed)
    report = {"methods": counts, "texts": len(produced), "blocks": 0, "tokens": 0}
    if produced:
        try:
            extra = pack(tokenizer, produced, seq_len)
        except DistillError:  # less than one block of new text
            extra = None
        if extra is not None:
            blocks = Blocks(torch.cat([blocks.input_ids, extra.input_ids]),
                            torch.cat([blocks.attention_mask, extra.attention_mask]))
            report.update(blocks=len(extra), tokens=extra.n_tokens)
    yield None, (blocks, report)
