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

from ...config import GOLD_KEYS, GOLDConfig
from ...config import validate_run_config as validate_gold_run_config

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
    advantages and the importance_sampling loss; the teacher signal replaces the KL loss.
    Reward mode reduces its loss as SkyRL's on-policy distillation example does: each sample's
    token sum / max_seq_len, then the batch mean (GOLDRunConfig fills max_seq_len as skyrl-train
    0.3.1's validate_cfg does). Loss mode's GOLD loss has its own reduction, gold.loss_reduction."""

    advantage_estimator: str = "no_op"
    policy_loss_type: str = "importance_sampling"
    use_kl_in_reward: bool = True
    use_kl_loss: bool = False
    loss_reduction: str = "seq_mean_token_sum_norm"


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
        algorithm = self.trainer.algorithm
        if algorithm.loss_reduction == "seq_mean_token_sum_norm" and algorithm.max_seq_len is None:
            # skyrl 0.4.0 asks for it explicitly; 0.3.1 derives it so: the longest prompt + response.
            algorithm.max_seq_len = self.generator.max_input_length + self.generator.sampling_params.max_generate_length
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
    """config.validate_run_config with skyrl 0.4.0's key names (SkyRL's own validate_cfg runs after
    this). Raises ValueError naming the key and the fix."""
    validate_gold_run_config(cfg, RENAMED_KEYS)


def resolved_yaml(cfg: GOLDRunConfig) -> str:
    """The resolved config as YAML, without the workers' copy of the gold section."""
    data = dataclasses.asdict(cfg)
    data["trainer"].pop("gold", None)
    return OmegaConf.to_yaml(OmegaConf.create(data))
