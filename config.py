"""The `gold` config section: every GOLD option, its default and its meaning, in one place.

Each SkyRL adapter adds this section to SkyRL's config (hydra on skyrl-train 0.3.1, a dataclass field
on skyrl 0.4.0; override any key as gold.key=value); `validate_run_config` runs at start-up on either
and names the key and the fix for every bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from .losses import LOSS_REDUCTIONS, MERGES

MODES = ("reward", "loss")
TEACHER_BACKENDS = ("ref_worker", "served")


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
    # Reduction of the loss-mode GOLD loss over groups: token_mean (mean over groups), sequence_mean,
    # seq_mean_token_sum_norm (each sample's sum / trainer.algorithm.max_seq_len); null = the same as
    # trainer.algorithm.loss_reduction (which reduces reward mode's importance_sampling loss).
    loss_reduction: Optional[str] = "token_mean"
    # Where the teacher runs. ref_worker: the GOLD ref worker (SkyRL's ref group, teacher weights
    # on training GPUs). served: a vLLM-compatible server scores each teacher view through
    # /v1/completions prompt log-probs (reward mode only, without the ULD term; served_teacher.py).
    teacher_backend: str = "ref_worker"
    # Served teacher: the server's root URL, e.g. http://host:8000 (not .../v1: the client adds it).
    teacher_url: Optional[str] = None
    # Served teacher: the model name the server serves; null = the one model it lists.
    teacher_model_name: Optional[str] = None
    # Served teacher: scoring requests in flight at once.
    teacher_concurrency: int = 64
    # Served teacher: seconds one request may take before it is retried.
    teacher_timeout: float = 300.0
    # Served teacher: retries of a request after a timeout, a lost connection or an HTTP 5xx/429,
    # with exponential backoff (0.5 s, 1 s, 2 s, ...); then the step fails.
    teacher_retries: int = 3


GOLD_KEYS = tuple(f.name for f in fields(GOLDConfig))


def _fail(key: str, problem: str, fix: str):
    raise ValueError(f"gold.{key}: {problem}. Fix: {fix}")


def _getter(gold):
    """get(key) on a GOLDConfig, dict or DictConfig."""
    return gold.get if hasattr(gold, "get") else lambda k, d=None: getattr(gold, k, d)


def validate_gold_config(gold) -> None:
    """Check one gold section (a GOLDConfig, dict or DictConfig); raise ValueError naming the key."""
    get = _getter(gold)
    unknown = set(gold.keys() if hasattr(gold, "keys") else ()) - set(GOLD_KEYS)
    if unknown:
        _fail(sorted(unknown)[0], "unknown key", f"use one of {', '.join(GOLD_KEYS)}")
    checks = [
        ("mode", get("mode") in MODES, f"use one of {MODES}"),
        ("merge", get("merge") in MERGES, f"use one of {MERGES}"),
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
    validate_teacher_backend(gold)


def validate_teacher_backend(gold) -> None:
    """The teacher_* keys: backend, and for a served teacher what it cannot do and where it is."""
    get = _getter(gold)
    backend = get("teacher_backend")
    if backend not in TEACHER_BACKENDS:
        _fail("teacher_backend", f"invalid value {backend!r}", f"use one of {TEACHER_BACKENDS}")
    if backend != "served":
        return
    if get("mode") != "reward" or float(get("uld_reward_coef")) > 0:
        _fail(
            "teacher_backend",
            f"a served teacher returns token log-probs only, but gold.mode={get('mode')} with "
            f"gold.uld_reward_coef={get('uld_reward_coef')} needs the teacher's distributions",
            "use gold.teacher_backend=ref_worker, or gold.mode=reward with gold.uld_reward_coef=0",
        )
    if float(get("teacher_temperature")) != 1.0:
        _fail(
            "teacher_temperature",
            f"{get('teacher_temperature')!r} with gold.teacher_backend=served: vLLM's prompt log-probs ignore temperature",
            "use 1.0, or gold.teacher_backend=ref_worker",
        )
    url = get("teacher_url")
    if not url:
        _fail("teacher_url", "not set but gold.teacher_backend=served", "set it to the teacher server's root URL, e.g. http://host:8000")
    if not str(url).startswith(("http://", "https://")):
        _fail("teacher_url", f"{url!r} is not an http(s) URL", "use the server's root URL, e.g. http://host:8000")
    if str(url).rstrip("/").endswith(("/v1", "/completions")):
        _fail("teacher_url", f"{url!r} ends in an API path", "give the server's root URL (without /v1); the client adds /v1/completions")
    limits = [
        ("teacher_concurrency", int(get("teacher_concurrency")) >= 1, "use at least 1"),
        ("teacher_timeout", float(get("teacher_timeout")) > 0, "use a positive number of seconds"),
        ("teacher_retries", int(get("teacher_retries")) >= 0, "use 0 (no retry) or more"),
    ]
    for key, ok, fix in limits:
        if not ok:
            _fail(key, f"invalid value {get(key)!r}", fix)


def needs_teacher_distributions(gold) -> bool:
    """Whether the teacher ships top-k merged distributions (loss mode, or the ULD reward term); the
    same runs need the GOLD policy worker, for its loss or for the student's group statistics."""
    return gold.mode == "loss" or float(gold.uld_reward_coef) > 0


def hybrid_weights(gold, matched_share: float) -> tuple[float, float]:
    """(matched, unmatched) part weights: configured values, else the adaptive default."""
    matched = gold.matched_weight if gold.matched_weight is not None else matched_share
    unmatched = gold.unmatched_weight if gold.unmatched_weight is not None else 1.0 - matched_share
    return float(matched), float(unmatched)


def config_value(cfg, key: str, default=None):
    """The value at a dotted key of a SkyRL config (hydra DictConfig on skyrl-train 0.3.1, dataclasses
    on skyrl 0.4.0); `default` where the key does not exist in this version."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, default) if node is not None else default
    return node


def validate_run_config(cfg, renamed: dict[str, str] | None = None) -> None:
    """Start-up checks of a full GOLD run config (SkyRL's config with the `gold` section), for every
    SkyRL version: `renamed` maps skyrl-train 0.3.1 key names to this version's (e.g. the 0.4.0
    adapter's RENAMED_KEYS); keys a version does not have are not checked.

    Raises ValueError naming the key and the fix; SkyRL's own validate_cfg runs after this.
    """
    renamed = renamed or {}
    gold = config_value(cfg, "gold")
    if gold is None:
        raise ValueError("config has no `gold` section. Fix: launch through gold_distillation.main_gold_distill")
    validate_gold_config(gold)

    def need(key: str, ok, fix: str):
        if not ok:
            raise ValueError(f"{renamed.get(key, key)}: {fix}")

    def value(key: str):
        return config_value(cfg, renamed.get(key, key))

    need("trainer.ref.model.path", value("trainer.ref.model.path"),
         "set it to the teacher model (folder or hub id), e.g. trainer.ref.model.path=Qwen/Qwen2.5-7B-Instruct")
    if gold.teacher_backend == "served":
        need("trainer.algorithm.use_kl_in_reward", not value("trainer.algorithm.use_kl_in_reward"),
             "set it to false with gold.teacher_backend=served: it creates SkyRL's ref group, which would load the "
             "teacher onto the training GPUs (with a served teacher the GOLD trainer runs its reward step itself)")
    else:
        need("trainer.algorithm.use_kl_in_reward", value("trainer.algorithm.use_kl_in_reward"),
             "set it to true: it creates SkyRL's ref group, which runs the GOLD teacher, and calls the GOLD reward step")
    need("trainer.algorithm.use_kl_loss", not value("trainer.algorithm.use_kl_loss"),
         "set it to false: the teacher signal replaces the KL loss")
    need("trainer.algorithm.dynamic_sampling.type", value("trainer.algorithm.dynamic_sampling.type") is None,
         "set it to null: GOLD pairs each response with its prompt messages in generation order")
    if gold.mode == "reward":
        need("trainer.algorithm.advantage_estimator", value("trainer.algorithm.advantage_estimator") == "no_op",
             "set it to no_op: in gold.mode=reward the per-token span rewards are the advantages")
        need("trainer.algorithm.policy_loss_type", value("trainer.algorithm.policy_loss_type") == "importance_sampling",
             "set it to importance_sampling for gold.mode=reward (or use gold.mode=loss)")
    strategy = value("trainer.strategy")
    need("trainer.strategy", strategy in ("fsdp", "fsdp2"),
         f"set it to fsdp2 (skyrl-train 0.3.1) or fsdp (skyrl 0.4.0), not {strategy!r}: the GOLD workers are FSDP workers")
    need("trainer.use_sample_packing", not value("trainer.use_sample_packing"),
         "set it to false: the GOLD ref worker (and the GOLD policy worker) read padded logits")
    need("trainer.ref.sequence_parallel_size", value("trainer.ref.sequence_parallel_size") == 1,
         "set it to 1: with sequence parallelism each rank holds only its slice of the teacher's logits")
    if needs_teacher_distributions(gold):
        need("trainer.policy.sequence_parallel_size", value("trainer.policy.sequence_parallel_size") == 1,
             "set it to 1 for gold.mode=loss or gold.uld_reward_coef > 0: with sequence parallelism each rank "
             "holds only its slice of the student's logits")
        # skyrl 0.4.0 only: token-budget micro-batches; the GOLD policy worker batches by samples.
        need("trainer.max_tokens_per_microbatch", (value("trainer.max_tokens_per_microbatch") or -1) <= 0,
             "set it to -1 for gold.mode=loss or gold.uld_reward_coef > 0: the GOLD policy worker batches by samples")
    if gold.mode == "loss" and gold.loss_reduction is None:
        need("gold.loss_reduction", value("trainer.algorithm.loss_reduction") in LOSS_REDUCTIONS,
             f"trainer.algorithm.loss_reduction={value('trainer.algorithm.loss_reduction')} has no GOLD counterpart. "
             f"Fix: set gold.loss_reduction to one of {LOSS_REDUCTIONS}")
    need("trainer.update_ref_every_epoch", not value("trainer.update_ref_every_epoch"),
         "set it to false: SkyRL would load the student's weights into the ref group, which runs the teacher")
    need("trainer.critic.model.path", not value("trainer.critic.model.path"),
         "set it to null: GOLD trains without a critic (its rewards are the advantages, or its loss is the GOLD loss)")
    need("generator.step_wise_trajectories", not value("generator.step_wise_trajectories"),
         "set it to false (multi-turn rollouts are scored per assistant turn without it): SkyRL gives every step "
         "of a trajectory the advantages of its last step, which would put one step's per-token GOLD rewards "
         "on other steps' tokens")
    # skyrl 0.4.0 only.
    need("generator.vision_language_generator", not value("generator.vision_language_generator"),
         "set it to false: GOLD's teacher reads text conversations")
