"""The worker classes the skyrl 0.4.0 trainer hands to SkyRL, as Ray actors in fresh worker
processes of a local CPU Ray cluster (logical GPUs declared for placement; a fake `flash_attn` is
importable in the workers, as on a GPU machine).

Each actor is created as SkyRL's PPORayActorGroup._initiate_actors creates it (with cfg.trainer,
all a 0.4.0 worker gets), and called as far as CPU allows: its module imports, SkyRL's registries
resolve `no_op` (GOLD's, synced from the driver through the named actors `initialize_ray` creates)
and `importance_sampling` (built in) in the worker process, and the `gold` section reaches the
worker with the driver's values. The first line that needs a GPU is the next call SkyRL makes,
`init_worker_process_group`: `torch.distributed.init_process_group(backend="cpu:gloo,cuda:nccl", ...)`
in skyrl/backends/skyrl_train/workers/worker.py, whose NCCL process group needs CUDA.
"""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import dataclasses
import os
import sys
from unittest.mock import patch

import pytest
import ray

from .conftest import TOKENIZERS_DIR
from .processes import with_pythonpath, write_fake_flash_attn
from .skyrl040_standins import MODES, classes_handed_to_skyrl, gold_cfg, plain_trainer

LLAMA, QWEN = str(TOKENIZERS_DIR / "llama3.1-instruct"), str(TOKENIZERS_DIR / "qwen2.5-instruct")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module, started by SkyRL's initialize_ray (which also syncs
    the registries to their named actors), with logical CPUs and GPUs; always shut down."""
    from skyrl.train.utils import initialize_ray

    import gold_distillation.adapters.skyrl040.trainer  # noqa: F401  (registers no_op in the driver, as the entrypoint does)

    pythonpath = with_pythonpath(write_fake_flash_attn(tmp_path_factory.mktemp("fake_flash_attn")))["PYTHONPATH"]
    real_init = ray.init

    def init(runtime_env, **kwargs):
        runtime_env["env_vars"]["PYTHONPATH"] = pythonpath
        return real_init(runtime_env=runtime_env, num_cpus=4, num_gpus=2, include_dashboard=False, **kwargs)

    logs = tmp_path_factory.mktemp("logs")
    with patch.object(ray, "init", init):
        initialize_ray(gold_cfg(LLAMA, QWEN, f"trainer.log_path={logs}"))
    # `probe` travels to the workers by value: they cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield pythonpath.split(os.pathsep)[0]
    finally:
        ray.shutdown()


def probe(worker) -> dict:
    """Runs inside the actor's process (through Ray's __ray_call__): what it imported and resolved."""
    import dataclasses
    import os
    import sys

    from skyrl.backends.skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry

    def name(fn):
        return f"{fn.__module__}.{fn.__qualname__}"

    return {
        "pid": os.getpid(),
        "classes": [f"{c.__module__}.{c.__qualname__}" for c in type(worker).__mro__],
        "flash_attn": sys.modules["flash_attn"].__file__,
        "fsdp_worker_imported": "skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker" in sys.modules,
        "no_op": name(AdvantageEstimatorRegistry.get("no_op")),
        "importance_sampling": name(PolicyLossRegistry.get("importance_sampling")),
        "policy_loss_fn": name(worker.policy_loss_fn) if hasattr(worker, "policy_loss_fn") else None,
        "gold": dataclasses.asdict(worker.cfg.gold),
    }


@pytest.mark.parametrize("mode", MODES)
def test_worker_actors_start_in_fresh_processes_with_registries_and_gold_config(cluster, tokenizers, mode):
    cfg = gold_cfg(LLAMA, QWEN, *MODES[mode])
    classes = {role: cls for role, cls in classes_handed_to_skyrl(plain_trainer(cfg)).items() if cls is not None}
    assert set(classes) == {"policy", "ref"}
    actors = {
        role: cls.options(num_cpus=1, num_gpus=1).remote(
            cfg=cfg.trainer, world_size=1, rank=0, local_rank=0, master_addr=None, master_port=None,
            sequence_parallel_size=1, record_memory=False,
        )
        for role, cls in classes.items()
    }
    try:
        facts = dict(zip(actors, ray.get([actor.__ray_call__.remote(probe) for actor in actors.values()], timeout=240)))
        assert len({f["pid"] for f in facts.values()} | {os.getpid()}) == 3  # two fresh processes
        assert "gold_distillation.adapters.skyrl040.workers.GOLDPolicyWorkerBase" in facts["policy"]["classes"]
        assert "gold_distillation.adapters.skyrl040.workers.GOLDRefWorkerBase" in facts["ref"]["classes"]
        for role, f in facts.items():
            assert f["flash_attn"].startswith(cluster), f"{role}: {f['flash_attn']}"  # the installed path, no stand-in
            assert f["fsdp_worker_imported"], role
            assert f["no_op"] == "gold_distillation.gold_steps.no_op_advantage", role
            assert f["importance_sampling"].startswith("skyrl.backends.skyrl_train.utils.ppo_utils."), role
            assert f["gold"] == dataclasses.asdict(cfg.gold), role
        # SkyRL's policy worker resolved its policy loss in __init__, inside the worker process.
        assert facts["policy"]["policy_loss_fn"] == facts["policy"]["importance_sampling"]

        # The next call SkyRL makes reaches the first line that needs a GPU: on CPU it fails there.
        with pytest.raises(ray.exceptions.RayTaskError, match="(?s)init_process_group.*ProcessGroupNCCL"):
            ray.get(actors["ref"].init_worker_process_group.remote(), timeout=120)
    finally:
        for actor in actors.values():
            ray.kill(actor)
