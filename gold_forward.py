"""From model logits to GOLD statistics: the teacher's compact per-group payload and the student's
GOLD loss against it. Device-agnostic: the GOLD ref worker, the GOLD policy worker and the CPU demo
all call these functions, so what the CPU tests check is what runs on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import (
    TeacherGroupStats,
    compress_teacher_groups,
    flat_group_index,
    gather_token_logprobs,
    group_sizes,
    hybrid_loss,
    merge_groups,
    reduce_group_loss,
    sorted_l1_from_top,
    span_logprobs,
    uld_loss,
)

# Batch keys of the teacher pass ([B, T_t], [B, T_t], [B, R_t]) and of the student-statistics pass.
TEACHER_INPUT_KEYS = ("teacher_sequences", "teacher_attention_mask", "teacher_group_ids")
STUDENT_INPUT_KEYS = ("sequences", "attention_mask", "student_group_ids")

# Keys of the teacher payload in a TrainingInputBatch; each is [B, G, ...].
PAYLOAD_KEYS = (
    "teacher_span_logprobs",
    "teacher_group_mask",
    "teacher_top_probs",
    "teacher_top_ids",
    "teacher_tail_mass",
    "teacher_unmatched_mass",
)


def response_logits(model, sequences: torch.Tensor, attention_mask: torch.Tensor, num_response: int) -> torch.Tensor:
    """Logits that predict the last num_response positions (left-padded prompt, right-padded
    response). sequences, attention_mask: [B, T] -> [B, R, V]; row r predicts token T - R + r."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # Only the positions asked for go through the output layer (with a real vocabulary it is most
    # of the cost): HF causal LMs keep the last logits_to_keep positions.
    logits = model(
        input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=num_response + 1
    ).logits
    return logits[:, :-1]


@dataclass
class GroupMeasures:
    """span_logprob: [B, G]; present: bool [B, G] (group has tokens); merged: [B * G, V] or None;
    token_logprobs: [B, R]."""

    span_logprob: torch.Tensor
    present: torch.Tensor
    merged: torch.Tensor | None
    token_logprobs: torch.Tensor


def group_measures(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    group_ids: torch.Tensor,
    num_groups: int,
    temperature: float = 1.0,
    merge: str | None = "geometric",
    token_logprobs: torch.Tensor | None = None,
) -> GroupMeasures:
    """Span log-probs and (merge not None) merged distributions of each group.

    logits: [B, R, V] predicting response_ids [B, R]; group_ids: [B, R] (-1 padding).
    token_logprobs: [B, R] the tokens' log-probs when the caller has them already (SkyRL's model
    wrapper computes them), so span log-probs match SkyRL's own log-probs bit for bit.
    """
    b, r, vocab = logits.shape
    _check_inputs(logits, response_ids, group_ids, num_groups)
    # Span log-probs from given token log-probs need no [B, R, V] log-softmax (reward mode).
    logprob_rows = None
    if token_logprobs is None or merge is not None:
        logprob_rows = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_lp = gather_token_logprobs(logprob_rows, response_ids) if token_logprobs is None else token_logprobs.float()
    span = span_logprobs(token_lp, group_ids, num_groups)
    present = group_sizes(group_ids, num_groups) > 0
    merged = None
    if merge is not None:
        positions, index = flat_group_index(group_ids, num_groups)
        merged = merge_groups(
            logprob_rows.reshape(b * r, vocab)[positions], token_lp.reshape(-1)[positions], index, b * num_groups, merge
        )
    return GroupMeasures(span, present, merged, token_lp)


def _check_inputs(logits: torch.Tensor, response_ids: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> None:
    """Clear errors for inputs that would otherwise fail deep inside gather/scatter (or, on a GPU,
    as a device-side assert): mismatched shapes, token ids past the logits, group ids past G."""
    b, r, vocab = logits.shape
    if tuple(response_ids.shape) != (b, r) or tuple(group_ids.shape) != (b, r):
        raise ValueError(
            f"logits are [B={b}, R={r}, V={vocab}] but response_ids are {list(response_ids.shape)} and "
            f"group_ids {list(group_ids.shape)}; all three must share [B, R]: pass the logits of the "
            "response positions (response_logits) with the ids and group ids of the same batch."
        )
    if response_ids.numel() == 0:
        return
    top_id, top_group = torch.stack([response_ids.max(), group_ids.max()]).tolist()
    if top_id >= vocab:
        raise ValueError(
            f"token id {top_id} is outside the model's {vocab} logits: the model and the tokenizer that "
            "made the ids do not match; point the model and tokenizer paths at the same checkpoint."
        )
    if top_group >= num_groups:
        raise ValueError(
            f"group id {top_group} but num_groups={num_groups}: the group ids and the teacher payload "
            "(or TeacherBatch.num_groups) come from different batches."
        )


def teacher_payload(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    group_ids: torch.Tensor,
    num_groups: int,
    temperature: float = 1.0,
    merge: str = "geometric",
    with_distributions: bool = True,
    topk: int | None = 64,
    teacher_matched: torch.Tensor | None = None,
    token_logprobs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The teacher's compact per-group statistics (GOLD.md section 5), never full logits.

    logits: [B, R_t, V_t] teacher logits predicting response_ids [B, R_t]; group_ids: [B, R_t].
    Returns tensors keyed by PAYLOAD_KEYS: span log-probs [B, G] and group mask [B, G]; with
    distributions also top-k probs [B, G, k] (descending), top-k ids [B, G, k] (int32), tail mass
    [B, G] and, given teacher_matched (bool [V_t]), the mass on unmatched entries [B, G].
    """
    b = logits.shape[0]
    measures = group_measures(
        logits, response_ids, group_ids, num_groups, temperature, merge if with_distributions else None, token_logprobs
    )
    out = {"teacher_span_logprobs": measures.span_logprob, "teacher_group_mask": measures.present}
    if with_distributions:
        stats = compress_teacher_groups(measures.merged, measures.span_logprob.reshape(-1), topk, teacher_matched)
        k = stats.top_probs.shape[-1]
        out["teacher_top_probs"] = stats.top_probs.reshape(b, num_groups, k)
        out["teacher_top_ids"] = stats.top_ids.to(torch.int32).reshape(b, num_groups, k)
        out["teacher_tail_mass"] = stats.tail_mass.reshape(b, num_groups)
        if stats.unmatched_mass is not None:
            out["teacher_unmatched_mass"] = stats.unmatched_mass.reshape(b, num_groups)
    return out


def student_payload(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    group_ids: torch.Tensor,
    num_groups: int,
    merge: str = "geometric",
    topk: int | None = 64,
) -> dict[str, torch.Tensor]:
    """The student's merged group distributions compressed like the teacher's, for the reward-mode
    ULD term: student_top_probs [B, G, k], student_tail_mass [B, G], student_group_mask [B, G].
    logits: [B, R, V_s] (temperature already applied) predicting response_ids [B, R]."""
    b = logits.shape[0]
    measures = group_measures(logits, response_ids, group_ids, num_groups, 1.0, merge)
    stats = compress_teacher_groups(measures.merged, measures.span_logprob.reshape(-1), topk)
    return {
        "student_top_probs": stats.top_probs.reshape(b, num_groups, -1),
        "student_tail_mass": stats.tail_mass.reshape(b, num_groups),
        "student_group_mask": measures.present,
    }


def uld_between_payloads(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """ULD distance per group from the two compressed payloads. Returns (distance [B, G], error
    bound [B, G]); exact when either side kept its whole vocabulary."""
    shape = student["student_tail_mass"].shape
    s_top, t_top = student["student_top_probs"].flatten(0, 1), teacher["teacher_top_probs"].flatten(0, 1).float()
    s_tail, t_tail = student["student_tail_mass"].reshape(-1), teacher["teacher_tail_mass"].reshape(-1).float()
    distance, bound = sorted_l1_from_top(s_top, s_top.sum(-1) + s_tail, t_top, t_top.sum(-1) + t_tail)
    return distance.reshape(shape), bound.reshape(shape)


def stats_from_payload(payload: dict[str, torch.Tensor]) -> TeacherGroupStats:
    """Flatten a [B, G, ...] teacher payload into TeacherGroupStats over M = B * G groups."""
    unmatched = payload.get("teacher_unmatched_mass")
    return TeacherGroupStats(
        span_logprob=payload["teacher_span_logprobs"].reshape(-1),
        top_probs=payload["teacher_top_probs"].flatten(0, 1).float(),
        top_ids=payload["teacher_top_ids"].flatten(0, 1).long(),
        tail_mass=payload["teacher_tail_mass"].reshape(-1).float(),
        unmatched_mass=None if unmatched is None else unmatched.reshape(-1).float(),
    )


@dataclass
class HybridTables:
    """Vocabulary map as tensors on the loss device (see alignment.VocabMap)."""

    teacher_to_student: torch.Tensor
    student_matched: torch.Tensor
    matched_weight: float
    unmatched_weight: float


def student_gold_loss(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    group_ids: torch.Tensor,
    payload: dict[str, torch.Tensor],
    temperature: float = 1.0,
    merge: str = "geometric",
    student_topk: int | None = 64,
    hybrid: HybridTables | None = None,
    beta: float = 0.5,
    reduction: str = "token_mean",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GOLD loss of the student against the teacher payload, with gradient through `logits`.

    logits: [B, R, V_s] predicting response_ids [B, R]; group_ids: [B, R] student group ids;
    payload: teacher_payload output for the same groups (G = payload's second dim).
    Returns (scalar loss, metrics): ULD, or hybrid when `hybrid` is given, per group, reduced over
    groups present on both sides.
    """
    payload_batch, num_groups = payload["teacher_span_logprobs"].shape
    if payload_batch != logits.shape[0]:
        raise ValueError(
            f"the teacher payload holds {payload_batch} samples but the student logits {logits.shape[0]}; "
            "the payload must be computed for the same (micro-)batch, in the same order."
        )
    measures = group_measures(logits, response_ids, group_ids, num_groups, temperature, merge)
    teacher = stats_from_payload(payload)
    mask = measures.present & payload["teacher_group_mask"].bool()
    metrics = {}
    if hybrid is None:
        per_group, bound = uld_loss(measures.merged, teacher, student_topk)
        metrics["gold/uld_distance"] = per_group
    else:
        if teacher.unmatched_mass is None:
            raise ValueError(
                "hybrid GOLD loss without the teacher's unmatched mass in the payload. Fix: set gold.hybrid "
                "for the whole run so the ref worker computes it"
            )
        parts = hybrid_loss(
            measures.merged, teacher, hybrid.teacher_to_student, hybrid.student_matched, beta,
            hybrid.matched_weight, hybrid.unmatched_weight, student_topk,
        )
        per_group, bound = parts["loss"], parts["l1_bound"]
        metrics["gold/hybrid_jsd"], metrics["gold/uld_distance"] = parts["jsd"], parts["l1"]
    per_group = per_group.reshape(mask.shape)
    loss = reduce_group_loss(per_group, mask, reduction, max_len)
    flat_mask = mask.reshape(-1)
    n = flat_mask.sum().clamp(min=1)
    metrics = {key: float((value.detach() * flat_mask).sum() / n) for key, value in metrics.items()}
    metrics["gold/loss"] = float(loss.detach())
    metrics["gold/topk_error_bound"] = float((bound * flat_mask).sum() / n)
    metrics["gold/topk_tail_mass"] = float((teacher.tail_mass * flat_mask).sum() / n)
    return loss, metrics
