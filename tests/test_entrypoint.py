"""Process boundaries of the entrypoint, in fresh Python processes as on a GPU machine (a fake
`flash_attn` package is importable, so the CPU stand-in of adapters/flash_attn_standin is not used):

- the entrypoint module and the module of every worker class the trainer hands to SkyRL, in every
  mode, import with nothing imported before (that is how a Ray worker process loads its actor class);
- `python -m gold_distillation.main_gold_distill` with a rejected setting exits non-zero within
  seconds, naming the key, before Ray starts.
"""

from . import needs_skyrl031  # noqa: F401  (first: skips this module without skyrl-train 0.3.1)

import os
import signal
import sys

import pytest

from .processes import actor_class_location, fresh_import_commands, run_all, with_pythonpath, write_fake_flash_attn
from .skyrl_standins import MODES, classes_handed_to_skyrl, gold_cfg, plain_trainer
from .test_trainer import LLAMA, QWEN


@pytest.fixture(scope="module")
def gpu_like_env(tmp_path_factory):
    """Environment for subprocesses: the fake flash_attn first on PYTHONPATH."""
    return with_pythonpath(write_fake_flash_attn(tmp_path_factory.mktemp("fake_flash_attn")))


def test_entrypoint_and_every_worker_class_import_in_a_fresh_process(tokenizers, gpu_like_env, tmp_path):
    handed = {}
    for mode, overrides in MODES.items():
        classes = classes_handed_to_skyrl(plain_trainer(gold_cfg(LLAMA, QWEN, *overrides)))
        assert classes["critic"] is None  # GOLD has no critic; validate_run_config rejects one
        for role in ("policy", "ref"):
            handed.setdefault(actor_class_location(classes[role]), []).append(f"{mode}/{role}")
    # Reward mode too hands over a class whose module applies the skyrl-train 0.3.1 import fix.
    assert {module for module, _ in handed} == {"gold_distillation.adapters.skyrl031.workers"}

    entrypoint = "import gold_distillation.main_gold_distill\nimport skyrl_train.workers.fsdp.fsdp_worker"
    commands = fresh_import_commands(sys.executable, handed, entrypoint)
    results = run_all(commands, gpu_like_env, cwd=tmp_path)
    fake = gpu_like_env["PYTHONPATH"].split(os.pathsep)[0]
    for name, (code, out, _) in results.items():
        assert code == 0, f"{name}: {out[-3000:]}"
        assert f"flash_attn from {fake}" in out, f"{name} did not use the installed flash_attn: {out[-500:]}"


# Each setting the entrypoint must reject before Ray starts, and the key its error names.
REJECTED = [
    (["trainer.ref.sequence_parallel_size=2"], "trainer.ref.sequence_parallel_size"),
    (["gold.mode=loss", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size"),
    (["gold.uld_reward_coef=0.5", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size"),
    (["trainer.use_sample_packing=true"], "trainer.use_sample_packing"),
    (["trainer.update_ref_every_epoch=true"], "trainer.update_ref_every_epoch"),
    (["trainer.strategy=deepspeed"], "trainer.strategy"),
    (["trainer.critic.model.path=/models/critic"], "trainer.critic.model.path"),
    (["generator.step_wise_trajectories=true"], "generator.step_wise_trajectories"),
]


def test_entrypoint_exits_before_ray_naming_each_rejected_key(tokenizers, gpu_like_env, tmp_path):
    base = [sys.executable, "-m", "gold_distillation.main_gold_distill", f"trainer.policy.model.path={LLAMA}",
            f"trainer.ref.model.path={QWEN}", "trainer.logger=console"]
    commands = {" ".join(overrides): base + overrides for overrides, _ in REJECTED}
    results = run_all(commands, {**gpu_like_env, "HYDRA_FULL_ERROR": "1"}, timeout=150, cwd=tmp_path)
    for (overrides, key), (name, (code, out, seconds)) in zip(REJECTED, results.items()):
        assert code not in (0, -signal.SIGKILL), f"{name}: exit {code} after {seconds:.0f} s: {out[-2000:]}"
        assert f"ValueError: {key}: set it to" in out, f"{name}: {out[-2000:]}"
        assert "Started a local Ray instance" not in out, f"{name} started Ray: {out[-2000:]}"
