"""The teacher's view of a student rollout and its alignment (GOLD.md sections 2-3).

Per sample: decode the student response, build the teacher's input as teacher-chat-template(prompt)
+ teacher-tokenize(completion) (+ teacher EOS when the student ended with its EOS), and group both
response token sequences into aligned spans. `collate_views` pads a batch of views into tensors.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch
from jinja2.exceptions import TemplateError

from .alignment import Alignment, DecodedTokens, align_spans, decode_with_spans, same_vocabulary, spell_spans, token_bytes

Prompt = str | list[dict]


@dataclass(frozen=True)
class TeacherView:
    """One rollout seen by the teacher, aligned with the student's response tokens.

    prompt_ids / response_ids: teacher token ids of the rendered prompt and of the response.
    student_groups: int64 [n_student_response]; teacher_groups: int64 [n_teacher_response]; both
    non-decreasing, and every group id in [0, G) holds at least one token on each side. -1 marks a
    token cut by the teacher-context truncation (the only tokens without a group).
    num_groups: G (the EOS group, when present, is the last one); 0 for a response without tokens.
    unfinished: the response has no final end token (cut at the length limit) and was scored as if
    it ended there: the teacher's end token joins its last group (see build_teacher_view).
    truncated: the teacher response was cut to fit the teacher context (see build_teacher_view).
    respelled: the teacher's tokens of the completion spell a different text than the student's
    (its normalizer changed it: NFC, a literal "\u2581" read as a space, a prefix added around an
    added token); the groups still cover the student's text, from the teacher's character offsets.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    completion_text: str
    student_groups: np.ndarray
    teacher_groups: np.ndarray
    num_groups: int
    ended_with_eos: bool
    unfinished: bool = False
    truncated: bool = False
    respelled: bool = False


def render_prompt(tokenizer, prompt: Prompt, fold_system_message: bool = False) -> list[int]:
    """Teacher token ids of a prompt: chat messages through the teacher's own chat template (with
    the generation prompt), plain text tokenized with the teacher's special tokens (e.g. BOS).
    fold_system_message: fold a leading system message into the first user message first (for
    templates that refuse a system role). A template error becomes a ValueError naming the
    tokenizer, the roles and the fix."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"teacher tokenizer {tokenizer.name_or_path!r} has no chat template but the prompt is a "
            "list of chat messages; use an instruct teacher, set a template on the tokenizer, or pass "
            "the prompt as text."
        )
    messages = fold_system(prompt) if fold_system_message else prompt
    roles = [m.get("role") for m in messages]
    if "system" in roles and not fold_system_message:
        fix = "set gold.fold_system_message=true to fold the system message into the first user message"
    else:
        fix = "pass prompts whose roles the teacher's template accepts (e.g. alternating user/assistant)"
    # return_dict=False: transformers 5 returns a BatchEncoding by default, 4.x a list of ids.
    return list(_apply_template(tokenizer, messages, fix, add_generation_prompt=True, tokenize=True, return_dict=False))


def fold_system(messages: list[dict]) -> list[dict]:
    """Messages with a leading system message folded into the first user message (the system
    content, a blank line, then the user's); unchanged without a leading system message or a user
    message to fold it into."""
    if not messages or messages[0].get("role") != "system":
        return messages
    rest = list(messages[1:])
    user = next((i for i, m in enumerate(rest) if m.get("role") == "user"), None)
    if user is None:
        return messages
    rest[user] = {**rest[user], "content": f"{messages[0]['content']}\n\n{rest[user]['content']}"}
    return rest


def _apply_template(tokenizer, messages: list[dict], fix: str, **kwargs):
    """tokenizer.apply_chat_template, with a template's own error (jinja's TemplateError, raised
    e.g. by Mistral's template for a system message) turned into a ValueError that names the
    tokenizer, the message roles and `fix`."""
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except TemplateError as err:
        raise ValueError(
            f"the chat template of tokenizer {tokenizer.name_or_path!r} refused messages with roles "
            f"{[m.get('role') for m in messages]}: {err}. Fix: {fix}"
        ) from err


_END_PROBE = "GOLD end-of-turn probe"
_END_OF_TURN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def end_of_turn_id(tokenizer) -> int | None:
    """The token that ends an assistant turn: read off the tokenizer's own chat template by
    rendering a one-turn user/assistant conversation; the first token the template writes after the
    assistant's content (after any whitespace) when that is an added token (Phi-3: <|end|>, not its
    EOS <|endoftext|>). Without a template, or when plain text follows the content, the EOS.
    Cached per tokenizer."""
    if tokenizer in _END_OF_TURN:
        return _END_OF_TURN[tokenizer]
    end = tokenizer.eos_token_id
    if getattr(tokenizer, "chat_template", None):
        conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _END_PROBE}]
        fix = "set the ending token yourself: gold.teacher_end_token (teacher) or gold.student_eos_token_ids (student)"
        text = _apply_template(tokenizer, conversation, fix, tokenize=False)
        at = text.rfind(_END_PROBE)
        after = tokenizer(text[at + len(_END_PROBE) :].lstrip(), add_special_tokens=False)["input_ids"] if at >= 0 else []
        if after and after[0] in tokenizer.added_tokens_decoder:
            end = after[0]
    _END_OF_TURN[tokenizer] = end
    return end


def student_end_ids(tokenizer) -> frozenset[int]:
    """Student tokens that end a response by default: its EOS and its template's end-of-turn token."""
    return frozenset(i for i in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)) if i is not None)


def teacher_end_id(tokenizer, override: str | None = None) -> int:
    """The token appended to the teacher's response after a student end token: `override` (the
    gold.teacher_end_token setting, a token string) when given, else end_of_turn_id."""
    if override is not None:
        token_id = tokenizer.convert_tokens_to_ids(override)
        if token_id is None or (token_id == tokenizer.unk_token_id and override != tokenizer.unk_token):
            raise ValueError(
                f"gold.teacher_end_token: {override!r} is not a token of the teacher tokenizer "
                f"{tokenizer.name_or_path!r}. Fix: use a token string of its vocabulary (e.g. "
                f"{tokenizer.eos_token!r}) or null for the end-of-turn token its chat template writes"
            )
        return token_id
    token_id = end_of_turn_id(tokenizer)
    if token_id is None:
        raise ValueError(
            f"teacher tokenizer {tokenizer.name_or_path!r} has no eos_token and no chat template "
            "end-of-turn token, which GOLD needs to score where a student response ends (or was cut); set "
            "tokenizer.eos_token on the teacher tokenizer, or gold.teacher_end_token."
        )
    return token_id


def tokenize_completion(tokenizer, text: str) -> tuple[list[int], DecodedTokens]:
    """Teacher tokens of the completion text and their byte spans in that text.

    Special-token strings in the text stay plain text (split_special_tokens). Spans come from the
    token bytes; if the tokenizer's normalizer changed the text (Qwen's NFC on non-NFC input),
    they come from the tokenizer's character offsets into the original text instead, and the
    spans are marked `respelled`.
    """
    # The Rust tokenizer directly: the same encoding as tokenizer(text), without converting
    # offsets to Python lists that only the rare normalized case reads.
    backend = tokenizer.backend_tokenizer
    restore = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        encoding = backend.encode(text, add_special_tokens=False)
    finally:
        backend.encode_special_tokens = restore
    ids = encoding.ids
    table = token_bytes(tokenizer)
    if table.preserves(text):
        return ids, replace(spell_spans(table, ids), text=text)
    decoded = decode_with_spans(table, ids)
    if decoded.text == text:
        return ids, decoded
    return ids, replace(_spans_from_char_offsets(text, encoding.offsets), respelled=True)


def _spans_from_char_offsets(text: str, offsets) -> DecodedTokens:
    """Contiguous byte spans from a tokenizer's character offsets into `text`.

    offsets: [n, 2] (start, end) characters. Token i's span ends where token i+1 starts, so
    characters no token reports (HF maps a character composed by the normalizer only to its first
    original character; e.g. NFC's 'e' + U+0301 -> 'é') belong to the token holding the character
    they were merged into, the one before them. Where token i+1 starts inside the characters of
    token i or earlier (byte pieces of one character), there is no cut: token i becomes zero-width
    and joins the group of the token that completes those characters. O(n + len(text)), vectorized.
    """
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    utf8_lengths = 1 + (codepoints >= 0x80).astype(np.int64) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    char_to_byte = np.concatenate(([0], np.cumsum(utf8_lengths)))
    chars = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    next_starts = chars[1:, 0]
    clean = next_starts >= np.maximum.accumulate(chars[:-1, 1]) if len(chars) else np.zeros(0, bool)
    # Clean cuts never decrease, so a running maximum carries the last one over the tokens without.
    cuts = np.maximum.accumulate(np.where(clean, char_to_byte[next_starts], 0)) if len(clean) else np.zeros(0, np.int64)
    ends = np.append(cuts, char_to_byte[-1])[: len(chars)].astype(np.int64)
    starts = np.concatenate(([0], ends[:-1]))[: len(ends)].astype(np.int64)
    return DecodedTokens(text=text, starts=starts, ends=ends)


def build_teacher_view(
    student_response_ids: list[int],
    prompt: Prompt,
    student_tokenizer,
    teacher_tokenizer,
    student_eos_ids: frozenset[int] | None = None,
    max_teacher_length: int | None = None,
    prompt_ids: list[int] | None = None,
    teacher_end_token: str | None = None,
    fold_system_message: bool = False,
) -> TeacherView:
    """Build the teacher's input for one student response and align the two responses.

    With one vocabulary on both sides the teacher reads the student's own tokens, its end token
    included, and every token is its own group (plain same-tokenizer on-policy distillation, no
    re-tokenization).
    What the teacher reads of each student token: its text; a special token other than the final
    end token is its literal string (e.g. "<|im_start|>"), tokenized by the teacher as plain text,
    so it joins a group and costs the teacher's log-probability of that string.
    A response whose last token is a student end token (student_eos_ids, default its EOS and its
    chat template's end-of-turn token) gets the teacher's end-of-turn token appended (the token its
    chat template writes after an assistant message, see end_of_turn_id; teacher_end_token, a token
    string, overrides it), and the two end tokens form the last group (with any zero-width student
    tokens before it when the text is empty).
    Unfinished responses (no final end token: cut at the length limit) are scored as if they ended
    where they were cut: the teacher's end-of-turn token is appended and joins the last group, so
    the response pays the teacher's log-probability of ending there (a response without text pays
    the teacher's log-probability of an empty answer). With one vocabulary they are left as stock
    on-policy distillation leaves them (no end term).
    Truncation policy: when prompt + teacher response exceed max_teacher_length, the teacher
    response is cut at the end; groups from the first one with a cut teacher token on are dropped
    (G shrinks, their student tokens get -1), so they get no signal instead of a wrong one, and
    `truncated` is set. The prompt is kept whole unless it alone exceeds the limit: then nothing of
    the response can be scored and only the prompt's last max_teacher_length tokens are kept.
    prompt_ids: the rendered teacher prompt, when the caller has it already (shared prompts);
    fold_system_message: see render_prompt.
    """
    if max_teacher_length is not None and max_teacher_length < 1:
        raise ValueError(f"max_teacher_length={max_teacher_length}; it must be a positive token count or None (no limit).")
    student_table = token_bytes(student_tokenizer)
    teacher_table = token_bytes(teacher_tokenizer)
    eos_ids = student_eos_ids or student_end_ids(student_tokenizer)
    ids = list(student_response_ids)
    ended_with_eos = bool(ids) and ids[-1] in eos_ids
    body = ids[:-1] if ended_with_eos else ids

    student = decode_with_spans(student_table, body)
    respelled = False
    same = same_vocabulary(student_table, teacher_table)
    if same:
        teacher_ids, own_groups = list(body), np.arange(len(body), dtype=np.int64)
        alignment = Alignment(own_groups, own_groups, len(body))
        end_id = ids[-1] if ended_with_eos else None  # the teacher reads the student's own end token
    else:
        teacher_ids, teacher = tokenize_completion(teacher_tokenizer, student.text)
        respelled = teacher.respelled
        n_bytes = len(student.text.encode("utf-8"))
        alignment = align_spans(student.starts, student.ends, teacher.starts, teacher.ends, n_bytes)
    unfinished = bool(ids) and not ended_with_eos and not same
    student_groups, teacher_groups, num_groups = _with_eos_group(alignment, ended_with_eos, unfinished)
    if ended_with_eos or unfinished:
        if not same:
            end_id = teacher_end_id(teacher_tokenizer, teacher_end_token)
        teacher_ids = teacher_ids + [end_id]

    if prompt_ids is None:
        prompt_ids = render_prompt(teacher_tokenizer, prompt, fold_system_message)
    truncated = max_teacher_length is not None and len(prompt_ids) + len(teacher_ids) > max_teacher_length
    if truncated:
        keep = max(max_teacher_length - len(prompt_ids), 0)
        prompt_ids = prompt_ids[len(prompt_ids) - min(len(prompt_ids), max_teacher_length) :]
        # Groups before the one holding the first cut teacher token are complete on both sides.
        first_incomplete = int(teacher_groups[keep]) if keep < len(teacher_ids) else num_groups
        teacher_ids = teacher_ids[:keep]
        teacher_groups = np.where(teacher_groups[:keep] < first_incomplete, teacher_groups[:keep], -1)
        student_groups = np.where(student_groups < first_incomplete, student_groups, -1)
        num_groups = first_incomplete
    return TeacherView(
        prompt_ids=list(prompt_ids),
        response_ids=teacher_ids,
        completion_text=student.text,
        student_groups=student_groups,
        teacher_groups=teacher_groups,
        num_groups=num_groups,
        ended_with_eos=ended_with_eos,
        unfinished=unfinished,
        truncated=truncated,
        respelled=respelled,
    )


def _with_eos_group(alignment: Alignment, ended_with_eos: bool, unfinished: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Group ids with the teacher EOS appended: its own group with the student EOS, or (unfinished)
    the last text group, or a new group of the zero-width tokens of an empty text."""
    if not (ended_with_eos or unfinished):
        return alignment.student_groups, alignment.teacher_groups, alignment.num_groups
    g = alignment.num_groups
    end = g - 1 if unfinished and g > 0 else g
    # Only the zero-width tokens of an empty text are ungrouped; they precede the EOS group.
    student_groups = np.where(alignment.student_groups < 0, end, alignment.student_groups)
    if ended_with_eos:
        student_groups = np.append(student_groups, end)
    return student_groups, np.append(alignment.teacher_groups, end), end + 1


def build_teacher_views(
    responses: list[list[int]],
    prompts: list[Prompt],
    student_tokenizer,
    teacher_tokenizer,
    fold_system_message: bool = False,
    **kwargs,
) -> list[TeacherView]:
    """build_teacher_view over a batch; each distinct prompt is rendered once (GRPO repeats them)."""
    if len(responses) != len(prompts):
        raise ValueError(f"got {len(responses)} responses but {len(prompts)} prompts; they must pair up")
    rendered: dict[str, list[int]] = {}
    views = []
    for response, prompt in zip(responses, prompts):
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        if key not in rendered:
            rendered[key] = render_prompt(teacher_tokenizer, prompt, fold_system_message)
        views.append(
            build_teacher_view(
                response, prompt, student_tokenizer, teacher_tokenizer, prompt_ids=rendered[key], **kwargs
            )
        )
    return views


@dataclass
class TeacherBatch:
    """A batch of teacher views as padded tensors.

    sequences, attention_mask: [B, P + R_t], prompts left-padded to P, responses right-padded to
    R_t (the SkyRL layout). teacher_group_ids: [B, R_t]; student_group_ids: [B, R_s] laid out like
    the student's response tokens; both -1 on padding. num_groups: G = max groups of a sample, at
    least 1 so that per-group tensors are never empty (a batch without groups has one column, masked).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    teacher_group_ids: torch.Tensor
    student_group_ids: torch.Tensor
    num_groups: int


def collate_views(views: list[TeacherView], pad_token_id: int, student_response_length: int | None = None) -> TeacherBatch:
    """Pad teacher views into a TeacherBatch. student_response_length: width of the student's
    response tensor (defaults to the longest student response)."""
    if not views:
        raise ValueError("collate_views got no teacher views; the batch must hold at least one sample.")
    longest_student = max(len(v.student_groups) for v in views)
    if student_response_length is not None and student_response_length < longest_student:
        raise ValueError(
            f"student_response_length={student_response_length} is shorter than the longest student "
            f"response ({longest_student} tokens); pass the width of the student's response tensor."
        )
    prompt_len = max(len(v.prompt_ids) for v in views)
    response_len = max(max(len(v.response_ids) for v in views), 1)
    student_len = student_response_length or max(longest_student, 1)
    b = len(views)
    sequences = torch.full((b, prompt_len + response_len), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(sequences)
    teacher_groups = torch.full((b, response_len), -1, dtype=torch.long)
    student_groups = torch.full((b, student_len), -1, dtype=torch.long)
    for i, v in enumerate(views):
        p, r = len(v.prompt_ids), len(v.response_ids)
        sequences[i, prompt_len - p : prompt_len] = torch.tensor(v.prompt_ids, dtype=torch.long)
        sequences[i, prompt_len : prompt_len + r] = torch.tensor(v.response_ids, dtype=torch.long)
        attention[i, prompt_len - p : prompt_len + r] = 1
        teacher_groups[i, :r] = torch.from_numpy(v.teacher_groups[:r])
        student_groups[i, : len(v.student_groups)] = torch.from_numpy(v.student_groups)
    return TeacherBatch(
        sequences=sequences,
        attention_mask=attention,
        teacher_group_ids=teacher_groups,
        student_group_ids=student_groups,
        num_groups=max(max(v.num_groups for v in views), 1),
    )
