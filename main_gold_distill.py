"""GOLD distillation on SkyRL: the trainer, the experiment and the hydra entrypoint.

Data flow of one step (GOLD.md section 2), in the order the trainer runs it:
  generate             SkyRL's gym generator (GOLDGymGenerator); the messages each environment's
                       init returned, which the student's prompt was rendered from, are kept for the teacher
  convert_to_training_input
                       + teacher view and alignment: teacher sequences and both sides' group ids
  fwd_logprobs_values_reward
                       SkyRL's student (and critic) pass, then the teacher pass on the GOLD ref worker
  apply_reward_kl_penalty
                       reward mode: per-token rewards from span log-ratios
  train_critic_and_policy
                       reward mode: SkyRL's policy worker (no_op advantages, importance_sampling);
                       loss mode: the GOLD policy worker's loss against the teacher payload
"""

from __future__ import annotations

import contextvars
import copy
import time
from pathlib import Path

import hydra
import ray
import torch
from omegaconf import DictConfig
from skyrl_gym import Env
from skyrl_train.distributed.dispatch import concatenate_outputs_after_mesh_dispatch
from skyrl_train.entrypoints.main_base import BasePPOExp
from skyrl_train.generators.skyrl_gym_generator import SkyRLGymGenerator
from skyrl_train.trainer import RayPPOTrainer
from skyrl_train.training_batch import TrainingInputBatch
from skyrl_train.utils import initialize_ray, validate_cfg

from .alignment import same_vocabulary, token_bytes
from .config import GOLDConfig, needs_teacher_distributions, validate_run_config
from .gold_forward import STUDENT_INPUT_KEYS, TEACHER_INPUT_KEYS, uld_between_payloads
from .gold_metrics import alignment_metrics, payload_metrics, respelled_metric, response_end_metrics, span_ratio_metric
from .gold_setup import load_tokenizer
from .losses import span_logprobs, span_rewards
from .policy_losses import register_skyrl_functions
from .served_teacher import ServedTeacher, ServedTeacherStep
from .skyrl_compat import patch_skyrl_imports
from .teacher_view import build_teacher_views, collate_views

CONFIG_DIR = str(Path(__file__).resolve().parent / "hydra_config")

# BasePPOExp imports SkyRL's FSDP worker module, which needs the 0.3.1 import fix first.
patch_skyrl_imports()
register_skyrl_functions()

# The messages env.init returned, in the task of the trajectory's agent loop (see GOLDGymGenerator).
_INIT_MESSAGES = contextvars.ContextVar("gold_init_messages")


class GOLDGymGenerator(SkyRLGymGenerator):
    """SkyRL's gym generator that also returns, per trajectory and in output order, the messages its
    environment's init returned (`gold_prompt_messages`): the conversation the student's prompt was
    rendered from, with generator.chat_template_kwargs, which may differ from the dataset prompt.
    While `rollout_done` is set (the trainer's generate, with a served teacher), each trajectory's agent
    loop calls rollout_done(row, messages, prompt ids, response ids) as soon as it returns."""

    rollout_done = None

    async def generate(self, input_batch, disable_tqdm: bool = False):
        self.init_messages = []
        output = await super().generate(input_batch, disable_tqdm)
        output["gold_prompt_messages"] = [slot[0] for slot in self.init_messages]
        return output

    def agent_loop(self, *args, **kwargs):
        # generate() calls this once per trajectory, in output order, before awaiting any of them.
        slot = []
        self.init_messages.append(slot)
        return self._recording_agent_loop(len(self.init_messages) - 1, slot, *args, **kwargs)

    async def _recording_agent_loop(self, row, slot, *args, **kwargs):
        _INIT_MESSAGES.set(slot)  # local to this trajectory's task
        output = await super().agent_loop(*args, **kwargs)
        if self.rollout_done is not None:
            self.rollout_done(row, slot[0], output.prompt_ids, output.response_ids)
        return output

    async def _run_in_executor_if_available(self, func, *args, **kwargs):
        result = await super()._run_in_executor_if_available(func, *args, **kwargs)
        if getattr(func, "__name__", None) == "init" and isinstance(getattr(func, "__self__", None), Env):
            slot = _INIT_MESSAGES.get(None)
            if slot is None:  # generate_batched: no agent loop, env.init runs for each trajectory in order
                slot = []
                self.init_messages.append(slot)
            slot.append(copy.deepcopy(result[0]))
        return result


class GOLDDistillationTrainer(RayPPOTrainer):
    """RayPPOTrainer whose teacher reads the student's rollouts in its own tokenization."""

    def __init__(self, *args, teacher_tokenizer, **kwargs):
        super().__init__(*args, **kwargs)
        self.gold = self.cfg.gold
        self.teacher_tokenizer = teacher_tokenizer
        self.same_vocabulary = same_vocabulary(token_bytes(self.tokenizer), token_bytes(teacher_tokenizer))
        self.rollout_prompts = None
        self.served_teacher = None
        if self.gold.teacher_backend == "served":
            # The start-up check (server, model, context length, tokenizer) runs here, before any rollout.
            teacher = ServedTeacher.from_config(self.gold, teacher_tokenizer)
            self.served_teacher = ServedTeacherStep(teacher, None if self.same_vocabulary else self.build_views)
        if not self.same_vocabulary and not isinstance(self.generator, GOLDGymGenerator):
            raise ValueError(
                f"the generator ({type(self.generator).__name__}) does not report the messages each environment's "
                "init returned, which the teacher must read (the student's prompt was rendered from them). Fix: "
                "use GOLDDistillationExp.get_generator's GOLDGymGenerator, or a subclass of it"
            )

    def build_models(self, PolicyWorker, CriticWorker, RefWorker):
        from skyrl_train.workers.fsdp.fsdp_worker import PolicyWorker as StockPolicyWorker

        from .gold_policy_worker import GOLDPolicyWorker
        from .gold_ref_worker import GOLDRefWorker

        # A Ray worker process loads its actor class's module by name with nothing imported before:
        # SkyRL's fsdp_worker module fails to import there (0.3.1), the GOLD worker modules fix it first.
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
        # skyrl-train 0.3.1 passes only token ids past generation; the teacher needs the messages.
        self.rollout_prompts = output.get("gold_prompt_messages")
        return output

    def convert_to_training_input(self, generator_output, uids) -> TrainingInputBatch:
        batch = super().convert_to_training_input(generator_output, uids)
        views = None
        if self.served_teacher is not None:
            views = self.served_teacher.batch_views(
                generator_output["response_ids"], self.rollout_prompts, generator_output["prompt_token_ids"]
            )
        return self.add_teacher_view(batch, generator_output["response_ids"], self.rollout_prompts, views)

    def build_views(self, responses: list[list[int]], prompts) -> list:
        """The teacher views of responses to prompts (messages), with the gold.* view settings."""
        eos_ids = self.gold.student_eos_token_ids
        return build_teacher_views(
            responses, list(prompts), self.tokenizer, self.teacher_tokenizer,
            student_eos_ids=frozenset(eos_ids) if eos_ids else None,
            max_teacher_length=self.gold.max_teacher_length,
            teacher_end_token=self.gold.teacher_end_token, fold_system_message=self.gold.fold_system_message,
        )

    def add_teacher_view(self, batch: TrainingInputBatch, responses: list[list[int]], prompts, views=None) -> TrainingInputBatch:
        """Teacher view and alignment (GOLD.md steps 2-3): adds teacher_sequences [B, T_t],
        teacher_attention_mask [B, T_t], teacher_group_ids [B, R_t], student_group_ids [B, R_s]
        and metadata gold_num_groups. Rows SkyRL appended for data parallelism get no groups.
        views: the responses' teacher views where already built (by the served teacher's step)."""
        n, width = len(responses), batch["response_mask"].shape[1]
        start = time.perf_counter()
        truncated = 0.0
        if self.same_vocabulary:
            # Same vocabulary: the teacher reads the student's own tokens, one group per token.
            positions = torch.arange(width).expand(n, width)
            groups = torch.where(batch["response_mask"][:n] > 0, positions, -1)
            tensors = {
                "teacher_sequences": batch["sequences"][:n],
                "teacher_attention_mask": batch["attention_mask"][:n],
                "teacher_group_ids": groups,
                "student_group_ids": groups,
            }
            num_groups = width
        else:
            if prompts is None or len(prompts) != n:
                raise ValueError(
                    f"GOLD needs the prompt messages of each of the {n} responses, got "
                    f"{None if prompts is None else len(prompts)}. Fix: generate through the trainer's "
                    "generate() with GOLDGymGenerator and keep trainer.algorithm.dynamic_sampling.type=null"
                )
            views = views if views is not None else self.build_views(responses, prompts)
            collated = collate_views(views, self.teacher_tokenizer.pad_token_id, student_response_length=width)
            tensors = {
                "teacher_sequences": collated.sequences,
                "teacher_attention_mask": collated.attention_mask,
                "teacher_group_ids": collated.teacher_group_ids,
                "student_group_ids": collated.student_group_ids,
            }
            num_groups = collated.num_groups
            truncated = sum(v.truncated for v in views) / n
            self.all_metrics.update(response_end_metrics(views))
            self.all_metrics.update(respelled_metric(views))
        pad = batch.batch_size - n
        for key, value in tensors.items():
            filler = value[:pad].clone() if key in TEACHER_INPUT_KEYS[:2] else torch.full_like(value[:pad], -1)
            batch[key] = torch.cat([value, filler])
        batch.metadata["gold_num_groups"] = num_groups
        self.all_metrics.update(
            alignment_metrics(tensors["student_group_ids"], tensors["teacher_group_ids"], num_groups, batch["response_mask"][:n])
        )
        self.all_metrics["gold/truncated_share"] = truncated
        self.all_metrics["gold/alignment_seconds"] = time.perf_counter() - start
        return batch

    @torch.no_grad()
    def fwd_logprobs_values_reward(self, training_input: TrainingInputBatch) -> TrainingInputBatch:
        if self.served_teacher is not None:
            # No ref group (use_kl_in_reward=false): SkyRL's pass is the student's only, and SkyRL does
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
        colocated = self.colocate_all or self.cfg.trainer.placement.colocate_policy_ref
        payload = self.run_group(self.ref_model, training_input, TEACHER_INPUT_KEYS, colocated)
        for key, value in payload.items():
            training_input[key] = value
        self.all_metrics.update(payload_metrics(payload, training_input["teacher_group_ids"]))
        if self.gold.mode == "reward" and self.gold.uld_reward_coef > 0:
            student = self.run_group(self.policy_model, training_input, STUDENT_INPUT_KEYS, self.colocate_all)
            distance, _ = uld_between_payloads(student, payload)
            training_input["gold_uld_distance"] = distance
        return training_input

    def run_group(self, group, batch: TrainingInputBatch, keys, colocated: bool):
        """Run a worker group's forward on the given batch keys; returns its concatenated output."""
        data = batch.select(keys=list(keys), metadata_keys=["response_length", "gold_num_groups"])
        # A forward pass needs the model on the GPU, not the optimizer state (as in SkyRL's own passes).
        if colocated:
            group.backload_to_gpu(backload_optimizer=False, backload_model=True)
        results = ray.get(group.async_run_ray_method("mesh", "forward", data=data))
        output = concatenate_outputs_after_mesh_dispatch(group.actor_infos, results)
        if colocated:
            group.offload_to_cpu(offload_optimizer=False, offload_model=True)
            ray.get(group.async_run_ray_method("pass_through", "empty_cache"))
        return output

    @torch.no_grad()
    def apply_reward_kl_penalty(self, data: TrainingInputBatch) -> TrainingInputBatch:
        """Reward mode: per-token rewards from span log-ratios (GOLD.md section 4). In loss mode
        the GOLD policy worker trains on the teacher payload and rewards are unused."""
        groups, num_groups = data["student_group_ids"], data.metadata["gold_num_groups"]
        student_spans = span_logprobs(data["action_log_probs"].float(), groups, num_groups)
        teacher_spans = data["teacher_span_logprobs"]
        self.all_metrics.update(span_ratio_metric(student_spans, teacher_spans, data["teacher_group_mask"].bool()))
        if self.gold.mode == "reward":
            penalty = None
            if "gold_uld_distance" in data:
                penalty = self.gold.uld_reward_coef * data["gold_uld_distance"]
                present = data["teacher_group_mask"].bool()
                self.all_metrics["gold/uld_distance"] = float(data["gold_uld_distance"][present].mean()) if present.any() else 0.0
            rewards = span_rewards(student_spans, teacher_spans, groups, penalty)
            data["rewards"] = rewards * data["loss_mask"]
        return data

    def train_critic_and_policy(self, data: TrainingInputBatch):
        status = super().train_critic_and_policy(data)
        if self.served_teacher is not None:
            self.all_metrics.update(self.served_teacher.step_share())
        # The GOLD policy worker reports gold/* metrics; SkyRL files them under policy/.
        for key in [k for k in self.all_metrics if k.startswith("policy/gold/")]:
            self.all_metrics[key[len("policy/"):]] = self.all_metrics.pop(key)
        return status


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


def register_gold_config() -> None:
    """Make the `gold` section (GOLDConfig, typed) available to hydra as the config group gold/default."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="gold", name="default", node=GOLDConfig)


register_gold_config()


@ray.remote(num_cpus=1)
def gold_entrypoint(cfg: DictConfig):
    # Run as `python -m`, this module is __main__ and reaches this process by value, without its
    # module-level fix; BasePPOExp._setup_trainer imports SkyRL's FSDP workers here.
    patch_skyrl_imports()
    GOLDDistillationExp(cfg).run()


@hydra.main(config_path=CONFIG_DIR, config_name="gold_distill", version_base=None)
def main(cfg: DictConfig) -> None:
    validate_run_config(cfg)
    validate_cfg(cfg)
    initialize_ray(cfg)
    ray.get(gold_entrypoint.remote(cfg))


if __name__ == "__main__":
    main()
