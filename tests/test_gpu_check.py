"""scripts/gpu_check.py on CPU (`--device cpu --small`): the GPU check's whole flow (SkyRL's own
init_model with FSDP2, the teacher forward, a loss-mode and a reward-mode step, the timings) runs
here with Ray stood in, importing only what the GPU machine has plus the wheels it carries."""

from . import needs_skyrl031  # noqa: F401  (first: the GPU check runs the skyrl-train 0.3.1 adapter)

import json
import math
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import TOKENIZERS_DIR

REPO = Path(__file__).resolve().parents[1]
STAGES = ("imports", "setup", "init_model", "teacher_forward", "loss_mode_step", "reward_mode_step", "timing")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> set[str]:
    """Normalized distribution names of a list with one name per line (# comments)."""
    return {normalized(line.split("#")[0].strip()) for line in path.read_text().splitlines() if line.split("#")[0].strip()}


# Runs in the subprocess before the script: an import of a top-level package whose distribution is
# neither in the GPU machine's image nor carried fails, as it would there.
GPU_MACHINE_IMPORTS = """
import importlib.abc, importlib.metadata, re, sys
allowed = set({allowed!r})
owners = importlib.metadata.packages_distributions()

class OnlyGPUMachinePackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name) if "." not in name else None
        if dists and not any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in dists):
            raise ModuleNotFoundError(f"{{name}} (distribution {{dists}}) is neither on the GPU machine nor in "
                                      "scripts/gpu_wheels.txt", name=name)
        return None

sys.meta_path.insert(0, OnlyGPUMachinePackages())
try:
    import tensordict  # installed here, absent there: the simulation must refuse it
    sys.exit("the GPU machine import simulation is not active")
except ModuleNotFoundError:
    pass
import runpy
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def test_every_carried_distribution_has_a_version_in_this_environment():
    # scripts/gpu_wheels.sh downloads each at the version installed here (what CI tests).
    versions = {name: metadata.version(name) for name in listed(REPO / "scripts" / "gpu_wheels.txt")}
    assert versions["transformers"].startswith("4.") and versions["skyrl-train"] == "0.3.1"
    assert {"ray", "vllm", "flash-attn", "torch"}.isdisjoint(versions)


def test_gpu_check_flow_passes_on_cpu_with_the_gpu_machines_packages(tmp_path):
    if not (TOKENIZERS_DIR / "qwen2.5-instruct" / "tokenizer.json").exists():
        pytest.skip(f"real tokenizers not found at {TOKENIZERS_DIR} (set GOLD_TOKENIZERS_DIR)")
    allowed = listed(REPO / "scripts" / "gpu_machine_packages.txt") | listed(REPO / "scripts" / "gpu_wheels.txt")
    allowed.add("gold-distillation")  # the checkout itself travels to the machine
    report_path = tmp_path / "report.json"
    script = REPO / "scripts" / "gpu_check.py"
    argv = [str(script), "--device", "cpu", "--small", "--tokenizers", str(TOKENIZERS_DIR), "--json", str(report_path)]
    code = GPU_MACHINE_IMPORTS.format(allowed=sorted(allowed), argv=argv, script=str(script))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail

    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    stages = {s["stage"]: s for s in report["stages"]}
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["status"] == "ok", (name, stage.get("error"), stage.get("failed_checks"))
        assert stage["checks"] and all(c["ok"] for c in stage["checks"]), name
    # Every stage record also went to stdout as a JSON line.
    lines = [json.loads(line[len("GPU_CHECK "):]) for line in proc.stdout.splitlines() if line.startswith("GPU_CHECK ")]
    assert [r["stage"] for r in lines if "stage" in r] == list(STAGES)

    env = stages["imports"]["environment"]
    assert any(s.startswith("ray: in-process stand-in") for s in env["stand_ins"])
    assert env["versions"]["transformers"] == "4.57.6"
    assert stages["init_model"]["backend"] == "gloo"

    teacher = stages["teacher_forward"]
    b, g = teacher["payload_shapes"]["teacher_span_logprobs"]
    assert teacher["payload_shapes"]["teacher_top_probs"] == [b, g, 64]
    assert teacher["payload_dtypes"]["teacher_top_ids"] == "torch.int32"
    assert teacher["compute"]["weight_dtype"] == "torch.bfloat16"

    for name in ("loss_mode_step", "reward_mode_step"):
        status = stages[name]["train_status"]
        assert math.isfinite(status["final_loss"]) and status["raw_grad_norm"] > 0, name
        assert stages[name]["max_weight_change"] > 0, name

    timings = report["timings"]
    assert len(timings) == 4
    for t in timings:
        assert t["finite"] is True and t["tokens_per_second"] > 0 and t["tokens"] == t["batch"] * t["tokens_per_sequence"], t
    assert {t["vocab"] for t in timings} == {151665, 128256}


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timings_fall_back_to_smaller_batches_on_out_of_memory(monkeypatch):
    import time
    import types

    import torch

    from gold_distillation.gold_forward import HybridTables

    gpu_check = load_script()
    teacher_init, student_run = gpu_check.TeacherBench.__init__, gpu_check.StudentBench.run

    def teacher_oom_above_1(self, b, r, *args):
        if b > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        teacher_init(self, b, r, *args)

    def student_oom_above_2(self):
        if self.logits.shape[0] > 2:  # out of memory in the middle of a call, after the inputs exist
            raise RuntimeError("CUDA error: out of memory (raised by the test)")
        return student_run(self)

    monkeypatch.setattr(gpu_check.TeacherBench, "__init__", teacher_oom_above_1)
    monkeypatch.setattr(gpu_check.StudentBench, "run", student_oom_above_2)
    v_t, v_s = 300, 200
    torch.manual_seed(0)
    tables = HybridTables(torch.randint(-1, v_s, (v_t,)), torch.rand(v_s) < 0.5, 0.5, 0.5)
    args = types.SimpleNamespace(device="cpu", timing_vocab=(v_t, v_s), timing_sizes=[(4, 16), (2, 16), (1, 16)], reps=1)
    report = gpu_check.Report(None)
    assert gpu_check.run_timings(report, args, time.monotonic() + 300, tables) is True
    timings = report.data["timings"]  # teacher ULD, student ULD, teacher hybrid, student hybrid
    assert [t["batch"] for t in timings] == [1, 2, 1, 2]
    assert [[x["batch"] for x in t["tried"]] for t in timings] == [[4, 2], [4], [4, 2], [4]]
    assert all(t["finite"] and t["tokens_per_second"] > 0 for t in report.data["timings"])

    # Out of memory at every size is a failure, and so is any other error.
    monkeypatch.setattr(gpu_check.StudentBench, "run", lambda self: (_ for _ in ()).throw(RuntimeError("CUDA error: out of memory")))
    report = gpu_check.Report(None)
    assert gpu_check.run_timings(report, args, time.monotonic() + 300, tables) is False
    assert any(t.get("error") == "out of memory at every size tried" for t in report.data["timings"])
