"""The GOLD trainer's SkyRL hooks, the same for every SkyRL version (imports neither skyrl_train nor
skyrl: each adapter's trainer is GOLDTrainerMixin before that version's RayPPOTrainer).

Data flow of one step (GOLD.md section 2), in the order SkyRL's trainer runs it:
  generate                   SkyRL's gym generator (the adapter's GOLDGymGenerator); the messages each
                             environment's init returned, which the student's prompt was rendered from,
                             and the turns and observations after them are kept for the teacher
  convert_to_training_input  + teacher view and alignment (gold_steps.add_teacher_view)
  fwd_logprobs_values_reward SkyRL's student (and critic) pass, then the teacher pass on the GOLD ref worker
  apply_reward_kl_penalty    reward mode: per-token rewards from span log-ratios (gold_steps.apply_gold_rewards)
  train_critic_and_policy    reward mode: SkyRL's policy step (no_op advantages, importance_sampling);
                             loss mode: the GOLD policy worker's loss against the teacher payload
With a served teacher (gold.teacher_backend=served, gold_steps.served_teacher_step) there is no ref
group: each rollout's teacher view is sent to the server as it returns from generate (the rest in
convert_to_training_input), and fwd_logprobs_values_reward reads the answers after the student's pass
and runs the reward step itself (SkyRL calls apply_reward_kl_penalty only with use_kl_in_reward).

What differs between SkyRL versions is behind two hooks each adapter's trainer defines:
  gold_worker_classes()      (SkyRL's stock policy worker, the GOLD policy worker, the GOLD ref worker)
  forward_group(model, data) a worker group's forward ("ref" or "policy") on a selected batch ->
                             its outputs as [B, ...] tensors by key
"""

from __future__ import annotations

import torch

from ..alignment import same_vocabulary, token_bytes
from ..config import needs_teacher_distributions
from ..gold_forward import STUDENT_INPUT_KEYS, TEACHER_INPUT_KEYS, uld_between_payloads
from ..gold_metrics import payload_metrics
from ..gold_steps import add_teacher_view, apply_gold_rewards, lift_gold_metrics, served_teacher_step
from .prompt_capture import require_prompt_capture


class GOLDTrainerMixin:
    """RayPPOTrainer hooks whose teacher reads the student's rollouts in its own tokenization (put it
    first among the bases, before the installed SkyRL's RayPPOTrainer)."""

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

    def gold_worker_classes(self):
        """(SkyRL's stock PolicyWorker, the GOLD policy worker, the GOLD ref worker) of this SkyRL version."""
        raise NotImplementedError

    def forward_group(self, model: str, data) -> dict[str, torch.Tensor]:
        """Run the "ref" or "policy" worker group's forward on `data` (a TrainingInputBatch holding only
        the keys it needs); returns the group's outputs as [B, ...] tensors by key."""
        raise NotImplementedError

    def build_models(self, PolicyWorker, CriticWorker, RefWorker):
        stock_policy, gold_policy, gold_ref = self.gold_worker_classes()
        # The GOLD policy worker is SkyRL's in reward mode without the ULD term; it is handed over in
        # every mode (on skyrl-train 0.3.1 its module carries the import fix Ray workers need).
        if PolicyWorker is stock_policy:
            PolicyWorker = gold_policy
        elif needs_teacher_distributions(self.gold) and PolicyWorker is not gold_policy:
            raise ValueError(
                f"gold.mode={self.gold.mode} with gold.uld_reward_coef={self.gold.uld_reward_coef}: the policy "
                "worker must be the GOLD policy worker (gold_policy_worker.GOLDPolicyWorker), which computes "
                "the GOLD loss and the student's group statistics. Fix: pass it to build_models, or use "
                "gold.mode=reward with gold.uld_reward_coef=0."
            )
        # No critic: validate_run_config rejects trainer.critic.model.path.
        super().build_models(PolicyWorker, None, gold_ref)

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

    def convert_to_training_input(self, generator_output, uids):
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
    def fwd_logprobs_values_reward(self, training_input):
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
        for key, value in payload.items():
            training_input[key] = value
        self.all_metrics.update(payload_metrics(payload, training_input["teacher_group_ids"]))
        if self.gold.mode == "reward" and self.gold.uld_reward_coef > 0:
            student = self.run_forward("policy", training_input, STUDENT_INPUT_KEYS)
            distance, _ = uld_between_payloads(student, payload)
            training_input["gold_uld_distance"] = distance
        return training_input

    def run_forward(self, model: str, batch, keys) -> dict[str, torch.Tensor]:
        """The "ref" or "policy" group's forward on the given keys of `batch` (forward_group)."""
        return self.forward_group(model, batch.select(keys=list(keys), metadata_keys=["response_length", "gold_num_groups"]))

    @torch.no_grad()
    def apply_reward_kl_penalty(self, data):
        """Reward mode: per-token rewards from span log-ratios (GOLD.md section 4). In loss mode
        the GOLD policy worker trains on the teacher payload and rewards are unused."""
        self.all_metrics.update(apply_gold_rewards(data, self.gold))
        return data

    def train_critic_and_policy(self, data):
        status = super().train_critic_and_policy(data)
        lift_gold_metrics(self.all_metrics)
        if self.served_teacher is not None:
            self.all_metrics.update(self.served_teacher.step_share())
        return status
