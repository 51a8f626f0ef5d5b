"""GOLD distillation on skyrl-train 0.3.1: the generator, the trainer and the experiment. The step's
data flow, the same on every SkyRL version, is in adapters/trainer_common.py."""

from __future__ import annotations

import ray
from skyrl_train.distributed.dispatch import concatenate_outputs_after_mesh_dispatch
from skyrl_train.entrypoints.main_base import BasePPOExp
from skyrl_train.generators.skyrl_gym_generator import SkyRLGymGenerator
from skyrl_train.trainer import RayPPOTrainer
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch

from ...gold_setup import load_tokenizer
from ..prompt_capture import ConversationCapture
from ..trainer_common import GOLDTrainerMixin
from .policy_losses import register_skyrl_functions

register_skyrl_functions()


class GOLDGymGenerator(ConversationCapture, SkyRLGymGenerator):
    """SkyRL's gym generator that also returns each trajectory's conversation: the messages its
    environment's init returned and the turns and observations after them (`gold_prompt_messages`,
    `gold_response_messages`, see prompt_capture.ConversationCapture)."""


class GOLDDistillationTrainer(GOLDTrainerMixin, RayPPOTrainer):
    """RayPPOTrainer whose teacher reads the student's rollouts in its own tokenization
    (adapters/trainer_common.GOLDTrainerMixin); worker groups run through Ray as SkyRL 0.3.1's own passes do."""

    def gold_worker_classes(self):
        # A Ray worker process loads its actor class's module by name with nothing imported before:
        # SkyRL's fsdp_worker module fails to import there (0.3.1), the GOLD worker module fixes it first.
        from skyrl_train.workers.fsdp.fsdp_worker import PolicyWorker

        from .workers import GOLDPolicyWorker, GOLDRefWorker

        return PolicyWorker, GOLDPolicyWorker, GOLDRefWorker

    def forward_group(self, model: str, data: TrainingInputBatch) -> TrainingOutputBatch:
        group = self.ref_model if model == "ref" else self.policy_model
        colocated = self.colocate_all or (model == "ref" and self.cfg.trainer.placement.colocate_policy_ref)
        # A forward pass needs the model on the GPU, not the optimizer state (as in SkyRL's own passes).
        if colocated:
            group.backload_to_gpu(backload_optimizer=False, backload_model=True)
        results = ray.get(group.async_run_ray_method("mesh", "forward", data=data))
        output = concatenate_outputs_after_mesh_dispatch(group.actor_infos, results)
        if colocated:
            group.offload_to_cpu(offload_optimizer=False, offload_model=True)
            ray.get(group.async_run_ray_method("pass_through", "empty_cache"))
        return output


class GOLDDistillationExp(BasePPOExp):
    """BasePPOExp with the GOLD trainer and generator, the teacher tokenizer and remote code off by default."""

    def get_tokenizer(self, padding_side="left"):
        tokenizer = load_tokenizer(self.cfg.trainer.policy.model.path, bool(self.cfg.gold.student_trust_remote_code))
        tokenizer.padding_side = padding_side
        return tokenizer

    def get_generator(self, cfg, tokenizer, inference_engine_client):
        return GOLDGymGenerator(
            generator_cfg=cfg.generator,
            skyrl_gym_cfg=cfg.environment.skyrl_gym,
            inference_engine_client=inference_engine_client,
            tokenizer=tokenizer,
            model_name=cfg.trainer.policy.model.path,
        )

    def get_trainer(self, *args, **kwargs):
        teacher = load_tokenizer(self.cfg.trainer.ref.model.path, bool(self.cfg.gold.teacher_trust_remote_code))
        return GOLDDistillationTrainer(*args, teacher_tokenizer=teacher, **kwargs)
