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


# Pre-tokenizer steps that only split text (never drop, replace or add characters), so the
# pieces of a byte-level vocabulary spell the input exactly.
_SPLITTING_BEHAVIORS = ("Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def _text_normalization(tokenizer) -> str:
    """How the tokenizer may change text before splitting it: "none" (no normalizer and a
    byte-level decoder behind pre-tokenizer steps that only split: its tokens' bytes always spell
    the input), "nfc" (they do for NFC text), or "other" (checked text by text; e.g. SentencePiece,
    whose "\u2581" and per-segment prefix around added tokens do not survive a round trip)."""
    if [step.get("type") for step in _component_steps(tokenizer, "decoder")] != ["ByteLevel"]:
        return "other"
    for step in _component_steps(tokenizer, "pre_tokenizer"):
        kind = step.get("type")
        if kind == "ByteLevel" and step.get("add_prefix_space"):
            return "other"
        if kind in ("Split", "Punctuation") and step.get("behavior", "Isolated") not in _SPLITTING_BEHAVIORS:
            return "other"
        if kind not in ("ByteLevel", "Split", "Punctuation", "Digits"):
            return "other"
    steps = {step.get("type") for step in _component_steps(tokenizer, "normalizer")}
    return "none" if not steps else "nfc" if steps == {"NFC"} else "other"


@dataclass(frozen=True)
class _DecoderModel:
    """A tokenizer's decoder as GOLD models it (the steps of the tokenizers library's decoders).

    token_steps: per-token string steps before any byte step, in order: ("Replace", pattern,
    content), ("Strip", content, start, stop) or ("Metaspace", replacement, drops_in_first).
    Metaspace turns its replacement into a space, except in the first token the decoder sees when
    prepend_scheme is not "never": there the replacement is dropped. byte_level: ByteLevel (token
    characters are GPT-2 stand-ins for bytes). byte_fallback: <0xHH> tokens are bytes.
    text_strip: (content, start, stop) of a Strip after Fuse, applied to the whole text.
    """

    token_steps: tuple
    byte_level: bool
    byte_fallback: bool
    text_strip: tuple | None


def _decoder_model(tokenizer, name: str) -> _DecoderModel:
    """Read the decoder's steps and check that GOLD can model them exactly; ValueError naming the
    step otherwise. Supported: [ByteLevel], or per-token Replace/Metaspace/Strip steps, then
    optionally ByteFallback, then optionally Fuse and one whole-text Strip."""
    steps = _component_steps(tokenizer, "decoder")

    def refuse(what, why):
        raise ValueError(
            f"tokenizer {name!r} has decoder steps {[s.get('type') for s in steps]}; GOLD cannot model "
            f"{what}: {why}. GOLD supports byte-level BPE and SentencePiece tokenizers with the decoder "
            "steps it models exactly: ByteLevel alone, or Replace/Metaspace/Strip per token, then "
            "ByteFallback, then Fuse and a Strip of the whole text."
        )

    if not steps:
        refuse("a missing decoder", "the tokenizer would join tokens with spaces")
    if any(s.get("type") == "ByteLevel" for s in steps):
        if len(steps) != 1:
            refuse("ByteLevel with other steps", "ByteLevel is modelled as the only decoder step")
        return _DecoderModel((), True, False, None)
    token_steps, byte_fallback, fused, text_strip = [], False, False, None
    for step in steps:
        kind = step.get("type")
        per_token = not fused and not byte_fallback
        if kind == "Replace" and per_token:
            pattern = step.get("pattern", {})
            if "String" not in pattern:
                refuse(f"the step {step}", "only plain-string Replace patterns are modelled")
            token_steps.append(("Replace", pattern["String"], step["content"]))
        elif kind == "Metaspace" and per_token:
            # Older tokenizer files say add_prefix_space instead of prepend_scheme.
            scheme = step.get("prepend_scheme") or ("always" if step.get("add_prefix_space", True) else "never")
            token_steps.append(("Metaspace", step.get("replacement", _SPIECE_SPACE), scheme != "never"))
        elif kind == "Strip" and per_token:
            token_steps.append(("Strip", step["content"], step.get("start", 0), step.get("stop", 0)))
        elif kind == "ByteFallback" and not fused and not byte_fallback:
            byte_fallback = True
        elif kind == "Fuse" and not fused:
            fused = True
        elif kind == "Strip" and fused and text_strip is None and len(step["content"].encode("utf-8")) == 1:
            text_strip = (step["content"].encode("utf-8"), step.get("start", 0), step.get("stop", 0))
        else:
            refuse(f"the step {step} in that place", "it would act on text joined across tokens or on decoded byte runs")
    return _DecoderModel(tuple(token_steps), False, byte_fallback, text_strip)


def _decode_token(model: _DecoderModel, token: str, first: bool) -> str:
    """One token through the per-token string steps (first: the first token the decoder sees)."""
    for step in model.token_steps:
        if step[0] == "Replace":
            token = token.replace(step[1], step[2])
        elif step[0] == "Metaspace":
            token = token.replace(step[1], "" if first and step[2] else " ")
        else:
            _, content, start, stop = step
            chars = list(token)
            cut = 0
            while cut < min(start, len(chars)) and chars[cut] == content:
                cut += 1
            end = len(chars)
            while end > cut and len(chars) - end < stop and chars[end - 1] == content:
                end -= 1
            token = "".join(chars[cut:end])
    return token


@dataclass(frozen=True, eq=False)  # identity hash: tables are cached per tokenizer and per pair
class TokenBytes:
    """What each token id of one tokenizer contributes to decoded text, as UTF-8 bytes.

    pieces[i] is token i through the decoder's per-token steps at any position but the first; an
    added (e.g. special) token is what the tokenizer spells for its id through those steps, as HF's
    decode with skip_special_tokens=False does: its literal content (b"<|im_start|>"), except that
    tokenizers >= 0.23 spells a `normalized` added token normalized (Llama 2's <s> as "▁<s>", which
    its decoder writes " <s>"). A special token in a
    response is text the teacher reads; only the response's final end token is not
    (build_teacher_view pairs it with the teacher's end token).
    first_pieces: {id: bytes} where the first token decodes differently (a Metaspace decoder drops
    its replacement character there).
    text_strip: (content byte, start, stop): the decoder strips up to `start` leading and `stop`
    trailing `content` characters of the whole text (SentencePiece's leading space), or None.
    byte_fallback[i]: token i is a SentencePiece byte token such as <0x0A> (ByteFallback decoder).
    """

    pieces: tuple[bytes, ...]
    lengths: np.ndarray
    first_pieces: dict
    text_strip: tuple | None
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
    model = _decoder_model(tokenizer, name)
    vocab_size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    added = tokenizer.added_tokens_decoder
    special = np.zeros(vocab_size, dtype=bool)
    byte_fallback = np.zeros(vocab_size, dtype=bool)
    inv = _byte_level_decoder()
    # Characters whose per-token steps differ in the first position (Metaspace's replacement).
    first_sensitive = tuple(step[1] for step in model.token_steps if step[0] == "Metaspace" and step[2])
    # One pass over the vocabulary when the table is first needed; everything after is lookups.
    pieces: list[bytes] = []
    first_pieces: dict[int, bytes] = {}
    for i, tok in enumerate(tokens):
        if i in added:
            special[i] = added[i].special
        if i in added and (model.byte_level or tok is None):
            # ByteLevel's decoder passes an added token's content through (its characters are not byte symbols).
            pieces.append(added[i].content.encode("utf-8"))
        elif tok is None:
            pieces.append(b"")
        elif model.byte_level:
            pieces.append(bytes(inv[ch] for ch in tok))
        elif model.byte_fallback and i not in added and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            byte_fallback[i] = True
            pieces.append(bytes([int(tok[3:5], 16)]))
        else:
            pieces.append(_decode_token(model, tok, first=False).encode("utf-8"))
            if any(ch in tok for ch in first_sensitive):
                first_pieces[i] = _decode_token(model, tok, first=True).encode("utf-8")
    return TokenBytes(
        pieces=tuple(pieces),
        lengths=np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)),
        first_pieces=first_pieces,
        text_strip=model.text_strip,
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
    respelled: the tokens themselves decode to a different text than `text` (a tokenizer's
    normalizer changed it); the spans then come from its character offsets into `text`.
    """

    text: str
    starts: np.ndarray
    ends: np.ndarray
    respelled: bool = False


class _InvalidRanges:
    """Codec error handler that records where invalid UTF-8 was replaced by U+FFFD."""

    name = "gold-record-invalid"

    def __init__(self):
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, err: UnicodeDecodeError):
        self.ranges.append((err.start, err.end))
        return "\ufffd", err.end


def decode_with_spans(table: TokenBytes, ids, starts_text: bool = True, ends_text: bool = True) -> DecodedTokens:
    """Decode token ids to text and the byte span of every token in it, in one pass.

    The text is the concatenated token bytes decoded as UTF-8 with invalid sequences replaced by
    U+FFFD, which is what HF byte-level decoders produce. A token boundary inside an invalid
    sequence moves to the start of its replacement character, so the bytes of one broken
    character stay in one group and the text after it is not pulled in.
    SentencePiece byte tokens follow HF's ByteFallback decoder instead: a run of consecutive byte
    tokens that is not valid UTF-8 becomes one U+FFFD per token.
    starts_text, ends_text: whether the ids start / end the text the decoder is given. False for a
    piece in the middle of a longer text (a turn inside one assistant message): the decoder's rules
    for the text's start (Metaspace's first token, a Strip of leading characters: SentencePiece's
    "\u2581the" is "the" there and " the" elsewhere) or for its end (a Strip of trailing
    characters) are not applied, so the pieces' texts concatenate to the decode of the whole.
    """
    pieces = list(map(table.pieces.__getitem__, ids))
    ids = np.fromiter(ids, dtype=np.int64, count=len(pieces))
    lengths = table.lengths[ids]
    is_byte = table.byte_fallback[ids]
    if is_byte.any():
        lengths[_replace_invalid_byte_runs(pieces, is_byte)] = len(_REPLACEMENT)
    if starts_text and len(ids) and int(ids[0]) in table.first_pieces:
        pieces[0] = table.first_pieces[int(ids[0])]
        lengths[0] = len(pieces[0])
    if table.text_strip is not None:
        _strip_text(table.text_strip, pieces, lengths, starts_text, ends_text)
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
    """Byte spans of tokens known to spell `text` exactly (see TokenBytes.preserves, which holds
    only for plain byte-level decoders): the spans of decode_with_spans from the length table
    alone, without joining bytes. text is left empty."""
    ids = np.fromiter(ids, dtype=np.int64)
    lengths = table.lengths[ids]
    ends = np.cumsum(lengths)
    return DecodedTokens(text="", starts=ends - lengths, ends=ends)


def _strip_text(strip: tuple, pieces: list[bytes], lengths: np.ndarray, at_start: bool, at_end: bool) -> None:
    """In place: the decoder's whole-text Strip, (content byte, start, stop), cut from the pieces
    at the ends of the text that are there (at_start, at_end). Loops over at most start + stop
    visible tokens."""
    content, start, stop = strip
    visible = np.flatnonzero(lengths > 0).tolist()
    for from_start, budget in ((True, start if at_start else 0), (False, stop if at_end else 0)):
        for i in visible if from_start else reversed(visible):
            piece = pieces[i]
            kept = piece.lstrip(content) if from_start else piece.rstrip(content)
            cut = min(len(piece) - len(kept), budget)
            pieces[i] = piece[cut:] if from_start else piece[: len(piece) - cut]
            lengths[i] = len(pieces[i])
            budget -= cut
            if pieces[i] or budget == 0:
                break


_REPLACEMENT = "\ufffd".encode("utf-8")


def _replace_invalid_byte_runs(pieces: list[bytes], is_byte: np.ndarray) -> list[int]:
    """In place: each maximal run of byte tokens (is_byte, bool [n]) whose bytes are not valid
    UTF-8 becomes one U+FFFD per token. Every other token breaks a run, special tokens included
    (they are text, as in HF's decoder with skip_special_tokens=False). Loops over runs of byte
    tokens only. Returns the indices of the replaced pieces."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], is_byte.astype(np.int8), [0]))))
    replaced: list[int] = []
    for start, stop in zip(edges[::2], edges[1::2]):
        run = range(start, stop)
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
    replacement's start, so the tokens holding a broken character's bytes up to its last one are
    zero-width and join that character's group. Loops over invalid ranges only, which are rare.
    """
    position = np.arange(n_raw + 1, dtype=np.int64)
    shift = np.zeros(n_raw + 1, dtype=np.int64)
    for s, e in ranges:
        shift[e:] += 3 - (e - s)
        position[s + 1 : e] = s
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
def vocab_map(student: TokenBytes, teacher: TokenBytes, ends: tuple[int, int] | None = None) -> VocabMap:
    """Byte-equal vocabulary map of a tokenizer pair, built once per pair (cached).

    Identical vocabularies map every id to itself. Otherwise special tokens are left out, except
    the pair `ends` = (student id, teacher id) of the tokens that end a response in the two views
    (both mean "the response ends here"; default: the two EOS tokens), matched to each other;
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
    if ends is None and student.eos_token_id is not None and teacher.eos_token_id is not None:
        ends = (student.eos_token_id, teacher.eos_token_id)
    if ends is not None:
        pairs.append(ends)
    pairs.sort(key=lambda p: p[1])
    student_ids = np.array([s for s, _ in pairs], dtype=np.int64)
    teacher_ids = np.array([t for _, t in pairs], dtype=np.int64)
    student_matched = np.zeros(student.vocab_size, dtype=bool)
    student_matched[student_ids] = True
    teacher_to_student = np.full(teacher.vocab_size, -1, dtype=np.int64)
    teacher_to_student[teacher_ids] = student_ids
    return VocabMap(student_ids, teacher_ids, student_matched, teacher_to_student)
