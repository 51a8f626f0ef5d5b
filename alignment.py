"""Token bytes and linear-time span alignment of two tokenizations of one text (GOLD.md section 3).

Every token contributes a (possibly empty) run of UTF-8 bytes to the decoded text. Reading those
runs from a per-tokenizer table gives each token's byte span without decoding prefixes, and two
tokenizations of the same text are aligned at the byte offsets where a token ends on both sides.
"""

from __future__ import annotations

import codecs
import json
import unicodedata
import weakref
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_SPIECE_SPACE = "\u2581"


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def _component_steps(tokenizer, component: str) -> list[dict]:
    """Steps of a backend component ("decoder", "normalizer", "pre_tokenizer"; a Sequence
    flattened), read from the tokenizer's JSON."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get(component) or {}
    if spec.get("type") == "Sequence":
        return next((spec[key] for key in ("decoders", "normalizers", "pretokenizers") if key in spec), [])
    return [spec] if spec else []


def _text_normalization(tokenizer) -> str:
    """How the tokenizer may change text before splitting it: "none" (no normalizer, no added
    prefix space: its tokens' bytes always spell the input), "nfc" (they do for NFC text), or
    "other" (checked text by text; e.g. SentencePiece, whose "\u2581" and per-segment prefix
    around added tokens do not survive a round trip)."""
    steps = {step.get("type") for step in _component_steps(tokenizer, "normalizer")}
    if any(step.get("type") == "ByteLevel" and step.get("add_prefix_space") for step in _component_steps(tokenizer, "pre_tokenizer")):
        return "other"
    return "none" if not steps else "nfc" if steps == {"NFC"} else "other"


@dataclass(frozen=True, eq=False)  # identity hash: tables are cached per tokenizer and per pair
class TokenBytes:
    """What each token id of one tokenizer contributes to decoded text, as UTF-8 bytes.

    pieces[i] is the text token i writes: a special token writes its literal content from the
    tokenizer's added-tokens definition (e.g. b"<|im_start|>"), as HF's decode with
    skip_special_tokens=False does. A special token in a response is text the teacher reads; only
    the response's final end token is not (build_teacher_view pairs it with the teacher's end token).
    strip_leading_space: the decoder drops one leading space of the whole text (SentencePiece).
    byte_fallback[i]: token i is a SentencePiece byte token such as <0x0A>.
    """

    pieces: tuple[bytes, ...]
    lengths: np.ndarray
    strip_leading_space: bool
    byte_fallback: np.ndarray
    special: np.ndarray
    eos_token_id: int | None
    name: str
    text_normalization: str = "other"

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def preserves(self, text: str) -> bool:
        """Whether tokenizing `text` keeps it as it is, so token bytes spell it (no check needed)."""
        if self.text_normalization == "nfc":
            return unicodedata.is_normalized("NFC", text)
        return self.text_normalization == "none"


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_bytes(tokenizer) -> TokenBytes:
    """The TokenBytes table of a fast (Rust-backed) HF tokenizer, built once per tokenizer object.

    Supports byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece BPE with byte fallback
    (Llama 2, Mistral, Phi-3, Gemma). Other decoders raise ValueError.
    """
    table = _TABLES.get(tokenizer)
    if table is None:
        table = _build_token_bytes(tokenizer)
        _TABLES[tokenizer] = table
    return table


def _build_token_bytes(tokenizer) -> TokenBytes:
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {name!r} is a slow (Python) tokenizer; GOLD needs a fast tokenizer for token "
            "bytes and offsets. Load it with AutoTokenizer.from_pretrained(path, use_fast=True) or "
            "provide a tokenizer.json."
        )
    steps = {step.get("type") for step in _component_steps(tokenizer, "decoder")}
    byte_level = "ByteLevel" in steps
    if not byte_level and not ({"ByteFallback", "Metaspace", "Replace"} & steps):
        raise ValueError(
            f"tokenizer {name!r} has decoder steps {sorted(s for s in steps if s)}; GOLD supports "
            "byte-level BPE and SentencePiece (byte fallback) tokenizers."
        )
    strip = any(
        s.get("type") == "Strip" and s.get("content") == " " and s.get("start", 0) > 0
        for s in _component_steps(tokenizer, "decoder")
    ) or any(
        s.get("type") == "Metaspace" and s.get("prepend_scheme", "always") != "never"
        for s in _component_steps(tokenizer, "decoder")
    )

    vocab_size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    added = tokenizer.added_tokens_decoder
    special = np.zeros(vocab_size, dtype=bool)
    byte_fallback = np.zeros(vocab_size, dtype=bool)
    inv = _byte_level_decoder()
    # One pass over the vocabulary when the table is first needed; everything after is lookups.
    pieces: list[bytes] = []
    for i, tok in enumerate(tokens):
        if i in added:
            special[i] = added[i].special
            pieces.append(added[i].content.encode("utf-8"))
        elif tok is None:
            pieces.append(b"")
        elif byte_level:
            pieces.append(bytes(inv[ch] for ch in tok))
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            byte_fallback[i] = True
            pieces.append(bytes([int(tok[3:5], 16)]))
        else:
            pieces.append(tok.replace(_SPIECE_SPACE, " ").encode("utf-8"))
    return TokenBytes(
        pieces=tuple(pieces),
        lengths=np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)),
        strip_leading_space=strip,
        byte_fallback=byte_fallback,
        special=special,
        eos_token_id=tokenizer.eos_token_id,
        name=name,
        text_normalization=_text_normalization(tokenizer),
    )


@dataclass(frozen=True)
class DecodedTokens:
    """A token sequence decoded to text, with each token's byte span in that text.

    starts, ends: int64 [n] byte offsets into text.encode("utf-8"); tokens are contiguous and in
    order (starts[i] == ends[i-1]); a zero-width token has starts[i] == ends[i].
    """

    text: str
    starts: np.ndarray
    ends: np.ndarray


class _InvalidRanges:
    """Codec error handler that records where invalid UTF-8 was replaced by U+FFFD."""

    name = "gold-record-invalid"

    def __init__(self):
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, err: UnicodeDecodeError):
        self.ranges.append((err.start, err.end))
        return "\ufffd", err.end


def decode_with_spans(table: TokenBytes, ids) -> DecodedTokens:
    """Decode token ids to text and the byte span of every token in it, in one pass.

    The text is the concatenated token bytes decoded as UTF-8 with invalid sequences replaced by
    U+FFFD, which is what HF byte-level decoders produce. A token boundary inside an invalid
    sequence moves to the end of its replacement character, so the group around it covers it.
    SentencePiece byte tokens follow HF's ByteFallback decoder instead: a run of consecutive byte
    tokens that is not valid UTF-8 becomes one U+FFFD per token.
    """
    pieces = list(map(table.pieces.__getitem__, ids))
    ids = np.fromiter(ids, dtype=np.int64, count=len(pieces))
    lengths = table.lengths[ids]
    is_byte = table.byte_fallback[ids]
    if is_byte.any():
        lengths[_replace_invalid_byte_runs(pieces, is_byte, lengths)] = len(_REPLACEMENT)
    first = _stripped_token(table, pieces, lengths)
    if first is not None:
        pieces[first] = pieces[first][1:]
        lengths[first] -= 1
    raw = b"".join(pieces)
    ends = np.cumsum(lengths)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        recorder = _InvalidRanges()
        codecs.register_error(_InvalidRanges.name, recorder)
        text = raw.decode("utf-8", errors=_InvalidRanges.name)
        ends = _map_through_replacements(ends, recorder.ranges, len(raw))
    starts = np.concatenate(([0], ends[:-1]))[: len(ends)].astype(np.int64)
    return DecodedTokens(text=text, starts=starts, ends=ends)


def spell_spans(table: TokenBytes, ids) -> DecodedTokens:
    """Byte spans of tokens known to spell `text` exactly (see TokenBytes.preserves): the spans of
    decode_with_spans from the length table alone, without joining bytes. text is left empty."""
    ids = np.fromiter(ids, dtype=np.int64)
    lengths = table.lengths[ids]
    first = _stripped_token(table, table.pieces, lengths, ids)
    if first is not None:
        lengths[first] -= 1
    ends = np.cumsum(lengths)
    return DecodedTokens(text="", starts=ends - lengths, ends=ends)


def _stripped_token(table: TokenBytes, pieces, lengths: np.ndarray, ids=None) -> int | None:
    """Index of the token whose leading space the decoder strips (the first non-empty token, if it
    starts with a space and the decoder strips), else None. pieces[ids[i]] (or pieces[i]) is
    token i's bytes."""
    if not table.strip_leading_space or not lengths.any():
        return None
    first = int(np.argmax(lengths > 0))
    piece = pieces[first] if ids is None else pieces[int(ids[first])]
    return first if piece[:1] == b" " else None


_REPLACEMENT = "\ufffd".encode("utf-8")


def _replace_invalid_byte_runs(pieces: list[bytes], is_byte: np.ndarray, lengths: np.ndarray) -> list[int]:
    """In place: each maximal run of byte tokens (is_byte, bool [n]) whose bytes are not valid
    UTF-8 becomes one U+FFFD per token. Zero-width tokens (lengths [n] == 0) do not break a run;
    a special token (its literal text) does, as in HF's decoder. Loops over runs of byte tokens
    only. Returns the indices of the replaced pieces."""
    visible = np.flatnonzero(lengths > 0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], is_byte[visible].astype(np.int8), [0]))))
    replaced: list[int] = []
    for start, stop in zip(edges[::2], edges[1::2]):
        run = visible[start:stop].tolist()
        try:
            b"".join(pieces[i] for i in run).decode("utf-8")
        except UnicodeDecodeError:
            for i in run:
                pieces[i] = _REPLACEMENT
            replaced.extend(run)
    return replaced


def _map_through_replacements(offsets: np.ndarray, ranges, n_raw: int) -> np.ndarray:
    """Map byte offsets in the raw bytes to offsets in the text re-encoded after replacement.

    Each invalid range [s, e) became the 3 bytes of U+FFFD; an offset strictly inside it maps to the
    replacement's end. Loops over invalid ranges only, which are rare.
    """
    position = np.arange(n_raw + 1, dtype=np.int64)
    shift = np.zeros(n_raw + 1, dtype=np.int64)
    for s, e in ranges:
        shift[e:] += 3 - (e - s)
        position[s + 1 : e] = e
    return position[offsets] + shift[position[offsets]]


@dataclass(frozen=True)
class Alignment:
    """Aligned groups of two token sequences over the same text.

    student_groups: int64 [n_student] group id of each student token, non-decreasing from 0.
    teacher_groups: int64 [n_teacher] likewise for the teacher tokens.
    num_groups: G; every group id in [0, G) has at least one token on each side. An empty text has
    no groups (G = 0) and its tokens, all zero-width, have group id -1.
    """

    student_groups: np.ndarray
    teacher_groups: np.ndarray
    num_groups: int


def align_spans(
    student_starts: np.ndarray,
    student_ends: np.ndarray,
    teacher_starts: np.ndarray,
    teacher_ends: np.ndarray,
    n_bytes: int,
) -> Alignment:
    """Group two tokenizations of one text of n_bytes bytes at their common token ends.

    Spans are byte offsets (int arrays, [n_student] and [n_teacher]). Common boundaries are the
    offsets that end a token on both sides, plus 0 and n_bytes; consecutive boundaries delimit a
    group. A token with a non-empty span belongs to the group holding its last byte; a zero-width
    token joins the group that holds the byte after it (the group it precedes), or the last group
    at the end of the text. An empty text has no group: G = 0 and every (zero-width) token gets -1.
    O(n_student + n_teacher + n_bytes), vectorized.
    """
    ends_s = np.asarray(student_ends, dtype=np.int64)
    ends_t = np.asarray(teacher_ends, dtype=np.int64)
    on_student = np.zeros(n_bytes + 1, dtype=bool)
    on_teacher = np.zeros(n_bytes + 1, dtype=bool)
    on_student[ends_s] = True
    on_teacher[ends_t] = True
    common = on_student & on_teacher
    common[0] = True
    common[n_bytes] = True
    # rank[p]: number of common boundaries <= p, so the group whose right boundary is the first
    # common boundary >= p has index rank[p - 1] - 1 (0-based, the boundary at 0 is not a group).
    rank = np.cumsum(common)
    num_groups = int(rank[-1]) - 1 if n_bytes > 0 else 0

    def groups_of(starts, ends):
        starts = np.asarray(starts, dtype=np.int64)
        zero_width = starts == ends
        gid = np.where(zero_width, rank[ends] - 1, rank[np.maximum(ends - 1, 0)] - 1)
        return np.minimum(gid, num_groups - 1)

    return Alignment(
        student_groups=groups_of(student_starts, ends_s),
        teacher_groups=groups_of(teacher_starts, ends_t),
        num_groups=num_groups,
    )


@dataclass(frozen=True)
class VocabMap:
    """Vocabulary entries equal as byte strings on both sides (for the hybrid loss).

    student_ids, teacher_ids: int64 [n_matched], pairs of ids with equal token bytes.
    student_matched: bool [V_student]; teacher_to_student: int64 [V_teacher], -1 where unmatched.
    """

    student_ids: np.ndarray
    teacher_ids: np.ndarray
    student_matched: np.ndarray
    teacher_to_student: np.ndarray

    @property
    def matched_share(self) -> float:
        """Matched share of the teacher vocabulary: the adaptive weight of the matched part."""
        return len(self.teacher_ids) / max(len(self.teacher_to_student), 1)


@lru_cache(maxsize=8)
def same_vocabulary(a: TokenBytes, b: TokenBytes) -> bool:
    """Whether two tables describe one vocabulary (same bytes and special flags for every id)."""
    return a is b or (a.pieces == b.pieces and np.array_equal(a.special, b.special))


@lru_cache(maxsize=8)
def vocab_map(student: TokenBytes, teacher: TokenBytes) -> VocabMap:
    """Byte-equal vocabulary map of a tokenizer pair, built once per pair (cached).

    Identical vocabularies map every id to itself. Otherwise special tokens are left out, except
    the two EOS tokens, which both mean "the response ends here" and are matched to each other;
    where one side holds several ids with the same bytes (a SentencePiece byte token and the
    regular piece), the regular piece is matched.
    """
    if same_vocabulary(student, teacher):
        ids = np.arange(student.vocab_size, dtype=np.int64)
        return VocabMap(ids, ids, np.ones(student.vocab_size, dtype=bool), ids.copy())

    def canonical(table: TokenBytes) -> dict[bytes, int]:
        by_bytes: dict[bytes, int] = {}
        for i, piece in enumerate(table.pieces):
            if table.special[i] or not piece:
                continue
            if piece not in by_bytes or table.byte_fallback[by_bytes[piece]]:
                by_bytes[piece] = i
        return by_bytes

    student_by_bytes = canonical(student)
    pairs = [(s, t) for piece, t in canonical(teacher).items() if (s := student_by_bytes.get(piece)) is not None]
    if student.eos_token_id is not None and teacher.eos_token_id is not None:
        pairs.append((student.eos_token_id, teacher.eos_token_id))
    pairs.sort(key=lambda p: p[1])
    student_ids = np.array([s for s, _ in pairs], dtype=np.int64)
    teacher_ids = np.array([t for _, t in pairs], dtype=np.int64)
    student_matched = np.zeros(student.vocab_size, dtype=bool)
    student_matched[student_ids] = True
    teacher_to_student = np.full(teacher.vocab_size, -1, dtype=np.int64)
    teacher_to_student[teacher_ids] = student_ids
    return VocabMap(student_ids, teacher_ids, student_matched, teacher_to_student)
