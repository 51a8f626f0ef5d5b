"""The GOLD entrypoint, trainer and experiment of the installed SkyRL (adapters.installed_skyrl):
skyrl 0.4.0 -> adapters/skyrl040, skyrl-train 0.3.1 -> adapters/skyrl031.

    python -m gold_distillation.main_gold_distill key=value ... [gold.key=value ...]
    python -m gold_distillation.main_gold_distill --cfg job ...   # print the resolved config
"""

from .adapters import SKYRL040, require_skyrl

if require_skyrl() == SKYRL040:
    from .adapters.skyrl040.main import main
    from .adapters.skyrl040.trainer import GOLDDistillationExp, GOLDDistillationTrainer, GOLDGymGenerator
else:
    from .adapters.skyrl031.main import main
    from .adapters.skyrl031.trainer import GOLDDistillationExp, GOLDDistillationTrainer, GOLDGymGenerator

__all__ = ["GOLDDistillationExp", "GOLDDistillationTrainer", "GOLDGymGenerator", "main"]

if __name__ == "__main__":
    main()
