"""Two tokenizations of one text, lined up by the bytes each token covers, and two vocabularies lined up by
the bytes each token stands for: what distillation across tokenizers builds on (tokenizer_bridge.py).

- `token_spans`: a text's tokens with their UTF-8 byte spans. Byte-level BPE tokenizers (GPT-2, SmolLM2,
  Llama 3, Qwen, a BPE trained here) split a multi-byte character over several tokens that share one
  character offset, so their spans come from the bytes of each token; other tokenizers' character offsets
  are converted to bytes.
- `align_groups`: the groups of GOLD's span alignment (TRL's GOLD trainer; MinED, Wan et al. 2024, aligns
  tokens the same way, by the text they cover): walk both span lists, advancing the side whose current token
  ends first; a group closes where both sides end at the same byte. A group with one token on each side is a
  one-to-one pair; the others (one teacher token against two student tokens, ...) are merged over their span.
- `vocabulary_match`: the token pairs of the two vocabularies that stand for exactly the same bytes (the same
  special token for special ones): the exact-match mapping of the span-aligned loss.

Byte offsets: (start, end) with end exclusive; a token's text is text.encode()[start:end].
"""

from __future__ import annotations

import functools
import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from distill_core.errors import DistillError


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """The byte-level alphabet of GPT-2 (Radford et al. 2019): each byte drawn as a printable character
    (printable bytes as themselves, the others shifted past 255), inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _components(tokenizer: Any, part: str) -> list[dict[str, Any]]:
    """The backend's pre-tokenizer or decoder as a list of its parts (a Sequence unpacked)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return []
    node = json.loads(backend.to_str()).get(part) or {}
    return node.get("pretokenizers") or node.get("decoders") or [node]


@functools.lru_cache(maxsize=16)
def _is_byte_level(tokenizer: Any) -> bool:
    return any(c.get("type") == "ByteLevel" for c in _components(tokenizer, "decoder"))


def is_byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer's tokens are byte sequences in GPT-2's byte alphabet (its decoder is ByteLevel)."""
    try:
        return _is_byte_level(tokenizer)
    except TypeError:  # an unhashable tokenizer object: ask it directly
        return any(c.get("type") == "ByteLevel" for c in _components(tokenizer, "decoder"))


def has_offsets(tokenizer: Any) -> bool:
    """Whether the tokenizer reports where each token sits in the text (a fast, Rust-backed tokenizer)."""
    return getattr(tokenizer, "backend_tokenizer", None) is not None


def token_bytes(tokenizer: Any, token: str) -> bytes | None:
    """The bytes a byte-level token stands for; None when the token is not in the byte alphabet (e.g. a
    special token)."""
    table = _byte_of_char()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        return None


@dataclass
class Tokens:
    """A text's tokens: ids, byte spans (start, end) and how each shows (its bytes decoded)."""

    ids: list[int]
    spans: list[tuple[int, int]]
    pieces: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def token_spans(tokenizer: Any, text: str) -> Tokens:
    """The tokens of `text` (no special tokens added) with their UTF-8 byte spans."""
    if not has_offsets(tokenizer):
        raise DistillError(f"the tokenizer {type(tokenizer).__name__} does not report where its tokens sit in the "
                           "text (a slow, Python tokenizer): span alignment needs a fast tokenizer")
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    raw = text.encode("utf-8")
    spans = _byte_level_spans(tokenizer, encoding, raw) if is_byte_level(tokenizer) else None
    if spans is None:
        spans = _char_offset_spans(text, encoding.offsets)
    return Tokens(list(encoding.ids), spans, [shown_bytes(raw[a:b]) for a, b in spans])


def shown_bytes(piece: bytes) -> str:
    """A token's bytes as text, or, for part of a multi-byte character, its bytes in hex: ⟨e4 bd⟩."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "⟨" + " ".join(f"{b:02x}" for b in piece) + "⟩"


def _byte_level_spans(tokenizer: Any, encoding: Any, raw: bytes) -> list[tuple[int, int]] | None:
    """Spans from each token's own bytes, laid end to end from the text's first byte; None when they do not
    cover the text exactly (a normaliser changed it, an added token, a prefix space): then the offsets are
    used."""
    spans, cursor = [], 0
    for token in encoding.tokens:
        piece = token_bytes(tokenizer, token)
        if piece is None or raw[cursor : cursor + len(piece)] != piece:
            return None
        spans.append((cursor, cursor + len(piece)))
        cursor += len(piece)
    return spans if cursor == len(raw) else None


def _char_to_byte(text: str) -> list[int]:
    """char index -> byte offset, one entry more than the text has characters."""
    table = [0]
    for char in text:
        table.append(table[-1] + len(char.encode("utf-8")))
    return table


def _char_offset_spans(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character offsets as byte offsets, made non-decreasing (two tokens that share a character: the second
    starts where the first ends)."""
    table = _char_to_byte(text)
    spans, cursor = [], 0
    for start, end in offsets:
        start, end = max(table[start], cursor), table[end]
        end = max(end, start)
        spans.append((start, end))
        cursor = end
    return spans


@dataclass(frozen=True)
class Group:
    """Aligned tokens: teacher tokens first..last and student tokens first..last (inclusive) that cover the
    same bytes, start..end. `closed` is False for a trailing group whose two sides do not end together."""

    teacher: tuple[int, int]
    student: tuple[int, int]
    start: int
    end: int
    closed: bool = True

    @property
    def one_to_one(self) -> bool:
        return self.closed and self.teacher[0] == self.teacher[1] and self.student[0] == self.student[1]


def align_groups(teacher_spans: list[tuple[int, int]], student_spans: list[tuple[int, int]]) -> list[Group]:
    """Group the two token sequences by shared byte boundaries (GOLD's walk): advance the side whose current
    token ends first; when both end at the same byte, the tokens since the last such boundary form a group."""
    groups: list[Group] = []
    t = s = t_first = s_first = 0
    start = min(teacher_spans[0][0] if teacher_spans else 0, student_spans[0][0] if student_spans else 0)
    while t < len(teacher_spans) and s < len(student_spans):
        t_end, s_end = teacher_spans[t][1], student_spans[s][1]
        if t_end < s_end:
            t += 1
        elif s_end < t_end:
            s += 1
        else:
            groups.append(Group((t_first, t), (s_first, s), start, t_end))
            t += 1
            s += 1
            t_first, s_first, start = t, s, t_end
    if t < len(teacher_spans) or s < len(student_spans):
        end = max(teacher_spans[-1][1] if teacher_spans else 0, student_spans[-1][1] if student_spans else 0)
        groups.append(Group((t_first, len(teacher_spans) - 1), (s_first, len(student_spans) - 1), start, end, False))
    return groups


def one_to_one_share(groups: list[Group]) -> float:
    """The share of the aligned text's bytes whose tokens align one to one (1.0 for the same tokenizer)."""
    total = sum(g.end - g.start for g in groups)
    return sum(g.end - g.start for g in groups if g.one_to_one) / total if total else 1.0


def align_text(teacher_tokenizer: Any, student_tokenizer: Any, text: str) -> dict[str, Any]:
    """The alignment view's data for `text`: each side's tokens (pieces, byte spans), the groups, which
    tokens have a one-to-one partner, and the share of the bytes that align one to one."""
    teacher, student = token_spans(teacher_tokenizer, text), token_spans(student_tokenizer, text)
    groups = align_groups(teacher.spans, student.spans)
    t_single, s_single = [False] * len(teacher), [False] * len(student)
    for g in groups:
        if g.one_to_one:
            t_single[g.teacher[0]] = s_single[g.student[0]] = True
    return {
        "text": text,
        "teacher": {"pieces": teacher.pieces, "spans": teacher.spans, "one_to_one": t_single},
        "student": {"pieces": student.pieces, "spans": student.spans, "one_to_one": s_single},
        "groups": [{"teacher": list(g.teacher), "student": list(g.student), "start": g.start, "end": g.end,
                    "one_to_one": g.one_to_one} for g in groups],
        "one_to_one_share": one_to_one_share(groups),
        "bytes": len(text.encode("utf-8")),
    }


# ---------------------------------------------------------------------------------------
# the two vocabularies
# ---------------------------------------------------------------------------------------
def vocabulary_keys(tokenizer: Any) -> dict[Any, int]:
    """What each token stands for -> its id: the bytes of a byte-level token, the decoded text of another
    (tokens that decode to a broken character are left out), ("special", content) for a special or added token.
    A key two ids share is kept for the lower id only."""
    added = {token_id: token.content for token_id, token in tokenizer.added_tokens_decoder.items()}
    byte_level = is_byte_level(tokenizer)
    keys: dict[Any, int] = {}
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if token_id in added:
            key: Any = ("special", added[token_id])
        elif byte_level:
            key = token_bytes(tokenizer, token)
        else:
            key = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
            key = None if "\ufffd" in key else key
        if key is not None and key not in keys:
            keys[key] = token_id
    return keys


@dataclass
class VocabularyMatch:
    """Teacher and student ids that stand for the same token (the i-th of each), teacher ids ascending."""

    teacher_ids: torch.Tensor
    student_ids: torch.Tensor
    teacher_size: int
    student_size: int

    def __len__(self) -> int:
        return int(self.teacher_ids.numel())

    def position_of(self, side: str) -> torch.Tensor:
        """id -> its index in the match (-1 when unmatched), over `side`'s ids ('teacher' or 'student')."""
        ids, size = (self.teacher_ids, self.teacher_size) if side == "teacher" else (self.student_ids, self.student_size)
        table = torch.full((size,), -1, dtype=torch.long)
        table[ids] = torch.arange(ids.numel())
        return table


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def vocabulary_fingerprint(tokenizer: Any) -> str:
    """A hash of the vocabulary's content (token -> id), independent of the tokenizer's name. Kept per tokenizer
    object: reading a 49k-token vocabulary costs milliseconds of held GIL, and every view asks whether its models
    share one (a loaded tokenizer's vocabulary does not change)."""
    try:
        return _FINGERPRINTS[tokenizer]
    except (KeyError, TypeError):
        pass
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    fingerprint = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]
    try:
        _FINGERPRINTS[tokenizer] = fingerprint
    except TypeError:  # not weak-referenceable: measured each time
        pass
    return fingerprint


_MATCHES: dict[tuple[Any, ...], VocabularyMatch] = {}


def vocabulary_match(teacher_tokenizer: Any, student_tokenizer: Any, teacher_size: int | None = None,
                     student_size: int | None = None) -> VocabularyMatch:
    """The exact-match mapping between two vocabularies (`vocabulary_keys`), with the two end-of-text tokens paired
    (documents end alike whatever each tokenizer calls its end token: SmolLM2-Instruct's `<|im_end|>` with a BPE
    student's `<|endoftext|>`, even though the teacher also has an `<|endoftext|>`, which then stays unmatched). `*_size`: the output layers' widths
    (at least the tokenizer's length). Cached per pair of vocabularies."""
    teacher_size = max(teacher_size or 0, len(teacher_tokenizer))
    student_size = max(student_size or 0, len(student_tokenizer))
    key = (vocabulary_fingerprint(teacher_tokenizer), vocabulary_fingerprint(student_tokenizer), teacher_size,
           student_size, teacher_tokenizer.eos_token_id, student_tokenizer.eos_token_id)
    if key not in _MATCHES:
        t_keys, s_keys = vocabulary_keys(teacher_tokenizer), vocabulary_keys(student_tokenizer)
        pairs = {t_keys[k]: s_keys[k] for k in t_keys.keys() & s_keys.keys()}
        t_eos, s_eos = teacher_tokenizer.eos_token_id, student_tokenizer.eos_token_id
        if t_eos is not None and s_eos is not None:  # the end tokens pair with each other, whatever else matched
            pairs = {t: s for t, s in pairs.items() if t != t_eos and s != s_eos}
            pairs[t_eos] = s_eos
        ordered = sorted(pairs.items())
        _MATCHES[key] = VocabularyMatch(torch.tensor([t for t, _ in ordered], dtype=torch.long),
                                        torch.tensor([s for _, s in ordered], dtype=torch.long),
                                        teacher_size, student_size)
    return _MATCHES[key]
