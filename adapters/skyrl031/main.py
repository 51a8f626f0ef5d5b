"""The GOLD entrypoint on skyrl-train 0.3.1 (hydra): `python -m gold_distillation.main_gold_distill
key=value ...` with SkyRL's keys and `gold.key=value`; `--cfg job` prints the resolved config."""

from __future__ import annotations

from pathlib import Path

import hydra
import ray
from omegaconf import DictConfig
from skyrl_train.utils import initialize_ray, validate_cfg

from ...config import GOLDConfig, validate_run_config
from .trainer import GOLDDistillationExp

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "hydra_config")


def register_gold_config() -> None:
    """Make the `gold` section (GOLDConfig, typed) available to hydra as the config group gold/default."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="gold", name="default", node=GOLDConfig)


register_gold_config()


@ray.remote(num_cpus=1)
def gold_entrypoint(cfg: DictConfig):
    # Ray loads this function's module by name in its worker, which applies the 0.3.1 import fix
    # that BasePPOExp._setup_trainer needs (it imports SkyRL's FSDP workers).
    GOLDDistillationExp(cfg).run()


@hydra.main(config_path=CONFIG_DIR, config_name="gold_distill", version_base=None)
def main(cfg: DictConfig) -> None:
    validate_run_config(cfg)
    validate_cfg(cfg)
    initialize_ray(cfg)
    ray.get(gold_entrypoint.remote(cfg))
