"""The installed SkyRL's test stand-ins, as `skyrl`: skyrl040_standins for skyrl 0.4.0,
skyrl_standins for skyrl-train 0.3.1 (picked as the package picks its adapter,
adapters.installed_skyrl). Both define the same names, so a test written against `skyrl` runs in
either environment; a module that imports this one is skipped, saying why, where neither is installed.
Also the helpers that need only those names."""

import importlib
from unittest.mock import DEFAULT, patch

import pytest

from gold_distillation.adapters import SKYRL031, SKYRL040, installed_skyrl

if installed_skyrl() is None:
    pytest.skip("SkyRL test: neither skyrl 0.4.0 nor skyrl-train 0.3.1 is installed in this environment", allow_module_level=True)

skyrl = importlib.import_module({SKYRL040: ".skyrl040_standins", SKYRL031: ".skyrl_standins"}[installed_skyrl()], __package__)


def fsdp_workers():
    """SkyRL's FSDP worker classes, as BasePPOExp hands them to the trainer: (policy, critic, ref)."""
    module = importlib.import_module(skyrl.FSDP_WORKER_MODULE)
    return module.PolicyWorker, module.CriticWorker, module.RefWorker


def classes_handed_to_skyrl(trainer) -> dict:
    """The worker classes the trainer passes on to SkyRL's build_models when BasePPOExp hands it
    SkyRL's FSDP workers (as its _setup_trainer does for trainer.strategy=fsdp): {"policy", "critic", "ref"}."""
    with patch(f"{skyrl.TRAINER_MODULE}.RayPPOTrainer.build_models") as build:
        trainer.build_models(*fsdp_workers())
    return dict(zip(("policy", "critic", "ref"), build.call_args.args))


def actor_groups_built(trainer) -> list:
    """The actor groups SkyRL's own build_models creates for the trainer (Ray patched out): the
    actor class of each, in order."""
    with patch.multiple(skyrl.TRAINER_MODULE, **dict.fromkeys(skyrl.RAY_IN_BUILD_MODELS, DEFAULT)) as mocks, patch("ray.get"):
        trainer.build_models(*fsdp_workers())
    return [call.args[3] for call in mocks["PPORayActorGroup"].call_args_list]
