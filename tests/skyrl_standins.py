"""skyrl-train 0.3.1 test stand-ins, built the way SkyRL's own CPU tests build theirs: workers are
plain objects (no Ray, no GPU) around tiny HF models in SkyRL's model wrapper, in one-worker groups
that the trainer calls directly. skyrl040_standins.py defines the same names for skyrl 0.4.0;
tests get the installed one from skyrl_versions.py."""

from . import needs_skyrl031  # noqa: F401  (first: skips its importers without skyrl-train 0.3.1)

from unittest.mock import MagicMock

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from gold_distillation.adapters import SKYRL031
from gold_distillation.adapters.skyrl031.main import CONFIG_DIR
from gold_distillation.adapters.skyrl031.trainer import GOLDDistillationTrainer, GOLDGymGenerator
from gold_distillation.adapters.skyrl031.workers import GOLDPolicyWorkerBase, GOLDRefWorkerBase
from gold_distillation.config import validate_run_config  # noqa: F401  (the version's name for tests)
from gold_distillation.gold_setup import load_tokenizer
from skyrl_train.distributed.dispatch import ActorInfo, MeshRank
from skyrl_train.model_wrapper import HFModelWrapper
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch  # noqa: F401  (TrainingInputBatch: for tests)
from skyrl_train.utils import initialize_ray, validate_cfg  # noqa: F401  (initialize_ray: for tests)

from .standins import WORKER_KWARGS, CPUStrategy, DummyDataset, without_ray

VERSION = SKYRL031
ADAPTER = "gold_distillation.adapters.skyrl031"
TRAINER_MODULE = "skyrl_train.trainer"
FSDP_WORKER_MODULE = "skyrl_train.workers.fsdp.fsdp_worker"
PPO_UTILS_MODULE = "skyrl_train.utils.ppo_utils"
# Reward mode's policy loss: GOLD registers its own under SkyRL's name (adapters/skyrl031/policy_losses.py).
IMPORTANCE_SAMPLING_LOSS = f"{ADAPTER}.policy_losses.importance_sampling_loss"
# What the 0.3.1 import fix (adapters/skyrl031/__init__.py) sets in a worker process: {attribute: the object it must be}.
WORKER_PROCESS_FIXES = {"skyrl_train.distributed.fsdp_utils.MixedPrecisionPolicy": "torch.distributed.fsdp.MixedPrecisionPolicy"}
# How the first call that needs a GPU fails on CPU (init_worker_process_group's NCCL process group).
NO_GPU_ERROR = "(?i)nccl|cuda"
# Overrides for a run on a stand-in inference engine (0.3.1 asks it for no sampling log-probs).
STAND_IN_ENGINE_SETTINGS = ()
# The names build_models takes from SkyRL's trainer module that need a Ray cluster.
RAY_IN_BUILD_MODELS = ("PPORayActorGroup", "placement_group", "get_ray_pg_ready_with_timeout")
config_dict = OmegaConf.to_container  # a config section as plain Python
editable = open_dict  # `with editable(cfg):` allows setting keys


def gold_cfg(student_path, teacher_path, *overrides, batch_size=2):
    """The GOLD hydra config, composed as the entrypoint composes it, validated by SkyRL."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(
            config_name="gold_distill",
            overrides=[
                f"trainer.policy.model.path={student_path}",
                f"trainer.ref.model.path={teacher_path}",
                "trainer.logger=console",
                f"trainer.train_batch_size={batch_size}",
                f"trainer.policy_mini_batch_size={batch_size}",
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


def ray_cluster_overrides(log_dir) -> tuple[str, ...]:
    """Overrides for the config SkyRL's initialize_ray starts a test cluster from: one GPU per worker
    (as in gold_cfg; the critic's default is 4), so no peer-access probe."""
    return ("trainer.placement.critic_num_gpus_per_node=1",)


def worker_cfg(cfg):
    """The config a 0.3.1 worker is created with: all of it."""
    return cfg


def wrap(model):
    return HFModelWrapper(model, use_flash_attention_2=False, bf16=False, use_sample_packing=False)


def stand_in_generator():
    """A generator the trainer accepts (a GOLDGymGenerator by type); tests set its generate."""
    return MagicMock(spec=GOLDGymGenerator)


def gym_generator(cfg, engine, tokenizer, model_path):
    """GOLDGymGenerator (SkyRL's gym generator) around a stand-in inference engine client."""
    return GOLDGymGenerator(generator_cfg=cfg.generator, skyrl_gym_cfg=cfg.environment.skyrl_gym,
                            inference_engine_client=engine, tokenizer=tokenizer, model_name=model_path)


def plain_trainer(cfg, generator=None):
    """The GOLD trainer as GOLDDistillationExp builds it, without worker groups."""
    return GOLDDistillationTrainer(
        cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=DummyDataset(),
        eval_dataset=None, inference_engine_client=None, generator=generator or stand_in_generator(),
        teacher_tokenizer=load_tokenizer(cfg.trainer.ref.model.path),
    )


class StudentForward:
    """What SkyRL's policy worker forward computes (action log-probs at the sampling temperature)."""

    def __init__(self, model, temperature):
        self.model, self.temperature = model, temperature

    def forward(self, data):
        with torch.no_grad():
            out = self.model(data["sequences"], data.metadata["response_length"], data["attention_mask"], temperature=self.temperature)
        return TrainingOutputBatch({"output": out})


class PolicyStandIn:
    """The policy worker's forward: SkyRL's student forward, and the GOLD policy worker's when the
    batch carries student group ids (the reward-mode ULD term), as GOLDPolicyWorkerBase dispatches."""

    def __init__(self, cfg, model):
        self.plain = StudentForward(wrap(model), cfg.generator.sampling_params.temperature)
        self.gold = GOLDPolicyWorkerBase(cfg=cfg, **WORKER_KWARGS)
        self.gold.model = wrap(model)
        self.gold.setup_gold()

    def forward(self, data):
        return (self.gold if "student_group_ids" in data else self.plain).forward(data)


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


def ref_worker(cfg, model):
    """The GOLD ref worker as a plain object around a tiny teacher."""
    worker = GOLDRefWorkerBase(cfg=cfg, **WORKER_KWARGS)
    worker.model = wrap(model)
    worker.setup_gold()
    return worker


def policy_worker(cfg, model, lr=3e-3):
    """The GOLD policy worker as a plain object that can train `model` on CPU."""
    worker = GOLDPolicyWorkerBase(cfg=cfg, **WORKER_KWARGS)
    worker.model = wrap(model)
    worker.setup_gold()
    worker.optimizer = torch.optim.Adam(worker.model.parameters(), lr=lr)
    worker.scheduler = MagicMock(get_last_lr=lambda: [lr])
    worker.strategy = CPUStrategy()
    worker.policy_mini_batch_size_per_gpu = cfg.trainer.policy_mini_batch_size
    return worker


def gold_trainer(cfg, student, teacher=None, generator=None):
    """The trainer with a stand-in student group and, with a teacher model, the GOLD ref worker's."""
    trainer = plain_trainer(cfg, generator)
    trainer.policy_model = StandInGroup(PolicyStandIn(cfg, student))
    if teacher is not None:
        trainer.ref_model = StandInGroup(ref_worker(cfg, teacher))
    return trainer


def one_data_parallel_rank(trainer):
    """The trainer sees one data-parallel rank (no padding rows), without worker groups."""
    trainer.policy_model = StandInGroup(None)


def postprocess(trainer, output, uids):
    """The trainer's postprocess_generator_output: (output, uids)."""
    return trainer.postprocess_generator_output(output, uids), uids


def stock_distillation_rewards(cfg, output, uids, batch, student, teacher):
    """SkyRL's on-policy distillation rewards, -(logp_student - logp_teacher) * loss_mask, for
    `batch` (the GOLD trainer's batch of output): the teacher's log-probs as SkyRL's stock ref
    worker computes them, its model wrapper's forward of the student's own sequences."""
    with torch.no_grad():
        base = wrap(teacher)(batch["sequences"], batch.metadata["response_length"], batch["attention_mask"])
    return -(batch["action_log_probs"] - base) * batch["loss_mask"]


def loss_mode_training(trainer, cfg, student):
    """A GOLD policy worker that trains `student` in loss mode, and one training step of it as the
    trainer runs it: (worker, step(batch) -> the step's metrics). 0.3.1: the worker's ppo_train
    (the call the trainer makes through its actor group), its train_status."""
    worker = policy_worker(cfg, student)

    def step(batch):
        with without_ray():
            return worker.ppo_train(batch).metadata["train_status"]

    return worker, step


def loss_mode_backward(worker, batch) -> dict:
    """One forward and backward of the loss-mode worker (no optimizer step), on the batch's first
    micro-batch: its metrics."""
    worker.gold_micro_batches = iter(batch.chunk(batch.batch_size))
    return worker.forward_backward(None, accumulation_steps=1)
