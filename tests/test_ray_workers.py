"""The worker classes the trainer hands to the installed SkyRL, as Ray actors in fresh worker
processes of a local CPU Ray cluster (logical GPUs declared for placement; a fake `flash_attn` is
importable in the workers, as on a GPU machine).

Each actor is created as SkyRL's PPORayActorGroup._initiate_actors creates it (with the config a
worker of that version gets), and called as far as CPU allows: its module imports (with the
version's import fixes applied), SkyRL's registries resolve `no_op` (GOLD's, synced from the driver
through the named actors `initialize_ray` creates) and `importance_sampling` in the worker process,
and the `gold` section reaches the worker with the driver's values. The first line that needs a GPU
is the next call SkyRL makes, `init_worker_process_group`: `torch.distributed.init_process_group`
with an NCCL backend (DistributedTorchRayActor.init_worker_process_group in SkyRL's workers/worker.py).
"""

import os
import sys
from unittest.mock import patch

import pytest
import ray

from .processes import with_pythonpath, write_fake_flash_attn
from .skyrl_versions import classes_handed_to_skyrl, skyrl
from .standins import LLAMA, MODES, QWEN


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module, started by SkyRL's initialize_ray (which also syncs
    the registries to their named actors), with logical CPUs and GPUs; always shut down."""
    pythonpath = with_pythonpath(write_fake_flash_attn(tmp_path_factory.mktemp("fake_flash_attn")))["PYTHONPATH"]
    real_init = ray.init

    def init(runtime_env, **kwargs):
        runtime_env["env_vars"]["PYTHONPATH"] = pythonpath
        return real_init(runtime_env=runtime_env, num_cpus=4, num_gpus=2, include_dashboard=False, **kwargs)

    overrides = skyrl.ray_cluster_overrides(tmp_path_factory.mktemp("logs"))
    # patch.dict: initialize_ray sets SKYRL_LOG_FILE in this process, which would make later in-process
    # SkyRL workers redirect this process's stdout/stderr (pytest's capture) into that log file.
    with patch.object(ray, "init", init), patch.dict(os.environ):
        skyrl.initialize_ray(skyrl.gold_cfg(LLAMA, QWEN, *overrides))
    # `probe` travels to the workers by value: they cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield pythonpath.split(os.pathsep)[0]
    finally:
        ray.shutdown()


def probe(worker, fsdp_worker_module, ppo_utils_module, fixes, config_dict) -> dict:
    """Runs inside the actor's process (through Ray's __ray_call__): what it imported and resolved.
    fixes: {attribute: the object it must be}, dotted names; config_dict: a config section as plain Python."""
    import importlib
    import os
    import sys

    def name(fn):
        return f"{fn.__module__}.{fn.__qualname__}"

    def resolve(dotted):
        module, attr = dotted.rsplit(".", 1)
        return getattr(importlib.import_module(module), attr, None)

    registries = importlib.import_module(ppo_utils_module)
    return {
        "pid": os.getpid(),
        "classes": [f"{c.__module__}.{c.__qualname__}" for c in type(worker).__mro__],
        "flash_attn": sys.modules["flash_attn"].__file__,
        "fsdp_worker_imported": fsdp_worker_module in sys.modules,
        "fixes": {attr: resolve(attr) is resolve(target) for attr, target in fixes.items()},
        "no_op": name(registries.AdvantageEstimatorRegistry.get("no_op")),
        "importance_sampling": name(registries.PolicyLossRegistry.get("importance_sampling")),
        "policy_loss_fn": name(worker.policy_loss_fn) if hasattr(worker, "policy_loss_fn") else None,
        "gold": config_dict(worker.cfg.gold),
    }


@pytest.mark.parametrize("mode", MODES)
def test_worker_actors_start_in_fresh_processes_with_registries_and_gold_config(cluster, tokenizers, mode):
    cfg = skyrl.gold_cfg(LLAMA, QWEN, *MODES[mode])
    classes = {role: cls for role, cls in classes_handed_to_skyrl(skyrl.plain_trainer(cfg)).items() if cls is not None}
    assert set(classes) == {"policy", "ref"}
    actors = {
        role: cls.options(num_cpus=1, num_gpus=1).remote(
            cfg=skyrl.worker_cfg(cfg), world_size=1, rank=0, local_rank=0, master_addr=None, master_port=None,
            sequence_parallel_size=1, record_memory=False,
        )
        for role, cls in classes.items()
    }
    try:
        args = (skyrl.FSDP_WORKER_MODULE, skyrl.PPO_UTILS_MODULE, skyrl.WORKER_PROCESS_FIXES, skyrl.config_dict)
        facts = dict(zip(actors, ray.get([actor.__ray_call__.remote(probe, *args) for actor in actors.values()], timeout=240)))
        assert len({f["pid"] for f in facts.values()} | {os.getpid()}) == 3  # two fresh processes
        assert f"{skyrl.ADAPTER}.workers.GOLDPolicyWorkerBase" in facts["policy"]["classes"]
        assert f"{skyrl.ADAPTER}.workers.GOLDRefWorkerBase" in facts["ref"]["classes"]
        for role, f in facts.items():
            assert f["flash_attn"].startswith(cluster), f"{role}: {f['flash_attn']}"  # the installed path, no stand-in
            assert f["fsdp_worker_imported"], role
            assert f["fixes"] == dict.fromkeys(skyrl.WORKER_PROCESS_FIXES, True), role
            assert f["no_op"] == "gold_distillation.gold_steps.no_op_advantage", role
            assert f["importance_sampling"] == skyrl.IMPORTANCE_SAMPLING_LOSS, role
            assert f["gold"] == skyrl.config_dict(cfg.gold), role
        # SkyRL's policy worker resolved its policy loss in __init__, inside the worker process.
        assert facts["policy"]["policy_loss_fn"] == facts["policy"]["importance_sampling"]

        # The next call SkyRL makes is the first that needs a GPU (NCCL): on CPU it fails there.
        with pytest.raises(ray.exceptions.RayTaskError, match=skyrl.NO_GPU_ERROR):
            ray.get(actors["ref"].init_worker_process_group.remote(), timeout=120)
    finally:
        for actor in actors.values():
            ray.kill(actor)
