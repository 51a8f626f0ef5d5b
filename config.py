"""The `gold` config section: every GOLD option, its default and its meaning, in one place.

The hydra entrypoint adds this section to SkyRL's base config (override any key as gold.key=value);
`validate_gold_config` runs at start-up and names the key and the fix for every bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from .losses import LOSS_REDUCTIONS, MERGES, PLACEMENTS

MODES = ("reward", "loss")


@dataclass
class GOLDConfig:
    # reward: per-token rewards from span log-ratios, SkyRL's stock policy worker (no_op advantages,
    # importance_sampling loss). loss: supervised GOLD loss in the GOLD policy worker.
    mode: str = "reward"
    # Merge of a group's per-position distributions: geometric (normalized mean of log-probs) or
    # chain (joint probability of the earlier tokens times the last distribution).
    merge: str = "geometric"
    # loss mode: false = ULD sorted L1 on whole merged distributions; true = hybrid (generalized JSD
    # on byte-equal vocabulary entries, sorted L1 on the rest).
    hybrid: bool = False
    # Generalized JSD interpolation: 0 = KL(teacher||student), 1 = KL(student||teacher), 0.5 = JSD.
    beta: float = 0.5
    # Softmax temperatures applied to student and teacher logits before any log-prob.
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    # Hybrid part weights; null = adaptive: matched share of the teacher vocabulary and its complement.
    matched_weight: Optional[float] = None
    unmatched_weight: Optional[float] = None
    # Teacher merged distributions are shipped as their top-k entries + tail mass; null = full
    # vocabulary (exact). The student side uses the same k for the sorted L1.
    teacher_topk: Optional[int] = 64
    # Where a group's reward goes among its student tokens: last (default) or spread evenly.
    reward_placement: str = "last"
    # Reward mode: subtract coef * ULD distance of each group from its reward (0 = off). Costs a
    # second student forward pass (in the GOLD policy worker) and top-k teacher distributions.
    uld_reward_coef: float = 0.0
    # Teacher context limit (prompt + response tokens); longer teacher views are truncated at the end
    # of the response and the cut groups get no signal (counted in gold/truncated_share). null = none.
    max_teacher_length: Optional[int] = None
    # Student token ids that end a response (their group is the EOS group); null = the tokenizer's EOS
    # and the end-of-turn token its chat template writes after an assistant message.
    student_eos_token_ids: Optional[list] = None
    # Teacher token (a string, e.g. "<|end|>") appended after a student end token; null = the token
    # the teacher's chat template writes after an assistant message (its EOS without a template).
    teacher_end_token: Optional[str] = None
    # Fold a leading system message into the first user message before the teacher's chat template
    # (for templates that refuse a system role, e.g. Mistral's).
    fold_system_message: bool = False
    # Executing code shipped in a tokenizer folder is off unless turned on here.
    teacher_trust_remote_code: bool = False
    student_trust_remote_code: bool = False
    # Reduction of the loss-mode GOLD loss over groups; null = trainer.algorithm.loss_reduction.
    loss_reduction: Optional[str] = None


GOLD_KEYS = tuple(f.name for f in fields(GOLDConfig))


def _fail(key: str, problem: str, fix: str):
    raise ValueError(f"gold.{key}: {problem}. Fix: {fix}")


def validate_gold_config(gold) -> None:
    """Check one gold section (a GOLDConfig, dict or DictConfig); raise ValueError naming the key."""
    get = gold.get if hasattr(gold, "get") else lambda k, d=None: getattr(gold, k, d)
    unknown = set(gold.keys() if hasattr(gold, "keys") else ()) - set(GOLD_KEYS)
    if unknown:
        _fail(sorted(unknown)[0], "unknown key", f"use one of {', '.join(GOLD_KEYS)}")
    checks = [
        ("mode", get("mode") in MODES, f"use one of {MODES}"),
        ("merge", get("merge") in MERGES, f"use one of {MERGES}"),
        ("reward_placement", get("reward_placement") in PLACEMENTS, f"use one of {PLACEMENTS}"),
        ("beta", 0.0 <= float(get("beta")) <= 1.0, "use a value in [0, 1]"),
        ("student_temperature", float(get("student_temperature")) > 0, "use a positive temperature"),
        ("teacher_temperature", float(get("teacher_temperature")) > 0, "use a positive temperature"),
        ("teacher_topk", get("teacher_topk") is None or int(get("teacher_topk")) > 0,
         "use a positive k, or null for the full vocabulary"),
        ("max_teacher_length", get("max_teacher_length") is None or int(get("max_teacher_length")) > 0,
         "use a positive length, or null for no limit"),
        ("teacher_end_token", get("teacher_end_token") is None or (isinstance(get("teacher_end_token"), str) and get("teacher_end_token") != ""),
         "use a token string of the teacher's vocabulary (e.g. '<|end|>'), or null for its chat template's end-of-turn token"),
        ("loss_reduction", get("loss_reduction") is None or get("loss_reduction") in LOSS_REDUCTIONS,
         f"use one of {LOSS_REDUCTIONS} or null"),
    ]
    for key, ok, fix in checks:
        if not ok:
            _fail(key, f"invalid value {get(key)!r}", fix)
    if float(get("uld_reward_coef")) < 0:
        _fail("uld_reward_coef", f"negative coefficient {get('uld_reward_coef')!r}", "use 0 (off) or a positive weight")
    for key in ("matched_weight", "unmatched_weight"):
        if get(key) is not None and float(get(key)) < 0:
            _fail(key, f"negative weight {get(key)!r}", "use a weight >= 0, or null for the adaptive default")


def needs_teacher_distributions(gold) -> bool:
    """Whether the teacher ships top-k merged distributions (loss mode, or the ULD reward term); the
    same runs need the GOLD policy worker, for its loss or for the student's group statistics."""
    return gold.mode == "loss" or float(gold.uld_reward_coef) > 0


def hybrid_weights(gold, matched_share: float) -> tuple[float, float]:
    """(matched, unmatched) part weights: configured values, else the adaptive default."""
    matched = gold.matched_weight if gold.matched_weight is not None else matched_share
    unmatched = gold.unmatched_weight if gold.unmatched_weight is not None else 1.0 - matched_share
    return float(matched), float(unmatched)


def validate_run_config(cfg) -> None:
    """Start-up checks of a full GOLD run config (SkyRL's config with the `gold` section).

    Raises ValueError naming the key and the fix; SkyRL's own validate_cfg runs after this.
    """
    if "gold" not in cfg:
        raise ValueError("config has no `gold` section. Fix: launch through gold_distillation.main_gold_distill")
    validate_gold_config(cfg.gold)
    algorithm, trainer = cfg.trainer.algorithm, cfg.trainer

    def need(key: str, ok: bool, fix: str):
        if not ok:
            raise ValueError(f"{key}: {fix}")

    teacher = trainer.ref.model.get("path")
    need("trainer.ref.model.path", bool(teacher), "set it to the teacher model (folder or hub id), e.g. trainer.ref.model.path=Qwen/Qwen2.5-7B-Instruct")
    need("trainer.algorithm.use_kl_in_reward", bool(algorithm.use_kl_in_reward),
         "set it to true: it creates SkyRL's ref group, which runs the GOLD teacher, and calls the GOLD reward step")
    need("trainer.algorithm.use_kl_loss", not algorithm.use_kl_loss, "set it to false: the teacher signal replaces the KL loss")
    need("trainer.algorithm.dynamic_sampling.type", algorithm.dynamic_sampling.get("type") is None,
         "set it to null: GOLD pairs each response with its prompt messages in generation order")
    if cfg.gold.mode == "reward":
        need("trainer.algorithm.advantage_estimator", algorithm.advantage_estimator == "no_op",
             "set it to no_op: in gold.mode=reward the per-token span rewards are the advantages")
        need("trainer.algorithm.policy_loss_type", algorithm.policy_loss_type == "importance_sampling",
             "set it to importance_sampling for gold.mode=reward (or use gold.mode=loss)")
    if needs_teacher_distributions(cfg.gold):
        need("trainer.use_sample_packing", not trainer.use_sample_packing,
             "set it to false for gold.mode=loss or gold.uld_reward_coef > 0: the GOLD workers read padded logits")
