"""GOLD distillation on skyrl 0.4.0: the trainer and the experiment.

The step's data flow is the one of the skyrl-train 0.3.1 trainer (main_gold_distill):
  generate                   SkyRL's gym generator (GOLDGymGenerator); the messages each environment's
                             init returned, which the student's prompt was rendered from, are kept for the teacher
  convert_to_training_input  + teacher view and alignment (gold_steps.add_teacher_view)
  fwd_logprobs_values_reward SkyRL's student (and critic) pass, then the teacher pass on the GOLD
                             ref worker through `dispatch` (which moves models on and off the GPU)
  apply_reward_kl_penalty    reward mode: per-token rewards from span log-ratios
  train_critic_and_policy    reward mode: SkyRL's policy worker (no_op advantages, importance_sampling);
                             loss mode: the GOLD policy worker's forward_backward
With a served teacher (gold.teacher_backend=served, gold_steps.served_teacher_step) there is no ref
group: each rollout's teacher view is sent to the server as it returns from generate (the rest in
convert_to_training_input), and fwd_logprobs_values_reward reads the answers after the student's pass
and runs the reward step itself (SkyRL calls apply_reward_kl_penalty only with use_kl_in_reward).
"""

from unittest.mock import patch

import torch
import skyrl.train.entrypoints.main_base as main_base
from skyrl.backends.skyrl_train.training_batch import TrainingInputBatch
from skyrl.backends.skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry
from skyrl.train.generators.skyrl_gym_generator import SkyRLGymGenerator
from skyrl.train.trainer import RayPPOTrainer

from ...alignment import same_vocabulary, token_bytes
from ...config import needs_teacher_distributions
from ...gold_forward import STUDENT_INPUT_KEYS, TEACHER_INPUT_KEYS, uld_between_payloads
from ...gold_metrics import payload_metrics
from ...gold_setup import load_tokenizer
from ...gold_steps import add_teacher_view, apply_gold_rewards, lift_gold_metrics, served_teacher_step, no_op_advantage
from ..prompt_capture import ConversationCapture, require_prompt_capture
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


class GOLDDistillationTrainer(RayPPOTrainer):
    """RayPPOTrainer whose teacher reads the student's rollouts in its own tokenization."""

    def __init__(self, *args, teacher_tokenizer, **kwargs):
        super().__init__(*args, **kwargs)
        self.gold = self.cfg.gold
        self.teacher_tokenizer = teacher_tokenizer
        self.same_vocabulary = same_vocabulary(token_bytes(self.tokenizer), token_bytes(teacher_tokenizer))
        self.rollout_prompts = self.rollout_conversations = None
        require_prompt_capture(self.generator, self.same_vocabulary)
        self.one_assistant_message = not self.cfg.generator.use_conversation_multi_turn
        # gold.teacher_backend=served: the client's start-up check runs here, before any rollout.
        self.served_teacher = served_teacher_step(
            self.gold, self.tokenizer, teacher_tokenizer, self.same_vocabulary, self.one_assistant_message
        )

    def build_models(self, PolicyWorker, CriticWorker, RefWorker):
        from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import PolicyWorker as StockPolicyWorker

        from .workers import GOLDPolicyWorker, GOLDRefWorker

        # The GOLD policy worker is SkyRL's in reward mode without the ULD term; handed over in every
        # mode, as on skyrl-train 0.3.1 (where its module carries the import fix Ray workers need).
        if PolicyWorker is StockPolicyWorker:
            PolicyWorker = GOLDPolicyWorker
        elif needs_teacher_distributions(self.gold) and PolicyWorker is not GOLDPolicyWorker:
            raise ValueError(
                f"gold.mode={self.gold.mode} with gold.uld_reward_coef={self.gold.uld_reward_coef}: the policy "
                "worker must be the GOLD policy worker (gold_policy_worker.GOLDPolicyWorker), which computes "
                "the GOLD loss and the student's group statistics. Fix: pass it to build_models, or use "
                "gold.mode=reward with gold.uld_reward_coef=0."
            )
        # No critic: validate_run_config rejects trainer.critic.model.path.
        super().build_models(PolicyWorker, None, GOLDRefWorker)

    async def generate(self, input_batch):
        if self.served_teacher is None:
            output = await super().generate(input_batch)
        else:
            with self.served_teacher.generating(self.generator):  # rollouts are scored as they return
                output = await super().generate(input_batch)
        # SkyRL passes only token ids past generation; the teacher needs the messages.
        self.rollout_prompts = output.get("gold_prompt_messages")
        self.rollout_conversations = output.get("gold_response_messages")
        return output

    def convert_to_training_input(self, generator_output, uids) -> TrainingInputBatch:
        batch = super().convert_to_training_input(generator_output, uids)
        responses, loss_masks, views = generator_output["response_ids"], generator_output["loss_masks"], None
        if self.served_teacher is not None:  # the rollouts not scored yet are sent now
            views = self.served_teacher.batch_views(
                responses, loss_masks, self.rollout_prompts, self.rollout_conversations, generator_output["prompt_token_ids"]
            )
        self.all_metrics.update(
            add_teacher_view(
                batch, responses, self.rollout_prompts, self.tokenizer, self.teacher_tokenizer, self.gold,
                self.same_vocabulary, loss_masks=loss_masks, conversations=self.rollout_conversations,
                one_assistant_message=self.one_assistant_message, views=views,
            )
        )
        return batch

    @torch.no_grad()
    def fwd_logprobs_values_reward(self, training_input: TrainingInputBatch) -> TrainingInputBatch:
        if self.served_teacher is not None:
            # No ref group (use_kl_in_reward=false): SkyRL's pass is the student's only and SkyRL does
            # not call the reward step, so it runs here once the teacher's answers are in.
            training_input = super().fwd_logprobs_values_reward(training_input)
            self.all_metrics.update(self.served_teacher.add_payload(training_input))
            return self.apply_reward_kl_penalty(training_input)
        # SkyRL's pass computes the student's log-probs (and critic values); the teacher pass,
        # on the teacher's own sequences, is GOLD's, so the ref group sits SkyRL's pass out.
        teacher_group, self.ref_model = self.ref_model, None
        try:
            training_input = super().fwd_logprobs_values_reward(training_input)
        finally:
            self.ref_model = teacher_group
        payload = self.run_forward("ref", training_input, TEACHER_INPUT_KEYS)
        self.dispatch.empty_cache("ref")
        for key, value in payload.items():
            training_input[key] = value
        self.all_metrics.update(payload_metrics(payload, training_input["teacher_group_ids"]))
        if self.gold.mode == "reward" and self.gold.uld_reward_coef > 0:
            student = self.run_forward("policy", training_input, STUDENT_INPUT_KEYS)
            distance, _ = uld_between_payloads(student, payload)
            training_input["gold_uld_distance"] = distance
        return training_input

    def run_forward(self, model: str, batch: TrainingInputBatch, keys) -> dict[str, torch.Tensor]:
        """A worker group's forward ("ref" or "policy") on the given batch keys, through the
        dispatch; returns the per-sample outputs stacked into [B, ...] tensors."""
        data = batch.select(keys=list(keys), metadata_keys=["response_length", "gold_num_groups"])
        return stack_outputs(self.dispatch.forward(model, data).loss_fn_outputs)

    @torch.no_grad()
    def apply_reward_kl_penalty(self, data: TrainingInputBatch) -> TrainingInputBatch:
        """Reward mode: per-token rewards from span log-ratios (GOLD.md section 4). In loss mode
        the GOLD policy worker trains on the teacher payload and rewards are unused."""
        self.all_metrics.update(apply_gold_rewards(data, self.gold))
        return data

    def train_critic_and_policy(self, data: TrainingInputBatch):
        status = super().train_critic_and_policy(data)
        lift_gold_metrics(self.all_metrics)
        if self.served_teacher is not None:
            self.all_metrics.update(self.served_teacher.step_share())
        return status


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
