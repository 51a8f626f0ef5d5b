"""The teacher's view of a student rollout and its alignment (GOLD.md sections 2-3).

Per sample: decode the student response, build the teacher's input as teacher-chat-template(prompt)
+ teacher-tokenize(completion) (+ teacher EOS when the student ended with its EOS), and group both
response token sequences into aligned spans. `collate_views` pads a batch of views into tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from .alignment import Alignment, DecodedTokens, align_spans, decode_with_spans, same_vocabulary, spell_spans, token_bytes

Prompt = str | list[dict]


@dataclass(frozen=True)
class TeacherView:
    """One rollout seen by the teacher, aligned with the student's response tokens.

    prompt_ids / response_ids: teacher token ids of the rendered prompt and of the response.
    student_groups: int64 [n_student_response]; teacher_groups: int64 [n_teacher_response]; both
    non-decreasing, and every group id in [0, G) holds at least one token on each side. -1 marks a
    token without a group: a student token cut by truncation, or a zero-width student token (a
    special token) of a response whose text is empty and that has no EOS group to join.
    num_groups: G (the EOS group, when present, is the last one); 0 for an empty response.
    truncated: the teacher response was cut to fit the teacher context (see build_teacher_view).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    completion_text: str
    student_groups: np.ndarray
    teacher_groups: np.ndarray
    num_groups: int
    ended_with_eos: bool
    truncated: bool = False


def render_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Teacher token ids of a prompt: chat messages through the teacher's own chat template (with
    the generation prompt), plain text tokenized with the teacher's special tokens (e.g. BOS)."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"teacher tokenizer {tokenizer.name_or_path!r} has no chat template but the prompt is a "
            "list of chat messages; use an instruct teacher, set a template on the tokenizer, or pass "
            "the prompt as text."
        )
    # return_dict=False: transformers 5 returns a BatchEncoding by default, 4.x a list of ids.
    return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))


def tokenize_completion(tokenizer, text: str) -> tuple[list[int], DecodedTokens]:
    """Teacher tokens of the completion text and their byte spans in that text.

    Special-token strings in the text stay plain text (split_special_tokens). Spans come from the
    token bytes; if the tokenizer's normalizer changed the text (Qwen's NFC on non-NFC input),
    they come from the tokenizer's character offsets into the original text instead.
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
    return ids, _spans_from_char_offsets(text, encoding.offsets)


def _spans_from_char_offsets(text: str, offsets) -> DecodedTokens:
    """Contiguous byte spans from a tokenizer's character offsets into `text`.

    Characters the normalizer merged or dropped fall to the next token (spans are contiguous), or
    to the last token at the end of the text.
    Byte pieces of one character share its offsets; all but the last of such a run become
    zero-width, so they join the group holding that character.
    """
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    utf8_lengths = 1 + (codepoints >= 0x80).astype(np.int64) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    char_to_byte = np.concatenate(([0], np.cumsum(utf8_lengths)))
    char_ends = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
    ends = np.maximum.accumulate(char_to_byte[char_ends]) if len(char_ends) else np.zeros(0, np.int64)
    last_of_run = np.append(ends[:-1] != ends[1:], True)
    ends = np.where(last_of_run, ends, 0)
    ends = np.where(last_of_run, ends, np.concatenate(([0], np.maximum.accumulate(ends)[:-1])))
    if len(ends):
        ends[-1] = char_to_byte[-1]
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
) -> TeacherView:
    """Build the teacher's input for one student response and align the two responses.

    With one vocabulary on both sides the teacher reads the student's own tokens and every token is
    its own group (plain same-tokenizer on-policy distillation, no re-tokenization).
    A response whose last token is a student EOS (student_eos_ids, default the tokenizer's EOS)
    gets the teacher EOS appended, and the two EOS tokens form the last group (with any zero-width
    student tokens before it when the text is empty).
    Truncation policy: when prompt + teacher response exceed max_teacher_length, the teacher
    response is cut at the end; groups from the first one with a cut teacher token on are dropped
    (G shrinks, their student tokens get -1), so they get no signal instead of a wrong one, and
    `truncated` is set. The prompt is kept whole unless it alone exceeds the limit: then nothing of
    the response can be scored and only the prompt's last max_teacher_length tokens are kept.
    prompt_ids: the rendered teacher prompt, when the caller has it already (shared prompts).
    """
    if max_teacher_length is not None and max_teacher_length < 1:
        raise ValueError(f"max_teacher_length={max_teacher_length}; it must be a positive token count or None (no limit).")
    student_table = token_bytes(student_tokenizer)
    teacher_table = token_bytes(teacher_tokenizer)
    eos_ids = student_eos_ids or frozenset({student_table.eos_token_id})
    ids = list(student_response_ids)
    ended_with_eos = bool(ids) and ids[-1] in eos_ids
    body = ids[:-1] if ended_with_eos else ids

    student = decode_with_spans(student_table, body)
    if same_vocabulary(student_table, teacher_table):
        teacher_ids, own_groups = list(body), np.arange(len(body), dtype=np.int64)
        alignment = Alignment(own_groups, own_groups, len(body))
    else:
        teacher_ids, teacher = tokenize_completion(teacher_tokenizer, student.text)
        n_bytes = len(student.text.encode("utf-8"))
        alignment = align_spans(student.starts, student.ends, teacher.starts, teacher.ends, n_bytes)
    student_groups, teacher_groups, num_groups = _with_eos_group(alignment, ended_with_eos)
    if ended_with_eos:
        if teacher_table.eos_token_id is None:
            raise ValueError(
                f"teacher tokenizer {teacher_table.name!r} has no eos_token but the student response "
                "ended with EOS; set tokenizer.eos_token on the teacher tokenizer."
            )
        teacher_ids = teacher_ids + [teacher_table.eos_token_id]

    if prompt_ids is None:
        prompt_ids = render_prompt(teacher_tokenizer, prompt)
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
        truncated=truncated,
    )


def _with_eos_group(alignment: Alignment, ended_with_eos: bool) -> tuple[np.ndarray, np.ndarray, int]:
    if not ended_with_eos:
        return alignment.student_groups, alignment.teacher_groups, alignment.num_groups
    g = alignment.num_groups
    # Only the zero-width tokens of an empty text are ungrouped; they precede the EOS group.
    student_groups = np.where(alignment.student_groups < 0, g, alignment.student_groups)
    return (
        np.append(student_groups, g),
        np.append(alignment.teacher_groups, g),
        g + 1,
    )


def build_teacher_views(
    responses: list[list[int]],
    prompts: list[Prompt],
    student_tokenizer,
    teacher_tokenizer,
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
            rendered[key] = render_prompt(teacher_tokenizer, prompt)
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
