"""Multi-turn rollouts (multiturn_view.py): the teacher reads the conversation in its own template.

Rollouts come from the installed SkyRL's own gym generator (GOLDGymGenerator, skyrl-train 0.3.1
or skyrl 0.4.0) around a deterministic environment of 2-3 turns (observations of varied length and
roles, turns cut by the length limit) and a stand-in inference engine that answers with scripted
student tokens; GOLDGymGenerator records the conversation where SkyRL's generator builds it."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from gold_distillation.alignment import decode_with_spans, token_bytes
from gold_distillation.gold_forward import response_logits, teacher_payload
from gold_distillation.losses import span_logprobs, span_rewards
from gold_distillation.multiturn_view import assistant_runs, build_multiturn_view
from gold_distillation.teacher_view import collate_views, render_prompt, student_end_ids, teacher_end_id

from .conftest import TOKENIZERS_DIR, tiny_model

pytest.importorskip("skyrl_gym", reason="the multi-turn rollouts come from SkyRL's gym generator")
from .multiturn_rollouts import (  # noqa: E402
    LLAMA, PHI3, PROMPTS, QWEN, SCRIPTS, generator_input, gold_generator, student_turn_texts, teacher_conversation,
    text_in_context, token_logprobs,
)

def rollouts(tok, multi_turn: bool, tasks=("primes", "sum")):
    """The installed SkyRL's generator output for the tasks (through GOLDGymGenerator), and each
    trajectory's conversation after env.init's messages, as GOLDGymGenerator recorded it."""
    path = str(TOKENIZERS_DIR / Path(tok.name_or_path).name)
    _, generator = gold_generator(path, path, tok, multi_turn)
    output = asyncio.run(generator.generate(generator_input(tasks), disable_tqdm=True))
    assert output["gold_prompt_messages"] == [PROMPTS[t] for t in tasks]
    return list(tasks), output, output["gold_response_messages"]


def group_texts(tokenizer, ids, groups, end_ids, one_message):
    """({group: its text}, [text of each run]) by the tokenizer's own decode (HF's decoder, not
    GOLD's): every run of grouped tokens other than end tokens (an assistant turn's text), and each
    group in it, as the text it adds to the decode of its assistant message (text_in_context). A run
    is a message of its own, or with one_message a part of the message the first run starts (a
    SentencePiece decoder strips the leading space of a message's text, not of a part inside it)."""
    ids = np.asarray(ids)
    at = np.flatnonzero((groups >= 0) & ~np.isin(ids, list(end_ids)))
    runs = np.split(at, np.flatnonzero(np.diff(at) > 1) + 1) if len(at) else []
    ids = ids.tolist()
    texts: dict[int, str] = {}
    run_texts = []
    for run in runs:
        context = int(runs[0][0] if one_message else run[0])
        run_texts.append(text_in_context(tokenizer, ids, context, int(run[0]), int(run[-1]) + 1))
        for g in np.unique(groups[run]):
            members = run[groups[run] == g]
            texts[int(g)] = text_in_context(tokenizer, ids, context, int(members[0]), int(members[-1]) + 1)
    return texts, run_texts


BYTE_LEVEL_PAIRS = [(LLAMA, QWEN), (QWEN, LLAMA)]
# Phi-3: a SentencePiece teacher whose normalizer writes "▁" before every segment between special
# tokens, and whose template tokens strip the newline after them.
PAIRS = BYTE_LEVEL_PAIRS + [(LLAMA, PHI3), (QWEN, PHI3)]
# Phi-3 as the student: its decoder strips the leading space of the text it decodes, so a turn inside
# one assistant message decodes on its own without the space it has in the message.
SENTENCEPIECE_STUDENT_PAIRS = [(PHI3, LLAMA), (PHI3, QWEN)]
STOP_REASONS = {"primes": "length", "sum": "stop", "spacing": "stop"}  # primes: last turn cut; sum: first turn cut


def tasks_for(student_name, multi_turn):
    """The tasks a student's rollouts cover. "spacing" writes its turns as continuations of one
    assistant message (use_conversation_multi_turn=false; in a message of its own, its turn starting
    with a newline would join the newline a template writes before the content into one token). With
    use_conversation_multi_turn a Phi-3 student gets no tool observation: Phi-3's template writes no
    tool message, so the student would never read what the teacher reads."""
    if multi_turn:
        return ("sum",) if student_name == PHI3 else ("primes", "sum")
    return ("primes", "sum", "spacing")


@pytest.mark.parametrize("multi_turn", [True, False], ids=["conversation", "one_message"])
@pytest.mark.parametrize("student_name,teacher_name", PAIRS + SENTENCEPIECE_STUDENT_PAIRS)
def test_teacher_sequence_is_its_template_of_the_recorded_conversation(tokenizers, student_name, teacher_name, multi_turn):
    """The teacher's sequence is its own template applied to the conversation with each assistant
    turn as the student's tokenizer decodes it in its message (a continuation turn of a SentencePiece
    student keeps its leading space: "spacing" and the scripts' later turns start with a word after a
    space, a word without one and a newline), and every group spells the same text on both sides."""
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    tasks, output, records = rollouts(s_tok, multi_turn, tasks_for(student_name, multi_turn))
    assert output["stop_reasons"] == [STOP_REASONS[t] for t in tasks]
    for i, task in enumerate(tasks):
        ids, mask = output["response_ids"][i], output["loss_masks"][i]
        view = build_multiturn_view(ids, mask, PROMPTS[task], records[i], s_tok, t_tok, one_assistant_message=not multi_turn)
        turns = student_turn_texts(s_tok, ids, mask, multi_turn, student_end_ids(s_tok))
        expected = t_tok.apply_chat_template(teacher_conversation(task, records[i], multi_turn, turns), tokenize=True, return_dict=False)
        assert view.prompt_ids + view.response_ids == expected
        assert view.completion_text == turns[-1]
        assert view.prompt_ids == render_prompt(t_tok, PROMPTS[task])
        assert view.num_turns == len(SCRIPTS[task]["answers"]) == len(assistant_runs(mask))

        # Groups: only on assistant tokens (loss mask 1) and on the teacher's turn texts + end tokens.
        s_groups, t_groups = view.student_groups, view.teacher_groups
        assert np.all(s_groups[np.asarray(mask) == 0] == -1) and np.all(s_groups[np.asarray(mask) == 1] >= 0)
        for side in (s_groups, t_groups):
            grouped = side[side >= 0]
            assert np.all(np.diff(grouped) >= 0) and np.array_equal(np.unique(grouped), np.arange(view.num_groups))
        # Every group spells the same text on both sides (the end tokens' group aside).
        t_ids = np.asarray(view.response_ids)
        end_id = teacher_end_id(t_tok)
        s_texts, s_runs = group_texts(s_tok, ids, s_groups, student_end_ids(s_tok), not multi_turn)
        t_texts, t_runs = group_texts(t_tok, t_ids, t_groups, {end_id}, not multi_turn)
        assert s_texts == t_texts, task
        assert set(t_texts) | set(t_groups[(t_ids == end_id) & (t_groups >= 0)].tolist()) == set(range(view.num_groups))
        # The teacher's grouped tokens are exactly the turns' texts and their end-of-turn tokens.
        assert s_runs == t_runs == turns
        assert t_ids[t_groups >= 0][-1] == end_id
        if multi_turn:
            assert np.sum(t_ids[t_groups >= 0] == end_id) == len(turns)
        # One end-of-turn group per turn the template closes; a turn cut by the length limit ends
        # unfinished (the teacher's end token joins its last text group).
        assert view.unfinished == (output["stop_reasons"][i] == "length")


@pytest.mark.parametrize("student_name,teacher_name", PAIRS + SENTENCEPIECE_STUDENT_PAIRS + [(QWEN, QWEN)])
@pytest.mark.parametrize("multi_turn", [True, False], ids=["conversation", "one_message"])
def test_turn_rewards_are_span_log_ratios_of_unpadded_forwards(tokenizers, student_name, teacher_name, multi_turn):
    """Through the functions reward mode runs (collate, padded teacher forward, span rewards): each
    assistant token carries its group's log-ratio from unpadded forwards of the two tiny models over
    their own renderings; every loss-mask-0 token gets 0. With one tokenizer: stock on-policy
    distillation, -(log p_student - log p_teacher) per assistant token."""
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    family = {LLAMA: "llama", QWEN: "qwen2", PHI3: "llama"}
    student = tiny_model(family[student_name], len(s_tok), seed=11)
    teacher = tiny_model(family[teacher_name], len(t_tok), seed=12)
    tasks, output, records = rollouts(s_tok, multi_turn, tasks_for(student_name, multi_turn))
    views = [
        build_multiturn_view(output["response_ids"][i], output["loss_masks"][i], PROMPTS[task], records[i], s_tok, t_tok,
                             one_assistant_message=not multi_turn, student_prompt_ids=output["prompt_token_ids"][i])
        for i, task in enumerate(tasks)
    ]
    width = max(len(r) for r in output["response_ids"])
    batch = collate_views(views, pad_token_id=0, student_response_length=width)
    r_t = batch.teacher_group_ids.shape[1]
    with torch.no_grad():
        logits = response_logits(teacher, batch.sequences, batch.attention_mask, r_t)
    payload = teacher_payload(logits, batch.sequences[:, -r_t:], batch.teacher_group_ids, batch.num_groups, with_distributions=False)

    same = student_name == teacher_name
    for i, view in enumerate(views):
        prompt_ids, ids, mask = output["prompt_token_ids"][i], output["response_ids"][i], torch.tensor(output["loss_masks"][i])
        s_lp = token_logprobs(student, prompt_ids + ids)[len(prompt_ids) - 1 :]
        t_lp = token_logprobs(teacher, view.prompt_ids + view.response_ids)[len(view.prompt_ids) - 1 :]
        groups = batch.student_group_ids[i : i + 1, : len(ids)]
        rewards = span_rewards(span_logprobs(s_lp[None], groups, batch.num_groups), payload["teacher_span_logprobs"][i : i + 1], groups)[0]
        rewards = rewards * mask
        expected = torch.zeros(len(ids))
        for g in range(view.num_groups):
            members = torch.from_numpy(view.student_groups == g)
            expected[members] = t_lp[torch.from_numpy(view.teacher_groups == g)].sum() - s_lp[members].sum()
        torch.testing.assert_close(rewards, expected, atol=2e-4, rtol=1e-4)
        assert torch.all(rewards[mask == 0] == 0) and torch.all(expected[mask == 1] != 0)
        if same:
            assert view.prompt_ids + view.response_ids == list(prompt_ids) + list(ids)
            torch.testing.assert_close(rewards, -(s_lp - t_lp) * mask, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("student_name,teacher_name,task,special", [(LLAMA, QWEN, "imstart", "<|im_start|>"), (QWEN, LLAMA, "header", "<|start_header_id|>")])
def test_special_token_text_in_a_turn_is_literal_only_there(tokenizers, student_name, teacher_name, task, special):
    """The special-token rule applies inside assistant turns only: a teacher special-token string
    the student wrote is text the teacher reads; the template's own special tokens stay special."""
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    _, output, records = rollouts(s_tok, True, tasks=[task])
    view = build_multiturn_view(output["response_ids"][0], output["loss_masks"][0], PROMPTS[task], records[0], s_tok, t_tok)
    conversation = teacher_conversation(task, records[0], True)
    teacher = view.prompt_ids + view.response_ids
    template = t_tok.apply_chat_template(conversation, tokenize=True, return_dict=False)
    assert decode_with_spans(token_bytes(t_tok), teacher).text == t_tok.apply_chat_template(conversation, tokenize=False)
    special_id = t_tok.convert_tokens_to_ids(special)
    assert teacher.count(special_id) == template.count(special_id) - 1
    assert special_id not in np.asarray(view.response_ids)[view.teacher_groups >= 0]


def test_truncated_multiturn_view_keeps_whole_groups(tokenizers):
    s_tok, t_tok = tokenizers[LLAMA], tokenizers[QWEN]
    _, output, records = rollouts(s_tok, True, tasks=["primes"])
    args = (output["response_ids"][0], output["loss_masks"][0], PROMPTS["primes"], records[0], s_tok, t_tok)
    full = build_multiturn_view(*args)
    prompt = len(full.prompt_ids)
    for limit in range(prompt + 1, prompt + len(full.response_ids), 7):
        view = build_multiturn_view(*args, max_teacher_length=limit)
        assert view.truncated and view.response_ids == full.response_ids[: limit - prompt]
        g = view.num_groups
        # Kept: the full view's first g groups, each with all its tokens on both sides.
        assert np.array_equal(view.student_groups, np.where(full.student_groups < g, full.student_groups, -1))
        assert np.array_equal(view.teacher_groups, np.where(full.teacher_groups[: limit - prompt] < g, full.teacher_groups[: limit - prompt], -1))
        assert np.sum(full.teacher_groups < g) - np.sum(full.teacher_groups < 0) == np.sum(view.teacher_groups >= 0)


def test_a_response_without_assistant_tokens_has_no_groups(tokenizers):
    """SkyRL's overlong filtering zeroes a whole loss mask: no signal, and no error."""
    s_tok, t_tok = tokenizers[LLAMA], tokenizers[QWEN]
    tasks, output, records = rollouts(s_tok, True)
    ids = output["response_ids"][0]
    view = build_multiturn_view(ids, [0] * len(ids), PROMPTS[tasks[0]], records[0], s_tok, t_tok)
    assert view.num_groups == 0 and np.all(view.student_groups == -1) and np.all(view.teacher_groups == -1)
    assert view.prompt_ids + view.response_ids == t_tok.apply_chat_template(teacher_conversation(tasks[0], records[0], True), tokenize=True, return_dict=False)


def with_template(tokenizer, template):
    """A copy of the tokenizer with another chat template (the session's tokenizer stays as it is)."""
    from transformers import AutoTokenizer

    copy_ = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    copy_.chat_template = template
    return copy_


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("template,error", [
    # Qwen3-style: the generation prompt opens an empty reasoning block that history never shows.
    (CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'"), "not prefix-stable at assistant message 0"),
    # History without the earlier assistant turns.
    (CHATML.replace("{% for m in messages %}", "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}").replace("{% endfor %}", "{% endif %}{% endfor %}"),
     "does not write assistant message 0's content exactly once"),
    # No end-of-turn token after an assistant message.
    (CHATML.replace("+ '<|im_end|>\\n'", "+ '\\n\\n'"), "does not write the end-of-turn token"),
])
def test_teacher_templates_gold_cannot_read_a_conversation_with_are_errors(tokenizers, template, error):
    s_tok = tokenizers[LLAMA]
    t_tok = with_template(tokenizers[QWEN], template)
    tasks, output, records = rollouts(s_tok, True)
    with pytest.raises(ValueError, match=error):
        build_multiturn_view(output["response_ids"][0], output["loss_masks"][0], PROMPTS[tasks[0]], records[0], s_tok, t_tok,
                             teacher_end_token="<|im_end|>")


def test_turns_that_do_not_match_the_recorded_conversation_are_an_error(tokenizers):
    s_tok, t_tok = tokenizers[LLAMA], tokenizers[QWEN]
    tasks, output, records = rollouts(s_tok, True)
    with pytest.raises(ValueError, match="3 runs of loss-mask-1 tokens but the recorded conversation has 2 assistant messages"):
        build_multiturn_view(output["response_ids"][0], output["loss_masks"][0], PROMPTS[tasks[0]], records[0][:3], s_tok, t_tok)
    with pytest.raises(ValueError, match="gold.teacher_end_token"):
        build_multiturn_view(output["response_ids"][0], output["loss_masks"][0], PROMPTS[tasks[0]], records[0], s_tok, t_tok,
                             teacher_end_token="<|endoftext|>")


def test_turn_metrics(tokenizers):
    from gold_distillation.gold_metrics import turn_metrics

    s_tok = tokenizers[QWEN]
    tasks, output, records = rollouts(s_tok, True)
    views = [build_multiturn_view(output["response_ids"][i], output["loss_masks"][i], PROMPTS[t], records[i], s_tok, tokenizers[LLAMA])
             for i, t in enumerate(tasks)]
    masks = [torch.tensor(m) for m in output["loss_masks"]]
    width = max(len(m) for m in masks)
    loss_mask = torch.stack([torch.nn.functional.pad(m, (0, width - len(m))) for m in masks])
    response_mask = torch.stack([torch.nn.functional.pad(torch.ones(len(m)), (0, width - len(m))) for m in masks])
    metrics = turn_metrics([v.num_turns for v in views], loss_mask, response_mask)
    assert metrics["gold/turns_per_rollout"] == 2.5  # 3 turns and 2 turns
    assert metrics["gold/assistant_token_share"] == pytest.approx(sum(map(sum, output["loss_masks"])) / sum(map(len, output["loss_masks"])))
    assert 0 < metrics["gold/assistant_token_share"] < 1


def test_rollout_views_pick_the_builder_by_the_recorded_conversation(tokenizers):
    """A batch mixing multi-turn rollouts with a rollout recorded without a conversation (SkyRL's
    batched, single-turn generation): each gets the view its own builder gives."""
    from gold_distillation.multiturn_view import build_rollout_views
    from gold_distillation.teacher_view import build_teacher_view

    s_tok, t_tok = tokenizers[QWEN], tokenizers[LLAMA]
    tasks, output, records = rollouts(s_tok, True)
    single = s_tok("Plain answer.", add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id]
    responses = output["response_ids"] + [single]
    masks = output["loss_masks"] + [[1] * len(single)]
    prompts = [PROMPTS[t] for t in tasks] + [PROMPTS["sum"]]
    views = build_rollout_views(responses, masks, prompts, records + [[]], s_tok, t_tok, max_teacher_length=4096)
    for i in range(len(tasks)):
        expected = build_multiturn_view(responses[i], masks[i], prompts[i], records[i], s_tok, t_tok)
        assert views[i].response_ids == expected.response_ids and np.array_equal(views[i].student_groups, expected.student_groups)
        assert views[i].num_turns > 1
    expected = build_teacher_view(single, prompts[-1], s_tok, t_tok)
    assert views[-1].prompt_ids + views[-1].response_ids == expected.prompt_ids + expected.response_ids
    assert views[-1].num_turns == 1
    with pytest.raises(ValueError, match="must pair up"):
        build_rollout_views(responses, masks[:-1], prompts, records + [[]], s_tok, t_tok)


@pytest.mark.parametrize("student_name,teacher_name", BYTE_LEVEL_PAIRS)
def test_pieces_are_tokenized_apart_as_the_student_wrote_them(tokenizers, student_name, teacher_name):
    """One assistant message (use_conversation_multi_turn=false) whose turn ends in "." right before
    an observation starting with a newline: tokenizing the whole text at once joins ".\\n" into one
    token; the teacher, like the student, reads the turn and the observation as separate pieces. The
    text is the template's all the same."""
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    _, output, records = rollouts(s_tok, False, tasks=["merge"])
    view = build_multiturn_view(output["response_ids"][0], output["loss_masks"][0], PROMPTS["merge"], records[0], s_tok, t_tok,
                                one_assistant_message=True)
    conversation = teacher_conversation("merge", records[0], False)
    teacher = view.prompt_ids + view.response_ids
    template = t_tok.apply_chat_template(conversation, tokenize=True, return_dict=False)
    assert decode_with_spans(token_bytes(t_tok), teacher).text == t_tok.apply_chat_template(conversation, tokenize=False)
    joined = t_tok.convert_tokens_to_ids(t_tok.tokenize(".\n"))
    assert len(joined) == 1 and joined[0] in template and joined[0] not in teacher
    assert len(teacher) == len(template) + 1
