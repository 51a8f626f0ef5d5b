"""Alignment on the six real tokenizers (GOLD.md section 3)."""

import itertools
import json
import random

import numpy as np
import pytest

from gold_distillation.alignment import align_spans, decode_with_spans, token_bytes, vocab_map
from gold_distillation.gold_metrics import respelled_metric, response_end_metrics
from gold_distillation.teacher_view import build_teacher_view, continuation_backend, student_end_ids, teacher_end_id, tokenize_completion

from .conftest import TOKENIZER_NAMES
from .corpus import CORPUS

PAIRS = list(itertools.permutations(TOKENIZER_NAMES, 2))


def group_bytes(text, spans, groups, num_groups):
    """Bytes of each group, from the first member's start to the last member's end."""
    raw = text.encode("utf-8")
    out = []
    for g in range(num_groups):
        members = np.flatnonzero(groups == g)
        out.append(raw[spans.starts[members[0]] : spans.ends[members[-1]]] if members.size else None)
    return out


def check_alignment(student_tok, teacher_tok, student_ids):
    """Build the view and assert the alignment invariants; returns the view."""
    view = build_teacher_view(student_ids, "Say something.", student_tok, teacher_tok)
    g = view.num_groups
    body_s = student_ids[:-1] if view.ended_with_eos else student_ids
    s_groups = view.student_groups[: len(body_s)]
    student = decode_with_spans(token_bytes(student_tok), body_s)
    if student_tok is teacher_tok:
        teacher_ids, teacher = body_s, student
    else:
        teacher_ids, teacher = tokenize_completion(teacher_tok, student.text)
    t_groups = view.teacher_groups[: len(teacher_ids)]

    # Groups partition both sequences in order: ids non-decreasing from 0, every group on both sides.
    for groups in (view.student_groups, view.teacher_groups):
        assert len(groups) == 0 or (groups[0] == 0 and np.all(np.diff(groups) >= 0))
        assert np.array_equal(np.unique(groups), np.arange(g))
    assert len(view.student_groups) == len(student_ids)
    # Every group's text is the same on both sides.
    text_groups = g - 1 if view.ended_with_eos else g
    assert group_bytes(student.text, student, s_groups, text_groups) == group_bytes(student.text, teacher, t_groups, text_groups)
    if view.ended_with_eos:
        # The EOS group is last and holds exactly the two EOS tokens.
        assert view.student_groups[-1] == g - 1 and np.sum(view.student_groups == g - 1) == 1
        assert view.teacher_groups[-1] == g - 1 and np.sum(view.teacher_groups == g - 1) == 1
        assert view.response_ids[-1] == (student_ids[-1] if student_tok is teacher_tok else teacher_end_id(teacher_tok))
    if view.unfinished:
        # Scored as ending where it was cut: the teacher's end token joins the last text group.
        assert view.response_ids[-1] == teacher_end_id(teacher_tok) and view.teacher_groups[-1] == g - 1
        assert view.student_groups[-1] == g - 1 and np.sum(view.teacher_groups == g - 1) >= 2
    return view


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_decode_matches_hf_decode(tokenizers, name):
    # The reference keeps special tokens (skip_special_tokens=False): a special token the student
    # writes is text the teacher reads. The ids hold BOS and, from the corpus's special-token
    # strings, special tokens mid-text.
    tok = tokenizers[name]
    for text in CORPUS.values():
        ids = tok(text, add_special_tokens=True)["input_ids"]
        decoded = decode_with_spans(token_bytes(tok), ids)
        assert decoded.text == tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert decoded.ends[-1] == len(decoded.text.encode("utf-8"))
        assert np.array_equal(decoded.starts[1:], decoded.ends[:-1])


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
def test_every_pair_aligns_the_corpus(tokenizers, student_name, teacher_name):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    multi_token_groups = 0
    for text in CORPUS.values():
        ids = student_tok(text, add_special_tokens=False)["input_ids"] + [student_tok.eos_token_id]
        view = check_alignment(student_tok, teacher_tok, ids)
        multi_token_groups += int(np.any(np.bincount(view.teacher_groups) > 1) or np.any(np.bincount(view.student_groups) > 1))
    # Different tokenizers really disagree somewhere on this corpus: the test exercises grouping.
    assert multi_token_groups > 0


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_same_tokenizer_groups_are_single_tokens(tokenizers, name):
    tok = tokenizers[name]
    for text in CORPUS.values():
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        view = check_alignment(tok, tok, ids)
        assert view.response_ids == ids
        assert np.array_equal(view.student_groups, np.arange(len(ids)))
        assert np.array_equal(view.teacher_groups, np.arange(len(ids)))


@pytest.mark.parametrize("student_name,teacher_name", [("llama3.1-instruct", "qwen2.5-instruct"), ("llama2", "gpt2"), ("gpt2", "mistral-7b-v0.1")])
def test_invalid_utf8_student_sequence_still_aligns(tokenizers, student_name, teacher_name):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    table = token_bytes(student_tok)
    lone_lead = [i for i, p in enumerate(table.pieces) if p == b"\xc3"][0]   # first byte of a 2-byte char
    continuation = [i for i, p in enumerate(table.pieces) if p == b"\xa9"][0]  # a stray continuation byte
    ids = student_tok("ab", add_special_tokens=False)["input_ids"] + [lone_lead] + student_tok(" cd", add_special_tokens=False)["input_ids"] + [continuation, continuation, student_tok.eos_token_id]
    view = check_alignment(student_tok, teacher_tok, ids)
    assert view.completion_text.count("\ufffd") == 3


# A special token that is not the final end token, mid-response: Llama 3.1's and Llama 2's are
# their tokenizers' EOS tokens.
MID_TEXT_SPECIALS = [
    ("llama3.1-instruct", "<|eot_id|>", "qwen2.5-instruct"),
    ("qwen2.5-instruct", "<|im_start|>", "llama3.1-instruct"),
    ("llama2", "</s>", "qwen2.5-instruct"),
]


def mid_text_special_response(student_tok, special):
    """"Hello" + the special token + " world" + EOS, as student ids; the special token's index."""
    head = student_tok("Hello", add_special_tokens=False)["input_ids"]
    tail = student_tok(" world", add_special_tokens=False)["input_ids"]
    return head + [student_tok.convert_tokens_to_ids(special)] + tail + [student_tok.eos_token_id], len(head)


@pytest.mark.parametrize("student_name,special,teacher_name", MID_TEXT_SPECIALS)
def test_special_token_mid_response_is_literal_text(tokenizers, student_name, special, teacher_name):
    student, teacher = tokenizers[student_name], tokenizers[teacher_name]
    ids, at = mid_text_special_response(student, special)
    # The special token is a special token of the student's own added-tokens definition.
    assert token_bytes(student).special[ids[at]]
    view = check_alignment(student, teacher, ids)  # every token on both sides in a group
    # What HF's decode writes for it there: its literal string (tokenizers >= 0.23 writes Llama 2's
    # normalized specials with their SentencePiece space, " </s>").
    decoded = [student.decode(ids[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False) for n in (at, at + 1)]
    written = decoded[1][len(decoded[0]) :]
    assert written.strip() == special
    assert view.ended_with_eos and view.completion_text.startswith("Hello" + written)
    # The special token's group holds only it, and the teacher reads that group as the literal string.
    g = view.student_groups[at]
    assert np.flatnonzero(view.student_groups == g).tolist() == [at]
    teacher_text = teacher.decode([view.response_ids[j] for j in np.flatnonzero(view.teacher_groups == g)])
    assert teacher_text == written
    assert all(not token_bytes(teacher).special[view.response_ids[j]] for j in np.flatnonzero(view.teacher_groups == g))


def test_unfinished_responses_are_scored_as_ended_where_cut(tokenizers):
    student, teacher = tokenizers["llama2"], tokenizers["qwen2.5-instruct"]
    ids = student("The answer is", add_special_tokens=False)["input_ids"]
    view = check_alignment(student, teacher, ids)
    assert view.unfinished and not view.ended_with_eos and view.completion_text == "The answer is"
    # No text and no end token (a lone SentencePiece "▁", zero-width after the decoder's strip):
    # its token and the teacher EOS form one group, the teacher's verdict on an empty answer.
    space = student.convert_tokens_to_ids("\u2581")
    empty = build_teacher_view([space], "Say something.", student, teacher)
    assert empty.completion_text == "" and empty.unfinished and empty.num_groups == 1
    assert empty.student_groups.tolist() == [0] and empty.teacher_groups.tolist() == [0]
    assert empty.response_ids == [teacher.eos_token_id]
    # One vocabulary: stock on-policy distillation, no end term for unfinished responses.
    same = build_teacher_view(ids, "Say something.", student, student)
    assert not same.unfinished and same.response_ids == ids
    # Counted in the metrics: 2 of 4 unfinished, 1 of 4 with neither text nor an end token.
    ended = build_teacher_view(ids + [student.eos_token_id], "Say something.", student, teacher)
    assert response_end_metrics([view, empty, ended, ended]) == {"gold/unfinished_share": 0.5, "gold/empty_unfinished_share": 0.25}


def test_align_spans_zero_width_and_end_rules():
    # text of 6 bytes; student: [0,2) [2,2) [2,6); teacher: [0,1) [1,2) [2,4) [4,6) [6,6)
    s_starts, s_ends = np.array([0, 2, 2]), np.array([2, 2, 6])
    t_starts, t_ends = np.array([0, 1, 2, 4, 6]), np.array([1, 2, 4, 6, 6])
    a = align_spans(s_starts, s_ends, t_starts, t_ends, 6)
    assert a.num_groups == 2
    assert a.student_groups.tolist() == [0, 1, 1]
    assert a.teacher_groups.tolist() == [0, 0, 1, 1, 1]


def test_vocab_map_matches_equal_byte_strings(tokenizers):
    llama, qwen = token_bytes(tokenizers["llama3.1-instruct"]), token_bytes(tokenizers["qwen2.5-instruct"])
    vmap = vocab_map(llama, qwen)
    assert vmap is vocab_map(llama, qwen)  # cached per pair
    assert 0.5 < vmap.matched_share < 1.0
    for s, t in zip(vmap.student_ids[::997], vmap.teacher_ids[::997]):
        assert llama.pieces[s] == qwen.pieces[t] and llama.pieces[s]
    # Special tokens stay out, but the two EOS tokens ("the response ends here") match each other.
    llama_tok, qwen_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    assert not vmap.student_matched[llama_tok.convert_tokens_to_ids("<|start_header_id|>")]
    assert vmap.teacher_to_student[qwen_tok.eos_token_id] == llama_tok.eos_token_id
    same = vocab_map(qwen, qwen)
    assert same.matched_share == 1.0 and np.array_equal(same.teacher_to_student, np.arange(qwen.vocab_size))


def group_texts(student_tok, teacher_tok, ids):
    """(student group text, teacher group text) per text group: the student's bytes of the group
    decoded, and the teacher's own decoding of its text tokens in the group (an unfinished
    response's last group also holds the appended end token, which is not text)."""
    view = build_teacher_view(ids, "Say something.", student_tok, teacher_tok)
    body = ids[:-1] if view.ended_with_eos else ids
    student = decode_with_spans(token_bytes(student_tok), body)
    raw = student.text.encode("utf-8")
    n_text = len(view.response_ids) - (view.ended_with_eos or view.unfinished)
    pairs = []
    for g in range(view.num_groups - view.ended_with_eos):
        s_members = np.flatnonzero(view.student_groups[: len(body)] == g)
        t_members = np.flatnonzero(view.teacher_groups[:n_text] == g)
        s_text = raw[student.starts[s_members[0]] : student.ends[s_members[-1]]].decode("utf-8")
        pairs.append((s_text, teacher_tok.decode([view.response_ids[j] for j in t_members])))
    return pairs


# Issue 10, item 1: a character the teacher's normalizer merged into an earlier one (NFC) belongs to
# the teacher token that holds that earlier character.
DECOMPOSED = {
    "e\u0301Y": [("e\u0301", "\u00e9"), ("Y", "Y")],
    " 4n\u0303Z": [(" ", " "), ("4", "4"), ("n\u0303", "\u00f1"), ("Z", "Z")],
    "Tie\u0302\u0301ng": [("Tie\u0302\u0301", "Ti\u1ebf"), ("ng", "ng")],
    "\u1100\u1161X": [("\u1100\u1161", "\uac00"), ("X", "X")],
}


@pytest.mark.parametrize("text", DECOMPOSED)
def test_decomposed_characters_join_the_teacher_token_they_compose_into(tokenizers, text):
    student, teacher = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    ids = student(text, add_special_tokens=False)["input_ids"]
    assert group_texts(student, teacher, ids) == DECOMPOSED[text]
    check_alignment(student, teacher, ids + [student.eos_token_id])


# Item 3: invalid UTF-8 of every kind. Each entry: the bytes, and for each byte the U+FFFD it
# becomes under the Unicode "maximal subpart" rule that Python and HF's byte-level decoders follow.
INVALID_UTF8 = {
    "truncated_3_byte": (b"\xe4\xb8", [0, 0]),
    "truncated_4_byte": (b"\xf0\x9f\x98", [0, 0, 0]),
    "overlong_2_byte": (b"\xc0\xaf", [0, 1]),
    "overlong_3_byte": (b"\xe0\x80\xaf", [0, 1, 2]),
    "surrogate": (b"\xed\xa0\x80", [0, 1, 2]),
    "above_u10ffff": (b"\xf4\x90\x80\x80", [0, 1, 2, 3]),
    "f5_to_ff": (b"\xf5\xff", [0, 1]),
    "lone_continuation": (b"\x80\xbf", [0, 1]),
    "two_truncated": (b"\xe4\xb8\xf0\x9f", [0, 0, 1, 1]),
}


@pytest.mark.parametrize("kind", INVALID_UTF8)
@pytest.mark.parametrize("student_name,teacher_name", [("llama3.1-instruct", "qwen2.5-instruct"), ("llama3.1-instruct", "llama2"), ("llama2", "qwen2.5-instruct"), ("gpt2", "mistral-7b-v0.1")])
def test_invalid_utf8_bytes_stay_with_their_character(tokenizers, student_name, teacher_name, kind):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    table = token_bytes(student_tok)
    byte_ids = {p[0]: i for i, p in enumerate(table.pieces) if len(p) == 1 and not table.special[i]}
    if table.byte_fallback.any():  # SentencePiece: the <0xHH> tokens; ByteFallback gives one U+FFFD per byte token
        byte_ids = {int(student_tok.convert_ids_to_tokens(int(i))[3:5], 16): int(i) for i in np.flatnonzero(table.byte_fallback)}
    bad, replacement = INVALID_UTF8[kind]
    if table.byte_fallback.any():
        replacement = list(range(len(bad)))
    head, tail = student_tok("ab", add_special_tokens=False)["input_ids"], student_tok.convert_tokens_to_ids(["c", "d"])
    ids = head + [byte_ids[b] for b in bad] + tail + [student_tok.eos_token_id]
    view = check_alignment(student_tok, teacher_tok, ids)
    assert view.completion_text == student_tok.decode(ids[:-1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert view.completion_text.count("\ufffd") == max(replacement) + 1
    groups = view.student_groups[len(head) : len(head) + len(bad)]
    for r in set(replacement):  # the bytes of one broken character share a group
        assert len(set(groups[np.array(replacement) == r].tolist())) == 1, (kind, groups)
    # ... and the text after them ("cd") is not pulled into it.
    assert groups[-1] < view.student_groups[len(head) + len(bad)]


# Item 2: the token appended after a student end token is the one the teacher's chat template
# writes after an assistant message (facts of the shared tokenizers); without a template, EOS.
END_OF_TURN = {
    "qwen2.5-instruct": "<|im_end|>",
    "llama3.1-instruct": "<|eot_id|>",
    "mistral-7b-v0.1": "</s>",
    "phi3-mini": "<|end|>",  # its EOS is <|endoftext|>
    "gpt2": "<|endoftext|>",
    "llama2": "</s>",
}


@pytest.mark.parametrize("teacher_name", TOKENIZER_NAMES)
def test_teacher_end_token_is_what_its_template_writes_after_an_assistant_message(tokenizers, teacher_name):
    student, teacher = tokenizers["llama3.1-instruct" if teacher_name != "llama3.1-instruct" else "qwen2.5-instruct"], tokenizers[teacher_name]
    ids = student("The answer is 42.", add_special_tokens=False)["input_ids"] + [student.eos_token_id]
    view = check_alignment(student, teacher, ids)
    expected = teacher.convert_tokens_to_ids(END_OF_TURN[teacher_name])
    assert view.response_ids[-1] == expected
    if teacher.chat_template:
        # Read off the template independently: the rendered one-turn conversation holds the
        # assistant content followed directly by that token.
        rendered = teacher.apply_chat_template(
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "The answer is 42."}], tokenize=False
        )
        assert "The answer is 42." + END_OF_TURN[teacher_name] in rendered


def test_student_end_tokens_default_to_eos_and_end_of_turn(tokenizers):
    phi3, qwen = tokenizers["phi3-mini"], tokenizers["qwen2.5-instruct"]
    end, eos = phi3.convert_tokens_to_ids("<|end|>"), phi3.eos_token_id
    assert student_end_ids(phi3) == {end, eos}
    body = phi3("Hi there", add_special_tokens=False)["input_ids"]
    for last in (end, eos):
        view = check_alignment(phi3, qwen, body + [last])
        assert view.ended_with_eos and view.response_ids[-1] == qwen.convert_tokens_to_ids("<|im_end|>")
    # The override names a token string; a string outside the vocabulary names the key.
    view = build_teacher_view(body + [end], "hi", phi3, qwen, teacher_end_token="<|endoftext|>")
    assert view.response_ids[-1] == qwen.convert_tokens_to_ids("<|endoftext|>")
    with pytest.raises(ValueError, match="gold.teacher_end_token.*not a token of the teacher"):
        build_teacher_view(body + [end], "hi", phi3, qwen, teacher_end_token="<|no such token|>")


# Item 5: decoders are modelled as the tokenizers library defines them. Llama 2's tokenizer with its
# decoder swapped for Metaspace variants (Metaspace treats the first token differently).
METASPACE = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
DECODERS = {
    "metaspace": METASPACE,
    "metaspace_never": {**METASPACE, "prepend_scheme": "never"},
    "metaspace_first": {**METASPACE, "prepend_scheme": "first"},
    "metaspace_old_format": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
    "metaspace_bytefallback_fuse": {"type": "Sequence", "decoders": [METASPACE, {"type": "ByteFallback"}, {"type": "Fuse"}]},
    "metaspace_bytefallback_fuse_strip": {"type": "Sequence", "decoders": [
        METASPACE, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 2, "stop": 0}]},
    "per_token_strip": {"type": "Sequence", "decoders": [{"type": "Strip", "content": "\u2581", "start": 1, "stop": 0}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
}


def with_decoder(tokenizers, decoder):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizers["llama2"].backend_tokenizer.to_str())
    spec["decoder"] = decoder
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        name_or_path=f"llama2 with decoder {decoder.get('type')}",
    )


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoders_are_modelled_as_the_tokenizers_library_defines_them(tokenizers, decoder):
    tok = with_decoder(tokenizers, DECODERS[decoder])
    table = token_bytes(tok)
    ids_of = tok.convert_tokens_to_ids
    cases = [[ids_of("\u2581\u2581"), ids_of("\u2581a")], [ids_of("<0x20>"), ids_of("\u2581a")], [1, ids_of("\u2581\u2581"), ids_of("\u2581a")]]
    rng = random.Random(0)
    pools = [range(3), range(3, 259), [ids_of("\u2581"), ids_of("\u2581\u2581"), ids_of("<0x20>")], range(len(tok))]
    cases += [[rng.choice(rng.choice(pools)) for _ in range(rng.randrange(7))] for _ in range(1500)]
    for ids in cases:
        # Special tokens are text (issue 14): the reference is HF's decode that keeps them.
        decoded = decode_with_spans(table, ids)
        assert decoded.text == tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), tok.convert_ids_to_tokens(ids)
        assert decoded.ends[-1:].tolist() in ([], [len(decoded.text.encode("utf-8"))])
    # And the alignment with a real teacher holds on a corpus text.
    check_alignment(tok, tokenizers["qwen2.5-instruct"], tok(CORPUS["whitespace"] + CORPUS["cjk"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])


@pytest.mark.parametrize("decoder,step", [
    ({"type": "WordPiece", "prefix": "##", "cleanup": True}, "WordPiece"),
    ({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, METASPACE]}, "Metaspace"),
    ({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Replace", "pattern": {"String": "\u2581\u2581"}, "content": "x"}]}, "Replace"),
    ({"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"Regex": "\u2581+"}, "content": " "}]}, "Regex"),
])
def test_a_decoder_gold_cannot_model_is_an_error_naming_it(tokenizers, decoder, step):
    with pytest.raises(ValueError, match=f"cannot model.*{step}"):
        token_bytes(with_decoder(tokenizers, decoder))


# Item 6: texts the teacher cannot spell as written are flagged per response (logged as
# gold/teacher_respelled_share) and their groups still cover the teacher tokens' own characters.
RESPELLED = [
    ("llama2", "a\u2581b and \u2581 more"),  # a literal U+2581 reads as a space to SentencePiece
    ("mistral-7b-v0.1", "x\u2581\u2581y"),
    ("phi3-mini", "one</s>two </s> three"),  # a non-special added token; each segment gets a prefix
    ("qwen2.5-instruct", "\u212b and e\u0301"),  # NFC: the Angstrom sign is a singleton
]


@pytest.mark.parametrize("teacher_name,text", RESPELLED)
def test_texts_the_teacher_respells_are_flagged_and_groups_stay_consistent(tokenizers, teacher_name, text):
    student, teacher = tokenizers["llama3.1-instruct"], tokenizers[teacher_name]
    ids = student(text, add_special_tokens=False)["input_ids"] + [student.eos_token_id]
    view = check_alignment(student, teacher, ids)
    assert view.respelled
    plain = build_teacher_view(student("plain text", add_special_tokens=False)["input_ids"], "hi", student, teacher)
    assert not plain.respelled
    assert respelled_metric([view, plain, plain, plain]) == {"gold/teacher_respelled_share": 0.25}
    # Each teacher token's own characters (its offsets in the text) lie inside its group.
    backend = teacher.backend_tokenizer
    backend.encode_special_tokens = True
    try:
        offsets = backend.encode(view.completion_text, add_special_tokens=False).offsets
    finally:
        backend.encode_special_tokens = False
    student_spans = decode_with_spans(token_bytes(student), ids[:-1])
    char_of_byte = np.cumsum([0] + [len(c.encode("utf-8")) for c in view.completion_text])
    for j, (start, end) in enumerate(offsets):
        members = np.flatnonzero(view.student_groups == view.teacher_groups[j])
        lo = np.searchsorted(char_of_byte, student_spans.starts[members[0]])
        hi = np.searchsorted(char_of_byte, student_spans.ends[members[-1]])
        assert lo <= start and (end <= hi or start == end), (j, teacher.convert_ids_to_tokens(view.response_ids[j]))


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_continuation_tokens_read_no_space_nobody_wrote(tokenizers, name):
    """Text that continues plain text, tokenized on its own: the tokens after the earlier text's
    decode to exactly the joined text (SentencePiece tokenizers would otherwise write "▁" at the
    piece's start); tokenizers that write no segment prefix keep their own backend."""
    tok = tokenizers[name]
    before = "Check this."
    for text in ["\nOk\n", "Fine", " and then some 42", "\n<|im_start|> literal"]:
        ids, spans = tokenize_completion(tok, text, continuation=True)
        assert tok.decode(tok(before, add_special_tokens=False)["input_ids"] + ids) == before + text
        assert spans.ends[-1] == len(text.encode("utf-8"))
    prefixed = any(step.get("type") == "Prepend" for step in (json.loads(tok.backend_tokenizer.to_str())["normalizer"] or {}).get("normalizers", []))
    assert (continuation_backend(tok, specials_as_text=True) is not tok.backend_tokenizer) == prefixed


# A Strip of the text's end too (the tokenizers library panics decoding it to an empty text, so the
# decoder test above leaves it out; the texts here are never empty).
PIECE_DECODERS = {**DECODERS, "strip_both_ends": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 1}]}}


@pytest.mark.parametrize("name", [*TOKENIZER_NAMES, *PIECE_DECODERS])
def test_a_text_decoded_in_pieces_is_the_decode_of_the_whole(tokenizers, name):
    """A text decoded in pieces, as the turns inside one assistant message are: the first piece
    starts the text, the others continue it, only the last ends it. The pieces' texts join into HF's
    decode of the whole, and a piece is the text it adds to HF's decode of the text before it (a
    SentencePiece "\u2581the" there is " the", not "the"); each piece's spans cover its text. Byte-level
    decoders have no rule for either end of a text: a piece decodes as it does alone. Cuts fall
    between characters (a character's bytes split over two pieces decode to U+FFFD in each)."""
    tok = with_decoder(tokenizers, PIECE_DECODERS[name]) if name in PIECE_DECODERS else tokenizers[name]
    # Where cuts fall between characters is a property of the ids: read it off Llama 2's own decoder.
    base = tokenizers["llama2"] if name in PIECE_DECODERS else tok
    table = token_bytes(tok)
    trailing_strip = table.text_strip is not None and table.text_strip[2] > 0
    byte_level = json.loads(tok.backend_tokenizer.to_str())["decoder"]["type"] == "ByteLevel"
    rng = random.Random(0)
    checked = 0

    def decode(ids, tok=tok):
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for text in CORPUS.values():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        whole = decode(ids)
        cuts = [k for k in range(1, len(ids)) if decode(ids, base).startswith(decode(ids[:k], base))]
        for a in cuts:
            b = rng.choice([k for k in cuts if k > a] + [len(ids)])
            pieces = [
                decode_with_spans(table, ids[:a], starts_text=True, ends_text=False),
                decode_with_spans(table, ids[a:b], starts_text=False, ends_text=b == len(ids)),
                decode_with_spans(table, ids[b:], starts_text=False, ends_text=True),
            ]
            assert "".join(p.text for p in pieces) == whole, (name, text, a, b)
            for piece in pieces:
                assert piece.ends[-1:].tolist() in ([], [len(piece.text.encode("utf-8"))])
                assert np.array_equal(piece.starts[1:], piece.ends[:-1])
            if not trailing_strip:  # a piece before the end then keeps everything it spells
                assert pieces[1].text == decode(ids[:b])[len(decode(ids[:a])) :]
            if byte_level:
                alone = decode_with_spans(table, ids[a:b])
                assert (alone.text, alone.starts.tolist(), alone.ends.tolist()) == (pieces[1].text, pieces[1].starts.tolist(), pieces[1].ends.tolist())
            checked += 1
    assert checked > 100
