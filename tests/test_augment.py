"""Augmentation: each method changes text as configured, deterministically under a seed; WordNet synonyms
with the network off; back-translation offline fails at once; teacher-guided substitution on a tiny
teacher; a session with augmentation; the augmentation ablation."""

import difflib
import functools
import json
import random
import re
import socket
import threading

import numpy as np
import pytest
import torch

from distill_core import augment as augment_module
from distill_core.__main__ import main
from distill_core.augment import AUGMENTERS, augment, parse_methods, preview
from distill_core.errors import DistillError
from distill_core.models import load_teacher
from distill_core.session import run_session
from tests.conftest import REPO, SAMPLE_TEXT

TEXTS = [
    "The garden sits behind the house in a strip of ground about six metres long and three metres wide.",
    "Each year the crops move one bed along, which keeps the soil healthy and makes it harder for pests to settle.",
    "We don't step on the soil where things are growing, so it stays loose after heavy rain.",
]
NOISE = ["word_swap", "word_delete", "word_substitute", "word_split", "char_keyboard", "char_ocr", "char_random"]
WORDNET_INSTALLED = all((augment_module.wordnet_source() / f).is_file() for f in augment_module.WORDNET_FILES)
needs_wordnet = pytest.mark.skipif(not WORDNET_INSTALLED, reason="WordNet 3.0 not installed: "
                                   f"{augment_module.wordnet_install_hint()} (make setup / .ci/run do it as root)")


@pytest.fixture()
def network_off(monkeypatch):
    """Every outgoing connection fails (and is recorded), as on a machine without a network."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def words(text):
    return re.findall(r"\w+(?:'\w+)*|[^\w\s]", text)


@pytest.mark.parametrize("method", NOISE + [pytest.param("synonym", marks=needs_wordnet)])
def test_each_augmenter_changes_text_and_is_deterministic_under_a_seed(method):
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    first = augment(TEXTS, method, strength=0.3, seed=1)
    assert random.getstate() == state[0] and (np.random.get_state()[1] == state[1]).all()
    assert torch.equal(torch.random.get_rng_state(), state[2])  # the global generators are restored
    assert len(first) == len(TEXTS) and all(a != t for a, t in zip(first, TEXTS))
    assert augment(TEXTS, method, strength=0.3, seed=1) == first
    assert augment(TEXTS, method, strength=0.3, seed=2) != first
    if method != "word_substitute":  # (which draws its new words from all the texts given)
        assert augment(TEXTS[:1], method, strength=0.3, seed=1) == first[:1]  # each text has its own seed


def test_strength_sets_how_much_changes():
    def changed(method, strength):
        out = augment(TEXTS, method, strength=strength, seed=0)
        return sum(sum(1 for op in difflib.SequenceMatcher(None, words(t), words(a)).get_opcodes() if op[0] != "equal")
                   for t, a in zip(TEXTS, out))

    for method in ("word_delete", "word_substitute", "char_ocr"):
        assert changed(method, 0.05) < changed(method, 0.5), method
    deleted = augment(TEXTS[:1], "word_delete", strength=0.25, seed=0)[0]
    assert len(words(TEXTS[0])) - len(words(deleted)) == 5  # ceil(0.25 x 20 tokens); punctuation is never deleted
    with pytest.raises(DistillError, match=r"strength must be in \(0, 1\]"):
        augment(TEXTS, "word_swap", strength=0)
    with pytest.raises(DistillError, match="unknown augmentation method 'shuffle'"):
        augment(TEXTS, "shuffle")


def test_parse_methods():
    assert parse_methods("synonym, word_swap,synonym") == ["synonym", "word_swap"]
    assert parse_methods(["char_ocr"]) == ["char_ocr"] and parse_methods("") == []
    with pytest.raises(DistillError, match="choose from word_swap"):
        parse_methods("synonyms")
    assert all(a.description for a in AUGMENTERS.values())


@needs_wordnet
def test_wordnet_synonyms_work_with_the_network_off(network_off, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))  # the NLTK data directory is built here, offline
    out = augment(TEXTS, "synonym", strength=0.3, seed=3)
    assert network_off == []  # nothing tried the network
    lexnames = (tmp_path / "nltk_data" / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[5] == "05\tnoun.animal\t1"
    def synonyms(word):  # the word's own part of speech only; as nlpaug writes them: "_" and "-" become spaces
        pos = {"NN": "n", "VB": "v", "JJ": "a", "RB": "r"}.get(augment_module.wordnet_pos(word))
        return {tuple(name.replace("_", " ").replace("-", " ").lower().split())
                for name in augment_module.synonyms(word, pos)}

    def explains(before, after):
        """Whether `after` is `before` with some words replaced by one of their WordNet synonyms."""
        @functools.lru_cache(maxsize=None)
        def match(i, j):
            if i == len(before):
                return j == len(after)
            if j < len(after) and after[j] == before[i] and match(i + 1, j + 1):
                return True
            return any(tuple(a.lower() for a in after[j : j + len(s)]) == s and match(i + 1, j + len(s))
                       for s in synonyms(before[i]) if s)
        return match(0, 0)

    for text, new in zip(TEXTS, out):
        assert new != text and explains(words(text), words(new)), (text, new)


@needs_wordnet
def test_synonyms_keep_the_part_of_speech_the_common_senses_and_the_inflection():
    pos = augment_module.wordnet_pos
    assert (pos("plant"), pos("climbed"), pos("essential"), pos("differently")) == ("NN", "VB", "JJ", "RB")
    assert pos("love") == pos("sound") == "DT"  # noun or verb: a toss-up out of context, left alone
    assert pos("walls") == pos("made") == "DT"  # no synonym in its common senses; irregular
    synonyms = augment_module.synonyms
    assert "rampart" not in synonyms("wall", "n") and synonyms("walls", "n") == ()  # a rare sense of wall
    assert "mounted" in synonyms("climbed", "v") and all("climb" not in s for s in synonyms("climbed", "v")[1:])
    assert synonyms("plants", "n")[0] == "works"  # a plural lemma stays as it is
    assert synonyms("plant", "v") and not set(synonyms("plant", "v")) & set(synonyms("plant", "n"))
    assert synonyms("plant", "s") == synonyms("plant", None) == ()  # nlpaug asks these too: nothing from them
    inflect = augment_module._inflect
    assert [inflect(w, sfx) for w, sfx in [("barrier", "s"), ("party", "s"), ("box", "s"), ("create", "ed"),
                                          ("study", "ed"), ("tie", "ing"), ("make", "ing"), ("stop", "ed")]] == [
        "barriers", "parties", "boxes", "created", "studied", "tying", "making", None]
    # the augmenter itself: "Plant cell walls" no longer becomes "Works cell rampart", and every word it
    # changes is replaced by a synonym of that word's part of speech
    text = "Plant cell walls are made of cellulose, which the old keeper climbed over and greeted."
    allowed = {w.lower() for w in words(text)}
    for word in words(text):
        tag = {"NN": "n", "VB": "v", "JJ": "a", "RB": "r"}.get(pos(word))
        allowed |= {part.lower() for name in synonyms(word, tag) for part in name.split("_")}
    for seed in range(6):
        out = augment([text], "synonym", strength=1.0, seed=seed)[0]
        assert out != text and "rampart" not in out.lower()
        assert {w.lower() for w in words(out)} <= allowed, out


def test_changed_words_counts_words_not_spacing():
    changes = augment_module.changed_words
    # nlpaug re-joins its tokens: quotes gain a space; that is no change
    same = changes('He said "Martha is here." Then left.', 'He said " Martha is here. " Then left.')
    assert (same.words, same.changed, same.punctuation, same.original_spans) == (7, 0, 0, [])
    # a period swapped with the next word moves past it: punctuation, not a word edit
    moved = changes("the creaking doors. The old keeper", "the creaking doors The. old keeper")
    assert (moved.changed, moved.punctuation) == (0, 2)
    assert moved.original_spans == [(18, 19, "punctuation")] and moved.augmented_spans == [(22, 23, "punctuation")]
    # words: a replaced word is one, two swapped words are two, a word split in two is one, deletions count
    assert changes("Plant cell walls are thick.", "Works cell rampart are thick.").changed == 2
    assert changes("greeted by the sound", "by greeted the sound").changed == 2
    assert changes("the lighthouse keeper", "the lighth ouse keeper").changed == 1
    assert changes("a b c d", "a d").changed == 2 and changes("a b", "a x y b").changed == 2
    split = changes("the lighthouse keeper", "the lighth ouse keeper")
    assert split.original_spans == [(4, 14, "word")] and split.augmented_spans == [(4, 15, "word")]  # one span
    # a changed word keeps its punctuation unmarked; contractions are one word
    assert changes("walls, a thing", "ramparts, a thing").punctuation == 0
    assert changes("it's here", "it is here").changed == 1 and changes("don't", "don't").words == 1


def test_missing_wordnet_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    with pytest.raises(DistillError, match="apt-get install wordnet-base wordnet-sense-index"):
        augment(TEXTS, "synonym")


def test_back_translation_offline_fails_at_once(network_off, monkeypatch):
    monkeypatch.setattr(augment_module, "_cached_hub_snapshot", lambda repo: None)  # not in the local HF cache
    with pytest.raises(DistillError) as failure:
        augment(TEXTS, "back_translation")
    assert len(network_off) <= 1  # one reachability check, no retries
    assert str(failure.value).startswith("back-translation is not available here: it needs the MarianMT checkpoints "
                                         "Helsinki-NLP/opus-mt-en-de and Helsinki-NLP/opus-mt-de-en")
    rows = preview(TEXTS, "word_swap,back_translation", strength=0.3, n=2)
    assert [r["method"] for r in rows] == ["word_swap", "word_swap", "back_translation"]
    assert all(r["error"] is None and r["augmented"] != r["original"] for r in rows[:2])
    assert rows[2]["augmented"] is None and rows[2]["error"].startswith("back-translation is not available here")
    assert rows[:2] == [{"method": "word_swap", "original": t, "augmented": a, "error": None}
                        for t, a in zip(TEXTS[:2], augment(TEXTS[:2], "word_swap", 0.3, seed=0))]


def test_back_translation_fails_without_waiting_for_a_hanging_name_lookup(monkeypatch):
    """A resolver that hangs (the socket timeout does not bound name lookups): the answer comes while the
    lookup is still hanging (hub.hub_reachable_within gives up at its deadline)."""
    entered, release = threading.Event(), threading.Event()

    def hang(*args, **kwargs):
        entered.set()
        release.wait(60)
        raise socket.gaierror("no name resolution in this test")

    monkeypatch.setattr(augment_module, "_cached_hub_snapshot", lambda repo: None)
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    try:
        with pytest.raises(DistillError, match="back-translation is not available here"):
            augment(TEXTS, "back_translation")
        assert entered.is_set() and not release.is_set()  # answered before the lookup ended
    finally:
        release.set()


def test_back_translation_from_local_folders(bundled_dir, tmp_path, monkeypatch):
    """The local-path route end to end, with a tiny random seq2seq model standing in for MarianMT."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(bundled_dir)
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-mt"
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    monkeypatch.setattr(augment_module, "BACK_TRANSLATION_MAX_LENGTH", 8)
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    out = augment(TEXTS[:2], "back_translation", translation_models=(str(folder), str(folder)))
    assert len(out) == 2 and all(o and o != t for o, t in zip(out, TEXTS))
    assert augment(TEXTS[:2], "back_translation", translation_models=(str(folder), str(folder)), cache=False) == out
    with pytest.raises(DistillError, match="not available here"):
        augment(TEXTS, "back_translation", translation_models=(str(folder), str(tmp_path / "missing")))


class Handle:
    """A teacher handle that must not be asked for the model (the cached result should be used)."""

    def __init__(self, loaded):
        self.loaded = loaded

    def fingerprint(self):
        return self.loaded.resolved.fingerprint()

    def get(self):
        raise AssertionError("the teacher was loaded although its substitutions are cached")


def test_teacher_substitute_replaces_words_with_the_teachers_choices(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    out = augment(TEXTS, "teacher_substitute", strength=0.5, seed=0, teacher=teacher)
    for text, new in zip(TEXTS, out):
        eligible = [w for w in re.findall(r"(?<=\s)[A-Za-z]+(?=[\s.,;:!?]|$)", text)
                    if w.lower() not in augment_module.STOPWORDS]
        before, after = text.split(), new.split()
        assert len(before) == len(after)  # word for word
        swaps = [(b, a) for b, a in zip(before, after) if b != a]
        assert len(swaps) == round(0.5 * len(eligible))
        for b, a in swaps:
            word = a.rstrip(".,;:!?")
            assert word.isalpha() and word.lower() != b.rstrip(".,;:!?").lower()
            assert word.lower() not in augment_module.STOPWORDS
    assert augment(TEXTS, "teacher_substitute", strength=0.5, seed=0, teacher=teacher, cache=False) == out
    assert augment(TEXTS, "teacher_substitute", strength=0.5, seed=1, teacher=teacher, cache=False) != out
    # cached: a handle gives the teacher's identity and is never asked to load it
    assert augment(TEXTS, "teacher_substitute", strength=0.5, seed=0, teacher=Handle(teacher)) == out
    with pytest.raises(DistillError, match="needs the teacher"):
        augment(TEXTS, "teacher_substitute", cache=False)


def test_session_augments_training_blocks_only_and_reports_counts(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    quick = {"steps": 1, "eval_every": 0, "probe_every": 0, "teacher_cache": True, "top_k": 4}

    def corpus_event(config, out):
        events = list(run_session(config, out))
        assert events[-1]["kind"] == "done", events[-1]
        return next(e for e in events if e["kind"] == "corpus"), next(e for e in events if e["kind"] == "cache")

    plain, _ = corpus_event(tiny_config.with_overrides(quick), tmp_path / "plain")
    augmented_config = tiny_config.with_overrides({**quick, "augment": "word_swap,teacher_substitute",
                                                   "augment_strength": 0.2, "augment_copies": 2})
    corpus, cache = corpus_event(augmented_config, tmp_path / "augmented")
    report = corpus["augmented"]
    assert plain["augmented"] is None and set(report["methods"]) == {"word_swap", "teacher_substitute"}
    assert all(n > 0 for n in report["methods"].values()) and report["texts"] == sum(report["methods"].values())
    assert corpus["train_tokens"] == plain["train_tokens"] + report["tokens"] and report["tokens"] > 0
    assert corpus["val_tokens"] == plain["val_tokens"]  # the held-out blocks are the same, never augmented
    assert cache["teacher_loaded"]  # the teacher scored the augmented blocks into its cache
    summary = json.loads((tmp_path / "augmented" / "summary.json").read_text())
    assert summary["augmented"] == report
    again, cache = corpus_event(augmented_config, tmp_path / "again")
    assert again["augmented"] == report and not cache["teacher_loaded"]  # substitutions and soft targets cached


def test_ablate_augmentation_rows(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=2", "eval_every=0", "probe_every=0", "augment_strength=0.3"]).to_yaml(config_path)
    out = tmp_path / "ablation"
    code = main(["ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(out), "--augmentation", "word_delete,char_ocr", "--small-corpus", "20"])
    assert code == 0
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["soft_target", "soft_target+augment"]
    assert rows[0]["ppl_before"] == rows[1]["ppl_before"] and all(r["ppl"] > 0 for r in rows)
    assert rows[0]["augmented"] is None and set(rows[1]["augmented"]["methods"]) == {"word_delete", "char_ocr"}
    import yaml

    configs = [yaml.safe_load((out / r["name"] / "config.yaml").read_text()) for r in rows]
    assert configs[0]["corpus_text"] == configs[1]["corpus_text"] and configs[0]["seed"] == configs[1]["seed"]
    assert len(configs[0]["corpus_text"].split("\n\n")) == 20 and configs[0]["corpus_text"].split("\n\n")[0] in SAMPLE_TEXT
    assert configs[0]["augment"] == "" and configs[1]["augment"] == "word_delete,char_ocr"
    assert configs[0]["kd_weight"] > 0 and configs[0]["steps"] == configs[1]["steps"] == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "steps", "on_policy", "ppl", "bits_per_byte", "sample_nll", "sample_rkl",
                                "entropy", "top1_agreement", "kl_to_teacher", "real_ppl", "real_kl", "wall_s"]
    assert [line.split()[0] for line in lines[1:]] == ["soft_target", "soft_target+augment"]
    assert main(["ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(out), "--augmentation", "shuffle"]) == 2
