"""Process boundaries of the entrypoint of the installed SkyRL, in fresh Python processes as on a
GPU machine (a fake `flash_attn` package is importable, so the CPU stand-in of
adapters/flash_attn_standin is not used):

- the entrypoint module and the module of every worker class the trainer hands to SkyRL, in every
  mode, import with nothing imported before (that is how a Ray worker process loads its actor class);
- `python -m gold_distillation.main_gold_distill` with a rejected setting exits non-zero within
  seconds, naming the key, before Ray starts.
"""

import os
import signal
import sys

import pytest

from gold_distillation.adapters import SKYRL031, SKYRL040

from .processes import actor_class_location, fresh_import_commands, run_all, with_pythonpath, write_fake_flash_attn
from .skyrl_versions import classes_handed_to_skyrl, skyrl
from .standins import LLAMA, MODES, QWEN


@pytest.fixture(scope="module")
def gpu_like_env(tmp_path_factory):
    """Environment for subprocesses: the fake flash_attn first on PYTHONPATH."""
    return with_pythonpath(write_fake_flash_attn(tmp_path_factory.mktemp("fake_flash_attn")))


def test_entrypoint_and_every_worker_class_import_in_a_fresh_process(tokenizers, gpu_like_env, tmp_path):
    handed = {}
    for mode, overrides in MODES.items():
        classes = classes_handed_to_skyrl(skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, QWEN, *overrides)))
        assert classes["critic"] is None  # GOLD has no critic; validate_run_config rejects one
        for role in ("policy", "ref"):
            handed.setdefault(actor_class_location(classes[role]), []).append(f"{mode}/{role}")
    # Every mode hands over the GOLD workers (the policy worker is SkyRL's in plain reward mode),
    # from the module that applies the version's import fixes.
    assert set(handed) == {(f"{skyrl.ADAPTER}.workers", "GOLDPolicyWorkerBase"), (f"{skyrl.ADAPTER}.workers", "GOLDRefWorkerBase")}

    entrypoint = f"import gold_distillation.main_gold_distill\nimport {skyrl.FSDP_WORKER_MODULE}"
    results = run_all(fresh_import_commands(sys.executable, handed, entrypoint), gpu_like_env, cwd=tmp_path)
    fake = gpu_like_env["PYTHONPATH"].split(os.pathsep)[0]
    for name, (code, out, _) in results.items():
        assert code == 0, f"{name}: {out[-3000:]}"
        assert f"flash_attn from {fake}" in out, f"{name} did not use the installed flash_attn: {out[-500:]}"


# Each setting the entrypoint must reject before Ray starts, and the start of its error message.
REJECTED = [
    (["trainer.ref.sequence_parallel_size=2"], "trainer.ref.sequence_parallel_size: set it to"),
    (["gold.mode=loss", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size: set it to"),
    (["gold.uld_reward_coef=0.5", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size: set it to"),
    (["trainer.update_ref_every_epoch=true"], "trainer.update_ref_every_epoch: set it to"),
    (["trainer.critic.model.path=/models/critic"], "trainer.critic.model.path: set it to"),
    (["generator.step_wise_trajectories=true"], "generator.step_wise_trajectories: set it to"),
] + {
    SKYRL031: [
        (["trainer.use_sample_packing=true"], "trainer.use_sample_packing: set it to"),
        (["trainer.strategy=deepspeed"], "trainer.strategy: set it to"),
    ],
    SKYRL040: [
        (["trainer.remove_microbatch_padding=true"], "trainer.remove_microbatch_padding: set it to"),
        # 0.4.0 still reads the 0.3.1 name (with a deprecation warning); the error names today's key.
        (["trainer.use_sample_packing=true"], "trainer.remove_microbatch_padding: set it to"),
        (["trainer.strategy=megatron"], "trainer.strategy: set it to"),
        (["generator.vision_language_generator=true"], "generator.vision_language_generator: set it to"),
        (["gold.mode=loss", "trainer.max_tokens_per_microbatch=4096"], "trainer.max_tokens_per_microbatch: set it to"),
        (["generator.num_inference_engines=2"], "generator.num_inference_engines: renamed in skyrl 0.4.0. Fix: use generator.inference_engine.num_engines"),
    ],
}[skyrl.VERSION]


def test_entrypoint_exits_before_ray_naming_each_rejected_key(tokenizers, gpu_like_env, tmp_path):
    base = [sys.executable, "-m", "gold_distillation.main_gold_distill", f"trainer.policy.model.path={LLAMA}",
            f"trainer.ref.model.path={QWEN}", "trainer.logger=console"]
    commands = {" ".join(overrides): base + overrides for overrides, _ in REJECTED}
    # HYDRA_FULL_ERROR: skyrl-train 0.3.1's hydra entrypoint prints the whole error (0.4.0 uses no hydra).
    results = run_all(commands, {**gpu_like_env, "HYDRA_FULL_ERROR": "1"}, timeout=150, cwd=tmp_path)
    for (overrides, message), (name, (code, out, seconds)) in zip(REJECTED, results.items()):
        assert code not in (0, -signal.SIGKILL), f"{name}: exit {code} after {seconds:.0f} s: {out[-2000:]}"
        assert f"ValueError: {message}" in out, f"{name}: {out[-2000:]}"
        assert "Started a local Ray instance" not in out, f"{name} started Ray: {out[-2000:]}"
