"""The GOLD entrypoint on skyrl 0.4.0: `python -m gold_distillation.main_gold_distill key=value ...`
(SkyRL's `key.path=value` overrides plus `gold.key=value`); `--cfg job` prints the resolved config
and exits without Ray or GPUs."""

import sys

import ray
from skyrl.train.utils import initialize_ray, validate_cfg

from .config import GOLDRunConfig, config_from_cli, resolved_yaml, validate_run_config
from .trainer import GOLDDistillationExp


@ray.remote(num_cpus=1)
def gold_entrypoint(cfg: GOLDRunConfig):
    GOLDDistillationExp(cfg).run()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # `--cfg job` anywhere among the overrides, as hydra (the 0.3.1 entrypoint) accepts it.
    at = next((i for i in range(len(args) - 1) if args[i : i + 2] == ["--cfg", "job"]), None)
    print_config = at is not None
    if print_config:
        del args[at : at + 2]
    cfg = config_from_cli(args)
    if print_config:
        print(resolved_yaml(cfg))
        return
    validate_run_config(cfg)
    validate_cfg(cfg)
    initialize_ray(cfg)
    ray.get(gold_entrypoint.remote(cfg))


if __name__ == "__main__":
    main()
