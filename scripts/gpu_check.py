#!/usr/bin/env python3
"""GPU check of GOLD on skyrl-train 0.3.1: one CUDA GPU, world size 1, no Ray cluster, no vLLM.

1. Builds tiny random Llama (student) and Qwen2 (teacher) checkpoints in a temporary folder, each
   with its real tokenizer (Llama 3.1, Qwen2.5 instruct), so the vocabularies are 128256 / 151665.
2. Initializes the GOLD ref worker, the GOLD policy worker and SkyRL's stock FSDP policy worker
   (reward mode) through SkyRL's own `init_model`: FSDP2, SkyRL's default bf16 mixed precision,
   flash attention off, torch.distributed with world size 1 (nccl; gloo with --device cpu).
3. Teacher forward (ref worker `forward`) on a batch made from real chat prompts by SkyRL's own
   padding and the project's teacher view + collate; checks the payload's keys, shapes, dtypes,
   devices and values, and the span log-probs against an fp32 reference forward.
4. One loss-mode step (GOLD policy worker `ppo_train`, hybrid GOLD loss) and one reward-mode step
   (span log-ratio rewards, no_op advantages, the stock worker's `ppo_train` with the
   importance_sampling loss); checks losses and gradient norms finite and that the weights moved.
5. Times gold_forward.teacher_payload and student_gold_loss (forward + backward) on synthetic
   logits at 8 x 4096 tokens, V = 151665 teacher / 128256 student, halving the batch on
   out-of-memory; prints tokens/s and peak GPU memory.
Output: JSON lines on stdout (one per check stage and timing), a summary at the end, and the whole
report in $OUT/gpu_check.json (or --json PATH). Exit status 0 only when every check passed.

Stand-ins, named in the output: `ray` is a small in-process module (its 71 MB wheel cannot be
carried, and nothing here needs a cluster); `flash_attn` is adapters/flash_attn_standin's padding stand-in where
the package is missing (flash attention is off either way).

On the lent GPU machine, after `bash scripts/gpu_wheels.sh` here (wheels and tokenizers into .whl/):
    device tool `run`: command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 540
On CPU, the same flow at toy sizes (what tests/test_gpu_check.py runs):
    python scripts/gpu_check.py --device cpu --small
"""

from __future__ import annotations

import argparse
import atexit
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "gold_distillation"

# Real chat prompts and responses (math, prose with emoji and CJK, code): these give multi-token
# groups on both sides of the Llama 3.1 / Qwen2.5 pair.
PROMPTS = [
    [{"role": "user", "content": "What is 12 * 7?"}],
    [{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Write a haiku about spring in Japan."}],
    [{"role": "user", "content": "Print the squares of 0, 1 and 2 in Python."}],
]
RESPONSES = [
    "12 * 7 = 84, so the answer is $\\boxed{84}$.",
    "Cherry 🌸 blossoms fall\n  softly on the pond — 日本の春",
    "for i in range(3):\n    print(i ** 2)",
]
TEACHER_VOCAB, STUDENT_VOCAB = 151665, 128256  # what the timing uses (Qwen2.5 / Llama 3.1)


# ----------------------------------------------------------------------------------------------
# Environment: the project as a package, the ray stand-in, CPU routing of SkyRL's CUDA calls
# ----------------------------------------------------------------------------------------------


def import_project_from_this_checkout() -> None:
    """Make `gold_distillation` resolve to this checkout (the repository root is the package)."""
    link_dir = Path(tempfile.mkdtemp(prefix="gold-pkg-"))
    atexit.register(shutil.rmtree, link_dir, ignore_errors=True)
    (link_dir / PACKAGE).symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(link_dir))


class _StandInModule(types.ModuleType):
    """A module whose unknown attributes are placeholder classes (types in annotations, never used)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = type(name, (), {"__module__": self.__name__})
        setattr(self, name, placeholder)
        return placeholder


def _remote(*args, **kwargs):
    """ray.remote as a no-op: `@ray.remote` and `ray.remote(num_gpus=1)(cls)` return the target."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return args[0]
    return lambda target: target


def _no_cluster(*args, **kwargs):
    raise RuntimeError("the GPU check's ray stand-in has no cluster; this code path needs real Ray")


class RayStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `ray` and every `ray.*` submodule from stand-in modules. Calls run in this process:
    remote() returns the class or function unchanged, get/put are the identity, is_initialized() is
    False (so SkyRL's function registries stay local)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "ray" or fullname.startswith("ray."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        if module.__name__ == "ray":
            module.__version__ = "0.0.0+gold-gpu-check-stand-in"
            module.remote = _remote
            module.get = lambda refs, **kwargs: refs
            module.put = lambda value, **kwargs: value
            module.wait = lambda refs, **kwargs: (list(refs), [])
            module.is_initialized = lambda: False
            module.get_gpu_ids = lambda: [0]
            module.init = module.get_actor = module.get_runtime_context = _no_cluster
            module.kill = module.shutdown = lambda *args, **kwargs: None


def install_ray_stand_in() -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, RayStandIn())


def route_cuda_calls_to_cpu() -> None:
    """--device cpu: SkyRL 0.3.1's FSDP code calls CUDA directly (device meshes, .cuda(), set_device,
    synchronize). Route those calls to the CPU so the same init_model / forward / ppo_train run here."""
    import torch
    import torch.distributed.device_mesh as device_mesh

    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.set_device = lambda device: None
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.empty_cache = lambda: None
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    cpu_mesh = device_mesh.init_device_mesh

    def init_device_mesh(device_type, *args, **kwargs):
        return cpu_mesh("cpu", *args, **kwargs)

    device_mesh.init_device_mesh = init_device_mesh
    import skyrl_train.distributed.fsdp_utils as fsdp_utils

    fsdp_utils.init_device_mesh = init_device_mesh


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "tokenizers", "huggingface_hub", "accelerate", "peft", "skyrl-train", "hydra-core", "omegaconf", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----------------------------------------------------------------------------------------------
# Report: checks, stages, JSON lines
# ----------------------------------------------------------------------------------------------


class Report:
    def __init__(self, path: Path | None):
        self.path = path
        self.data = {"stages": [], "timings": [], "ok": True}

    def emit(self, record: dict) -> None:
        print("GPU_CHECK " + json.dumps(record, default=str), flush=True)

    def add_stage(self, record: dict) -> None:
        self.data["stages"].append(record)
        self.data["ok"] &= record["status"] == "ok"
        self.emit(record)
        self.save()

    def add_timing(self, record: dict) -> None:
        self.data["timings"].append(record)
        self.emit({"timing": record})
        self.save()

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=2, default=str))


class Checks:
    """Named boolean checks of one stage; a stage passes when all of them hold."""

    def __init__(self):
        self.items = []

    def __call__(self, name: str, ok, detail=None) -> bool:
        self.items.append({"check": name, "ok": bool(ok), **({"detail": detail} if detail is not None else {})})
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [c["check"] for c in self.items if not c["ok"]]


def run_stage(report: Report, name: str, fn, *args, needs=(), done=None):
    """Run one stage; a stage whose prerequisite failed is skipped (and counts as failed)."""
    done = done if done is not None else {}
    missing = [n for n in needs if n not in done]
    if missing:
        report.add_stage({"stage": name, "status": "skipped", "reason": f"needs {missing}"})
        return None
    checks = Checks()
    start = time.perf_counter()
    try:
        result, info = fn(checks, *args)
        status = "ok" if not checks.failed else "failed"
        record = {"stage": name, "status": status, "seconds": round(time.perf_counter() - start, 2), **info}
    except Exception as exc:  # report and go on: the other stages' results are worth the device time
        result = None
        record = {
            "stage": name, "status": "error", "seconds": round(time.perf_counter() - start, 2),
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=12),
        }
        print(record["traceback"], file=sys.stderr, flush=True)
    record["checks"] = checks.items
    if checks.failed:
        record["failed_checks"] = checks.failed
    report.add_stage(record)
    if record["status"] == "ok":
        done[name] = result
    return result


# ----------------------------------------------------------------------------------------------
# Set-up: checkpoints, configs, workers, batch
# ----------------------------------------------------------------------------------------------


def build_checkpoints(root: Path, tokenizers_dir: Path, hidden: int, layers: int) -> dict:
    """Tiny random student (Llama) and teacher (Qwen2) folders, each with its real tokenizer."""
    from gold_distillation.demo_task import tiny_model
    from gold_distillation.gold_setup import load_tokenizer

    out = {}
    for side, family, tok_name, seed in (("student", "llama", "llama3.1-instruct", 1), ("teacher", "qwen2", "qwen2.5-instruct", 2)):
        src = tokenizers_dir / tok_name
        if not (src / "tokenizer.json").exists():
            raise FileNotFoundError(f"tokenizer {src} not found: run scripts/gpu_wheels.sh, or pass --tokenizers DIR")
        folder = root / side
        shutil.copytree(src, folder)
        # Same arguments as gold_setup.tokenizers_from_cfg, so the workers reuse this load (lru_cache).
        tokenizer = load_tokenizer(str(folder), False)
        model = tiny_model(family, len(tokenizer), hidden, layers, seed)
        model.save_pretrained(folder)
        out[side] = {"path": str(folder), "family": family, "vocab": len(tokenizer), "params": sum(p.numel() for p in model.parameters()),
                     "context": model.config.max_position_embeddings}
    return out


def compose_cfg(student: str, teacher: str, batch_size: int, *overrides: str):
    """The GOLD hydra config as the entrypoint composes it, validated by GOLD and by SkyRL."""
    from hydra import compose, initialize_config_dir
    from skyrl_train.utils import validate_cfg

    from gold_distillation.config import validate_run_config
    from gold_distillation.adapters.skyrl031.main import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(
            config_name="gold_distill",
            overrides=[
                f"trainer.policy.model.path={student}",
                f"trainer.ref.model.path={teacher}",
                "trainer.strategy=fsdp2",
                "trainer.flash_attn=false",
                "trainer.bf16=true",
                "trainer.logger=console",
                f"trainer.train_batch_size={batch_size}",
                f"trainer.policy_mini_batch_size={batch_size}",
                "trainer.micro_train_batch_size_per_gpu=1",
                "trainer.micro_forward_batch_size_per_gpu=2",
                "trainer.policy.optimizer_config.lr=1e-4",
                "generator.n_samples_per_prompt=1",
                "trainer.placement.policy_num_gpus_per_node=1",
                "trainer.placement.ref_num_gpus_per_node=1",
                "generator.inference_engine_tensor_parallel_size=1",
                *overrides,
            ],
        )
    validate_run_config(cfg)
    validate_cfg(cfg)
    return cfg


def make_worker(worker_cls, cfg, master_port: int):
    """A SkyRL worker object in this process, joined to the (world size 1) process group."""
    worker = worker_cls(cfg=cfg, world_size=1, rank=0, local_rank=0, master_addr="127.0.0.1", master_port=master_port, sequence_parallel_size=1)
    worker.init_worker_process_group()
    return worker


class ComputeProbe:
    """Records the device and dtype of the first linear layer's weight while a model runs forward
    (FSDP2 unshards parameters in its mixed-precision dtype for the forward)."""

    def __init__(self, model):
        import torch

        self.seen = None
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        if self.seen is None:
            self.seen = {"weight_dtype": str(module.weight.dtype), "input_device": str(args[0].device)}


def student_batch(student_tok, teacher_tok, gold):
    """The trainer's batch for PROMPTS/RESPONSES: SkyRL's padding of prompts and responses plus the
    teacher view and alignment (teacher_sequences, teacher_attention_mask, teacher_group_ids,
    student_group_ids, metadata gold_num_groups), as GOLDDistillationTrainer.add_teacher_view adds them."""
    from skyrl_train.dataset.preprocess import convert_prompts_responses_to_batch_tensors
    from skyrl_train.training_batch import TrainingInputBatch

    from gold_distillation.losses import group_sizes
    from gold_distillation.teacher_view import build_teacher_views, collate_views

    prompts = [student_tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True) for p in PROMPTS]
    responses = [student_tok(t, add_special_tokens=False)["input_ids"] + [student_tok.eos_token_id] for t in RESPONSES]
    sequences, attention, response_mask, rewards, loss_mask, _ = convert_prompts_responses_to_batch_tensors(
        student_tok, prompts, responses, [[0.0] * len(r) for r in responses], [[1] * len(r) for r in responses]
    )
    width = response_mask.shape[1]
    views = build_teacher_views(responses, PROMPTS, student_tok, teacher_tok, max_teacher_length=gold.max_teacher_length)
    collated = collate_views(views, teacher_tok.pad_token_id, student_response_length=width)
    batch = TrainingInputBatch({
        "sequences": sequences, "attention_mask": attention, "response_mask": response_mask, "rewards": rewards,
        "loss_mask": loss_mask, "teacher_sequences": collated.sequences, "teacher_attention_mask": collated.attention_mask,
        "teacher_group_ids": collated.teacher_group_ids, "student_group_ids": collated.student_group_ids,
    })
    batch.metadata = {"uids": [str(i) for i in range(len(PROMPTS))], "response_length": width, "gold_num_groups": collated.num_groups, "global_step": 1}
    sizes = [group_sizes(ids, collated.num_groups) for ids in (collated.student_group_ids, collated.teacher_group_ids)]
    multi = int(((sizes[0] > 1) | (sizes[1] > 1)).sum())
    info = {
        "batch": len(PROMPTS), "student_tokens": list(sequences.shape), "teacher_tokens": list(collated.sequences.shape),
        "groups": collated.num_groups, "multi_token_groups": multi,
    }
    return batch, info


def select(batch, keys):
    present = [k for k in keys if k in batch]
    return batch.select(keys=present, metadata_keys=[k for k in ("response_length", "gold_num_groups") if k in batch.metadata])


def parameter_snapshot(worker):
    """Full (unsharded) copies of the worker's parameters, on the CPU, in fp32."""
    snap = []
    for p in worker.model.model.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        snap.append(full.detach().float().cpu().clone())
    return snap


def weights_moved_and_finite(before, after) -> tuple[bool, bool, float]:
    import torch

    moved = max(float((a - b).abs().max()) for a, b in zip(after, before))
    finite = all(bool(torch.isfinite(a).all()) for a in after)
    return moved > 0, finite, moved


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def stage_imports(checks: Checks, args):
    """The entrypoint module (as the driver imports it: it registers the gold config and SkyRL's
    no_op / importance_sampling functions) and every worker module the trainer hands to SkyRL."""
    import torch

    import gold_distillation.adapters.skyrl031.workers  # noqa: F401
    import gold_distillation.main_gold_distill  # noqa: F401
    import skyrl_train.workers.fsdp.fsdp_worker  # noqa: F401
    from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry

    if args.device == "cpu":
        route_cuda_calls_to_cpu()
    flash = sys.modules.get("flash_attn")
    stand_in_flash = flash is not None and "stand-in" in getattr(flash, "__version__", "")
    installed = versions()
    checks("no_op advantage estimator registered", "no_op" in AdvantageEstimatorRegistry.list_available())
    checks("importance_sampling policy loss registered", "importance_sampling" in PolicyLossRegistry.list_available())
    env = {
        "device": args.device, "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "versions": installed, "tokenizers": str(args.tokenizers),
        "stand_ins": [
            "ray: in-process stand-in module (remote() returns the class, get/put identity, no cluster)",
            "flash_attn: " + ("adapters/flash_attn_standin padding stand-in (package missing; flash attention is off)" if stand_in_flash else "real package"),
        ],
        "transformers_choice": "4.57.6, carried (skyrl-train 0.3.1 requires < 5; CI tests 4.57.6)"
        if installed["transformers"] == "4.57.6" else f"{installed['transformers']}: not what skyrl-train 0.3.1 declares (< 5) or CI tests",
    }
    return None, {"environment": env}


def stage_setup(checks: Checks, args, tmp: Path):
    import torch
    import torch.distributed as dist

    from gold_distillation.gold_setup import tokenizers_from_cfg

    ckpts = build_checkpoints(tmp, args.tokenizers, hidden=args.hidden, layers=args.layers)
    cfg_loss = compose_cfg(ckpts["student"]["path"], ckpts["teacher"]["path"], len(PROMPTS), "gold.mode=loss", "gold.hybrid=true")
    cfg_reward = compose_cfg(ckpts["student"]["path"], ckpts["teacher"]["path"], len(PROMPTS))
    student_tok, teacher_tok = tokenizers_from_cfg(cfg_loss)
    batch, batch_info = student_batch(student_tok, teacher_tok, cfg_loss.gold)
    port = free_port()
    if not dist.is_initialized():
        # SkyRL's init_worker_process_group uses nccl; on CPU the gloo group is made first, and
        # SkyRL's call then finds it initialized.
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
        if args.device == "cpu":
            dist.init_process_group("gloo", rank=0, world_size=1)
    checks("student vocabulary is Llama 3.1's", ckpts["student"]["vocab"] == STUDENT_VOCAB or args.small, ckpts["student"]["vocab"])
    checks("teacher vocabulary is Qwen2.5's", ckpts["teacher"]["vocab"] == TEACHER_VOCAB or args.small, ckpts["teacher"]["vocab"])
    checks("the batch has groups of several tokens", batch_info["multi_token_groups"] > 0, batch_info["multi_token_groups"])
    checks("the sequences fit the models' context",
           batch["sequences"].shape[1] <= ckpts["student"]["context"] and batch["teacher_sequences"].shape[1] <= ckpts["teacher"]["context"])
    state = dict(ckpts=ckpts, cfg_loss=cfg_loss, cfg_reward=cfg_reward, batch=batch, port=port, student_tok=student_tok, teacher_tok=teacher_tok)
    info = {
        "checkpoints": ckpts, **batch_info, "strategy": cfg_loss.trainer.strategy, "flash_attn": cfg_loss.trainer.flash_attn,
        "ref_bf16": cfg_loss.trainer.bf16, "mixed_precision": cfg_loss.trainer.policy.fsdp_config.get("mixed_precision"),
        "device": args.device, "cuda_device": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
    }
    return state, info


def stage_init_workers(checks: Checks, state):
    import torch
    import torch.distributed as dist
    from skyrl_train.workers.fsdp.fsdp_worker import FSDPPolicyWorkerBase

    from gold_distillation.adapters.skyrl031.workers import GOLDPolicyWorkerBase, GOLDRefWorkerBase

    ckpts, port = state["ckpts"], state["port"]
    workers, seconds = {}, {}
    for name, cls, cfg, path in (
        ("ref_loss", GOLDRefWorkerBase, state["cfg_loss"], ckpts["teacher"]["path"]),
        ("policy_loss", GOLDPolicyWorkerBase, state["cfg_loss"], ckpts["student"]["path"]),
        ("ref_reward", GOLDRefWorkerBase, state["cfg_reward"], ckpts["teacher"]["path"]),
        ("policy_reward", FSDPPolicyWorkerBase, state["cfg_reward"], ckpts["student"]["path"]),
    ):
        start = time.perf_counter()
        worker = make_worker(cls, cfg, port)
        if name.startswith("policy"):
            worker.init_model(path, num_training_steps=10)
        else:
            worker.init_model(path)
        seconds[name] = round(time.perf_counter() - start, 2)
        workers[name] = worker
        workers[name + "_probe"] = ComputeProbe(worker.model.model)
        fsdp2 = type(worker.model.model).__name__.startswith("FSDP")
        checks(f"{name}: model wrapped by FSDP2 (fully_shard)", fsdp2, type(worker.model.model).__name__)
    checks("process group world size 1", dist.get_world_size() == 1, dist.get_world_size())
    checks("GOLD policy worker built the hybrid tables", getattr(workers["policy_loss"], "hybrid", None) is not None)
    checks("GOLD ref worker built the teacher's matched mask", getattr(workers["ref_loss"], "teacher_matched", None) is not None)
    info = {"init_seconds": seconds, "backend": dist.get_backend(), "ref_worker": "GOLDRefWorkerBase",
            "loss_policy_worker": "GOLDPolicyWorkerBase", "reward_policy_worker": "skyrl FSDPPolicyWorkerBase (stock)"}
    if torch.cuda.is_available():
        info["gpu_memory_after_init_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
    return workers, info


def check_payload(checks: Checks, payload, batch, vocab_t: int, with_distributions: bool, topk: int, prefix: str):
    import torch

    from gold_distillation.gold_forward import PAYLOAD_KEYS
    from gold_distillation.losses import group_sizes

    b, g = batch.batch_size, batch.metadata["gold_num_groups"]
    expected = set(PAYLOAD_KEYS) if with_distributions else {"teacher_span_logprobs", "teacher_group_mask"}
    keys = set(payload.keys())
    checks(f"{prefix}: payload keys", keys == expected, sorted(keys))
    shapes = {k: list(v.shape) for k, v in payload.items()}
    dtypes = {k: str(v.dtype) for k, v in payload.items()}
    checks(f"{prefix}: payload on the CPU (as the trainer receives it)", all(v.device.type == "cpu" for v in payload.values()))
    span, mask = payload["teacher_span_logprobs"], payload["teacher_group_mask"]
    checks(f"{prefix}: span log-probs [B, G] float32", list(span.shape) == [b, g] and span.dtype == torch.float32, shapes["teacher_span_logprobs"])
    checks(f"{prefix}: group mask [B, G] bool", list(mask.shape) == [b, g] and mask.dtype == torch.bool)
    present = group_sizes(batch["teacher_group_ids"], g) > 0
    checks(f"{prefix}: group mask = groups with teacher tokens", torch.equal(mask, present))
    checks(f"{prefix}: span log-probs finite and <= 0", bool(torch.isfinite(span[mask]).all() and (span[mask] <= 1e-4).all()))
    if with_distributions:
        top_p, top_i, tail = payload["teacher_top_probs"], payload["teacher_top_ids"], payload["teacher_tail_mass"]
        checks(f"{prefix}: top-k probs [B, G, k]", list(top_p.shape) == [b, g, topk] and top_p.dtype.is_floating_point, shapes["teacher_top_probs"])
        checks(f"{prefix}: top-k ids [B, G, k] int32 in the teacher vocabulary",
               list(top_i.shape) == [b, g, topk] and top_i.dtype == torch.int32 and int(top_i.min()) >= 0 and int(top_i.max()) < vocab_t)
        checks(f"{prefix}: tail mass [B, G]", list(tail.shape) == [b, g])
        m = mask
        total = top_p.float().sum(-1) + tail.float()
        checks(f"{prefix}: top-k probs + tail mass = 1", bool(torch.allclose(total[m], torch.ones_like(total[m]), atol=2e-3)),
               float((total[m] - 1).abs().max()))
        checks(f"{prefix}: top-k probs descending", bool((top_p[m][:, :-1] >= top_p[m][:, 1:]).all()))
        if "teacher_unmatched_mass" in payload:
            um = payload["teacher_unmatched_mass"]
            checks(f"{prefix}: unmatched mass in [0, 1]", bool(((um[m] >= -1e-4) & (um[m] <= 1 + 1e-4)).all()))
    return shapes, dtypes


def reference_spans(teacher_path: str, batch, device):
    """Span log-probs of the teacher checkpoint in fp32 without FSDP: the reference of the worker's."""
    import torch
    from transformers import AutoModelForCausalLM

    from gold_distillation.gold_forward import group_measures, response_logits

    model = AutoModelForCausalLM.from_pretrained(teacher_path, torch_dtype=torch.float32, attn_implementation="eager").to(device).eval()
    groups = batch["teacher_group_ids"].to(device)
    sequences, r = batch["teacher_sequences"].to(device), groups.shape[1]
    with torch.no_grad():
        logits = response_logits(model, sequences, batch["teacher_attention_mask"].to(device), r)
        spans = group_measures(logits, sequences[:, -r:], groups, batch.metadata["gold_num_groups"], merge=None).span_logprob
    del model
    return spans.cpu()


def stage_teacher_forward(checks: Checks, state, workers, device):
    import torch

    from gold_distillation.gold_forward import TEACHER_INPUT_KEYS

    batch, cfg = state["batch"], state["cfg_loss"]
    inputs = select(batch, TEACHER_INPUT_KEYS)
    start = time.perf_counter()
    payload = workers["ref_loss"].forward(inputs)
    seconds = time.perf_counter() - start
    probe = workers["ref_loss_probe"].seen
    shapes, dtypes = check_payload(checks, payload, batch, state["ckpts"]["teacher"]["vocab"], True, cfg.gold.teacher_topk, "loss mode")
    checks("teacher forward ran on the check's device", probe is not None and probe["input_device"].startswith(device), probe)
    checks("teacher forward computed with bf16 weights (FSDP2 mixed precision)", probe is not None and probe["weight_dtype"] == "torch.bfloat16", probe)
    reward_payload = workers["ref_reward"].forward(select(batch, TEACHER_INPUT_KEYS))
    check_payload(checks, reward_payload, batch, state["ckpts"]["teacher"]["vocab"], False, cfg.gold.teacher_topk, "reward mode")
    mask = payload["teacher_group_mask"]
    mode_diff = float((reward_payload["teacher_span_logprobs"][mask] - payload["teacher_span_logprobs"][mask]).abs().max())
    checks("reward-mode and loss-mode ref workers give the same span log-probs", mode_diff < 1e-3, mode_diff)
    ref = reference_spans(state["ckpts"]["teacher"]["path"], batch, device)
    diff = float((ref[mask] - payload["teacher_span_logprobs"][mask]).abs().max())
    # bf16 compute against fp32: a few 1e-2 nats per token at most for these tiny models.
    checks("span log-probs match an fp32 reference forward (|diff| < 0.25)", diff < 0.25, diff)
    for key, value in reward_payload.items():
        batch[key + "__reward"] = value
    for key, value in payload.items():
        batch[key] = value
    info = {"forward_seconds": round(seconds, 3), "payload_shapes": shapes, "payload_dtypes": dtypes, "compute": probe,
            "max_abs_diff_vs_fp32_reference": diff, "groups_present": int(mask.sum())}
    return payload, info


def train_batch(batch, action_log_probs, advantages, extra_keys):
    import torch
    from skyrl_train.training_batch import TrainingInputBatch

    data = TrainingInputBatch({
        "sequences": batch["sequences"], "attention_mask": batch["attention_mask"], "response_mask": batch["response_mask"],
        "loss_mask": batch["loss_mask"], "action_log_probs": action_log_probs, "base_action_log_probs": None, "values": None,
        "advantages": advantages, "returns": advantages.clone(), "rollout_logprobs": None,
        **{k: batch[k] for k in extra_keys},
    })
    data.metadata = dict(batch.metadata)
    assert torch.isfinite(action_log_probs).all()
    return data


def student_logprobs(worker, batch):
    """The policy worker's forward (SkyRL's stock student pass): action log-probs [B, R] on the CPU."""
    return worker.forward(select(batch, ["sequences", "attention_mask"]))["output"]


def stage_loss_step(checks: Checks, state, workers, device):
    import torch

    from gold_distillation.gold_forward import PAYLOAD_KEYS

    worker, batch = workers["policy_loss"], state["batch"]
    logprobs = student_logprobs(worker, batch)
    data = train_batch(batch, logprobs, torch.zeros_like(logprobs), ["student_group_ids", *[k for k in PAYLOAD_KEYS if k in batch]])
    before = parameter_snapshot(worker)
    start = time.perf_counter()
    status = worker.ppo_train(data).metadata["train_status"]
    seconds = time.perf_counter() - start
    moved, finite, max_change = weights_moved_and_finite(before, parameter_snapshot(worker))
    probe = workers["policy_loss_probe"].seen
    checks("GOLD loss finite", "final_loss" in status and torch.isfinite(torch.tensor(status["final_loss"])), status.get("final_loss"))
    checks("gold/* metrics reported", any(k.startswith("gold/") for k in status), sorted(status))
    checks("gradient norm finite and > 0", "raw_grad_norm" in status and 0 < status["raw_grad_norm"] < float("inf"), status.get("raw_grad_norm"))
    checks("one optimizer step", status.get("policy_update_steps") == 1, status.get("policy_update_steps"))
    checks("weights moved and stay finite", moved and finite, max_change)
    checks("student forward ran on the check's device in bf16", probe is not None and probe["input_device"].startswith(device) and probe["weight_dtype"] == "torch.bfloat16", probe)
    return status, {"train_seconds": round(seconds, 3), "train_status": status, "max_weight_change": max_change}


def stage_reward_step(checks: Checks, state, workers, device):
    import torch
    from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry

    from gold_distillation.losses import span_logprobs, span_rewards

    worker, batch, cfg = workers["policy_reward"], state["batch"], state["cfg_reward"]
    logprobs = student_logprobs(worker, batch)
    groups, num_groups = batch["student_group_ids"], batch.metadata["gold_num_groups"]
    # The reward step of GOLDDistillationTrainer.apply_reward_kl_penalty (reward mode, no ULD term).
    student_spans = span_logprobs(logprobs.float(), groups, num_groups)
    rewards = span_rewards(student_spans, batch["teacher_span_logprobs__reward"], groups) * batch["loss_mask"]
    estimator = AdvantageEstimatorRegistry.get(cfg.trainer.algorithm.advantage_estimator)
    advantages, _ = estimator(token_level_rewards=rewards, response_mask=batch["response_mask"], index=batch.metadata["uids"], config=cfg.trainer.algorithm)
    data = train_batch(batch, logprobs, advantages, [])
    before = parameter_snapshot(worker)
    start = time.perf_counter()
    status = worker.ppo_train(data).metadata["train_status"]
    seconds = time.perf_counter() - start
    moved, finite, max_change = weights_moved_and_finite(before, parameter_snapshot(worker))
    present = batch["teacher_group_mask__reward"]
    checks("rewards finite, non-zero", bool(torch.isfinite(rewards).all()) and bool((rewards != 0).any()))
    checks("row reward sums = span log-ratio sums",
           bool(torch.allclose(rewards.sum(-1), ((batch["teacher_span_logprobs__reward"] - student_spans) * present).sum(-1), atol=1e-3)))
    checks("policy loss finite", "policy_loss" in status and torch.isfinite(torch.tensor(status["policy_loss"])), status.get("policy_loss"))
    checks("gradient norm finite and > 0", "raw_grad_norm" in status and 0 < status["raw_grad_norm"] < float("inf"), status.get("raw_grad_norm"))
    checks("weights moved and stay finite", moved and finite, max_change)
    checks("policy loss is importance_sampling", cfg.trainer.algorithm.policy_loss_type == "importance_sampling")
    return status, {"train_seconds": round(seconds, 3), "train_status": status, "max_weight_change": max_change,
                    "reward_mean": float(rewards.sum() / batch["loss_mask"].sum()), "loss_reduction": cfg.trainer.algorithm.loss_reduction}


# ----------------------------------------------------------------------------------------------
# Timing of the teacher payload and the student loss at realistic sizes
# ----------------------------------------------------------------------------------------------


def synthetic_groups(b: int, r: int, num_groups: int, multi_share: float, generator, device):
    """Group ids [B, R]: groups of 1 token, and of 2 tokens with probability multi_share, in order;
    positions past the last whole group are -1."""
    import torch

    sizes = 1 + (torch.rand(b, num_groups, generator=generator) < multi_share).long()
    ends = sizes.cumsum(-1)
    positions = torch.arange(r).expand(b, r)
    ids = torch.searchsorted(ends, positions.contiguous(), right=True)
    return torch.where(ids < num_groups, ids, -1).to(device)


def timing_inputs(b: int, r: int, vocab: int, seed: int, device):
    import torch

    gen = torch.Generator().manual_seed(seed)
    groups = synthetic_groups(b, r, int(r / 1.15), 0.12, gen, device)
    ids = torch.randint(0, vocab, (b, r), generator=gen).to(device)
    torch.manual_seed(seed)
    # Peaked, model-like logits (most of the mass on a few hundred entries).
    logits = (torch.randn(b, r, vocab, device=device, dtype=torch.bfloat16) * 3.0)
    return logits, ids, groups


def measure(bench, device, reps: int):
    """Median seconds over `reps` calls after one warm-up call, and the peak memory of a call above
    what was allocated before it (inputs), in bytes (None off CUDA). Returns (seconds, peak, output)."""
    import torch

    cuda = device == "cuda"
    out = bench.run()
    times, peak = [], None
    for _ in range(reps):
        out = None
        bench.reset()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = bench.run()
        if cuda:
            torch.cuda.synchronize()
            peak = max(peak or 0, torch.cuda.max_memory_allocated() - base)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak, out


def is_oom(exc: BaseException) -> bool:
    import torch

    message = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in message or "cublas_status_alloc_failed" in message


def teacher_payload_rows(b, r, vocab_t, topk, matched, device, seed):
    """A teacher payload for b rows, computed one row at a time (rows are independent), so the
    student-loss timing does not need the whole teacher logits tensor in memory."""
    import torch

    from gold_distillation.gold_forward import teacher_payload

    rows = []
    for i in range(b):
        logits, ids, groups = timing_inputs(1, r, vocab_t, seed + i, device)
        with torch.no_grad():
            rows.append(teacher_payload(logits, ids, groups, int(r / 1.15), topk=topk, teacher_matched=matched))
        del logits
    return {k: torch.cat([row[k] for row in rows]) for k in rows[0]}


class TeacherBench:
    """gold_forward.teacher_payload on [B, R, V_t] bf16 logits, top-k distributions (loss mode)."""

    def __init__(self, b, r, vocab, topk, matched, device):
        self.logits, self.ids, self.groups = timing_inputs(b, r, vocab, 0, device)
        self.num_groups, self.topk, self.matched = int(r / 1.15), topk, matched

    def reset(self):
        pass

    def run(self):
        import torch

        from gold_distillation.gold_forward import teacher_payload

        with torch.no_grad():
            return teacher_payload(self.logits, self.ids, self.groups, self.num_groups, topk=self.topk, teacher_matched=self.matched)

    def finite(self, out) -> bool:
        import torch

        m = out["teacher_group_mask"]
        return bool(torch.isfinite(out["teacher_span_logprobs"][m]).all() and torch.isfinite(out["teacher_top_probs"]).all())


class StudentBench:
    """gold_forward.student_gold_loss forward + backward on [B, R, V_s] bf16 logits against a
    teacher payload of the same rows."""

    def __init__(self, b, r, vocab_s, vocab_t, topk, tables, device):
        import torch

        matched = None if tables is None else tables.teacher_to_student >= 0
        self.payload = teacher_payload_rows(b, r, vocab_t, topk, matched, device, seed=100)
        self.logits, self.ids, _ = timing_inputs(b, r, vocab_s, 1, device)
        self.groups = synthetic_groups(b, r, int(r / 1.15), 0.12, torch.Generator().manual_seed(7), device)
        self.logits.requires_grad_(True)
        self.topk, self.tables = topk, tables

    def reset(self):
        self.logits.grad = None

    def run(self):
        from gold_distillation.gold_forward import student_gold_loss

        self.reset()
        loss, _ = student_gold_loss(self.logits, self.ids, self.groups, self.payload, student_topk=self.topk, hybrid=self.tables)
        loss.backward()
        return loss.detach()

    def finite(self, out) -> bool:
        import torch

        return bool(torch.isfinite(out)) and bool(torch.isfinite(self.logits.grad).all())


def run_timings(report: Report, args, deadline: float, tables) -> bool:
    """Each benchmark at the largest size in args.timing_sizes that fits (out-of-memory: next size).
    tables: HybridTables on the device (the hybrid benchmarks), or None."""
    import gc

    import torch

    device, topk = args.device, 64
    vocab_t, vocab_s = args.timing_vocab
    matched = tables.teacher_to_student >= 0
    benches = [
        ("teacher_payload (loss mode, ULD, top-64)", vocab_t, lambda b, r: TeacherBench(b, r, vocab_t, topk, None, device)),
        ("student_gold_loss forward+backward (ULD)", vocab_s, lambda b, r: StudentBench(b, r, vocab_s, vocab_t, topk, None, device)),
        ("teacher_payload (loss mode, hybrid, top-64)", vocab_t, lambda b, r: TeacherBench(b, r, vocab_t, topk, matched, device)),
        ("student_gold_loss forward+backward (hybrid)", vocab_s, lambda b, r: StudentBench(b, r, vocab_s, vocab_t, topk, tables, device)),
    ]
    all_ok = True
    for name, vocab, make in benches:
        record = {"name": name, "vocab": vocab, "tried": []}
        for b, r in args.timing_sizes:
            if time.monotonic() > deadline:
                record["skipped"] = "time budget used up"
                break
            bench = out = None
            try:
                bench = make(b, r)
                seconds, peak, out = measure(bench, device, args.reps)
                ok = bench.finite(out)
                record.update({
                    "batch": b, "tokens_per_sequence": r, "tokens": b * r, "seconds": round(seconds, 4),
                    "tokens_per_second": round(b * r / seconds, 1), "finite": ok,
                    "peak_memory_above_inputs_gib": None if peak is None else round(peak / 2**30, 3),
                    "peak_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None,
                    "input_logits_gib": round(bench.logits.numel() * bench.logits.element_size() / 2**30, 3),
                })
                all_ok &= ok
                break
            except Exception as exc:
                if not is_oom(exc):
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    all_ok = False
                    print(traceback.format_exc(limit=8), file=sys.stderr)
                    break
                record["tried"].append({"batch": b, "tokens_per_sequence": r, "result": "out of memory"})
            finally:
                # Free this size's tensors before the next (smaller) size is allocated.
                bench = out = None
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
        if not any(k in record for k in ("tokens_per_second", "skipped", "error")):
            record["error"] = "out of memory at every size tried"
            all_ok = False
        report.add_timing(record)
    return all_ok


def stage_timing(checks: Checks, report: Report, args, deadline: float, state):
    from gold_distillation.gold_setup import hybrid_tables

    tables = hybrid_tables(state["student_tok"], state["teacher_tok"], state["cfg_loss"].gold, args.device)
    ok = run_timings(report, args, deadline, tables)
    checks("every timing ran with finite outputs (or stopped for time)", ok)
    return None, {"sizes": [list(s) for s in args.timing_sizes], "vocab": list(args.timing_vocab), "reps": args.reps,
                  "inputs": "synthetic bf16 logits (randn x 3), random token ids, groups of 1 token and of 2 tokens (12%)"}


# ----------------------------------------------------------------------------------------------


def summary(report: Report) -> str:
    lines = ["", "GOLD GPU check summary", "======================"]
    env = next((s["environment"] for s in report.data["stages"] if "environment" in s), {})
    lines.append(f"device: {env.get('device_name')}   versions: {json.dumps(env.get('versions'))}")
    lines.append(f"stand-ins: {'; '.join(env.get('stand_ins', []))}")
    for s in report.data["stages"]:
        extra = "" if s["status"] == "ok" else f"  {s.get('failed_checks') or s.get('error') or s.get('reason')}"
        lines.append(f"  {s['stage']:<16} {s['status']:<8} {s.get('seconds', '')!s:>7}s{extra}")
    if report.data["timings"]:
        lines.append("timings (median of reps after a warm-up):")
        for t in report.data["timings"]:
            if "tokens_per_second" in t:
                mem = t.get("peak_memory_above_inputs_gib")
                lines.append(
                    f"  {t['name']:<46} {t['batch']}x{t['tokens_per_sequence']} V={t['vocab']}: {t['seconds']:.4f} s, "
                    f"{t['tokens_per_second']:,.0f} tokens/s, peak above inputs {mem if mem is not None else '-'} GiB"
                    + (f" (out of memory at {[(x['batch'], x['tokens_per_sequence']) for x in t['tried']]})" if t["tried"] else "")
                )
            else:
                lines.append(f"  {t['name']:<46} {t.get('error') or t.get('skipped')}")
    lines.append(f"ALL CHECKS PASSED: {report.data['ok']}   total {report.data.get('total_seconds')} s")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--small", action="store_true", help="toy timing sizes (the CPU test)")
    p.add_argument("--tokenizers", type=Path, default=None,
                   help="folder with qwen2.5-instruct/ and llama3.1-instruct/ (default: .whl/tokenizers, else ../shared/tokenizers)")
    p.add_argument("--json", type=Path, default=None, help="report file (default: $OUT/gpu_check.json when OUT is set)")
    p.add_argument("--budget", type=float, default=300.0, help="seconds after start past which no timing is started")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per benchmark (default 3; 1 with --small)")
    p.add_argument("--no-timing", action="store_true")
    args = p.parse_args(argv)
    if args.tokenizers is None:
        candidates = [REPO / ".whl" / "tokenizers", Path(os.environ.get("GOLD_TOKENIZERS_DIR", REPO.parent / "shared" / "tokenizers"))]
        args.tokenizers = next((c for c in candidates if (c / "qwen2.5-instruct" / "tokenizer.json").exists()), candidates[-1])
    if args.json is None and os.environ.get("OUT"):
        args.json = Path(os.environ["OUT"]) / "gpu_check.json"
    args.hidden, args.layers = (64, 2)
    args.reps = args.reps or (1 if args.small else 3)
    args.timing_vocab = (TEACHER_VOCAB, STUDENT_VOCAB)
    args.timing_sizes = [(2, 32)] if args.small else [(8, 4096), (4, 4096), (2, 4096), (1, 4096), (1, 2048)]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    report = Report(args.json)
    import_project_from_this_checkout()
    install_ray_stand_in()
    # A process group that cannot form should fail this check in minutes, not in SkyRL's 10.
    os.environ.setdefault("SKYRL_WORKER_NCCL_TIMEOUT_IN_S", "120")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; use --device cpu for the CPU flow", file=sys.stderr)
        return 2
    done: dict = {}
    run_stage(report, "imports", stage_imports, args, done=done)
    with tempfile.TemporaryDirectory(prefix="gold-gpu-check-") as tmp:
        state = run_stage(report, "setup", stage_setup, args, Path(tmp), needs=["imports"], done=done)
        workers = run_stage(report, "init_model", stage_init_workers, state, needs=["setup"], done=done)
        run_stage(report, "teacher_forward", stage_teacher_forward, state, workers, args.device, needs=["init_model"], done=done)
        run_stage(report, "loss_mode_step", stage_loss_step, state, workers, args.device, needs=["teacher_forward"], done=done)
        run_stage(report, "reward_mode_step", stage_reward_step, state, workers, args.device, needs=["teacher_forward"], done=done)
        del workers
        if args.device == "cuda":
            torch.cuda.empty_cache()
        if not args.no_timing:
            run_stage(report, "timing", stage_timing, report, args, start + args.budget, state, needs=["setup"], done=done)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    report.data["total_seconds"] = round(time.monotonic() - start, 1)
    report.save()
    print(summary(report), flush=True)
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
