"""GOLD distillation on skyrl 0.4.0: the generator, the trainer and the experiment. The step's data
flow, the same on every SkyRL version, is in adapters/trainer_common.py."""

from unittest.mock import patch

import torch
import skyrl.train.entrypoints.main_base as main_base
from skyrl.backends.skyrl_train.training_batch import TrainingInputBatch
from skyrl.backends.skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry
from skyrl.train.generators.skyrl_gym_generator import SkyRLGymGenerator
from skyrl.train.trainer import RayPPOTrainer

from ...gold_setup import load_tokenizer
from ...gold_steps import no_op_advantage
from ..prompt_capture import ConversationCapture
from ..trainer_common import GOLDTrainerMixin
from .workers import stack_outputs


def register_skyrl_functions() -> None:
    """Register the `no_op` advantage estimator (not built into skyrl 0.4.0; `importance_sampling`
    is) once per process: SkyRL's registries are global and refuse a second registration."""
    if "no_op" not in AdvantageEstimatorRegistry.list_available():
        AdvantageEstimatorRegistry.register("no_op", no_op_advantage)


register_skyrl_functions()


class GOLDGymGenerator(ConversationCapture, SkyRLGymGenerator):
    """SkyRL's gym generator that also returns each trajectory's conversation: the messages its
    environment's init returned and the turns and observations after them (`gold_prompt_messages`,
    `gold_response_messages`, see prompt_capture.ConversationCapture)."""


class GOLDDistillationTrainer(GOLDTrainerMixin, RayPPOTrainer):
    """RayPPOTrainer whose teacher reads the student's rollouts in its own tokenization
    (adapters/trainer_common.GOLDTrainerMixin); worker groups run through skyrl 0.4.0's `dispatch`,
    which moves models on and off the GPU."""

    def gold_worker_classes(self):
        from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import PolicyWorker

        from .workers import GOLDPolicyWorker, GOLDRefWorker

        return PolicyWorker, GOLDPolicyWorker, GOLDRefWorker

    def forward_group(self, model: str, data: TrainingInputBatch) -> dict[str, torch.Tensor]:
        output = stack_outputs(self.dispatch.forward(model, data).loss_fn_outputs)
        if model == "ref":
            self.dispatch.empty_cache("ref")
        return output


class GOLDDistillationExp(main_base.BasePPOExp):
    """BasePPOExp with the GOLD trainer, the teacher tokenizer and remote code off by default."""

    def __init__(self, cfg):
        # skyrl 0.4.0 builds the student tokenizer inside BasePPOExp.__init__ with remote code on;
        # GOLD loads it with remote code off unless gold.student_trust_remote_code.
        student = load_tokenizer(cfg.trainer.policy.model.path, bool(cfg.gold.student_trust_remote_code))
        student.padding_side = "left"
        with patch.object(main_base, "get_tokenizer", lambda *args, **kwargs: student):
            super().__init__(cfg)

    def get_generator(self, cfg, tokenizer, inference_engine_client):
        return GOLDGymGenerator(
            generator_cfg=cfg.generator,
            skyrl_gym_cfg=cfg.environment.skyrl_gym,
            inference_engine_client=inference_engine_client,
            tokenizer=tokenizer,
            policy_model_name=main_base.resolve_policy_model_name(cfg),
        )

    def get_trainer(self, *args, **kwargs):
        teacher = load_tokenizer(self.cfg.trainer.ref.model.path, bool(self.cfg.gold.teacher_trust_remote_code))
        return GOLDDistillationTrainer(*args, teacher_tokenizer=teacher, **kwargs)
