"""Alignment on the six real tokenizers (GOLD.md section 3)."""

import itertools

import numpy as np
import pytest

from gold_distillation.alignment import align_spans, decode_with_spans, token_bytes, vocab_map
from gold_distillation.teacher_view import build_teacher_view, tokenize_completion

from .conftest import TOKENIZER_NAMES, decode_without_specials
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
        assert view.response_ids[-1] == teacher_tok.eos_token_id
    return view


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_decode_matches_hf_decode(tokenizers, name):
    tok = tokenizers[name]
    for text in CORPUS.values():
        ids = tok(text, add_special_tokens=True)["input_ids"]
        decoded = decode_with_spans(token_bytes(tok), ids)
        assert decoded.text == decode_without_specials(tok, ids)
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


def test_special_tokens_mid_response_are_zero_width(tokenizers):
    student, teacher = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    special = student.convert_tokens_to_ids("<|start_header_id|>")
    ids = student("Hello", add_special_tokens=False)["input_ids"] + [special] + student(" world", add_special_tokens=False)["input_ids"]
    view = check_alignment(student, teacher, ids)
    assert view.completion_text == "Hello world"
    # The special token joins the group it precedes (" world"), not "Hello".
    assert view.student_groups[1] == view.student_groups[2] != view.student_groups[0]


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
