"""skyrl 0.4.0 test stand-ins: workers are plain objects around tiny HF models in SkyRL's model
wrapper (no Ray, no GPU), put behind SkyRL's real WorkerDispatch through one-rank actor groups, so
the trainer's dispatch calls, WorkerOutput concatenation and staging run as in a real run.
skyrl_standins.py defines the same names for skyrl-train 0.3.1; tests get the installed one from
skyrl_versions.py."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import dataclasses
from contextlib import nullcontext
from types import SimpleNamespace
from unittest.mock import MagicMock

import torch

from gold_distillation.adapters import SKYRL040
from gold_distillation.adapters.skyrl040.config import config_from_cli, validate_run_config  # noqa: F401  (for tests)
from gold_distillation.adapters.skyrl040.trainer import GOLDDistillationTrainer, GOLDGymGenerator
from gold_distillation.adapters.skyrl040.workers import GOLDPolicyWorkerBase, GOLDRefWorkerBase
from gold_distillation.gold_setup import load_tokenizer
from skyrl.backends.skyrl_train.distributed.dispatch import ActorInfo, MeshRank
from skyrl.backends.skyrl_train.training_batch import TrainingInputBatch  # noqa: F401  (for tests)
from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import FSDPRefWorkerBase
from skyrl.backends.skyrl_train.workers.model_wrapper import HFModelWrapper
from skyrl.backends.skyrl_train.workers.worker_dispatch import WorkerDispatch
from skyrl.train.trainer import RayPPOTrainer
from skyrl.train.utils import initialize_ray  # noqa: F401  (for tests)

from .standins import WORKER_KWARGS, CPUStrategy, without_ray

VERSION = SKYRL040
ADAPTER = "gold_distillation.adapters.skyrl040"
TRAINER_MODULE = "skyrl.train.trainer"
FSDP_WORKER_MODULE = "skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker"
PPO_UTILS_MODULE = "skyrl.backends.skyrl_train.utils.ppo_utils"
# Reward mode's policy loss: SkyRL's own (0.4.0 has it built in).
IMPORTANCE_SAMPLING_LOSS = f"{PPO_UTILS_MODULE}.importance_sampling_loss"
# skyrl 0.4.0 needs no import fix in a worker process.
WORKER_PROCESS_FIXES = {}
# How the first call that needs a GPU fails on CPU: torch.distributed.init_process_group(backend=
# "cpu:gloo,cuda:nccl") in skyrl/backends/skyrl_train/workers/worker.py, whose NCCL group needs CUDA.
NO_GPU_ERROR = "(?s)init_process_group.*ProcessGroupNCCL"
# Overrides for a run on a stand-in inference engine, which returns no sampling log-probs (0.4.0
# asks for them by default).
STAND_IN_ENGINE_SETTINGS = ("generator.sampling_params.logprobs=null",)
# The names build_models takes from SkyRL's trainer module that need a Ray cluster.
RAY_IN_BUILD_MODELS = ("PPORayActorGroup", "WorkerDispatch", "placement_group", "get_ray_pg_ready_with_timeout")
config_dict = dataclasses.asdict  # a config section as plain Python
editable = nullcontext  # 0.4.0's dataclass configs take new values as they are

ONE_RANK = MeshRank(dp=0, sp=0, tp=0, pp=0, world_size=1, dp_size=1, pp_size=1)


def gold_cfg(student_path, teacher_path, *overrides, batch_size=3):
    """The GOLD run config as the 0.4.0 entrypoint builds it, sized for a CPU batch."""
    return config_from_cli([
        f"trainer.policy.model.path={student_path}",
        f"trainer.ref.model.path={teacher_path}",
        "trainer.logger=console",
        "trainer.enable_ray_gpu_monitor=false",
        "generator.inference_engine.enable_ray_prometheus_stats=false",
        f"trainer.train_batch_size={batch_size}",
        f"trainer.policy_mini_batch_size={batch_size}",
        "trainer.micro_train_batch_size_per_gpu=1",
        "trainer.micro_forward_batch_size_per_gpu=2",
        "generator.n_samples_per_prompt=1",
        *overrides,
    ])


def ray_cluster_overrides(log_dir) -> tuple[str, ...]:
    """Overrides for the config SkyRL's initialize_ray starts a test cluster from: its logs in log_dir."""
    return (f"trainer.log_path={log_dir}",)


def worker_cfg(cfg):
    """The config a 0.4.0 worker is created with: cfg.trainer (which holds the gold section)."""
    return cfg.trainer


def wrap(model):
    return HFModelWrapper(model, use_flash_attention_2=False, bf16=False, remove_microbatch_padding=False)


def gym_generator(cfg, engine, tokenizer, model_path):
    """GOLDGymGenerator (SkyRL 0.4.0's gym generator) around a stand-in inference engine client."""
    return GOLDGymGenerator(generator_cfg=cfg.generator, skyrl_gym_cfg=cfg.environment.skyrl_gym,
                            inference_engine_client=engine, tokenizer=tokenizer, policy_model_name=model_path)


def plain_trainer(cfg, generator=None):
    """The GOLD trainer as GOLDDistillationExp builds it, without worker groups or an inference engine
    (the generator: a stand-in GOLDGymGenerator unless given)."""
    return GOLDDistillationTrainer(
        cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=None,
        inference_engine_client=None, generator=generator or MagicMock(spec=GOLDGymGenerator),
        teacher_tokenizer=load_tokenizer(cfg.trainer.ref.model.path),
    )


class Handle:
    """An actor handle whose `method.remote(...)` runs the worker's method in this process."""

    def __init__(self, worker):
        self.worker = worker

    def __getattr__(self, name):
        return SimpleNamespace(remote=getattr(self.worker, name))


class OneRankGroup:
    """A PPORayActorGroup of one worker: every dispatch runs the worker's method on the whole batch."""

    def __init__(self, worker):
        self.worker = worker
        self.actor_infos = [ActorInfo(handle=Handle(worker), rank=ONE_RANK)]

    def async_run_ray_method(self, dispatch_type, method, *args, **kwargs):
        return [getattr(self.worker, method)(*args, **kwargs)]

    def get_dp_size(self):
        return 1

    def offload_to_cpu(self, **kwargs):
        pass

    def backload_to_gpu(self, **kwargs):
        pass


def ref_worker(cfg, model, worker_class=GOLDRefWorkerBase):
    worker = worker_class(cfg=cfg.trainer, **WORKER_KWARGS)
    worker.model = wrap(model)
    if hasattr(worker, "setup_gold"):
        worker.setup_gold()
    return worker


def policy_worker(cfg, model, lr=3e-3):
    """The GOLD policy worker as a plain object that can train `model` on CPU."""
    worker = GOLDPolicyWorkerBase(cfg=cfg.trainer, **WORKER_KWARGS)
    worker.model = wrap(model)
    worker.setup_gold()
    worker.optimizer = torch.optim.Adam(worker.model.parameters(), lr=lr)
    worker.scheduler = SimpleNamespace(get_last_lr=lambda: [lr])
    worker.strategy = CPUStrategy()
    worker.mesh_rank = ONE_RANK
    worker.device_mesh = SimpleNamespace(get_group=lambda name: None)
    return worker


def with_workers(trainer, cfg, policy, ref):
    """The trainer's dispatch over one-rank groups of the given workers; ref None: no ref group (a served teacher)."""
    ref_group = OneRankGroup(ref) if ref is not None else None
    trainer.dispatch = WorkerDispatch(cfg, policy_actor_group=OneRankGroup(policy), ref_actor_group=ref_group)
    trainer.policy_model, trainer.ref_model = trainer.dispatch._actor_groups["policy"], trainer.dispatch._actor_groups.get("ref")
    return trainer


def gold_trainer(cfg, student, teacher=None, generator=None):
    """The trainer with its dispatch over the GOLD policy worker around `student` and, with a
    teacher model, the GOLD ref worker."""
    return with_workers(plain_trainer(cfg, generator), cfg, policy_worker(cfg, student),
                        ref_worker(cfg, teacher) if teacher is not None else None)


def one_data_parallel_rank(trainer):
    """The trainer sees one data-parallel rank (no padding rows), without worker groups."""
    trainer.dispatch = SimpleNamespace(get_lcm_dp_size=lambda: 1)


def postprocess(trainer, output, uids):
    """The trainer's postprocess_generator_output: (output, uids)."""
    return trainer.postprocess_generator_output(output, uids)


def stock_distillation_rewards(cfg, output, uids, batch, student, teacher):
    """SkyRL's on-policy distillation rewards, -(logp_student - logp_teacher) * loss_mask, on the
    generator output: SkyRL 0.4.0's own trainer and stock ref worker give base_action_log_probs."""
    stock = RayPPOTrainer(cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=None,
                          inference_engine_client=None, generator=MagicMock(spec=GOLDGymGenerator))
    with_workers(stock, cfg, policy_worker(cfg, student), ref_worker(cfg, teacher, FSDPRefWorkerBase))
    with without_ray():
        stock_batch = stock.fwd_logprobs_values_reward(stock.convert_to_training_input(output, uids))
    return -(stock_batch["action_log_probs"] - stock_batch["base_action_log_probs"]) * stock_batch["loss_mask"]


def loss_mode_training(trainer, cfg, student):
    """A GOLD policy worker that trains `student` in loss mode, and one training step of it as the
    trainer runs it: (worker, step(batch) -> the step's metrics). 0.4.0: the trainer's
    train_critic_and_policy through SkyRL's dispatch, with the worker as its policy group; the
    metrics it returns and those it logs."""
    worker = policy_worker(cfg, student)
    with_workers(trainer, cfg, worker, trainer.ref_model.worker)

    def step(batch):
        trainer.all_metrics = {}
        with without_ray():
            status = trainer.train_critic_and_policy(batch)
        return {**status, **trainer.all_metrics}

    return worker, step


def loss_mode_backward(worker, batch) -> dict:
    """One forward and backward of the loss-mode worker over the batch's micro-batches (no
    optimizer step): its metrics."""
    with without_ray():
        return worker.forward_backward(batch).metrics
