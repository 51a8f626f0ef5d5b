"""From model logits to GOLD statistics: the teacher's compact per-group payload and the student's
GOLD loss against it. Device-agnostic: the GOLD ref worker, the GOLD policy worker and the CPU demo
all call these functions, so what the CPU tests check is what runs on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

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


# Logits per piece of the chunked computations below. On CPU, 2^23: with V = 152k that is 55 rows,
# so each [rows, V] float32 temporary is 32 MiB however long the batch (the whole-batch version held
# several [B * R, V] float32 tensors at once). Measured on CPU at 512 x 152k: the hybrid loss's peak
# above its inputs is 1.3 GB at 2^23 and 2.4 GB at 2^25, same time (each piece's work is many
# passes over [rows, V], so larger pieces gain nothing there).
CPU_CHUNK_ELEMENTS = 2**23
# On a GPU, small pieces cost launches and host syncs per piece (pieces of 2^23 made the student
# loss 20x slower on an H200 at 8 x 4096 x 150k), so a piece takes what free memory allows: this
# share of the free bytes, at this many bytes of temporaries per logit of a piece (the hybrid loss
# with its backward, about 52 measured on CPU, rounded up; the ULD loss needs about 26).
GPU_FREE_MEMORY_SHARE = 0.5
BYTES_PER_PIECE_LOGIT = 64


def chunk_elements_for(device_type: str, free_bytes: int | None = None) -> int:
    """Logits per piece on a device kind: CPU_CHUNK_ELEMENTS on CPU (or without a free-memory
    figure); on an accelerator, GPU_FREE_MEMORY_SHARE of free_bytes at BYTES_PER_PIECE_LOGIT bytes
    per logit, never below the CPU size."""
    if device_type == "cpu" or free_bytes is None:
        return CPU_CHUNK_ELEMENTS
    return max(CPU_CHUNK_ELEMENTS, int(free_bytes * GPU_FREE_MEMORY_SHARE) // BYTES_PER_PIECE_LOGIT)


def device_chunk_elements(device: torch.device) -> int:
    """chunk_elements_for the device the logits are on, reading CUDA's free memory now."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    return chunk_elements_for(device.type, free)


@dataclass
class RowChunk:
    """A piece of a batch holding whole groups: rows: slice of the flattened [B * R] token rows;
    token_group: int64 [rows] dense group id within the piece (-1 for tokens without a group);
    groups: int64 [U] the flat group ids (in [0, B * G)) of those dense ids."""

    rows: slice
    token_group: torch.Tensor
    groups: torch.Tensor


def row_chunks(group_ids: torch.Tensor, num_groups: int, max_rows: int) -> list[RowChunk]:
    """Split a batch into pieces of about max_rows grouped tokens (a group never straddles two).

    group_ids: [B, R] (-1 padding). Groups must be runs of consecutive tokens (as alignment makes
    them); otherwise the batch is one piece. Groups without tokens belong to no piece.
    """
    b, r = group_ids.shape
    positions, index = flat_group_index(group_ids, num_groups)
    n = positions.numel()
    if n == 0:
        return []
    groups, dense = torch.unique_consecutive(index, return_inverse=True)
    starts = torch.searchsorted(dense, torch.arange(groups.numel(), device=dense.device))  # first token of each group
    if groups.numel() != torch.unique(index).numel():  # a group split into several runs
        groups, dense = torch.unique(index, return_inverse=True)
        cuts = [0, groups.numel()]
    else:
        piece = starts // max(max_rows, 1)
        cuts = [0, *(torch.nonzero(piece[1:] != piece[:-1]).squeeze(-1) + 1).tolist(), groups.numel()]
    token_group = torch.full((b * r,), -1, dtype=torch.long, device=group_ids.device)
    token_group[positions] = dense
    starts = starts.tolist() + [n]
    pieces = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        first, last = (0, b * r) if len(cuts) == 2 else (int(positions[starts[lo]]), int(positions[starts[hi] - 1]) + 1)
        local = token_group[first:last]
        pieces.append(RowChunk(slice(first, last), torch.where(local >= 0, local - lo, -1), groups[lo:hi]))
    return pieces


def _group_rows(groups: torch.Tensor) -> slice | torch.Tensor:
    """Rows of flat group ids groups (int64 [U], increasing): a slice when they are consecutive (one
    sample's groups, or samples without padding groups), so reads are views and writes plain
    copies, not gathers and scatters of [U, V] rows at full k."""
    n = groups.numel()
    first, last = (int(v) for v in groups[[0, -1]].tolist()) if n else (0, -1)
    return slice(first, first + n) if last - first + 1 == n else groups


def _chunk_rows(vocab: int, chunk_elements: int | None, device: torch.device) -> int:
    """Rows per piece: chunk_elements logits (None: device_chunk_elements) over the vocabulary."""
    return max((device_chunk_elements(device) if chunk_elements is None else chunk_elements) // vocab, 1)


def _piece_measures(
    rows: torch.Tensor, ids: torch.Tensor, token_group: torch.Tensor, n_groups: int, temperature: float, merge: str,
    token_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Span log-probs [U] and merged measures [U, V] of one piece: rows [n, V] logits of its tokens,
    ids [n], token_group [n] dense group ids (-1 none); token_logprobs [n] when given (span)."""
    valid = torch.nonzero(token_group >= 0).squeeze(-1)
    if valid.numel() < token_group.numel():  # only then a copy of the rows
        rows, ids, token_group = rows[valid], ids[valid], token_group[valid]
        token_logprobs = None if token_logprobs is None else token_logprobs[valid]
    rows = rows.float()
    logprob_rows = torch.log_softmax(rows if temperature == 1.0 else rows / temperature, dim=-1)
    own = gather_token_logprobs(logprob_rows, ids)
    index = token_group
    span_from = own if token_logprobs is None else token_logprobs.float()
    span = span_from.new_zeros(n_groups).index_add(0, index, span_from)
    return span, merge_groups(logprob_rows, own if token_logprobs is None else span_from, index, n_groups, merge)


def _scatter_groups(pieces: list[RowChunk], parts: list[dict[str, torch.Tensor]], total: int) -> dict[str, torch.Tensor]:
    """Per-piece results [U, ...] placed at their flat group ids in zero tensors [total, ...]
    (out of place, so gradients flow back to each piece)."""
    groups = torch.cat([piece.groups for piece in pieces])
    out = {}
    for key in parts[0]:
        values = torch.cat([part[key] for part in parts])
        out[key] = values.new_zeros((total, *values.shape[1:])).index_copy(0, groups, values)
    return out


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
    chunk_elements: int | None = None,
) -> dict[str, torch.Tensor]:
    """The teacher's compact per-group statistics (GOLD.md section 5), never full logits.

    logits: [B, R_t, V_t] teacher logits predicting response_ids [B, R_t]; group_ids: [B, R_t].
    Returns tensors keyed by PAYLOAD_KEYS: span log-probs [B, G] and group mask [B, G]; with
    distributions also top-k probs [B, G, k] (descending), top-k ids [B, G, k] (int32), tail mass
    [B, G] and, given teacher_matched (bool [V_t]), the mass on unmatched entries [B, G]; zeros for
    groups without tokens (masked). Computed in pieces of about chunk_elements logits (row_chunks;
    None: the size for the logits' device, device_chunk_elements), so memory above the input stays
    near a few [chunk, V] float32 tensors.
    """
    b = logits.shape[0]
    if not with_distributions:
        measures = group_measures(logits, response_ids, group_ids, num_groups, temperature, None, token_logprobs)
        return {"teacher_span_logprobs": measures.span_logprob, "teacher_group_mask": measures.present}
    stats = _compressed_groups(
        logits, response_ids, group_ids, num_groups, temperature, merge, topk, teacher_matched, token_logprobs,
        chunk_elements,
    )
    k = stats["top_probs"].shape[-1]
    out = {
        "teacher_span_logprobs": stats["span"].reshape(b, num_groups),
        "teacher_group_mask": group_sizes(group_ids, num_groups) > 0,
        "teacher_top_probs": stats["top_probs"].reshape(b, num_groups, k),
        "teacher_top_ids": stats["top_ids"].reshape(b, num_groups, k),
        "teacher_tail_mass": stats["tail_mass"].reshape(b, num_groups),
    }
    if "unmatched_mass" in stats:
        out["teacher_unmatched_mass"] = stats["unmatched_mass"].reshape(b, num_groups)
    return out


@torch.no_grad()
def _compressed_groups(
    logits, response_ids, group_ids, num_groups, temperature, merge, topk, matched=None, token_logprobs=None,
    chunk_elements: int | None = None,
) -> dict[str, torch.Tensor]:
    """compress_teacher_groups over a batch, piece by piece (row_chunks), without gradient.
    Returns flat [B * G, ...] tensors: span, top_probs, top_ids (int32), tail_mass (+ unmatched_mass);
    zeros for groups without tokens."""
    b, r, vocab = logits.shape
    _check_inputs(logits, response_ids, group_ids, num_groups)
    flat, ids = logits.reshape(b * r, vocab), response_ids.reshape(-1)
    given = None if token_logprobs is None else token_logprobs.reshape(-1)
    k = vocab if topk is None else min(topk, vocab)
    total = b * num_groups
    # Written piece by piece into the final tensors: at full k they are [B * G, V] each, so no
    # second copy (a concatenation of the pieces) is ever made; left uninitialized (zeroing
    # [B * G, V] costs as much as a merge) except the rows of groups without tokens, zeroed below.
    out = {"span": logits.new_empty(total, dtype=torch.float32), "tail_mass": logits.new_empty(total, dtype=torch.float32),
           "top_probs": logits.new_empty(total, k, dtype=torch.float32),
           "top_ids": torch.empty(total, k, dtype=torch.int32, device=logits.device)}
    if matched is not None:
        out["unmatched_mass"] = logits.new_empty(total, dtype=torch.float32)
    empty = torch.nonzero(group_sizes(group_ids, num_groups).reshape(-1) == 0).squeeze(-1)
    for value in out.values():
        value[empty] = 0
    for piece in row_chunks(group_ids, num_groups, _chunk_rows(vocab, chunk_elements, logits.device)):
        span, merged = _piece_measures(
            flat[piece.rows], ids[piece.rows], piece.token_group, piece.groups.numel(), temperature, merge,
            None if given is None else given[piece.rows],
        )
        stats = compress_teacher_groups(merged, span, topk, matched)
        del merged
        rows = _group_rows(piece.groups)
        out["span"][rows] = span
        out["tail_mass"][rows] = stats.tail_mass
        out["top_probs"][rows] = stats.top_probs
        out["top_ids"][rows] = stats.top_ids.to(torch.int32)
        if matched is not None:
            out["unmatched_mass"][rows] = stats.unmatched_mass
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
    stats = _compressed_groups(logits, response_ids, group_ids, num_groups, 1.0, merge, topk)
    return {
        "student_top_probs": stats["top_probs"].reshape(b, num_groups, -1),
        "student_tail_mass": stats["tail_mass"].reshape(b, num_groups),
        "student_group_mask": group_sizes(group_ids, num_groups) > 0,
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
    """Flatten a [B, G, ...] teacher payload into TeacherGroupStats over M = B * G groups. Ids keep
    the payload's int32 (at full k they are [M, V]; never widened to int64)."""
    unmatched = payload.get("teacher_unmatched_mass")
    return TeacherGroupStats(
        span_logprob=payload["teacher_span_logprobs"].reshape(-1),
        top_probs=payload["teacher_top_probs"].flatten(0, 1).float(),
        top_ids=payload["teacher_top_ids"].flatten(0, 1),
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
    chunk_elements: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GOLD loss of the student against the teacher payload, with gradient through `logits`.

    logits: [B, R, V_s] predicting response_ids [B, R]; group_ids: [B, R] student group ids;
    payload: teacher_payload output for the same groups (G = payload's second dim).
    Returns (scalar loss, metrics): ULD, or hybrid when `hybrid` is given, per group, reduced over
    groups present on both sides. Computed in pieces of about chunk_elements logits (row_chunks;
    None: the size for the logits' device, device_chunk_elements), each recomputed in backward, so
    memory above the logits and their gradient stays near a few [chunk, V] float32 tensors.
    """
    payload_batch, num_groups = payload["teacher_span_logprobs"].shape
    if payload_batch != logits.shape[0]:
        raise ValueError(
            f"the teacher payload holds {payload_batch} samples but the student logits {logits.shape[0]}; "
            "the payload must be computed for the same (micro-)batch, in the same order."
        )
    b, r, vocab = logits.shape
    _check_inputs(logits, response_ids, group_ids, num_groups)
    teacher = stats_from_payload(payload)
    if hybrid is not None and teacher.unmatched_mass is None:
        raise ValueError(
            "hybrid GOLD loss without the teacher's unmatched mass in the payload. Fix: set gold.hybrid "
            "for the whole run so the ref worker computes it"
        )
    mask = (group_sizes(group_ids, num_groups) > 0) & payload["teacher_group_mask"].bool()

    def piece_loss(rows, ids, token_group, groups):
        _, merged = _piece_measures(rows, ids, token_group, groups.numel(), temperature, merge)
        t = _select_groups(teacher, groups, with_ids=hybrid is not None)
        if hybrid is None:
            distance, bound = uld_loss(merged, t, student_topk)
            return {"loss": distance, "bound": bound, "gold/uld_distance": distance}
        parts = hybrid_loss(
            merged, t, hybrid.teacher_to_student, hybrid.student_matched, beta,
            hybrid.matched_weight, hybrid.unmatched_weight, student_topk,
        )
        out = {"loss": parts["loss"], "bound": parts["bound"], "gold/hybrid_jsd": parts["jsd"], "gold/uld_distance": parts["l1"]}
        if "jsd_bound" in parts:
            out["gold/hybrid_jsd_error_bound"] = parts["jsd_bound"]
        return out

    flat, ids = logits.reshape(b * r, vocab), response_ids.reshape(-1)
    pieces = row_chunks(group_ids, num_groups, _chunk_rows(vocab, chunk_elements, logits.device))
    # Several pieces with gradient: each is recomputed in backward (checkpoint), so only one piece's
    # [rows, V] temporaries are alive at a time.
    recompute = len(pieces) > 1 and torch.is_grad_enabled() and logits.requires_grad
    parts = [
        (checkpoint(piece_loss, *args, use_reentrant=False) if recompute else piece_loss(*args))
        for args in ((flat[p.rows], ids[p.rows], p.token_group, p.groups) for p in pieces)
    ]
    if parts:
        per = _scatter_groups(pieces, parts, b * num_groups)
    else:  # no group has tokens: zero loss, still connected to the logits (a caller may call backward)
        per = {"loss": flat[:0].float().sum() + logits.new_zeros(b * num_groups).float(), "bound": logits.new_zeros(b * num_groups).float()}
    loss = reduce_group_loss(per.pop("loss").reshape(mask.shape), mask, reduction, max_len)
    bound = per.pop("bound")
    flat_mask = mask.reshape(-1)
    n = flat_mask.sum().clamp(min=1)
    metrics = {key: float((value.detach() * flat_mask).sum() / n) for key, value in per.items()}
    metrics["gold/loss"] = float(loss.detach())
    metrics["gold/topk_error_bound"] = float((bound * flat_mask).sum() / n)
    metrics["gold/topk_tail_mass"] = float((teacher.tail_mass * flat_mask).sum() / n)
    return loss, metrics


def _select_groups(stats: TeacherGroupStats, groups: torch.Tensor, with_ids: bool) -> TeacherGroupStats:
    """The statistics of some groups: groups int64 [U] flat ids -> TeacherGroupStats over U. Ids (as
    stored: int32 from a payload) only with_ids: only the hybrid loss reads them, and at full k
    selecting them copies a [U, V] tensor."""
    rows = _group_rows(groups)
    return TeacherGroupStats(
        span_logprob=stats.span_logprob[rows],
        top_probs=stats.top_probs[rows],
        top_ids=stats.top_ids[rows] if with_ids else None,
        tail_mass=stats.tail_mass[rows],
        unmatched_mass=None if stats.unmatched_mass is None else stats.unmatched_mass[rows],
    )
