"""GOLD mathematics on tensors: span log-likelihoods, rewards, merging, ULD and hybrid losses.

Pure functions of tensors (GOLD.md sections 4-6); the trainer, the workers and the demo call them.
Conventions: B samples, R response positions, G groups per sample (padded), V a vocabulary, M
groups flattened over the batch (M = B * G), k kept entries of a top-k compression. Group ids are
int64 with -1 on padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MERGES = ("geometric", "chain")
LOSS_REDUCTIONS = ("token_mean", "sequence_mean", "seq_mean_token_sum_norm")

# Log-probabilities are floored here: exp(LOG_FLOOR) is 0 in float32, so entries with no mass add
# exactly nothing, while -inf (masked logits, empty atoms) would turn gradients into NaN.
LOG_FLOOR = -1.0e4


def gather_token_logprobs(logprob_rows: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """logprob_rows: [B, R, V], token_ids: [B, R] -> [B, R] log-prob of each token under its row."""
    return logprob_rows.gather(-1, token_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def segment_sum(values: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum per group: values [B, R], group_ids [B, R] (-1 ignored) -> [B, G]."""
    valid = group_ids >= 0
    out = values.new_zeros(values.shape[0], num_groups)
    return out.scatter_add(1, group_ids.clamp(min=0), torch.where(valid, values, 0.0))


def group_sizes(group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Number of tokens in each group: group_ids [B, R] -> [B, G] (float)."""
    return segment_sum(torch.ones_like(group_ids, dtype=torch.float32), group_ids, num_groups)


def span_logprobs(token_logprobs: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """log P(g): sum of the log-probs of a group's tokens. [B, R], [B, R] -> [B, G]."""
    return segment_sum(token_logprobs, group_ids, num_groups)


def place_group_values(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Put one value per group on every student token of that group (GOLD.md section 4).

    values: [B, G]; group_ids: [B, R], -1 on padding (value 0 there). Returns [B, R]. As per-token
    advantages this makes a group one macro-action: sum_i values[g(i)] * grad log p_i =
    sum_g values[g] * grad log P(g), since log P(g) is the sum of its tokens' log-probs.
    """
    return torch.where(group_ids >= 0, values.gather(1, group_ids.clamp(min=0)), 0.0)


def span_rewards(
    student_span_logprobs: torch.Tensor,
    teacher_span_logprobs: torch.Tensor,
    student_group_ids: torch.Tensor,
    group_penalty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token rewards from span log-likelihood ratios delta_g = log P_T(g) - log P_S(g): every
    student token of group g carries delta_g (place_group_values).

    Spans: [B, G]; student_group_ids: [B, R]; group_penalty: optional [B, G] subtracted from delta
    (the ULD term, coef * distance). Returns [B, R]. With one token per group this is
    -(logp_student - logp_teacher) token for token.
    """
    delta = teacher_span_logprobs - student_span_logprobs
    if group_penalty is not None:
        delta = delta - group_penalty
    return place_group_values(delta, student_group_ids)


def flat_group_index(group_ids: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten per-sample group ids to batch-global ones.

    group_ids: [B, R] -> (positions [N] into the flattened [B * R], global ids [N] in [0, B * G)).
    """
    flat = group_ids.reshape(-1)
    positions = torch.nonzero(flat >= 0).squeeze(-1)
    row = positions // group_ids.shape[1]
    return positions, row * num_groups + flat[positions]


def merge_groups(
    logprob_rows: torch.Tensor,
    token_logprobs: torch.Tensor,
    group_index: torch.Tensor,
    num_groups: int,
    merge: str = "geometric",
) -> torch.Tensor:
    """Merged per-group distributions, as log-measures (GOLD.md section 6).

    logprob_rows: [N, V] predictive log-probs at each token's position; token_logprobs: [N] the
    log-prob of the token itself; group_index: [N] in [0, M) (tokens of a group in order).
    geometric: log m_g = log_softmax(mean_i log p_i), with log p_i floored at LOG_FLOOR so that
    positions with disjoint supports (masked logits, one-hot rows) still give a distribution.
    chain: log m_g = log p_last + sum of the other tokens' log p_i(token_i), not normalized.
    Returns [M, V]; groups without tokens hold a uniform (geometric) or all -inf (chain) row and
    must be masked by the caller.
    """
    n, vocab = logprob_rows.shape
    if merge == "geometric":
        floored = logprob_rows.clamp(min=LOG_FLOOR)
        counts = torch.bincount(group_index, minlength=num_groups)
        if n == 0:
            return torch.log_softmax(floored.new_zeros(num_groups, vocab), dim=-1)
        # Each group's first row, then the others added: most groups have one token, and a gather
        # is several times faster than scattering every row into zeros (same sums).
        order = torch.arange(n, device=group_index.device)
        first = torch.full((num_groups,), n - 1, dtype=torch.long, device=group_index.device)
        first = first.scatter_reduce(0, group_index, order, reduce="amin", include_self=False)
        summed = floored[first]
        rest = torch.nonzero(order != first[group_index]).squeeze(-1)
        if rest.numel():
            summed = summed.index_add(0, group_index[rest], floored[rest])
        if bool((counts != 1).any()):
            empty = counts == 0
            summed = torch.where(empty.unsqueeze(-1), 0.0, summed) / counts.clamp(min=1).unsqueeze(-1).to(summed.dtype)
        return torch.log_softmax(summed, dim=-1)
    if merge == "chain":
        if n == 0:
            return logprob_rows.new_full((num_groups, vocab), float("-inf"))
        order = torch.arange(n, device=group_index.device)
        last = torch.full((num_groups,), n - 1, dtype=torch.long, device=group_index.device)
        last = last.scatter_reduce(0, group_index, order, reduce="amax", include_self=False)
        span = token_logprobs.new_zeros(num_groups).index_add(0, group_index, token_logprobs)
        merged = logprob_rows[last] + (span - token_logprobs[last]).unsqueeze(-1)
        empty = torch.bincount(group_index, minlength=num_groups) == 0
        # Checked first: a where over [M, V] costs as much as the merge, and pieces have no empty group.
        return torch.where(empty.unsqueeze(-1), float("-inf"), merged) if bool(empty.any()) else merged
    raise ValueError(f"unknown merge {merge!r}; expected one of {MERGES}")


def fit_to_vocab(table: torch.Tensor, vocab: int, fill, name: str) -> torch.Tensor:
    """A per-token-id table [n] of a tokenizer extended with `fill` to a model's vocabulary [vocab].

    Models often pad their output layer past the tokenizer (Qwen2.5: 151936 logits, 151665
    tokens); the extra ids never match anything. A model vocabulary smaller than the tokenizer's
    means the model and the tokenizer do not belong together.
    """
    n = table.shape[0]
    if n > vocab:
        raise ValueError(
            f"{name} covers {n} token ids but the model's logits have only {vocab} entries: the model "
            "and its tokenizer do not match; point the model and tokenizer paths at the same checkpoint."
        )
    if n == vocab:
        return table
    return torch.cat([table, table.new_full((vocab - n,), fill)])


def _numpy_sortable(x: torch.Tensor) -> bool:
    """Whether the NumPy sorts below apply: float32 rows on the CPU. There torch.sort and a full
    torch.topk take 10-30x longer than NumPy's sort of the same [M, V] (measured on 2 cores at
    V = 152k), which made the full-vocabulary sorts most of the exact mode's time."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2


def _descending_keys(x: np.ndarray) -> np.ndarray:
    """int64 keys [M, V] of float32 rows [M, V] whose ascending order is x's stable descending
    order: the float bits mapped to an order-preserving int32, inverted, above the column index.
    Adding 0 turns -0.0 into 0.0, which torch.sort treats as equal."""
    bits = (x + np.float32(0.0)).view(np.int32)
    # In place where possible: each fresh [M, V] array costs its page faults.
    key = bits >> 31
    key &= np.int32(0x7FFFFFFF)
    key ^= bits
    np.invert(key, out=key)
    keys = key.astype(np.int64)
    keys <<= 32
    keys |= np.arange(x.shape[-1], dtype=np.int64)
    return keys


def descending_order(x: torch.Tensor) -> torch.Tensor:
    """Stable descending sort order of each row: [M, V] -> int64 [M, V], equal to
    torch.sort(x, dim=-1, descending=True, stable=True).indices. On CPU float32 one NumPy sort of
    packed (value, index) int64 keys, values only, instead of an index sort."""
    if not _numpy_sortable(x):
        return torch.sort(x, dim=-1, descending=True, stable=True).indices
    keys = _descending_keys(x.detach().contiguous().numpy())
    keys.sort(axis=-1)
    np.bitwise_and(keys, 0xFFFFFFFF, out=keys)
    return torch.from_numpy(keys)


class _SortDescending(torch.autograd.Function):
    """Row values sorted descending with NumPy (CPU float32 [M, V]); backward scatters the
    gradient through the sort order, recomputed from the input (forward keeps no index tensor)."""

    @staticmethod
    def forward(ctx, x):
        values = np.negative(x.detach().contiguous().numpy())
        values.sort(axis=-1)
        np.negative(values, out=values)
        ctx.save_for_backward(x)
        return torch.from_numpy(values)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.zeros_like(x).scatter_(-1, descending_order(x), grad)


def sort_descending(x: torch.Tensor) -> torch.Tensor:
    """Each row's values sorted descending, differentiable: [M, V] -> [M, V]."""
    if not _numpy_sortable(x):
        return torch.sort(x, dim=-1, descending=True).values
    return _SortDescending.apply(x)


def _sorted_desc(x: torch.Tensor, k: int | None) -> torch.Tensor:
    """Largest k values of each row in descending order ([M, V] -> [M, min(k, V)]); all if k is None."""
    if k is None or k >= x.shape[-1]:
        return sort_descending(x)
    return torch.topk(x, k, dim=-1, sorted=True).values


def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact ULD distance: L1 between p [M, Vp] and q [M, Vq] each sorted descending (the shorter
    zero-padded). Invariant to permuting either vocabulary. Returns [M]."""
    width = max(p.shape[-1], q.shape[-1])
    return (_pad_last(_sorted_desc(p, None), width) - _pad_last(_sorted_desc(q, None), width)).abs().sum(-1)


def sorted_l1_from_top(
    p_top: torch.Tensor,
    p_total: torch.Tensor,
    q_top: torch.Tensor,
    q_total: torch.Tensor,
    known: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted L1 from the largest entries of two measures, with a bound on the error.

    p_top: [M, kp], q_top: [M, kq] sorted descending; p_total, q_total: [M] total masses; known:
    [M] number of leading ranks to compare (default all; ranks past it count as tail). Only the
    min(kp, kq) ranks both sides hold are compared (zero-padding the narrower side would pit its
    tail against the other's kept entries, and the estimate would no longer be a lower bound).
    With P, Q the masses past the compared ranks, the estimate is sum_r |p_r - q_r| + |P - Q|, and
    the exact sorted L1 lies in [estimate, estimate + 2 min(P, Q)]. Exact when either tail is empty.
    Returns (estimate [M], bound [M]).
    """
    width = min(p_top.shape[-1], q_top.shape[-1])
    p_top, q_top = p_top[..., :width], q_top[..., :width]
    if known is not None:
        compared = torch.arange(width, device=p_top.device) < known.unsqueeze(-1)
        p_top, q_top = torch.where(compared, p_top, 0.0), torch.where(compared, q_top, 0.0)
    p_tail = (p_total - p_top.sum(-1)).clamp(min=0.0)
    q_tail = (q_total - q_top.sum(-1)).clamp(min=0.0)
    estimate = (p_top - q_top).abs().sum(-1) + (p_tail - q_tail).abs()
    return estimate, 2.0 * torch.minimum(p_tail, q_tail).detach()


def jsd_terms(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Per-entry terms of the generalized Jensen-Shannon divergence (TRL's GOLDConfig.beta convention).

    student_logp, teacher_logp: [M, A] normalized log-probs -> [M, A], summing to the divergence.
    beta=0: KL(teacher || student); beta=1: KL(student || teacher); otherwise with
    m = beta * teacher + (1 - beta) * student, beta * KL(teacher || m) + (1 - beta) * KL(student || m).
    Log-probs are floored at LOG_FLOOR, so zero-probability entries (-inf) add nothing and a KL
    that is infinite in theory (support mismatch) is large and finite, with finite gradients.
    """
    student_logp, teacher_logp = student_logp.clamp(min=LOG_FLOOR), teacher_logp.clamp(min=LOG_FLOOR)
    if beta == 0.0:
        return teacher_logp.exp() * (teacher_logp - student_logp)
    if beta == 1.0:
        return student_logp.exp() * (student_logp - teacher_logp)
    mixture = torch.logaddexp(teacher_logp + math.log(beta), student_logp + math.log(1.0 - beta))
    return beta * teacher_logp.exp() * (teacher_logp - mixture) + (1.0 - beta) * student_logp.exp() * (
        student_logp - mixture
    )


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per row: jsd_terms summed. [M, A], [M, A] -> [M]."""
    return jsd_terms(student_logp, teacher_logp, beta).sum(-1)


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x * log(y) with 0 where x == 0 (also when y == 0)."""
    return torch.where(x > 0, x * torch.log(torch.where(x > 0, y, 1.0)), 0.0)


def spread_jsd_bound(
    estimate: torch.Tensor, student_mass: torch.Tensor, teacher_mass: torch.Tensor, beta: float
) -> torch.Tensor:
    """Bound on the error of the generalized JSD terms of entries whose teacher probabilities are
    unknown (only their sum is), when each is estimated (e.g. by an even spread).

    estimate: [M] the estimated sum of those entries' terms; student_mass P, teacher_mass Q: [M]
    their total normalized masses. For 0 < beta < 1 the exact sum S of the terms
    f(p, q) = (1 - b) p log(p / m) + b q log(q / m), m = b q + (1 - b) p, lies in [L, U] with
    f0 = (1 - b) log(1 / (1 - b)) P (the terms at q = 0):
      U = f0 + b Q log(1 / b)                       (m >= (1 - b) p and m >= b q),
      L = max(f(P, Q),                               (joint convexity: pooling lowers it)
              f0 - b Q + b Q log(Q / (b Q + (1 - b) P)))  (log(1 + x) <= x; log-sum inequality).
    Returns max(U - estimate, estimate - L) >= 0 [M]. Requires 0 < beta < 1: at beta 0 or 1 one
    of the KLs is unbounded (an unknown teacher probability may be 0), and the spread is an estimate.
    """
    b = beta
    mix = b * teacher_mass + (1.0 - b) * student_mass
    f0 = (1.0 - b) * math.log(1.0 / (1.0 - b)) * student_mass
    upper = f0 + b * teacher_mass * math.log(1.0 / b)
    pooled = (1.0 - b) * _xlogy(student_mass, student_mass / mix.clamp(min=1e-30)) + b * _xlogy(
        teacher_mass, teacher_mass / mix.clamp(min=1e-30)
    )
    spread = f0 - b * teacher_mass + b * _xlogy(teacher_mass, teacher_mass / mix.clamp(min=1e-30))
    lower = torch.maximum(torch.maximum(pooled, spread), torch.zeros_like(pooled))
    return torch.maximum(upper - estimate, estimate - lower).clamp(min=0.0)


@dataclass
class TeacherGroupStats:
    """Compact per-group teacher statistics (GOLD.md section 5), flattened over groups.

    span_logprob: [M]; top_probs: [M, k] largest merged-measure entries, descending; top_ids:
    [M, k] their teacher token ids; tail_mass: [M] merged mass outside the top k; unmatched_mass:
    [M] merged mass on vocabulary entries without a byte-equal student entry (hybrid loss only).
    """

    span_logprob: torch.Tensor
    top_probs: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None
    tail_mass: torch.Tensor | None = None
    unmatched_mass: torch.Tensor | None = None

    @property
    def total_mass(self) -> torch.Tensor:
        return self.top_probs.sum(-1) + self.tail_mass


def compress_teacher_groups(
    merged_logm: torch.Tensor,
    span_logprob: torch.Tensor,
    topk: int | None,
    teacher_matched: torch.Tensor | None = None,
) -> TeacherGroupStats:
    """Top-k compression of merged teacher measures: merged_logm [M, V] -> TeacherGroupStats.

    topk None (or >= V) keeps the whole vocabulary, which makes every downstream result exact.
    teacher_matched: bool [V_tokenizer <= V], byte-matched teacher entries (hybrid loss); model
    entries past the tokenizer's vocabulary count as unmatched.
    """
    vocab = merged_logm.shape[-1]
    k = vocab if topk is None else min(topk, vocab)
    if teacher_matched is not None:
        teacher_matched = fit_to_vocab(teacher_matched, vocab, False, "teacher_matched (teacher tokenizer vocabulary)")
    if k == vocab:
        top_ids = descending_order(merged_logm)
        top_logm = merged_logm.gather(-1, top_ids)
    else:
        top_logm, top_ids = torch.topk(merged_logm, k, dim=-1, sorted=True)
    top_probs = top_logm.exp()
    # k = V: the kept entries are all of them (and the tail is 0), so no logsumexp over [M, V].
    total = top_probs.sum(-1) if k == vocab else torch.logsumexp(merged_logm, dim=-1).exp()
    unmatched_mass = None
    if teacher_matched is not None:
        # Summed directly (not total - matched) so an empty unmatched set gives exactly 0.
        unmatched_mass = torch.where(teacher_matched, float("-inf"), merged_logm).logsumexp(-1).exp()
    return TeacherGroupStats(
        span_logprob=span_logprob,
        top_probs=top_probs,
        top_ids=top_ids,
        # k = V: no tail at all (exactly 0, not the round-off of total - sum).
        tail_mass=torch.zeros_like(total) if k == vocab else (total - top_probs.sum(-1)).clamp(min=0.0),
        unmatched_mass=unmatched_mass,
    )


def uld_loss(student_logm: torch.Tensor, teacher: TeacherGroupStats, student_topk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ULD distance per group from the student's merged log-measures [M, Vs] and the teacher's
    compressed statistics. student_topk None sorts the student's full vocabulary.
    Returns (distance [M], error bound [M])."""
    p = student_logm.exp()
    return sorted_l1_from_top(_sorted_desc(p, student_topk), p.sum(-1), teacher.top_probs, teacher.total_mass)


def hybrid_loss(
    student_logm: torch.Tensor,
    teacher: TeacherGroupStats,
    teacher_to_student: torch.Tensor,
    student_matched: torch.Tensor,
    beta: float = 0.5,
    matched_weight: float = 0.5,
    unmatched_weight: float = 0.5,
    student_topk: int | None = None,
) -> dict[str, torch.Tensor]:
    """Hybrid GOLD loss per group: generalized JSD on byte-matched entries, sorted L1 on the rest.

    student_logm: [M, Vs] merged student log-measures; teacher: compressed statistics with
    unmatched_mass; teacher_to_student: int64 [Vt] (-1 unmatched); student_matched: bool [Vs].
    The tables may be shorter than the models' vocabularies (padded output layers): the extra
    model entries are unmatched.
    Matched part: JSD over the atoms {each matched entry, all unmatched mass}, both sides
    normalized (hybrid_jsd). Unmatched part: sorted L1 of the unmatched entries.
    Returns per-group tensors [M]: loss, jsd, l1, l1_bound, and for 0 < beta < 1 jsd_bound; bound =
    matched_weight * jsd_bound + unmatched_weight * l1_bound bounds the whole loss's top-k error
    (at beta 0 or 1 it covers the L1 part only: the JSD part is then an estimate, see hybrid_jsd).
    """
    p = student_logm.exp()
    student_matched = fit_to_vocab(student_matched, p.shape[-1], False, "student_matched (student tokenizer vocabulary)")
    mapped = _teacher_top_on_student(teacher.top_ids, teacher_to_student)
    is_matched = mapped >= 0
    jsd, jsd_bound = hybrid_jsd(student_logm, teacher, mapped, student_matched, beta)

    # The teacher's top-k holds its largest unmatched entries in order; compare that many ranks.
    q_unmatched_top = _sorted_desc(torch.where(is_matched, 0.0, teacher.top_probs), None)
    p_unmatched = torch.where(student_matched, 0.0, p)
    l1, l1_bound = sorted_l1_from_top(
        _sorted_desc(p_unmatched, student_topk), p_unmatched.sum(-1), q_unmatched_top, teacher.unmatched_mass,
        known=(~is_matched).sum(-1),
    )
    parts = {"loss": matched_weight * jsd + unmatched_weight * l1, "jsd": jsd, "l1": l1, "l1_bound": l1_bound,
             "bound": unmatched_weight * l1_bound}
    if jsd_bound is not None:
        parts["jsd_bound"] = jsd_bound
        parts["bound"] = parts["bound"] + matched_weight * jsd_bound
    return parts


def _teacher_top_on_student(top_ids: torch.Tensor, teacher_to_student: torch.Tensor) -> torch.Tensor:
    """Student ids of the teacher's kept entries: top_ids [M, k] -> [M, k], -1 where unmatched
    (including model ids past the teacher tokenizer's vocabulary)."""
    n_teacher = teacher_to_student.shape[0]
    return torch.where(top_ids < n_teacher, teacher_to_student[top_ids.clamp(max=n_teacher - 1)], -1)


def hybrid_jsd(
    student_logm: torch.Tensor,
    teacher: TeacherGroupStats,
    mapped: torch.Tensor,
    student_matched: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matched part of the hybrid loss: generalized JSD over the atoms {each matched student entry,
    the unmatched mass}, both sides normalized, with a bound on the top-k error.

    student_logm: [M, Vs]; teacher: compressed statistics (top-k, total and unmatched mass);
    mapped: [M, k] student ids of the teacher's kept entries (-1 unmatched); student_matched: bool
    [Vs] (the byte-equal map is one-to-one). The teacher's probabilities of matched entries outside
    its top k are known only through their sum; each gets an even share of it (the JSD then uses
    every student entry, unlike pooling them into one atom, which drops their divergence). Exact
    when the top k holds every matched entry. Student side in log space: a chain-merged measure
    can underflow to 0 in probability space (the gradient of log would be inf * 0 = NaN).
    Returns (jsd [M], bound [M] on |jsd - exact| from spread_jsd_bound, or None at beta 0 or 1).
    """
    logs = student_logm.clamp(min=LOG_FLOOR)
    s_log = logs - logs.logsumexp(-1, keepdim=True)
    s_unmatched = torch.where(student_matched, float("-inf"), s_log).logsumexp(-1, keepdim=True)

    is_known = mapped >= 0
    index = mapped.clamp(min=0)
    spread_entries = (student_matched.sum() - is_known.sum(-1)).to(s_log.dtype)
    q_total = teacher.total_mass
    q_known = torch.where(is_known, teacher.top_probs, 0.0)
    q_spread = (q_total - teacher.unmatched_mass - q_known.sum(-1)).clamp(min=0.0)
    share = torch.where(spread_entries > 0, q_spread / spread_entries.clamp(min=1.0), 0.0)
    # Teacher atoms, normalized: each matched entry outside the top k holds the even share, the kept
    # ones their own probability (one-to-one map), the last atom the unmatched mass.
    t_share, t_known, t_unmatched = _normalized_log_parts(
        share, spread_entries, q_known, teacher.unmatched_mass)
    # The spread entries' terms in one pass over [M, Vs] with the share as one number per row, the
    # kept entries' terms on [M, k]: no [M, Vs] teacher tensor is built.
    known = torch.zeros_like(s_log, dtype=torch.uint8).scatter_reduce(
        1, index, is_known.to(torch.uint8), reduce="amax")  # amax: unkept entries all point at id 0
    spread = student_matched & (known == 0)
    spread_terms = torch.where(spread, jsd_terms(s_log, t_share.unsqueeze(-1), beta), 0.0).sum(-1)
    jsd = (spread_terms + torch.where(is_known, jsd_terms(s_log.gather(1, index), t_known, beta), 0.0).sum(-1)
           + jsd_terms(s_unmatched, t_unmatched.unsqueeze(-1), beta).squeeze(-1))
    if beta <= 0.0 or beta >= 1.0:
        return jsd, None
    with torch.no_grad():
        student_mass = torch.where(spread, s_log.exp(), 0.0).sum(-1)
        teacher_mass = torch.where(q_total > 0, q_spread / q_total.clamp(min=1e-30), 0.0)
        bound = spread_jsd_bound(spread_terms.detach(), student_mass, teacher_mass, beta)
    return jsd, bound


def _normalized_log_parts(
    share: torch.Tensor, spread_entries: torch.Tensor, known: torch.Tensor, unmatched: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_normalized_log of the teacher atoms [share repeated spread_entries times, known..., unmatched]
    without building them: share, spread_entries, unmatched [M], known [M, k] (0 where not kept).
    Returns (log share [M], log known [M, k], log unmatched [M]), LOG_FLOOR where empty."""
    total = (share * spread_entries + known.sum(-1) + unmatched).unsqueeze(-1)
    logs = _normalized_log(torch.cat([share.unsqueeze(-1), known, unmatched.unsqueeze(-1)], dim=-1), total)
    return logs[:, 0], logs[:, 1:-1], logs[:, -1]


def _normalized_log(measure: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """log(measure / total) row-wise with empty entries at LOG_FLOOR; a row without mass is all
    LOG_FLOOR (and passes no gradient). measure [M, A], total [M, 1] (default: the row sums) -> [M, A]."""
    positive = measure > 0
    total = measure.sum(-1, keepdim=True) if total is None else total
    # log of a safe value where empty: log(0) would send 0 * inf = NaN back through the masked branch.
    logs = torch.log(torch.where(positive, measure, 1.0)) - torch.log(torch.where(total > 0, total, 1.0))
    return torch.where(positive, logs, LOG_FLOOR)


def reduce_group_loss(
    loss: torch.Tensor, mask: torch.Tensor, reduction: str = "token_mean", max_len: int | None = None
) -> torch.Tensor:
    """Reduce per-group losses [B, G] under mask [B, G] the way SkyRL reduces per-token losses.

    token_mean: mean over all groups of the batch; sequence_mean: mean over each sample's groups,
    then over samples; seq_mean_token_sum_norm: sum over each sample's groups / max_len, then mean.
    """
    mask = mask.to(loss.dtype)
    masked = torch.where(mask > 0, loss, 0.0)
    if reduction == "token_mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if reduction == "sequence_mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if reduction == "seq_mean_token_sum_norm":
        return (masked.sum(-1) / float(max_len or loss.shape[-1])).mean()
    raise ValueError(f"unknown loss reduction {reduction!r}; expected one of {LOSS_REDUCTIONS}")
