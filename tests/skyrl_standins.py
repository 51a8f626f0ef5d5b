"""Stand-ins for SkyRL's Ray worker groups, built the way SkyRL's own CPU tests build theirs:
workers are plain objects (no Ray, no GPU) around tiny HF models in SkyRL's model wrapper."""

from . import needs_skyrl031  # noqa: F401  (first: skips its importers without skyrl-train 0.3.1)

from unittest.mock import MagicMock, patch

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from gold_distillation.adapters.skyrl031.main import CONFIG_DIR
from gold_distillation.adapters.skyrl031.trainer import GOLDDistillationTrainer, GOLDGymGenerator
from skyrl_train.distributed.dispatch import ActorInfo, MeshRank
from skyrl_train.model_wrapper import HFModelWrapper
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch
from skyrl_train.utils import validate_cfg

WORKER_KWARGS = dict(world_size=1, rank=0, local_rank=0, master_addr="localhost", master_port=12345, sequence_parallel_size=1)


def gold_cfg(student_path, teacher_path, *overrides):
    """The GOLD hydra config, composed as the entrypoint composes it, validated by SkyRL."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(
            config_name="gold_distill",
            overrides=[
                f"trainer.policy.model.path={student_path}",
                f"trainer.ref.model.path={teacher_path}",
                "trainer.logger=console",
                "trainer.train_batch_size=2",
                "trainer.policy_mini_batch_size=2",
                "trainer.micro_train_batch_size_per_gpu=1",
                "trainer.micro_forward_batch_size_per_gpu=2",
                "generator.n_samples_per_prompt=1",
                "trainer.placement.policy_num_gpus_per_node=1",
                "trainer.placement.ref_num_gpus_per_node=1",
                "generator.inference_engine_tensor_parallel_size=1",
                *overrides,
            ],
        )
    validate_cfg(cfg)
    return cfg


# The GOLD run modes and the overrides that select them.
MODES = {"reward": [], "loss": ["gold.mode=loss"], "uld_reward": ["gold.uld_reward_coef=0.5"]}


def plain_trainer(cfg, generator=None):
    """The GOLD trainer as GOLDDistillationExp builds it, without worker groups."""
    from gold_distillation.gold_setup import load_tokenizer

    return GOLDDistillationTrainer(
        cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=DummyDataset(),
        eval_dataset=None, inference_engine_client=None, generator=generator or stand_in_generator(),
        teacher_tokenizer=load_tokenizer(cfg.trainer.ref.model.path),
    )


def classes_handed_to_skyrl(trainer) -> dict:
    """The worker classes the trainer passes on to SkyRL's build_models when BasePPOExp hands it
    SkyRL's FSDP workers (as its _setup_trainer does): {"policy", "critic", "ref"}."""
    from skyrl_train.trainer import RayPPOTrainer
    from skyrl_train.workers.fsdp.fsdp_worker import CriticWorker, PolicyWorker, RefWorker

    with patch.object(RayPPOTrainer, "build_models") as build:
        trainer.build_models(PolicyWorker, CriticWorker, RefWorker)
    return dict(zip(("policy", "critic", "ref"), build.call_args.args))


def wrap(model):
    return HFModelWrapper(model, use_flash_attention_2=False, bf16=False, use_sample_packing=False)


class StudentForward:
    """What SkyRL's policy worker forward computes (action log-probs at the sampling temperature)."""

    def __init__(self, model, temperature):
        self.model, self.temperature = model, temperature

    def forward(self, data):
        with torch.no_grad():
            out = self.model(data["sequences"], data.metadata["response_length"], data["attention_mask"], temperature=self.temperature)
        return TrainingOutputBatch({"output": out})


class StandInGroup:
    """A one-worker PPORayActorGroup: "mesh" calls run the worker's method on the whole batch."""

    def __init__(self, worker):
        self.worker = worker
        self.actor_infos = [ActorInfo(handle=None, rank=MeshRank(dp=0, sp=0, tp=0, pp=0, world_size=1, dp_size=1, pp_size=1))]

    def async_run_ray_method(self, dispatch, method, *args, **kwargs):
        return [getattr(self.worker, method)(*args, **kwargs)] if dispatch == "mesh" else [None]

    def backload_to_gpu(self, **kwargs):
        pass

    def offload_to_cpu(self, **kwargs):
        pass


def stand_in_generator():
    """A generator the trainer accepts (a GOLDGymGenerator by type); tests set its generate."""
    return MagicMock(spec=GOLDGymGenerator)


class DummyDataset:
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return "dummy"

    def collate_fn(self, batch):
        return batch


def plain_ref_worker(cfg, model):
    """The GOLD ref worker as a plain object around a tiny teacher."""
    from gold_distillation.adapters.skyrl031.workers import GOLDRefWorkerBase

    worker = GOLDRefWorkerBase(cfg=cfg, **WORKER_KWARGS)
    worker.model = wrap(model)
    worker.setup_gold()
    return worker


class CPUStrategy:
    """The parts of SkyRL's FSDP strategy that a single-process CPU policy step uses."""

    def backward(self, loss, model, optimizer):
        loss.backward()

    def optimizer_step(self, optimizer, model, scheduler, name=None):
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return grad_norm

    def all_reduce(self, status):
        return status

    def is_rank_0(self):
        return False


def run_without_ray(fn, *args, **kwargs):
    """Run trainer code with ray.get as the identity (stand-in groups return values, not refs)."""
    with patch("ray.get", side_effect=lambda x: x), patch("torch.distributed.barrier"):
        return fn(*args, **kwargs)


__all__ = [
    "CPUStrategy", "DummyDataset", "MODES", "MagicMock", "StandInGroup", "StudentForward", "TrainingInputBatch",
    "WORKER_KWARGS", "classes_handed_to_skyrl", "gold_cfg", "open_dict", "plain_ref_worker",
    "plain_trainer", "run_without_ray", "stand_in_generator", "wrap",
]
