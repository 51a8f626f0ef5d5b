"""Clear errors at the core level: each names the offending input and the fix. And the stated
truncation policy for a teacher context shorter than prompt + response."""

import numpy as np
import pytest
import torch

from gold_distillation.alignment import _byte_level_decoder, decode_with_spans, token_bytes
from gold_distillation.gold_forward import group_measures, student_gold_loss, teacher_payload
from gold_distillation.losses import compress_teacher_groups, hybrid_loss
from gold_distillation.teacher_view import build_teacher_view, build_teacher_views, collate_views, render_prompt, tokenize_completion

from .corpus import CORPUS
from .test_alignment import group_bytes


@pytest.fixture(scope="module")
def slow_tokenizer():
    """A slow (pure Python) byte-level tokenizer: it has no offsets and no Rust backend. Built on
    PreTrainedTokenizer, the Python base class in transformers 4 and 5 (5 has no slow GPT2Tokenizer)."""
    from transformers import PreTrainedTokenizer

    vocab = _byte_level_decoder()  # byte-level character -> byte value, a 256-entry vocabulary
    chars = {byte: ch for ch, byte in vocab.items()}

    class ByteLevelPythonTokenizer(PreTrainedTokenizer):
        vocab_size = len(vocab)

        def get_vocab(self):
            return dict(vocab)

        def _tokenize(self, text):
            return [chars[b] for b in text.encode("utf-8")]

        def _convert_token_to_id(self, token):
            return vocab[token]

        def _convert_id_to_token(self, index):
            return chars[index]

    tok = ByteLevelPythonTokenizer(eos_token="<|endoftext|>")
    assert not tok.is_fast
    return tok


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_slow_tokenizer_is_refused_with_the_fix(tokenizers, slow_tokenizer, role):
    fast = tokenizers["qwen2.5-instruct"]
    student, teacher = (fast, slow_tokenizer) if role == "teacher" else (slow_tokenizer, fast)
    with pytest.raises(ValueError, match=r"slow \(Python\) tokenizer.*use_fast=True"):
        build_teacher_view(student("hello", add_special_tokens=False)["input_ids"], "hi", student, teacher)


def test_tokenizer_without_byte_decoder_is_refused():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    word_level = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    with pytest.raises(ValueError, match="supports byte-level BPE and SentencePiece"):
        token_bytes(word_level)


def test_chat_prompt_without_template_names_the_fix(tokenizers):
    gpt2 = tokenizers["gpt2"]
    assert not gpt2.chat_template
    with pytest.raises(ValueError, match="no chat template.*pass the prompt as text"):
        render_prompt(gpt2, [{"role": "user", "content": "hi"}])


SYSTEM_PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 x 7?"}]


def test_template_refusing_a_system_message_names_teacher_roles_and_fix(tokenizers):
    """Issue 10, item 7: Mistral's template raises for a system message."""
    mistral, llama = tokenizers["mistral-7b-v0.1"], tokenizers["llama3.1-instruct"]
    with pytest.raises(ValueError, match=r"mistral-7b-v0.1.*\['system', 'user'\].*gold.fold_system_message=true"):
        render_prompt(mistral, SYSTEM_PROMPT)
    response = llama("42", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="gold.fold_system_message=true"):
        build_teacher_views([response], [SYSTEM_PROMPT], llama, mistral)
    # The setting folds the system message into the first user message.
    folded = [{"role": "user", "content": "Be brief.\n\nWhat is 6 x 7?"}]
    assert render_prompt(mistral, SYSTEM_PROMPT, fold_system_message=True) == render_prompt(mistral, folded)
    (view,) = build_teacher_views([response], [SYSTEM_PROMPT], llama, mistral, fold_system_message=True)
    assert view.prompt_ids == render_prompt(mistral, folded)
    # Other role errors name the roles and ask for prompts the template accepts.
    with pytest.raises(ValueError, match=r"\['user', 'user'\].*roles the teacher's template accepts"):
        render_prompt(mistral, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_mismatched_batch_sizes(tokenizers):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    responses = [s_tok(CORPUS[k], add_special_tokens=False)["input_ids"] for k in ("prose", "code")]
    with pytest.raises(ValueError, match="got 2 responses but 3 prompts"):
        build_teacher_views(responses, ["a", "b", "c"], s_tok, t_tok)
    views = build_teacher_views(responses, ["a", "b"], s_tok, t_tok)
    with pytest.raises(ValueError, match="no teacher views"):
        collate_views([], pad_token_id=0)
    with pytest.raises(ValueError, match="student_response_length=3 is shorter than the longest student response"):
        collate_views(views, pad_token_id=0, student_response_length=3)

    batch = collate_views(views, pad_token_id=0)
    r_t, g = batch.teacher_group_ids.shape[1], batch.num_groups
    t_logits = torch.randn(2, r_t, len(t_tok))
    with pytest.raises(ValueError, match=r"logits are \[B=2, R=.*\] but response_ids are \[1, .*must share \[B, R\]"):
        teacher_payload(t_logits, batch.sequences[:1, -r_t:], batch.teacher_group_ids[:1], g)
    payload = teacher_payload(t_logits, batch.sequences[:, -r_t:], batch.teacher_group_ids, g, topk=4)
    s_ids = torch.zeros_like(batch.student_group_ids)
    s_logits = torch.randn(*s_ids.shape, len(s_tok))
    with pytest.raises(ValueError, match="payload holds 1 samples but the student logits 2"):
        student_gold_loss(s_logits, s_ids, batch.student_group_ids, {k: v[:1] for k, v in payload.items()})
    # Group ids of another batch (more groups than the payload has).
    with pytest.raises(ValueError, match=f"group id {g - 1} but num_groups={g - 1}"):
        student_gold_loss(s_logits, s_ids, batch.student_group_ids, {k: v[:, : g - 1] for k, v in payload.items()})


def test_model_and_tokenizer_vocabulary_mismatch(tokenizers):
    tok = tokenizers["qwen2.5-instruct"]
    ids = torch.tensor([tok("Hello world", add_special_tokens=False)["input_ids"] + [len(tok) - 1]])
    groups = torch.arange(ids.shape[1]).unsqueeze(0)
    # A model whose vocabulary is smaller than the tokenizer's: a token id has no logit.
    with pytest.raises(ValueError, match=f"token id {len(tok) - 1} is outside the model's 1000 logits.*tokenizer"):
        group_measures(torch.randn(1, ids.shape[1], 1000), ids, groups, ids.shape[1])
    # Vocabulary tables of a tokenizer larger than the model's output layer.
    with pytest.raises(ValueError, match="teacher_matched .* covers 50 token ids but the model's logits have only 40"):
        compress_teacher_groups(torch.randn(3, 40), torch.zeros(3), 4, torch.ones(50, dtype=torch.bool))
    stats = compress_teacher_groups(torch.log_softmax(torch.randn(3, 40), -1), torch.zeros(3), 4, torch.ones(40, dtype=torch.bool))
    with pytest.raises(ValueError, match="student_matched .* covers 35 token ids but the model's logits have only 30"):
        hybrid_loss(torch.log_softmax(torch.randn(3, 30), -1), stats, torch.arange(40) % 30, torch.ones(35, dtype=torch.bool))
    # A padded model vocabulary (larger than the tokenizer's) is normal and works: extra entries are unmatched.
    padded = compress_teacher_groups(torch.log_softmax(torch.randn(3, 48), -1), torch.zeros(3), None, torch.ones(40, dtype=torch.bool))
    torch.testing.assert_close(padded.unmatched_mass, padded.top_probs.sum(-1) - torch.where(padded.top_ids < 40, padded.top_probs, 0).sum(-1))


def test_teacher_without_eos_token(tokenizers):
    import copy

    student = tokenizers["llama3.1-instruct"]
    teacher = copy.deepcopy(tokenizers["gpt2"])
    teacher.eos_token = None
    ids = student("Hi", add_special_tokens=False)["input_ids"]
    assert build_teacher_view([], "hi", student, teacher).num_groups == 0  # nothing to score, no EOS needed
    # A finished response and an unfinished one (scored as ending where it was cut) both need it.
    for response in (ids + [student.eos_token_id], ids):
        with pytest.raises(ValueError, match="has no eos_token.*set tokenizer.eos_token"):
            build_teacher_view(response, "hi", student, teacher)


# ---------------------------------------------------------------------------------------------
# Truncation policy (build_teacher_view docstring): the response is cut at the end, groups from the
# first one with a cut teacher token on are dropped, the prompt is kept unless it alone is too long.


@pytest.mark.parametrize("student_name,teacher_name", [("llama3.1-instruct", "qwen2.5-instruct"), ("qwen2.5-instruct", "llama2"), ("gpt2", "phi3-mini")])
def test_truncated_teacher_view_keeps_whole_groups(tokenizers, student_name, teacher_name):
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    ids = s_tok(CORPUS["code"] + CORPUS["emoji"], add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id]
    full = build_teacher_view(ids, "Say something.", s_tok, t_tok)
    prompt = len(full.prompt_ids)
    for limit in range(prompt + 1, prompt + len(full.response_ids), 5):
        view = build_teacher_view(ids, "Say something.", s_tok, t_tok, max_teacher_length=limit)
        assert view.truncated and len(view.prompt_ids) + len(view.response_ids) == limit
        assert view.prompt_ids == full.prompt_ids and view.response_ids == full.response_ids[: limit - prompt]
        g = view.num_groups
        assert g < full.num_groups
        # Kept groups are exactly the full view's first g groups, on both sides; the rest is -1.
        kept_s, kept_t = view.student_groups >= 0, view.teacher_groups >= 0
        assert np.array_equal(view.student_groups[kept_s], full.student_groups[full.student_groups < g])
        assert np.array_equal(view.teacher_groups[kept_t], full.teacher_groups[full.teacher_groups < g])
        assert np.all(view.student_groups[~kept_s] == -1) and np.all(np.diff(kept_s.astype(int)) <= 0)  # cut = a suffix
        assert np.array_equal(np.unique(view.student_groups[kept_s]), np.arange(g))
        assert np.array_equal(np.unique(view.teacher_groups[kept_t]), np.arange(g))
        # The kept groups still hold the same text on both sides.
        student = decode_with_spans(token_bytes(s_tok), ids[:-1])
        _, teacher = tokenize_completion(t_tok, student.text)
        n_t = min(len(teacher.starts), len(view.teacher_groups))
        assert group_bytes(student.text, student, view.student_groups[:-1], g) == group_bytes(
            student.text, teacher, view.teacher_groups[:n_t], g
        )


def test_prompt_longer_than_teacher_context(tokenizers):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    ids = s_tok("Short answer.", add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id]
    prompt = [{"role": "user", "content": CORPUS["prose"]}]
    full = build_teacher_view(ids, prompt, s_tok, t_tok)
    view = build_teacher_view(ids, prompt, s_tok, t_tok, max_teacher_length=10)
    assert view.truncated and view.num_groups == 0 and view.response_ids == []
    assert view.prompt_ids == full.prompt_ids[-10:]
    assert np.all(view.student_groups == -1)
    # An empty response with a too-long prompt is handled the same way (used to raise IndexError).
    empty = build_teacher_view([], prompt, s_tok, t_tok, max_teacher_length=10)
    assert empty.truncated and empty.num_groups == 0 and len(empty.prompt_ids) == 10
    # Such views still collate into valid tensors: one masked group column.
    batch = collate_views([view, empty], pad_token_id=0)
    assert batch.num_groups == 1 and batch.sequences.shape[1] == 11
    assert torch.all(batch.student_group_ids == -1) and torch.all(batch.teacher_group_ids == -1)


def test_truncation_limit_must_be_positive(tokenizers):
    tok = tokenizers["gpt2"]
    with pytest.raises(ValueError, match="max_teacher_length=0; it must be a positive token count or None"):
        build_teacher_view([1, 2], "hi", tok, tokenizers["llama2"], max_teacher_length=0)
