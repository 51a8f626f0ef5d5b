"""Adversarial rollouts and numeric edge cases: the GOLD code never crashes and never misaligns.

Property-based (hypothesis) over every ordered pair of the six real tokenizers: random unicode text
and random student token-id sequences (non-canonical splits, special tokens anywhere, byte pieces
that form invalid UTF-8, whitespace runs, EOS-only, empty, truncated without EOS). Runs are
deterministic (derandomize, no example database) so CI sees the same cases every time.
"""

import itertools
import math
import unicodedata
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gold_distillation.alignment import decode_with_spans, token_bytes, vocab_map
from gold_distillation.gold_forward import HybridTables, group_measures, student_gold_loss, teacher_payload
from gold_distillation.losses import compress_teacher_groups, generalized_jsd, hybrid_loss, span_rewards, uld_loss
from gold_distillation.teacher_view import build_teacher_view, build_teacher_views, collate_views, student_end_ids, teacher_end_id, tokenize_completion

from .conftest import TOKENIZER_NAMES
from .test_alignment import END_OF_TURN, check_alignment, group_texts

PAIRS = list(itertools.permutations(TOKENIZER_NAMES, 2))
PROMPT = "Say something."

# Deterministic and database-free; example counts keep the whole file within a few CPU minutes.
FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that stress tokenizers: whitespace runs, combining marks, ZWJ emoji, CJK, replacement and
# control characters, and the special-token strings of the six tokenizers (plain text here).
PIECES = (
    " ", "  ", "    ", "\n", "\n\n\n", "\t", "\r\n", " \n ", "\u00a0", "\u3000",
    "\u0301", "e\u0301", "\u0308", "\u200d", "\ufe0f", "👨‍👩‍👧‍👦", "🇯🇵", "👍🏽", "❤️‍🔥",
    "日本語", "中文", "한국어", "\ufffd", "\x00", "\x7f",
    "<|im_end|>", "<|eot_id|>", "</s>", "<s>", "<unk>", "[INST]", "<|endoftext|>", "<|end|>",
    "▁", "Ġ", "<0x0A>", "a", "ab", "1234567", "def f(x):",
)
TEXT = st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(PIECES)), max_size=24).map("".join)


@lru_cache(maxsize=None)
def id_pools(tokenizer):
    """Special ids and single-byte pieces >= 0x80 (they form invalid UTF-8 on their own)."""
    table = token_bytes(tokenizer)
    special = [int(i) for i in np.flatnonzero(table.special)]
    high_bytes = [i for i, p in enumerate(table.pieces) if len(p) == 1 and p[0] >= 0x80]
    return special, high_bytes


def student_ids(draw, tokenizer):
    """A random student response: segments of canonical text, non-canonically split text, random
    ids, special tokens and stray byte pieces, optionally ended by EOS (else truncated)."""
    special, high_bytes = id_pools(tokenizer)
    vocab = len(tokenizer)

    def canonical(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    segment = st.one_of(
        TEXT.map(canonical),
        # Non-canonical: the text tokenized in independent chunks (what sampling can produce).
        st.lists(TEXT, min_size=2, max_size=4).map(lambda parts: [i for part in parts for i in canonical(part)]),
        st.lists(st.integers(0, vocab - 1), max_size=6),
        st.lists(st.sampled_from(special), min_size=1, max_size=3),
        st.lists(st.sampled_from(high_bytes), min_size=1, max_size=4),
    )
    ids = [i for seg in draw(st.lists(segment, max_size=4)) for i in seg]
    if draw(st.booleans()):
        ids.append(tokenizer.eos_token_id)
    return ids


def assert_partition(view, n_student):
    """Groups partition both sides in order; -1 only where the documented policy puts it."""
    g = view.num_groups
    assert len(view.student_groups) == n_student
    for groups in (view.student_groups, view.teacher_groups):
        grouped = groups[groups >= 0]
        assert np.all(np.diff(groups[groups >= 0]) >= 0)
        assert np.array_equal(np.unique(grouped), np.arange(g))  # each group on each side
    # Without truncation every token on both sides has a group (special tokens are text; an
    # unfinished response's zero-width tokens join the teacher EOS).
    assert np.all(view.teacher_groups >= 0) and np.all(view.student_groups >= 0)


def check_view(student_tok, teacher_tok, ids):
    """Build the view (never raises) and check partition and group texts (via check_alignment
    whenever the text is non-empty)."""
    view = build_teacher_view(ids, PROMPT, student_tok, teacher_tok)
    assert_partition(view, len(ids))
    # Spans on both sides: one per token, contiguous, covering the text's bytes.
    body = ids[:-1] if view.ended_with_eos else ids
    student = decode_with_spans(token_bytes(student_tok), body)
    _, teacher = tokenize_completion(teacher_tok, student.text)
    appended_eos = view.ended_with_eos or view.unfinished
    assert view.unfinished == (not view.ended_with_eos and len(ids) > 0)
    for spans, n in ((student, len(body)), (teacher, len(view.response_ids) - appended_eos)):
        assert len(spans.starts) == len(spans.ends) == n
        assert np.array_equal(spans.starts[1:], spans.ends[:-1]) and np.all(spans.starts <= spans.ends)
        assert n == 0 or (spans.starts[0] == 0 and spans.ends[-1] == len(student.text.encode("utf-8")))
    # A special token before the end is its literal string in the text, as HF's decode writes it there
    # (tokenizers >= 0.23 writes Llama 2's normalized specials with their SentencePiece space), never zero-width.
    raw = student.text.encode("utf-8")
    for i in np.flatnonzero(token_bytes(student_tok).special[np.asarray(body, dtype=np.int64)]):
        before, through = (student_tok.decode(body[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False).encode("utf-8")
                           for n in (i, i + 1))
        assert through.startswith(before) and raw[student.starts[i] : student.ends[i]] == through[len(before) :]
        assert student_tok.added_tokens_decoder[int(body[i])].content.encode("utf-8") in through[len(before) :]
    if view.completion_text:
        check_alignment(student_tok, teacher_tok, ids)
    else:
        # An empty text: no text groups; only the end group may exist (the teacher's verdict on an
        # empty answer), holding every student token.
        assert view.num_groups == int(appended_eos)
        assert view.response_ids == ([teacher_end_id(teacher_tok)] if appended_eos else [])
    return view


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
@settings(max_examples=100, **FUZZ)
@given(text=TEXT, eos=st.booleans())
def test_random_text_aligns(tokenizers, student_name, teacher_name, text, eos):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    ids = student_tok(text, add_special_tokens=False)["input_ids"] + ([student_tok.eos_token_id] if eos else [])
    view = check_view(student_tok, teacher_tok, ids)
    # The teacher reads the student's own decoding of the response, special tokens as their literal
    # strings (the text's special-token strings became special ids of the student).
    body = ids[:-1] if view.ended_with_eos else ids
    assert view.completion_text == student_tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_random_token_ids_align(tokenizers, student_name, teacher_name, data):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    ids = student_ids(data.draw, student_tok)
    view = check_view(student_tok, teacher_tok, ids)
    body = ids[:-1] if view.ended_with_eos else ids
    assert view.completion_text == student_tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    # What the generated cases covered (shown by pytest --hypothesis-show-statistics).
    special = set(id_pools(student_tok)[0])
    event("invalid UTF-8 (U+FFFD in text)" if "\ufffd" in view.completion_text else "valid UTF-8")
    event("special token before the end" if any(i in special for i in body) else "no special token inside")
    event("ends with EOS" if view.ended_with_eos else "unfinished (no EOS)")
    event("empty text" if not view.completion_text else "non-empty text")
    event("multi-token group" if view.num_groups and max(np.bincount(view.student_groups[view.student_groups >= 0]).max(), np.bincount(view.teacher_groups).max()) > 1 else "one token per group")


# Decomposed Unicode (issue 10): Latin letters with diacritics (Vietnamese's stacked marks among
# them) and Hangul syllables, mixed with ASCII, the whole text then put in NFD: combining marks and
# conjoining jamo that Qwen's NFC normalizer composes again.
COMPOSED_LETTERS = [
    chr(c) for c in [*range(0xC0, 0x180), *range(0x1E00, 0x1F00)]
    if unicodedata.decomposition(chr(c)) and not unicodedata.decomposition(chr(c)).startswith("<")
]
NFD_TEXT = st.lists(
    st.one_of(
        st.sampled_from(COMPOSED_LETTERS),
        st.integers(0xAC00, 0xD7A3).map(chr),  # Hangul syllables: NFD gives 2-3 conjoining jamo
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from((" ", "\n", "Ti\u1ebfng Vi\u1ec7t", "\u0111\u01b0\u1ee3c")),
    ),
    min_size=1, max_size=24,
).map(lambda parts: unicodedata.normalize("NFD", "".join(parts)))


@pytest.mark.parametrize("student_name", [n for n in TOKENIZER_NAMES if n != "qwen2.5-instruct"])
@settings(max_examples=80, **FUZZ)
@given(text=NFD_TEXT)
def test_decomposed_text_groups_compose_to_the_teacher_groups(tokenizers, student_name, text):
    """For every group: NFC(student group text) == the Qwen teacher's text of the group."""
    student_tok, teacher_tok = tokenizers[student_name], tokenizers["qwen2.5-instruct"]
    ids = student_tok(text, add_special_tokens=False)["input_ids"]
    pairs = group_texts(student_tok, teacher_tok, ids)
    assert all(unicodedata.normalize("NFC", s) == t for s, t in pairs), pairs
    view = check_view(student_tok, teacher_tok, ids + [student_tok.eos_token_id])
    assert view.respelled == (not unicodedata.is_normalized("NFC", view.completion_text))
    event("NFC changes the text" if view.respelled else "text already NFC")
    event("a group composes characters" if any(s != t for s, t in pairs) else "no group composes")


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
@settings(max_examples=15, **FUZZ)
@given(text=TEXT, data=st.data())
def test_end_of_turn_rule(tokenizers, student_name, teacher_name, text, data):
    """A response ending in any of the student's end tokens (EOS, its template's end-of-turn token)
    gets the token the teacher's template writes after an assistant message; the two form the last
    group, alone."""
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    end = data.draw(st.sampled_from(sorted(student_end_ids(student_tok))))
    ids = student_tok(text, add_special_tokens=False)["input_ids"] + [end]
    view = check_view(student_tok, teacher_tok, ids)
    assert view.ended_with_eos
    assert view.response_ids[-1] == teacher_tok.convert_tokens_to_ids(END_OF_TURN[teacher_name])
    g = view.num_groups - 1
    assert view.student_groups[-1] == view.teacher_groups[-1] == g
    assert np.sum(view.teacher_groups == g) == 1
    assert np.sum(view.student_groups == g) == 1 or not view.completion_text
    event("student EOS" if end == student_tok.eos_token_id else "student end-of-turn token (not its EOS)")


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
def test_degenerate_responses(tokenizers, student_name, teacher_name):
    """Empty, EOS-only, special-only, invalid-bytes-only and whitespace-only responses."""
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    special, high_bytes = id_pools(student_tok)
    eos = student_tok.eos_token_id
    others = [i for i in special if i != eos][:2]
    whitespace = student_tok(" " * 64 + "\n\n\n\t\t  \n", add_special_tokens=False)["input_ids"]
    cases = {
        "empty": ([], 0),
        "eos_only": ([eos], 1),
        "specials_only": (others, None),
        "specials_then_eos": (others + [eos], None),
        "lone_high_bytes": (high_bytes[:3], None),
        "whitespace_run": (whitespace, None),
        "whitespace_run_eos": (whitespace + [eos], None),
    }
    for name, (ids, groups) in cases.items():
        view = check_view(student_tok, teacher_tok, ids)
        if groups is not None:
            assert view.num_groups == groups, name
    # The EOS-only response: one group holding exactly the two EOS tokens.
    view = build_teacher_view([eos], PROMPT, student_tok, teacher_tok)
    assert view.student_groups.tolist() == [0] and view.teacher_groups.tolist() == [0]
    # Special tokens are their literal strings: text groups, then the EOS group (GPT-2 has no
    # special token but its EOS).
    if others:
        view = build_teacher_view(others + [eos], PROMPT, student_tok, teacher_tok)
        literal = student_tok.decode(others, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert view.completion_text == literal and view.num_groups >= 2 and view.student_groups[-2] != view.student_groups[-1]


# ---------------------------------------------------------------------------------------------
# Rewards, losses and gradients on fuzzed batches (random logits of the real vocabulary sizes).


def hybrid_tables(student_tok, teacher_tok):
    vmap = vocab_map(token_bytes(student_tok), token_bytes(teacher_tok))
    return vmap, HybridTables(
        teacher_to_student=torch.from_numpy(vmap.teacher_to_student),
        student_matched=torch.from_numpy(vmap.student_matched),
        matched_weight=vmap.matched_share,
        unmatched_weight=1.0 - vmap.matched_share,
    )


def padded(rows, width, fill):
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def gold_signals(student_tok, teacher_tok, responses, seed, merge="geometric", model_padding=3):
    """Views, payload, rewards and both losses (with gradients) of one fuzzed batch. Logits are
    random over the tokenizer vocabularies plus `model_padding` unused model entries (padded model
    vocabularies, as Qwen's and Phi-3's are)."""
    views = build_teacher_views(responses, [PROMPT] * len(responses), student_tok, teacher_tok)
    batch = collate_views(views, pad_token_id=0)
    g = batch.num_groups
    gen = torch.Generator().manual_seed(seed)
    r_t = batch.teacher_group_ids.shape[1]
    t_logits = torch.randn(len(responses), r_t, len(teacher_tok) + model_padding, generator=gen) * 4
    vmap, tables = hybrid_tables(student_tok, teacher_tok)
    payload = teacher_payload(
        t_logits, batch.sequences[:, -r_t:], batch.teacher_group_ids, g, merge=merge, topk=8,
        teacher_matched=torch.from_numpy(vmap.teacher_to_student >= 0),
    )
    s_ids = padded(responses, batch.student_group_ids.shape[1], 0)
    s_logits = (torch.randn(*s_ids.shape, len(student_tok) + model_padding, generator=gen) * 4).requires_grad_()
    out = {"views": views, "batch": batch, "payload": payload}
    s_meas = group_measures(s_logits, s_ids, batch.student_group_ids, g, merge=None)
    out["rewards"] = span_rewards(s_meas.span_logprob, payload["teacher_span_logprobs"], batch.student_group_ids)
    out["delta"] = payload["teacher_span_logprobs"] - s_meas.span_logprob
    for name, hybrid in (("uld", None), ("hybrid", tables)):
        loss, metrics = student_gold_loss(s_logits, s_ids, batch.student_group_ids, payload, merge=merge, student_topk=8, hybrid=hybrid)
        (grad,) = torch.autograd.grad(loss, s_logits)
        out[name] = (loss, metrics, grad)
    return out


def assert_finite_signals(out):
    batch = out["batch"]
    for key, value in out["payload"].items():
        assert torch.isfinite(value.float()).all(), key
    rewards = out["rewards"]
    assert torch.isfinite(rewards).all()
    groups = batch.student_group_ids
    assert torch.all(rewards[groups < 0] == 0)
    # Every student token of a group carries that group's span log-ratio.
    assert torch.equal(rewards[groups >= 0], out["delta"].gather(1, groups.clamp(min=0))[groups >= 0])
    for name in ("uld", "hybrid"):
        loss, metrics, grad = out[name]
        assert torch.isfinite(loss) and loss >= 0, name
        assert all(math.isfinite(v) for v in metrics.values()), (name, metrics)
        assert torch.isfinite(grad).all(), name
        # Only positions that belong to a group receive gradient.
        ungrouped = batch.student_group_ids < 0
        assert torch.all(grad[ungrouped] == 0), name


@pytest.mark.parametrize("student_name,teacher_name", PAIRS)
@settings(max_examples=4, **FUZZ)
@given(data=st.data())
def test_fuzzed_batches_give_finite_rewards_losses_and_gradients(tokenizers, student_name, teacher_name, data):
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    # Responses capped at 16 tokens (a cap also makes truncated responses without EOS).
    responses = [student_ids(data.draw, student_tok)[:16] for _ in range(data.draw(st.integers(1, 2)))]
    merge = data.draw(st.sampled_from(("geometric", "chain")))
    out = gold_signals(student_tok, teacher_tok, responses, seed=len(responses), merge=merge)
    assert_finite_signals(out)
    assert out["batch"].num_groups >= 1


@pytest.mark.parametrize("student_name,teacher_name", [("llama3.1-instruct", "qwen2.5-instruct"), ("qwen2.5-instruct", "llama2")])
@pytest.mark.parametrize("merge", ["geometric", "chain"])
def test_batches_without_groups_give_zero_loss(tokenizers, student_name, teacher_name, merge):
    """All responses empty: one masked group column, zero loss, zero gradient."""
    student_tok, teacher_tok = tokenizers[student_name], tokenizers[teacher_name]
    out = gold_signals(student_tok, teacher_tok, [[], []], seed=0, merge=merge)
    assert out["batch"].num_groups == 1 and not out["payload"]["teacher_group_mask"].any()
    assert_finite_signals(out)
    for name in ("uld", "hybrid"):
        loss, _, grad = out[name]
        assert loss == 0 and torch.all(grad == 0)


# ---------------------------------------------------------------------------------------------
# Numeric edge cases of the loss math.


def random_logits(shape, seed, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def toy_inputs(vt=40, vs=30, seed=0):
    """Two samples, teacher [0,0,1,2,-1] / student [0,1,1,2,-1] groups (the second sample fully
    padded), with matching tables over the first 20 entries of each vocabulary."""
    t_groups = torch.tensor([[0, 0, 1, 2, -1], [-1, -1, -1, -1, -1]])
    s_groups = torch.tensor([[0, 1, 1, 2, -1], [-1, -1, -1, -1, -1]])
    t_ids = torch.randint(0, vt, (2, 5), generator=torch.Generator().manual_seed(seed))
    s_ids = torch.randint(0, vs, (2, 5), generator=torch.Generator().manual_seed(seed + 1))
    teacher_to_student = torch.full((vt,), -1, dtype=torch.long)
    teacher_to_student[:20] = torch.arange(20)
    student_matched = torch.zeros(vs, dtype=torch.bool)
    student_matched[:20] = True
    tables = HybridTables(teacher_to_student, student_matched, 0.5, 0.5)
    return t_groups, s_groups, t_ids, s_ids, tables


def losses_and_grads(t_logits, s_logits, temperature=1.0, topk=8, merge="geometric", beta=0.5):
    t_groups, s_groups, t_ids, s_ids, tables = toy_inputs(t_logits.shape[-1], s_logits.shape[-1])
    payload = teacher_payload(t_logits, t_ids, t_groups, 3, temperature, merge, topk=topk, teacher_matched=tables.teacher_to_student >= 0)
    results = {}
    for name, hybrid in (("uld", None), ("hybrid", tables)):
        leaf = s_logits.detach().clone().requires_grad_()
        loss, metrics = student_gold_loss(leaf, s_ids, s_groups, payload, temperature, merge, topk, hybrid, beta)
        loss.backward()
        results[name] = (loss, metrics, leaf.grad)
    return payload, results


def assert_all_finite(payload, results, grads_nonzero=True):
    for key, value in payload.items():
        assert torch.isfinite(value.float()).all(), key
    for name, (loss, metrics, grad) in results.items():
        assert torch.isfinite(loss), name
        assert all(math.isfinite(v) for v in metrics.values()), (name, metrics)
        assert torch.isfinite(grad.float()).all(), name
        # The loss really depends on the student's logits (saturated softmaxes may underflow).
        assert grad.abs().sum() > 0 or not grads_nonzero, name


@pytest.mark.parametrize("merge", ["geometric", "chain"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_masked_vocabulary_entries(merge, beta):
    """-inf logits (masked entries) on both sides, never on the sampled tokens."""
    t_groups, s_groups, t_ids, s_ids, _ = toy_inputs()
    t_logits, s_logits = random_logits((2, 5, 40), 1), random_logits((2, 5, 30), 2)
    t_mask = torch.rand(t_logits.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    s_mask = torch.rand(s_logits.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    t_mask.scatter_(-1, t_ids.unsqueeze(-1), False)
    s_mask.scatter_(-1, s_ids.unsqueeze(-1), False)
    t_logits = t_logits.masked_fill(t_mask, float("-inf"))
    s_logits = s_logits.masked_fill(s_mask, float("-inf"))
    payload, results = losses_and_grads(t_logits, s_logits, merge=merge, beta=beta)
    assert_all_finite(payload, results)
    # Masked student entries get no gradient.
    for _, _, grad in results.values():
        assert torch.all(grad[s_mask] == 0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_with_zero_probabilities(beta):
    """Disjoint supports: KL is infinite in theory, floored here; gradients stay finite."""
    student = torch.log_softmax(torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")]]), -1).requires_grad_()
    teacher = torch.log_softmax(torch.tensor([[float("-inf"), 1.0, 2.0, float("-inf")]]), -1)
    jsd = generalized_jsd(student, teacher, beta)
    jsd.sum().backward()
    assert torch.isfinite(jsd).all() and jsd.item() > 0
    assert torch.isfinite(student.grad).all()
    # Identical distributions with masked entries: exactly zero divergence.
    same = generalized_jsd(teacher, teacher, beta)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
@pytest.mark.parametrize("merge", ["geometric", "chain"])
def test_extreme_temperatures(temperature, merge):
    t_logits, s_logits = random_logits((2, 5, 40), 5), random_logits((2, 5, 30), 6)
    payload, results = losses_and_grads(t_logits, s_logits, temperature=temperature, merge=merge)
    assert_all_finite(payload, results, grads_nonzero=temperature > 1)
    if temperature > 1 and merge == "geometric":
        # Near-uniform distributions on both sides of similar size: a small ULD distance.
        assert results["uld"][0] < 0.2


def test_bf16_logits():
    t_logits, s_logits = random_logits((2, 5, 40), 7), random_logits((2, 5, 30), 8)
    payload32, results32 = losses_and_grads(t_logits, s_logits)
    payload16, results16 = losses_and_grads(t_logits.bfloat16(), s_logits.bfloat16())
    assert_all_finite(payload16, results16)
    for name in results32:
        assert results16[name][2].dtype == torch.bfloat16
        torch.testing.assert_close(results16[name][0], results32[name][0], atol=0.05, rtol=0.05)


@pytest.mark.parametrize("topk", [None, 40])
def test_zero_tail_mass(topk):
    """k = V leaves no tail: the payload's tail mass is zero and the top-k estimate is exact."""
    t_logits, s_logits = random_logits((2, 5, 40), 9), random_logits((2, 5, 30), 10)
    payload, results = losses_and_grads(t_logits, s_logits, topk=topk)
    assert_all_finite(payload, results)
    assert torch.all(payload["teacher_tail_mass"] == 0)
    assert results["uld"][1]["gold/topk_error_bound"] == 0


def test_one_hot_teacher():
    """A teacher with all mass on one entry per position (every other logit -inf)."""
    t_groups, _, t_ids, _, _ = toy_inputs()
    t_logits = torch.full((2, 5, 40), float("-inf")).scatter(-1, t_ids.unsqueeze(-1), 0.0)
    payload, results = losses_and_grads(t_logits, random_logits((2, 5, 30), 11))
    assert_all_finite(payload, results)
    present = payload["teacher_group_mask"]
    top = payload["teacher_top_probs"]
    assert torch.all(payload["teacher_tail_mass"][present] == 0)
    # Single-token groups keep their one-hot; the two-token group 0 (disjoint one-hots, whose
    # geometric mean is zero everywhere) splits its mass evenly between the two tokens.
    assert top[0, 1, 0] == 1 and top[0, 2, 0] == 1
    two = 2 if t_ids[0, 0] != t_ids[0, 1] else 1
    torch.testing.assert_close(top[0, 0, :two], torch.full((two,), 1.0 / two))


def test_fully_padded_rows_through_compression_and_hybrid():
    """Rows without mass (chain merge of an absent group) compress and compare without NaN."""
    empty = torch.full((2, 30), float("-inf"))
    stats = compress_teacher_groups(torch.full((2, 40), float("-inf")), torch.zeros(2), 8, torch.arange(40) < 20)
    assert torch.isfinite(stats.top_probs).all() and torch.all(stats.tail_mass == 0) and torch.all(stats.unmatched_mass == 0)
    leaf = empty.clone().requires_grad_()
    t2s = torch.where(torch.arange(40) < 20, torch.arange(40), -1)
    parts = hybrid_loss(leaf, stats, t2s, torch.arange(30) < 20)
    distance, _ = uld_loss(leaf, stats, 8)
    (parts["loss"].sum() + distance.sum()).backward()
    assert torch.isfinite(parts["loss"]).all() and torch.isfinite(distance).all()
    assert torch.isfinite(leaf.grad).all()
