"""The launch scripts on the installed SkyRL (either version) and in both SkyRL checkout layouts:
they print the resolved config without GPUs, give each run its own folders, and set skyrl 0.4.0's
names for the keys it renamed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gold_distillation.adapters import SKYRL040, installed_skyrl

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"run_gold_distill_qwen_to_llama.sh": "Qwen/Qwen2.5-7B-Instruct",
           "run_gold_distill_llama_to_qwen.sh": "meta-llama/Llama-3.1-8B-Instruct"}


def launch(script, tmp_path, *args, **env):
    """The resolved config a launch script prints (--cfg job, after the overrides), as a dict; HOME is tmp_path."""
    out = subprocess.run(["bash", str(ROOT / script), *args, "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=180, env={**os.environ, "PYTHON": sys.executable, "HOME": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return yaml.safe_load(out.stdout)


@pytest.mark.parametrize("script", SCRIPTS)
def test_launch_scripts_print_the_resolved_config_without_gpus(script, tmp_path):
    cfg = launch(script, tmp_path, "gold.mode=loss", DATA_DIR=str(tmp_path))
    assert cfg["trainer"]["ref"]["model"]["path"] == SCRIPTS[script] and cfg["gold"]["mode"] == "loss"
    assert cfg["data"]["train_data"] == [f"{tmp_path}/dapo-math-17k-cleaned.parquet"] and cfg["environment"]["env_class"] == "aime"
    # GOLD's defaults for the SkyRL settings it relies on, on either SkyRL.
    algorithm = cfg["trainer"]["algorithm"]
    assert (algorithm["advantage_estimator"], algorithm["policy_loss_type"], algorithm["loss_reduction"]) == (
        "no_op", "importance_sampling", "seq_mean_token_sum_norm")
    if installed_skyrl() == SKYRL040:  # the renamed keys the script sets arrive under 0.4.0's names
        assert cfg["trainer"]["strategy"] == "fsdp" and not cfg["trainer"]["remove_microbatch_padding"]
        engine = cfg["generator"]["inference_engine"]
        assert (engine["num_engines"], engine["tensor_parallel_size"], engine["backend"], engine["run_engines_locally"]) == (4, 1, "vllm", True)
    else:
        assert cfg["trainer"]["strategy"] == "fsdp2" and cfg["generator"]["num_inference_engines"] == 4
    # Environment variables override the defaults too.
    assert launch(script, tmp_path, TEACHER="/models/t")["trainer"]["ref"]["model"]["path"] == "/models/t"


def test_launch_scripts_give_each_run_its_own_checkpoint_and_export_folders(tmp_path):
    runs = [launch(script, tmp_path)["trainer"] for script in SCRIPTS]
    for run in runs:
        assert run["resume_mode"] == "latest"
        assert run["ckpt_path"] == f"{tmp_path}/ckpts/{run['run_name']}"
        assert run["export_path"] == f"{tmp_path}/exports/{run['run_name']}"
    # The second run cannot resume the first one's checkpoint.
    assert runs[0]["ckpt_path"] != runs[1]["ckpt_path"] and runs[0]["export_path"] != runs[1]["export_path"]
    # Overridable: by run name, by environment variable, by override.
    run = launch("run_gold_distill_qwen_to_llama.sh", tmp_path, "trainer.export_path=/data/out", RUN_NAME="trial", CKPT_DIR="/data/ck")["trainer"]
    assert (run["run_name"], run["ckpt_path"], run["export_path"]) == ("trial", "/data/ck", "/data/out")


# How each SkyRL checkout runs this folder, and the key names its SkyRL reads.
LAYOUTS = {
    "skyrl-train 0.3.1": ("examples/gold_distillation", ["--extra", "vllm", "-m", "examples.gold_distillation.main_gold_distill"],
                          {"trainer.strategy": "fsdp2", "generator.num_inference_engines": "4", "generator.backend": "vllm"}),
    "skyrl 0.4.0": ("examples/train/gold_distillation", ["--extra", "fsdp", "-m", "examples.train.gold_distillation.main_gold_distill"],
                    {"trainer.strategy": "fsdp", "generator.inference_engine.num_engines": "4", "generator.inference_engine.backend": "vllm",
                     "generator.inference_engine.tensor_parallel_size": "1", "generator.inference_engine.run_engines_locally": "true"}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_launch_scripts_run_through_uv_in_a_skyrl_checkout(layout, tmp_path):
    """This folder placed where each SkyRL checkout keeps its examples; `uv` is a stand-in that
    prints where and how it was called."""
    folder, uv_args, expected = LAYOUTS[layout]
    checkout = tmp_path / "checkout"
    (checkout / folder).parent.mkdir(parents=True)
    (checkout / folder).symlink_to(ROOT, target_is_directory=True)
    (checkout / "pyproject.toml").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text('#!/usr/bin/env bash\necho "cwd=$PWD"\nprintf "%s\\n" "$@"\n')
    (bin_dir / "uv").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "PYTHON": "/nonexistent/python"}
    out = subprocess.run(["bash", str(checkout / folder / "run_gold_distill_qwen_to_llama.sh"), "gold.beta=0.3"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"cwd={checkout}" and lines[1:3 + len(uv_args)] == ["run", "--isolated", *uv_args]
    settings = dict(line.split("=", 1) for line in lines[3 + len(uv_args) :])
    for key, value in expected.items():
        assert settings[key] == value, key
    renamed = {"generator.num_inference_engines", "generator.inference_engine_tensor_parallel_size", "generator.backend",
               "generator.run_engines_locally"}
    assert renamed.isdisjoint(settings) == (layout == "skyrl 0.4.0")
    assert lines[-1] == "gold.beta=0.3"  # the caller's overrides last, as given


def test_the_launch_scripts_rename_map_is_the_0_4_0_adapters():
    pytest.importorskip("skyrl.train", reason="the skyrl 0.4.0 adapter's RENAMED_KEYS needs skyrl 0.4.0")
    from gold_distillation.adapters.skyrl040.config import RENAMED_KEYS

    text = (ROOT / "scripts" / "launch_gold.sh").read_text()
    block = re.search(r"declare -A RENAMED_040=\((.*?)\n\)", text, re.S).group(1)
    assert dict(re.findall(r"\[([\w.]+)\]=([\w.]+)", block)) == RENAMED_KEYS


def test_the_readme_served_teacher_overrides_resolve_on_the_installed_skyrl(tmp_path):
    """The README's command that points a run at a served teacher: its overrides are keys of the
    installed SkyRL's config (either version) and arrive as written."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"\nbash run_gold_distill_qwen_to_llama\.sh \\\n(.*?)\n```", readme, re.S).group(1)
    overrides = [word for word in command.replace("\\\n", " ").split() if "=" in word]
    assert "gold.teacher_backend=served" in overrides and "trainer.algorithm.use_kl_in_reward=false" in overrides
    cfg = launch("run_gold_distill_qwen_to_llama.sh", tmp_path, *overrides)
    for override in overrides:
        key, value = override.split("=", 1)
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert str(node).lower() == value.lower(), key
