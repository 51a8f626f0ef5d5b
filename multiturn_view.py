"""The teacher's view of a multi-turn rollout: the conversation in the teacher's own chat template.

SkyRL's generator returns a multi-turn rollout as one response: the student's assistant turns (loss
mask 1) with the environment's observations and the template tokens between turns (loss mask 0),
all in the student's chat template. The teacher reads the same conversation rendered by its own
template: the messages env.init returned, then every assistant turn as the text the student's
tokens spell and every observation message as the environment returned it. Each assistant turn is
aligned on its own (its text plus its end-of-turn token), inside one teacher sequence, so one
teacher forward scores every turn in its context; observation and template tokens get no group.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .alignment import align_spans, decode_with_spans, same_vocabulary, token_bytes
from .teacher_view import (
    TeacherView,
    _apply_template,
    _with_eos_group,
    build_teacher_views,
    continuation_backend,
    fold_system,
    student_end_ids,
    teacher_end_id,
    tokenize_completion,
    truncate_view,
)

# Stands in for an assistant turn's text while the template is rendered: private-use characters,
# which no template trims or escapes, around a name no conversation holds (checked).
_SENTINEL = "\ue000GOLD-assistant-content-{}\ue001"


def assistant_runs(loss_mask) -> np.ndarray:
    """The student's assistant turns in a SkyRL response: the maximal runs of loss-mask-1 tokens.

    loss_mask: [R] of 0/1. Returns int64 [n_turns, 2] of [start, stop) positions, in order.
    """
    mask = np.asarray(loss_mask, dtype=np.int8) > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return edges.reshape(-1, 2).astype(np.int64)


@dataclass(frozen=True)
class _Part:
    """A piece of an assistant message's content in the teacher's conversation: the text of a
    student turn (turn >= 0) or an observation written inside the assistant message (turn = -1,
    SkyRL's use_conversation_multi_turn=false)."""

    text: str
    turn: int = -1


def build_multiturn_view(
    student_response_ids: list[int],
    loss_mask: list[int],
    prompt: list[dict],
    response_messages: list[dict],
    student_tokenizer,
    teacher_tokenizer,
    one_assistant_message: bool = False,
    student_eos_ids: frozenset[int] | None = None,
    max_teacher_length: int | None = None,
    teacher_end_token: str | None = None,
    fold_system_message: bool = False,
    student_prompt_ids: list[int] | None = None,
) -> TeacherView:
    """Build the teacher's sequence of a multi-turn rollout and align every assistant turn.

    student_response_ids, loss_mask: the rollout as SkyRL's generator returns it ([R] each); the
    loss-mask-1 runs are the assistant turns (assistant_runs), in the order of the assistant
    messages. prompt: the messages env.init returned (the student's prompt was rendered from them).
    response_messages: the messages the generator appended after them, as recorded: assistant
    turns and observation messages with their roles; observations after the last assistant turn
    are not part of the response and are ignored. one_assistant_message: the student wrote every
    turn and observation into one assistant message (SkyRL's use_conversation_multi_turn=false:
    observations are plain text between turns); the teacher reads it the same way.

    The teacher's sequence is its chat template applied to prompt + response messages, with each
    assistant turn's content replaced by the text of the student's tokens of that turn (a final
    student end token excluded; special tokens inside are literal text, as in build_teacher_view; a
    turn inside one assistant message other than its first is decoded as it reads in the message,
    see _turn_texts)
    and tokenized on its own as build_teacher_view tokenizes a completion; the template's text
    around the turns is tokenized piece by piece (as SkyRL tokenizes observations). Where the
    template writes each turn's text verbatim and no token crosses a piece boundary, this is
    apply_chat_template of the conversation token for token. The template must be prefix-stable:
    the conversation up to each assistant turn, rendered with the generation prompt, is a prefix
    of the whole rendering ending where the turn's text starts (so the teacher scores each turn in
    the context it would have generated it in); otherwise ValueError. A template that rewrites an
    assistant message's text (trims it, drops earlier reasoning) is not applied to it: the teacher
    reads the text the student wrote.

    Per turn: the student tokens and the teacher's tokens of the turn's text are aligned as in
    build_teacher_view; a turn ending with a student end token pairs it with the end-of-turn token
    the teacher's template writes after the assistant message (teacher_end_token overrides which
    token that is); a turn without one (cut by the length limit, or ended by a stop string) is
    scored as ending where it was cut: the teacher's end-of-turn token joins its last group. Turns
    inside one assistant message other than its last have no end token on either side.
    Group ids rise through the turns; student tokens with loss mask 0 and the teacher's
    observation and template tokens have group -1. prompt_ids is the teacher's rendering of
    `prompt` with the generation prompt; response_ids everything after it.

    With one vocabulary on both sides the teacher reads the student's own tokens
    (student_prompt_ids + student_response_ids) and every loss-mask-1 token is its own group: stock
    on-policy distillation. max_teacher_length: the truncation policy of build_teacher_view.
    """
    ids = list(student_response_ids)
    if len(loss_mask) != len(ids):
        raise ValueError(f"loss_mask has {len(loss_mask)} entries for {len(ids)} response tokens; they must pair up")
    runs = assistant_runs(loss_mask)
    messages = _trim_trailing_observations(response_messages)
    num_turns = sum(m.get("role") == "assistant" for m in messages)
    s_table = token_bytes(student_tokenizer)
    eos_ids = student_eos_ids or student_end_ids(student_tokenizer)
    if same_vocabulary(s_table, token_bytes(teacher_tokenizer)):
        view = _same_vocabulary_view(ids, runs, student_prompt_ids, num_turns)
        if len(runs):
            starts, _ = _message_edges(one_assistant_message, len(runs))
            last = _turn_texts(s_table, [ids[runs[-1][0] : runs[-1][1]]], eos_ids, starts[-1:], [True])[0]
            view = replace(view, completion_text=last.text, ended_with_eos=last.ended)
        return truncate_view(view, max_teacher_length)
    if len(runs) and len(runs) != num_turns:
        raise ValueError(
            f"the response has {len(runs)} runs of loss-mask-1 tokens but the recorded conversation has "
            f"{num_turns} assistant messages; GOLD reads each run as one assistant turn. Fix: record the "
            "conversation where the generator builds the response (GOLD's generator does), and keep every "
            "assistant turn's tokens in the loss mask"
        )

    turn_ids = [ids[a:b] for a, b in runs]
    turn_texts = _turn_texts(s_table, turn_ids, eos_ids, *_message_edges(one_assistant_message, len(runs)))
    conversation, parts, holders = _teacher_conversation(
        list(prompt), messages, [t.text for t in turn_texts], one_assistant_message, fold_system_message
    )
    pieces = _template_pieces(teacher_tokenizer, conversation, holders)

    end_id = teacher_end_id(teacher_tokenizer, teacher_end_token)
    t_table = token_bytes(teacher_tokenizer)
    prompt_ids = _tokenize_template(teacher_tokenizer, pieces[0])
    response: list[int] = []
    teacher_groups: list[np.ndarray] = []
    student_groups = np.full(len(ids), -1, dtype=np.int64)
    offset, respelled, ended, unfinished = 0, False, False, False
    for k, message_parts in enumerate(parts):
        end_group = None
        for j, part in enumerate(message_parts):
            # Parts after the first continue the message's plain text (one assistant message).
            continuation = j > 0
            if part.turn < 0:
                tokens = _tokenize_template(teacher_tokenizer, part.text, continuation)
                response += tokens
                teacher_groups.append(np.full(len(tokens), -1, dtype=np.int64))
                continue
            turn = turn_texts[part.turn]
            tokens, spans = tokenize_completion(teacher_tokenizer, turn.text, continuation)
            respelled |= spans.respelled
            n_bytes = len(turn.text.encode("utf-8"))
            alignment = align_spans(turn.decoded.starts, turn.decoded.ends, spans.starts, spans.ends, n_bytes)
            ends_message = part is message_parts[-1]
            ended, unfinished = turn.ended, ends_message and not turn.ended
            s_groups, t_groups, n_groups = _with_eos_group(alignment, ended, unfinished)
            s_groups, t_groups = np.where(s_groups >= 0, s_groups + offset, -1), np.where(t_groups >= 0, t_groups + offset, -1)
            a, b = runs[part.turn]
            student_groups[a:b] = s_groups
            response += tokens
            teacher_groups.append(t_groups[: len(tokens)])
            if ends_message:
                end_group = t_groups[-1]
            offset += n_groups
        after = _tokenize_template(teacher_tokenizer, pieces[k + 1])
        after_groups = np.full(len(after), -1, dtype=np.int64)
        if end_group is not None:
            after_groups[_end_position(t_table, after, end_id, teacher_tokenizer, teacher_end_token)] = end_group
        response += after
        teacher_groups.append(after_groups)
    view = TeacherView(
        prompt_ids=prompt_ids,
        response_ids=response,
        completion_text=turn_texts[-1].text if turn_texts else "",
        student_groups=student_groups,
        teacher_groups=np.concatenate(teacher_groups) if teacher_groups else np.zeros(0, dtype=np.int64),
        num_groups=offset,
        ended_with_eos=ended,
        unfinished=unfinished,
        respelled=respelled,
        num_turns=num_turns,
    )
    return truncate_view(view, max_teacher_length)


def _trim_trailing_observations(messages: list[dict]) -> list[dict]:
    """The response messages up to the last assistant message (SkyRL drops the final observation's
    tokens from the response)."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    return list(messages[: last + 1])


def _message_edges(one_assistant_message: bool, n_turns: int) -> tuple[list[bool], list[bool]]:
    """Per student turn: whether it starts its assistant message's text, and whether the template
    writes the end of the message after it (every turn is its own message; in one shared message
    only the first turn starts it and only the last ends it)."""
    turns = range(n_turns)
    return [not one_assistant_message or k == 0 for k in turns], [not one_assistant_message or k == n_turns - 1 for k in turns]


@dataclass(frozen=True)
class _TurnText:
    """A student turn decoded: its text without a final end token, the spans of its tokens in it
    (the end token not included), and whether it ended with a student end token."""

    text: str
    decoded: object
    ended: bool


def _turn_texts(
    table, turn_ids: list[list[int]], eos_ids: frozenset[int], starts_message: list[bool], ends_message: list[bool]
) -> list[_TurnText]:
    """Decode each turn as the part of its assistant message's text it is: a turn that does not
    start the message continues the text before it (a SentencePiece "\u2581the" there is " the",
    as in the decode of the whole message, not "the"). A final student end token counts as the
    turn's end only where the template ends the assistant message after it (elsewhere it is
    literal text, like any special token inside a response)."""
    texts = []
    for ids, opens, closes in zip(turn_ids, starts_message, ends_message):
        ended = closes and bool(ids) and ids[-1] in eos_ids
        decoded = decode_with_spans(table, ids[:-1] if ended else ids, starts_text=opens, ends_text=closes)
        texts.append(_TurnText(decoded.text, decoded, ended))
    return texts


def _teacher_conversation(
    prompt: list[dict], messages: list[dict], turn_texts: list[str], one_assistant_message: bool, fold_system_message: bool
) -> tuple[list[dict], list[list[_Part]], list[int]]:
    """The conversation the teacher's template renders, with a sentinel for the content of each
    assistant message; the parts that replace each sentinel, in order; and the index of the message
    holding each sentinel. Without student turns (a response whose loss mask is all 0) an assistant
    message's recorded text is template text."""
    prompt = fold_system(prompt) if fold_system_message else prompt
    conversation, parts, holders = list(prompt), [], []
    turn = 0
    for message in messages:
        if message.get("role") == "assistant":
            part = _Part(turn_texts[turn], turn) if turn < len(turn_texts) else _Part(_message_text(message))
            turn += 1
            if one_assistant_message and parts:
                parts[-1].append(part)
                continue
            holders.append(len(conversation))
            parts.append([part])
            conversation.append({**message, "content": _SENTINEL.format(len(parts) - 1)})
        elif one_assistant_message:
            parts[-1].append(_Part(_message_text(message)))
        else:
            conversation.append(message)
    return conversation, parts, holders


def _message_text(message: dict) -> str:
    content = message.get("content")
    if not isinstance(content, str):
        raise ValueError(
            f"a {message.get('role')!r} message has content of type {type(content).__name__}; GOLD's "
            "multi-turn teacher view reads text contents (as SkyRL's generator records them)"
        )
    return content


def _template_pieces(tokenizer, conversation: list[dict], holders: list[int]) -> list[str]:
    """The teacher template's text around the assistant contents (sentinels in the messages at
    indices `holders`): len(holders) + 1 pieces. Checks that each sentinel appears once, in order,
    and that the template is prefix-stable at every one."""
    fix = "pass conversations whose roles the teacher's template accepts, or set gold.fold_system_message=true"
    full = _apply_template(tokenizer, conversation, fix, tokenize=False)
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    cuts, at = [], 0
    for k, holder in enumerate(holders):
        sentinel = _SENTINEL.format(k)
        start = full.find(sentinel, at)
        if start < 0 or full.count(sentinel) != 1:
            raise ValueError(
                f"the chat template of teacher tokenizer {name!r} does not write assistant message {k}'s "
                "content exactly once; GOLD places the student's text where the template writes it. Fix: use "
                "a teacher chat template that writes each assistant message's content"
            )
        rendered = _apply_template(tokenizer, conversation[:holder], fix, tokenize=False, add_generation_prompt=True)
        if rendered != full[:start]:
            raise ValueError(
                f"the chat template of teacher tokenizer {name!r} is not prefix-stable at assistant message "
                f"{k}: the conversation before it, rendered with the generation prompt, is not the start of "
                "the whole conversation's rendering up to that message's content, so one teacher forward "
                "cannot score every turn in the context it was written in. Fix: use a teacher chat template "
                "that renders earlier messages the same whatever follows them"
            )
        cuts.append((start, start + len(sentinel)))
        at = start + len(sentinel)
    bounds = [0] + [x for cut in cuts for x in cut] + [len(full)]
    return [full[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]


def _tokenize_template(tokenizer, text: str, continuation: bool = False) -> list[int]:
    """Teacher tokens of template text: special tokens written by the template are special, as in
    apply_chat_template (which tokenizes its rendering without adding special tokens).
    continuation: the text continues plain text (no start-of-segment prefix)."""
    if not text:
        return []
    if continuation:
        return continuation_backend(tokenizer, specials_as_text=False).encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _end_position(table, tokens: list[int], end_id: int, tokenizer, override: str | None) -> int:
    """Where the template's end-of-turn token sits in the template text after an assistant
    message: its first token, after whitespace only."""
    for i, token in enumerate(tokens):
        if token == end_id:
            return i
        if table.pieces[token].strip():
            break
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    raise ValueError(
        f"the chat template of teacher tokenizer {name!r} does not write the end-of-turn token "
        f"{tokenizer.convert_ids_to_tokens(end_id)!r} right after an assistant message (it writes "
        f"{tokenizer.decode(tokens[:5])!r}); GOLD pairs it with the student's end of turn. Fix: set "
        f"gold.teacher_end_token to the token the template writes there (now {override!r})"
    )


def _same_vocabulary_view(ids: list[int], runs: np.ndarray, student_prompt_ids, num_turns: int) -> TeacherView:
    """One vocabulary: the teacher reads the student's own prompt and response tokens, one group per
    loss-mask-1 token (completion_text and ended_with_eos are the caller's to set)."""
    if student_prompt_ids is None:
        raise ValueError(
            "student and teacher share one vocabulary, so the teacher reads the student's own tokens; pass "
            "student_prompt_ids (the prompt_token_ids SkyRL's generator returned)"
        )
    groups = np.full(len(ids), -1, dtype=np.int64)
    mask = np.zeros(len(ids), dtype=bool)
    for a, b in runs:
        mask[a:b] = True
    groups[mask] = np.arange(int(mask.sum()))
    return TeacherView(
        prompt_ids=list(student_prompt_ids),
        response_ids=ids,
        completion_text="",
        student_groups=groups,
        teacher_groups=groups.copy(),
        num_groups=int(mask.sum()),
        ended_with_eos=False,
        num_turns=num_turns,
    )


def build_rollout_views(
    responses: list[list[int]],
    loss_masks: list[list[int]],
    prompts: list,
    conversations: list[list[dict]] | None,
    student_tokenizer,
    teacher_tokenizer,
    one_assistant_message: bool = False,
    student_prompt_ids: list[list[int]] | None = None,
    fold_system_message: bool = False,
    **kwargs,
) -> list[TeacherView]:
    """Teacher views of a batch of SkyRL rollouts: build_multiturn_view for a rollout whose recorded
    conversation (conversations[i], the messages the generator appended after env.init's) holds an
    assistant turn, build_teacher_views for the others (no recorded conversation: batched
    generation). kwargs: the keyword arguments both builders share (student_eos_ids,
    max_teacher_length, teacher_end_token)."""
    n = len(responses)
    if len(prompts) != n or len(loss_masks) != n or (conversations is not None and len(conversations) != n):
        raise ValueError(
            f"got {n} responses, {len(loss_masks)} loss masks, {len(prompts)} prompts and "
            f"{None if conversations is None else len(conversations)} conversations; they must pair up"
        )
    multi = [conversations is not None and any(m.get("role") == "assistant" for m in conversations[i]) for i in range(n)]
    single = [i for i in range(n) if not multi[i]]
    views: list[TeacherView | None] = [None] * n
    singles = build_teacher_views(
        [responses[i] for i in single], [prompts[i] for i in single], student_tokenizer, teacher_tokenizer,
        fold_system_message=fold_system_message, **kwargs,
    )
    for i, view in zip(single, singles):
        views[i] = view
    for i in (i for i in range(n) if multi[i]):
        views[i] = build_multiturn_view(
            responses[i], loss_masks[i], prompts[i], conversations[i], student_tokenizer, teacher_tokenizer,
            one_assistant_message=one_assistant_message, fold_system_message=fold_system_message,
            student_prompt_ids=student_prompt_ids[i] if student_prompt_ids is not None else None, **kwargs,
        )
    return views
