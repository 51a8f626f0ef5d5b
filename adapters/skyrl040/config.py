"""The GOLD run config on skyrl 0.4.0: SkyRL's dataclass config plus the `gold` section, with the
SkyRL settings both GOLD modes rely on as defaults, and the start-up checks.

No `from __future__ import annotations` here: SkyRL builds nested sections from the field types,
and a string annotation would turn the `gold` section into a dict of only the overridden keys.

The `gold` section is top-level (`gold.key=value`, the same keys as on skyrl-train 0.3.1).
Workers receive `cfg.trainer` only, so the section is also reachable there as `trainer.gold`: the
same object, set after parsing; workers read `self.cfg.gold` on both SkyRL versions.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import OmegaConf
from skyrl.train.config import AlgorithmConfig, SkyRLTrainConfig, TrainerConfig

from ...config import GOLD_KEYS, GOLDConfig, needs_teacher_distributions, validate_gold_config
from ...losses import LOSS_REDUCTIONS

# skyrl-train 0.3.1 keys that skyrl 0.4.0 renamed (0.4.0 rejects the old names, except
# trainer.use_sample_packing, which it still maps with a deprecation warning).
RENAMED_KEYS = {
    "trainer.use_sample_packing": "trainer.remove_microbatch_padding",
    "generator.num_inference_engines": "generator.inference_engine.num_engines",
    "generator.inference_engine_tensor_parallel_size": "generator.inference_engine.tensor_parallel_size",
    "generator.backend": "generator.inference_engine.backend",
    "generator.run_engines_locally": "generator.inference_engine.run_engines_locally",
}


@dataclass
class GOLDAlgorithmConfig(AlgorithmConfig):
    """SkyRL's algorithm section with GOLD's defaults: the ref group runs the teacher
    (use_kl_in_reward creates it and calls the reward step); reward mode trains with no_op
    advantages and the importance_sampling loss; the teacher signal replaces the KL loss."""

    advantage_estimator: str = "no_op"
    policy_loss_type: str = "importance_sampling"
    use_kl_in_reward: bool = True
    use_kl_loss: bool = False


@dataclass
class GOLDTrainerConfig(TrainerConfig):
    algorithm: GOLDAlgorithmConfig = field(default_factory=GOLDAlgorithmConfig)
    # The GOLD workers read padded logits.
    remove_microbatch_padding: bool = False
    # The top-level `gold` section, for the workers (set by GOLDRunConfig; not a command-line key).
    gold: Optional[GOLDConfig] = None

    def __post_init__(self):
        teacher = self.ref.model.path
        super().__post_init__()
        # SkyRL makes the ref model default to the policy; GOLD's ref model is the teacher, which
        # must be named (validate_run_config says so).
        self.ref.model.path = teacher


@dataclass
class GOLDRunConfig(SkyRLTrainConfig):
    trainer: GOLDTrainerConfig = field(default_factory=GOLDTrainerConfig)
    gold: GOLDConfig = field(default_factory=GOLDConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.trainer.gold is not None and self.trainer.gold != self.gold:
            raise ValueError("trainer.gold: the workers' copy of the gold section. Fix: set gold.KEY=VALUE instead")
        self.trainer.gold = self.gold


def _fail(key: str, fix: str):
    raise ValueError(f"{key}: {fix}")


def config_from_cli(args: list[str]) -> GOLDRunConfig:
    """The GOLD run config from command-line overrides (`key.path=value`, last value wins), as
    SkyRL's from_cli_overrides builds it; renamed skyrl-train 0.3.1 keys and unknown gold keys are
    refused naming the fix."""
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in RENAMED_KEYS and key != "trainer.use_sample_packing":
            _fail(key, f"renamed in skyrl 0.4.0. Fix: use {RENAMED_KEYS[key]}")
        if key.startswith("gold.") and key[len("gold."):] not in GOLD_KEYS:
            _fail(key, f"unknown key. Fix: use one of gold.{', gold.'.join(GOLD_KEYS)}")
    return GOLDRunConfig.from_cli_overrides(args)


def validate_run_config(cfg: GOLDRunConfig) -> None:
    """Start-up checks of a GOLD run on skyrl 0.4.0 (SkyRL's own validate_cfg runs after this).
    Raises ValueError naming the key and the fix."""
    validate_gold_config(dataclasses.asdict(cfg.gold))
    trainer, algorithm, gold = cfg.trainer, cfg.trainer.algorithm, cfg.gold
    if not trainer.ref.model.path:
        _fail("trainer.ref.model.path", "set it to the teacher model (folder or hub id), e.g. trainer.ref.model.path=Qwen/Qwen2.5-7B-Instruct")
    if not algorithm.use_kl_in_reward:
        _fail("trainer.algorithm.use_kl_in_reward",
              "set it to true: it creates SkyRL's ref group, which runs the GOLD teacher, and calls the GOLD reward step")
    if algorithm.use_kl_loss:
        _fail("trainer.algorithm.use_kl_loss", "set it to false: the teacher signal replaces the KL loss")
    if algorithm.dynamic_sampling.type is not None:
        _fail("trainer.algorithm.dynamic_sampling.type", "set it to null: GOLD pairs each response with its prompt messages in generation order")
    if cfg.generator.step_wise_trajectories:
        _fail("generator.step_wise_trajectories", "set it to false: GOLD pairs each response with its prompt messages")
    if gold.mode == "reward":
        if algorithm.advantage_estimator != "no_op":
            _fail("trainer.algorithm.advantage_estimator", "set it to no_op: in gold.mode=reward the per-token span rewards are the advantages")
        if algorithm.policy_loss_type != "importance_sampling":
            _fail("trainer.algorithm.policy_loss_type", "set it to importance_sampling for gold.mode=reward (or use gold.mode=loss)")
    if trainer.remove_microbatch_padding:
        _fail("trainer.remove_microbatch_padding", "set it to false: the GOLD teacher and student passes read padded logits")
    if needs_teacher_distributions(gold):
        if trainer.max_tokens_per_microbatch > 0:
            _fail("trainer.max_tokens_per_microbatch",
                  "set it to -1 for gold.mode=loss or gold.uld_reward_coef > 0: the GOLD policy worker batches by samples")
        if gold.mode == "loss" and gold.loss_reduction is None and algorithm.loss_reduction not in LOSS_REDUCTIONS:
            _fail("gold.loss_reduction",
                  f"trainer.algorithm.loss_reduction={algorithm.loss_reduction} has no GOLD counterpart. Fix: set gold.loss_reduction to one of {LOSS_REDUCTIONS}")


def resolved_yaml(cfg: GOLDRunConfig) -> str:
    """The resolved config as YAML, without the workers' copy of the gold section."""
    data = dataclasses.asdict(cfg)
    data["trainer"].pop("gold", None)
    return OmegaConf.to_yaml(OmegaConf.create(data))
