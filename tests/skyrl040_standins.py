"""skyrl 0.4.0 test stand-ins: workers are plain objects around tiny HF models in SkyRL's model
wrapper (no Ray, no GPU), put behind SkyRL's real WorkerDispatch through one-rank actor groups, so
the trainer's dispatch calls, WorkerOutput concatenation and staging run as in a real run."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

from contextlib import contextmanager
from types import SimpleNamespace
from unittest.mock import patch

import torch

from gold_distillation.adapters.skyrl040.config import config_from_cli
from gold_distillation.adapters.skyrl040.workers import GOLDPolicyWorkerBase, GOLDRefWorkerBase
from skyrl.backends.skyrl_train.distributed.dispatch import ActorInfo, MeshRank
from skyrl.backends.skyrl_train.workers.model_wrapper import HFModelWrapper
from skyrl.backends.skyrl_train.workers.worker_dispatch import WorkerDispatch

WORKER_KWARGS = dict(world_size=1, rank=0, local_rank=0, master_addr="localhost", master_port=12345, sequence_parallel_size=1)
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


def wrap(model):
    return HFModelWrapper(model, use_flash_attention_2=False, bf16=False, remove_microbatch_padding=False)


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


def dispatch_for(cfg, policy_worker, ref_worker):
    """SkyRL's dispatch over one-rank groups; ref_worker None: no ref group (a served teacher)."""
    ref_group = OneRankGroup(ref_worker) if ref_worker is not None else None
    return WorkerDispatch(cfg, policy_actor_group=OneRankGroup(policy_worker), ref_actor_group=ref_group)


class CPUStrategy:
    """The parts of SkyRL's FSDP strategy a single-process CPU training step uses."""

    def backward(self, loss, model, optimizer):
        loss.backward()

    def optimizer_step(self, optimizer, model, scheduler, name=None):
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return grad_norm

    def all_reduce(self, data, op="mean", group=None):
        return data


def ref_worker(cfg, model, worker_class=GOLDRefWorkerBase):
    worker = worker_class(cfg=cfg.trainer, **WORKER_KWARGS)
    worker.model = wrap(model)
    if hasattr(worker, "setup_gold"):
        worker.setup_gold()
    return worker


def policy_worker(cfg, model, lr=3e-3):
    worker = GOLDPolicyWorkerBase(cfg=cfg.trainer, **WORKER_KWARGS)
    worker.model = wrap(model)
    worker.setup_gold()
    worker.optimizer = torch.optim.Adam(worker.model.parameters(), lr=lr)
    worker.scheduler = SimpleNamespace(get_last_lr=lambda: [lr])
    worker.strategy = CPUStrategy()
    worker.mesh_rank = ONE_RANK
    worker.device_mesh = SimpleNamespace(get_group=lambda name: None)
    return worker


@contextmanager
def without_ray():
    """Trainer and dispatch code with ray.get/ray.put as the identity (stand-in groups return
    values, not object refs), and SkyRL's stock workers' CUDA device as the CPU."""
    with patch("ray.get", side_effect=lambda x: x), patch("ray.put", side_effect=lambda x: x), patch(
        "torch.cuda.current_device", return_value="cpu"
    ), patch("torch.distributed.barrier"):
        yield


class DummyDataset:
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return "dummy"

    def collate_fn(self, batch):
        return batch


# The GOLD run modes and the overrides that select them.
MODES = {"reward": [], "loss": ["gold.mode=loss"], "uld_reward": ["gold.uld_reward_coef=0.5"]}


def plain_trainer(cfg, generator=None):
    """The GOLD trainer as GOLDDistillationExp builds it, without worker groups or an inference engine
    (the generator: a stand-in GOLDGymGenerator unless given)."""
    from unittest.mock import MagicMock

    from gold_distillation.adapters.skyrl040.trainer import GOLDDistillationTrainer, GOLDGymGenerator
    from gold_distillation.gold_setup import load_tokenizer

    return GOLDDistillationTrainer(
        cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=None,
        inference_engine_client=None, generator=generator or MagicMock(spec=GOLDGymGenerator),
        teacher_tokenizer=load_tokenizer(cfg.trainer.ref.model.path),
    )


def classes_handed_to_skyrl(trainer) -> dict:
    """The worker classes the trainer passes on to SkyRL's build_models when BasePPOExp hands it
    SkyRL's FSDP workers (as its _setup_trainer does for trainer.strategy=fsdp): {"policy", "critic", "ref"}."""
    from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import CriticWorker, PolicyWorker, RefWorker
    from skyrl.train.trainer import RayPPOTrainer

    with patch.object(RayPPOTrainer, "build_models") as build:
        trainer.build_models(PolicyWorker, CriticWorker, RefWorker)
    return dict(zip(("policy", "critic", "ref"), build.call_args.args))
