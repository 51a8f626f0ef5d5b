"""Metrics that show whether alignment and the teacher signal are sane (logged under gold/)."""

from __future__ import annotations

import torch

from .losses import group_sizes


def alignment_metrics(
    student_group_ids: torch.Tensor, teacher_group_ids: torch.Tensor, num_groups: int, response_mask: torch.Tensor
) -> dict[str, float]:
    """student_group_ids: [B, R_s], teacher_group_ids: [B, R_t] (-1 off-group), response_mask: [B, R_s].

    groups_per_response: mean number of groups; multi_token_group_share: groups with more than one
    token on either side; alignment_coverage: share of student response tokens inside a group.
    """
    s_sizes = group_sizes(student_group_ids, num_groups)
    t_sizes = group_sizes(teacher_group_ids, num_groups)
    present = (s_sizes > 0) | (t_sizes > 0)
    multi = ((s_sizes > 1) | (t_sizes > 1)) & present
    n_groups = present.sum().clamp(min=1)
    return {
        "gold/groups_per_response": float(present.sum(-1).float().mean()),
        "gold/multi_token_group_share": float(multi.sum() / n_groups),
        "gold/alignment_coverage": float((student_group_ids >= 0).sum() / (response_mask > 0).sum().clamp(min=1)),
    }


def payload_metrics(payload: dict[str, torch.Tensor], teacher_group_ids: torch.Tensor) -> dict[str, float]:
    """Bytes the teacher returns per teacher response token, and the mean top-k tail mass."""
    tokens = (teacher_group_ids >= 0).sum().clamp(min=1)
    metrics = {"gold/teacher_payload_bytes_per_token": float(sum(t.numel() * t.element_size() for t in payload.values()) / tokens)}
    if "teacher_tail_mass" in payload:
        mask = payload["teacher_group_mask"].bool()
        metrics["gold/topk_tail_mass"] = float(payload["teacher_tail_mass"][mask].mean()) if mask.any() else 0.0
    return metrics


def span_ratio_metric(student_spans: torch.Tensor, teacher_spans: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean span log-ratio log P_T(g) - log P_S(g) over groups present on both sides ([B, G] each)."""
    delta = (teacher_spans - student_spans)[mask]
    return {"gold/span_log_ratio": float(delta.mean()) if delta.numel() else 0.0}


def response_end_metrics(views) -> dict[str, float]:
    """How a batch of teacher views (teacher_view.TeacherView) ends. unfinished_share: responses
    without a final end token (cut at the length limit), scored as ending where they were cut;
    empty_unfinished_share: responses with neither text nor an end token (scored by the teacher's
    log-probability of an empty answer, or, without any token, not at all)."""
    n = max(len(views), 1)
    return {
        "gold/unfinished_share": sum(v.unfinished for v in views) / n,
        "gold/empty_unfinished_share": sum(not v.ended_with_eos and not v.completion_text for v in views) / n,
    }


def respelled_metric(views) -> dict[str, float]:
    """Share of responses whose text the teacher's tokens spell differently (TeacherView.respelled:
    its normalizer changed the text, so the teacher reads e.g. NFC or a space for a literal "\u2581")."""
    return {"gold/teacher_respelled_share": sum(v.respelled for v in views) / max(len(views), 1)}


def turn_metrics(num_turns: list[int], loss_mask: torch.Tensor, response_mask: torch.Tensor) -> dict[str, float]:
    """Multi-turn rollouts: turns_per_rollout, the mean number of assistant turns (num_turns, one
    per rollout); assistant_token_share, the share of response tokens the student wrote (loss mask
    1; the rest are observations and template tokens between turns). loss_mask, response_mask: [B, R]."""
    return {
        "gold/turns_per_rollout": sum(num_turns) / max(len(num_turns), 1),
        "gold/assistant_token_share": float((loss_mask > 0).sum() / (response_mask > 0).sum().clamp(min=1)),
    }
