"""The GOLD core API in one import: re-tokenization, span alignment, span log-likelihoods and
rewards, merging, ULD and hybrid losses, teacher statistics.

Each function lives in the module that owns its job: `alignment` (token bytes, span alignment,
vocabulary map), `teacher_view` (the teacher's input and the aligned groups of a rollout),
`losses` (pure tensor math), `gold_forward` (from model logits to teacher payload and student loss).
"""

from .alignment import Alignment, TokenBytes, VocabMap, align_spans, decode_with_spans, token_bytes, vocab_map
from .gold_forward import (
    PAYLOAD_KEYS,
    HybridTables,
    group_measures,
    response_logits,
    stats_from_payload,
    student_gold_loss,
    teacher_payload,
)
from .losses import (
    TeacherGroupStats,
    compress_teacher_groups,
    generalized_jsd,
    hybrid_loss,
    merge_groups,
    place_group_values,
    reduce_group_loss,
    segment_sum,
    sorted_l1,
    sorted_l1_from_top,
    span_logprobs,
    span_rewards,
    uld_loss,
)
from .teacher_view import TeacherBatch, TeacherView, build_teacher_view, build_teacher_views, collate_views

__all__ = [
    "Alignment", "TokenBytes", "VocabMap", "align_spans", "decode_with_spans", "token_bytes", "vocab_map",
    "PAYLOAD_KEYS", "HybridTables", "group_measures", "response_logits", "stats_from_payload", "student_gold_loss",
    "teacher_payload", "TeacherGroupStats", "compress_teacher_groups", "generalized_jsd", "hybrid_loss", "merge_groups",
    "place_group_values", "reduce_group_loss", "segment_sum", "sorted_l1", "sorted_l1_from_top", "span_logprobs",
    "span_rewards", "uld_loss", "TeacherBatch", "TeacherView", "build_teacher_view", "build_teacher_views", "collate_views",
]
