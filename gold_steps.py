"""GOLD's part of a SkyRL training step, the same for every SkyRL version (imports no SkyRL).

The trainer hooks both adapters share (adapters/trainer_common.py) and the per-version workers
(adapters/skyrl031, adapters/skyrl040) call these; only how a batch reaches a worker and how results
come back differs.

- add_teacher_view: teacher view and alignment of a batch (GOLD.md steps 2-3), in convert_to_training_input.
- served_teacher_step: with gold.teacher_backend=served, the step's part that scores teacher views on
  the server (served_teacher.ServedTeacherStep), built with the trainer.
- teacher_forward: the teacher's payload of a micro-batch, in the GOLD ref worker.
- student_loss / student_statistics: the GOLD loss and the student's group distributions of a
  micro-batch, in the GOLD policy worker.
- apply_gold_rewards: reward mode's per-token rewards from span log-ratios, in apply_reward_kl_penalty.
- lift_gold_metrics: the policy worker's gold/* metrics under their own names.

`batch` is SkyRL's TrainingInputBatch (both versions: tensors by key, `.metadata`, `.batch_size`);
`model` is SkyRL's HFModelWrapper (both versions: model(sequences, num_actions, attention_mask,
temperature=..., return_output=True) -> (action log-probs, output with logits)).
"""

from __future__ import annotations

import functools
import time

import torch

from .config import needs_teacher_distributions
from .gold_forward import PAYLOAD_KEYS, TEACHER_INPUT_KEYS, HybridTables, student_gold_loss, student_payload, teacher_payload
from .gold_metrics import alignment_metrics, respelled_metric, response_end_metrics, span_ratio_metric, turn_metrics
from .losses import span_logprobs, span_rewards
from .multiturn_view import build_rollout_views
from .served_teacher import ServedTeacher, ServedTeacherStep
from .teacher_view import collate_views


def compute_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def add_teacher_view(
    batch, responses: list[list[int]], prompts, student_tokenizer, teacher_tokenizer, gold, same_vocab: bool,
    loss_masks: list[list[int]] | None = None, conversations: list[list[dict]] | None = None,
    one_assistant_message: bool = False, views=None,
) -> dict[str, float]:
    """Teacher view and alignment (GOLD.md steps 2-3): adds teacher_sequences [B, T_t],
    teacher_attention_mask [B, T_t], teacher_group_ids [B, R_t], student_group_ids [B, R_s]
    and metadata gold_num_groups to `batch`; returns the alignment metrics. Rows SkyRL appended for
    data parallelism (beyond len(responses)) get no groups.

    Multi-turn rollouts (multiturn_view.build_rollout_views): loss_masks are the generator's, per
    response; conversations, per response, the messages the generator appended after env.init's
    (GOLDGymGenerator's gold_response_messages); one_assistant_message: SkyRL's
    generator.use_conversation_multi_turn=false. Only loss-mask-1 tokens get a group. views: the
    responses' teacher views where already built (teacher_views of the same arguments; the served
    teacher's step builds them as rollouts return)."""
    n, width = len(responses), batch["response_mask"].shape[1]
    start = time.perf_counter()
    truncated, view_metrics = 0.0, {}
    loss_masks = loss_masks if loss_masks is not None else [[1] * len(r) for r in responses]
    if same_vocab:
        # Same vocabulary: the teacher reads the student's own tokens, one group per assistant token.
        positions = torch.arange(width).expand(n, width)
        groups = torch.where(batch["loss_mask"][:n] > 0, positions, -1)
        tensors = {
            "teacher_sequences": batch["sequences"][:n],
            "teacher_attention_mask": batch["attention_mask"][:n],
            "teacher_group_ids": groups,
            "student_group_ids": groups,
        }
        num_groups = width
    else:
        if views is None:
            views = teacher_views(
                responses, loss_masks, prompts, conversations, student_tokenizer, teacher_tokenizer, gold,
                one_assistant_message,
            )
        collated = collate_views(views, teacher_tokenizer.pad_token_id, student_response_length=width)
        tensors = {
            "teacher_sequences": collated.sequences,
            "teacher_attention_mask": collated.attention_mask,
            "teacher_group_ids": collated.teacher_group_ids,
            "student_group_ids": at_response_positions(collated.student_group_ids, [len(v.student_groups) for v in views], batch["response_mask"][:n]),
        }
        num_groups = collated.num_groups
        truncated = sum(v.truncated for v in views) / n
        view_metrics = {**response_end_metrics(views), **respelled_metric(views)}
    turns = [max(sum(m.get("role") == "assistant" for m in c), 1) for c in conversations] if conversations else [1] * n
    view_metrics.update(turn_metrics(turns, batch["loss_mask"][:n], batch["response_mask"][:n]))
    pad = batch.batch_size - n
    for key, value in tensors.items():
        filler = value[:pad].clone() if key in TEACHER_INPUT_KEYS[:2] else torch.full_like(value[:pad], -1)
        batch[key] = torch.cat([value, filler])
    batch.metadata["gold_num_groups"] = num_groups
    metrics = alignment_metrics(tensors["student_group_ids"], tensors["teacher_group_ids"], num_groups, batch["response_mask"][:n])
    metrics.update(view_metrics)
    metrics["gold/truncated_share"] = truncated
    metrics["gold/alignment_seconds"] = time.perf_counter() - start
    return metrics


def teacher_views(
    responses: list[list[int]], loss_masks: list[list[int]], prompts, conversations: list[list[dict]] | None,
    student_tokenizer, teacher_tokenizer, gold, one_assistant_message: bool = False,
) -> list:
    """The teacher views of SkyRL rollouts with the gold.* view settings (multiturn_view.build_rollout_views:
    single- and multi-turn). prompts: per response, the messages env.init returned; loss_masks,
    conversations, one_assistant_message: as add_teacher_view takes them."""
    if prompts is None or len(prompts) != len(responses):
        raise ValueError(
            f"GOLD needs the prompt messages of each of the {len(responses)} responses, got "
            f"{None if prompts is None else len(prompts)}. Fix: generate through the trainer's "
            "generate() with GOLDGymGenerator and keep trainer.algorithm.dynamic_sampling.type=null"
        )
    eos_ids = gold.student_eos_token_ids
    return build_rollout_views(
        responses, loss_masks, list(prompts), conversations, student_tokenizer, teacher_tokenizer,
        one_assistant_message=one_assistant_message, fold_system_message=gold.fold_system_message,
        student_eos_ids=frozenset(eos_ids) if eos_ids else None,
        max_teacher_length=gold.max_teacher_length, teacher_end_token=gold.teacher_end_token,
    )


def served_teacher_step(
    gold, student_tokenizer, teacher_tokenizer, same_vocab: bool, one_assistant_message: bool = False
) -> ServedTeacherStep | None:
    """With gold.teacher_backend=served, the step's served-teacher part, after the client's start-up
    check against the server (so a bad server fails when the trainer is built); else None. Its views
    are teacher_views' (those add_teacher_view builds for the ref worker); one_assistant_message: SkyRL's
    generator.use_conversation_multi_turn=false."""
    if gold.teacher_backend != "served":
        return None
    teacher = ServedTeacher.from_config(gold, teacher_tokenizer)
    if same_vocab:  # the teacher reads the student's own ids
        return ServedTeacherStep(teacher, None)
    return ServedTeacherStep(
        teacher,
        functools.partial(
            teacher_views, student_tokenizer=student_tokenizer, teacher_tokenizer=teacher_tokenizer, gold=gold,
            one_assistant_message=one_assistant_message,
        ),
    )


def at_response_positions(groups: torch.Tensor, lengths: list[int], response_mask: torch.Tensor) -> torch.Tensor:
    """Student group ids moved to where the batch holds each response's tokens.

    groups: [B, R] left-aligned (row i's first lengths[i] entries); response_mask: [B, R], 1 on
    the response tokens. skyrl-train 0.3.1 puts a response at the start of the response columns,
    skyrl 0.4.0 at their end (right-aligned after a left-padded block); the mask says which.
    """
    counts = (response_mask > 0).sum(-1)
    if counts.tolist() != list(lengths):
        raise ValueError(
            f"the batch's response_mask holds {counts.tolist()} response tokens per row but the responses have "
            f"{list(lengths)}; the teacher views must be built from the same generator output as the batch"
        )
    out = torch.full_like(groups, -1)
    out[response_mask > 0] = groups[torch.arange(groups.shape[1]) < torch.tensor(lengths)[:, None]]
    return out


def teacher_forward(model, batch, gold, teacher_matched: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher statistics of one micro-batch (device-agnostic).

    batch: TEACHER_INPUT_KEYS plus metadata gold_num_groups (G). Returns teacher_payload's dict
    ([B, G] span log-probs and mask; with distributions top-k probs/ids [B, G, k], tail mass
    [B, G] and, for the hybrid loss, unmatched mass [B, G]).
    """
    sequences, groups = batch["teacher_sequences"], batch["teacher_group_ids"]
    r = groups.shape[1]
    # The wrapper divides the logits by the temperature in place and gives the tokens' log-probs
    # exactly as SkyRL's stock ref worker computes them.
    token_lp, output = model(sequences, r, batch["teacher_attention_mask"], temperature=gold.teacher_temperature, return_output=True)
    return teacher_payload(
        output["logits"][:, -r - 1 : -1],
        sequences[:, -r:],
        groups,
        batch.metadata["gold_num_groups"],
        merge=gold.merge,
        with_distributions=needs_teacher_distributions(gold),
        topk=gold.teacher_topk,
        teacher_matched=teacher_matched,
        token_logprobs=token_lp,
    )


def student_loss(model, batch, gold, loss_reduction: str, max_seq_len: int | None = None, hybrid: HybridTables | None = None):
    """GOLD loss of one micro-batch with gradient through the student (device-agnostic).

    batch: sequences, attention_mask, loss_mask, student_group_ids and the teacher payload;
    loss_reduction: gold.loss_reduction, else SkyRL's trainer.algorithm.loss_reduction.
    Returns (loss, metrics).
    """
    sequences, r = batch["sequences"], batch.metadata["response_length"]
    _, output = model(sequences, r, batch["attention_mask"], temperature=gold.student_temperature, return_output=True)
    # Tokens outside the loss mask (e.g. padding rows added for data parallelism) get no signal.
    groups = torch.where(batch["loss_mask"] > 0, batch["student_group_ids"], -1)
    return student_gold_loss(
        output["logits"][:, -r - 1 : -1],  # already divided by the temperature by the wrapper
        sequences[:, -r:],
        groups,
        {key: batch[key] for key in PAYLOAD_KEYS if batch.get(key) is not None},
        merge=gold.merge,
        student_topk=gold.teacher_topk,
        hybrid=hybrid,
        beta=gold.beta,
        reduction=gold.loss_reduction or loss_reduction,
        max_len=max_seq_len,
    )


def student_statistics(model, batch, gold) -> dict[str, torch.Tensor]:
    """The student's compressed group distributions of one micro-batch (device-agnostic, no grad):
    student_payload's dict for sequences, attention_mask, student_group_ids and gold_num_groups."""
    sequences, r = batch["sequences"], batch.metadata["response_length"]
    _, output = model(sequences, r, batch["attention_mask"], temperature=gold.student_temperature, return_output=True)
    return student_payload(
        output["logits"][:, -r - 1 : -1], sequences[:, -r:], batch["student_group_ids"],
        batch.metadata["gold_num_groups"], gold.merge, gold.teacher_topk,
    )


def apply_gold_rewards(data, gold) -> dict[str, float]:
    """Reward mode: per-token rewards from span log-ratios (GOLD.md section 4), written to
    data["rewards"]; with gold_uld_distance [B, G] in data, minus uld_reward_coef times it. In loss
    mode the rewards are left as they are (unused). Returns the gold/* metrics of the step."""
    groups, num_groups = data["student_group_ids"], data.metadata["gold_num_groups"]
    student_spans = span_logprobs(data["action_log_probs"].float(), groups, num_groups)
    teacher_spans = data["teacher_span_logprobs"]
    present = data["teacher_group_mask"].bool()
    metrics = span_ratio_metric(student_spans, teacher_spans, present)
    if gold.mode == "reward":
        penalty = None
        distance = data.get("gold_uld_distance")
        if distance is not None:
            penalty = gold.uld_reward_coef * distance
            metrics["gold/uld_distance"] = float(distance[present].mean()) if present.any() else 0.0
        rewards = span_rewards(student_spans, teacher_spans, groups, penalty)
        data["rewards"] = rewards * data["loss_mask"]
    return metrics


def lift_gold_metrics(metrics: dict) -> None:
    """SkyRL files the policy worker's metrics under policy/; GOLD's are logged as gold/*."""
    for key in [k for k in metrics if k.startswith("policy/gold/")]:
        metrics[key[len("policy/"):]] = metrics.pop(key)


def no_op_advantage(token_level_rewards: torch.Tensor, **kwargs):
    """SkyRL advantage estimator `no_op`: advantages = returns = the per-token rewards [B, R]."""
    return token_level_rewards, token_level_rewards
