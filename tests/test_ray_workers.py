"""The worker classes the trainer hands to SkyRL, as Ray actors in fresh worker processes of a
local CPU Ray cluster (logical GPUs declared for placement; a fake `flash_attn` is importable in
the workers, as on a GPU machine).

Each actor is created as SkyRL's PPORayActorGroup._initiate_actors creates it, and called as far as
CPU allows: its module imports, SkyRL's registries resolve `no_op` and `importance_sampling` in the
worker process (synced from the driver through the named actors `initialize_ray` creates), and the
`gold` section reaches the worker. The first line that needs a GPU is the next call SkyRL makes,
`init_worker_process_group`: `torch.distributed.init_process_group(backend="nccl", ...)` in
skyrl_train/workers/worker.py (DistributedTorchRayActor.init_worker_process_group).
"""

from . import needs_skyrl031  # noqa: F401  (first: skips this module without skyrl-train 0.3.1)

import os
import sys
from unittest.mock import patch

import pytest
import ray
from omegaconf import OmegaConf

from .processes import with_pythonpath, write_fake_flash_attn
from .skyrl_standins import MODES, classes_handed_to_skyrl, gold_cfg, plain_trainer
from .test_trainer import LLAMA, QWEN


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module, started by SkyRL's initialize_ray (which also syncs
    the registries to their named actors), with logical CPUs and GPUs; always shut down."""
    from skyrl_train.utils import initialize_ray

    pythonpath = with_pythonpath(write_fake_flash_attn(tmp_path_factory.mktemp("fake_flash_attn")))["PYTHONPATH"]
    real_init = ray.init

    def init(runtime_env, **kwargs):
        runtime_env["env_vars"]["PYTHONPATH"] = pythonpath
        return real_init(runtime_env=runtime_env, num_cpus=4, num_gpus=2, include_dashboard=False, **kwargs)

    with patch.object(ray, "init", init):
        # One GPU per worker (as in gold_cfg; the critic's default is 4): no peer-access probe.
        initialize_ray(gold_cfg(LLAMA, QWEN, "trainer.placement.critic_num_gpus_per_node=1"))
    # `probe` travels to the workers by value: they cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield pythonpath.split(os.pathsep)[0]
    finally:
        ray.shutdown()


def probe(worker) -> dict:
    """Runs inside the actor's process (through Ray's __ray_call__): what it imported and resolved."""
    import os
    import sys

    import skyrl_train.distributed.fsdp_utils as fsdp_utils
    from omegaconf import OmegaConf
    from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry
    from torch.distributed.fsdp import MixedPrecisionPolicy

    def name(fn):
        return f"{fn.__module__}.{fn.__qualname__}"

    return {
        "pid": os.getpid(),
        "classes": [f"{c.__module__}.{c.__qualname__}" for c in type(worker).__mro__],
        "flash_attn": sys.modules["flash_attn"].__file__,
        "fsdp_worker_imported": "skyrl_train.workers.fsdp.fsdp_worker" in sys.modules,
        "mixed_precision_fix": fsdp_utils.MixedPrecisionPolicy is MixedPrecisionPolicy,
        "no_op": name(AdvantageEstimatorRegistry.get("no_op")),
        "importance_sampling": name(PolicyLossRegistry.get("importance_sampling")),
        "policy_loss_fn": name(worker.policy_loss_fn) if hasattr(worker, "policy_loss_fn") else None,
        "gold": OmegaConf.to_container(worker.cfg.gold),
    }


@pytest.mark.parametrize("mode", MODES)
def test_worker_actors_start_in_fresh_processes_with_registries_and_gold_config(cluster, tokenizers, mode):
    cfg = gold_cfg(LLAMA, QWEN, *MODES[mode])
    classes = {role: cls for role, cls in classes_handed_to_skyrl(plain_trainer(cfg)).items() if cls is not None}
    assert set(classes) == {"policy", "ref"}
    actors = {
        role: cls.options(num_cpus=1, num_gpus=1).remote(
            cfg=cfg, world_size=1, rank=0, local_rank=0, master_addr=None, master_port=None,
            sequence_parallel_size=1, record_memory=False,
        )
        for role, cls in classes.items()
    }
    try:
        facts = dict(zip(actors, ray.get([actor.__ray_call__.remote(probe) for actor in actors.values()], timeout=240)))
        assert len({f["pid"] for f in facts.values()} | {os.getpid()}) == 3  # two fresh processes
        assert "gold_distillation.adapters.skyrl031.workers.GOLDPolicyWorkerBase" in facts["policy"]["classes"]
        assert "gold_distillation.adapters.skyrl031.workers.GOLDRefWorkerBase" in facts["ref"]["classes"]
        for role, f in facts.items():
            assert f["flash_attn"].startswith(cluster), f"{role}: {f['flash_attn']}"  # the installed path, no stand-in
            assert f["fsdp_worker_imported"] and f["mixed_precision_fix"], role
            assert f["no_op"] == "gold_distillation.gold_steps.no_op_advantage", role
            assert f["importance_sampling"] == "gold_distillation.adapters.skyrl031.policy_losses.importance_sampling_loss", role
            assert f["gold"] == OmegaConf.to_container(cfg.gold), role
        # SkyRL's policy worker resolved its policy loss in __init__, inside the worker process.
        assert facts["policy"]["policy_loss_fn"] == facts["policy"]["importance_sampling"]

        # The next call SkyRL makes is the first that needs a GPU (NCCL): on CPU it fails there.
        with pytest.raises(ray.exceptions.RayTaskError, match="(?i)nccl|cuda"):
            ray.get(actors["ref"].init_worker_process_group.remote(), timeout=120)
    finally:
        for actor in actors.values():
            ray.kill(actor)
