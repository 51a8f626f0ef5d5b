"""The skyrl 0.4.0 GOLD trainer driven through its steps on CPU, with tiny random Llama (student)
and Qwen2 (teacher) models in plain workers behind SkyRL's own WorkerDispatch."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import asyncio
import math
from unittest.mock import AsyncMock, MagicMock

import numpy as np
import pytest
import torch

from gold_distillation.adapters.skyrl040.trainer import GOLDDistillationTrainer, GOLDGymGenerator
from gold_distillation.gold_forward import PAYLOAD_KEYS, TEACHER_INPUT_KEYS
from gold_distillation.gold_setup import load_tokenizer
from gold_distillation.gold_steps import teacher_forward
from gold_distillation.teacher_view import build_teacher_view
from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import FSDPRefWorkerBase
from skyrl.train.trainer import RayPPOTrainer

from .conftest import TOKENIZERS_DIR, tiny_model
from .rollouts import PROMPTS, direct_token_logprobs, generator_output
from .skyrl040_standins import dispatch_for, gold_cfg, policy_worker, ref_worker, without_ray, wrap

LLAMA, QWEN = str(TOKENIZERS_DIR / "llama3.1-instruct"), str(TOKENIZERS_DIR / "qwen2.5-instruct")
UIDS = [str(i) for i in range(len(PROMPTS))]


def build_trainer(cfg, student_model, teacher_model, trainer_class=GOLDDistillationTrainer, ref=None, **kwargs):
    """The trainer as the 0.4.0 experiment builds it (tokenizers through load_tokenizer), its
    dispatch over plain workers around the tiny models."""
    trainer = trainer_class(
        cfg=cfg, tracker=None, tokenizer=load_tokenizer(cfg.trainer.policy.model.path), train_dataset=None,
        inference_engine_client=None, generator=MagicMock(spec=GOLDGymGenerator), **kwargs,
    )
    policy = policy_worker(cfg, student_model)
    trainer.dispatch = dispatch_for(cfg, policy, ref or ref_worker(cfg, teacher_model))
    trainer.policy_model, trainer.ref_model = trainer.dispatch._actor_groups["policy"], trainer.dispatch._actor_groups["ref"]
    return trainer


def gold_trainer(cfg, student_model, teacher_model):
    return build_trainer(cfg, student_model, teacher_model, teacher_tokenizer=load_tokenizer(cfg.trainer.ref.model.path))


def gold_step(trainer, output):
    """generate -> convert_to_training_input -> fwd_logprobs_values_reward -> apply_reward_kl_penalty."""
    trainer.generator.generate = AsyncMock(return_value=dict(output))
    with without_ray():
        output = asyncio.run(trainer.generate({"prompts": PROMPTS}))
        batch = trainer.convert_to_training_input(output, UIDS)
        batch = trainer.fwd_logprobs_values_reward(batch)
        return trainer.apply_reward_kl_penalty(batch)


def test_reward_mode_rewards_are_span_log_ratios_of_the_models(tokenizers):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = tiny_model("llama", len(s_tok), seed=3), tiny_model("qwen2", len(t_tok), seed=4)
    trainer = gold_trainer(gold_cfg(LLAMA, QWEN), student, teacher)
    output = generator_output(s_tok)
    batch = gold_step(trainer, output)

    checked_multi = 0
    for i, (prompt, response) in enumerate(zip(PROMPTS, output["response_ids"])):
        view = build_teacher_view(response, prompt, s_tok, t_tok)
        s_lp = direct_token_logprobs(student, output["prompt_token_ids"][i], response)
        t_lp = direct_token_logprobs(teacher, view.prompt_ids, view.response_ids)
        expected = torch.zeros(batch["rewards"].shape[1])
        # skyrl 0.4.0 right-aligns each response within the response columns.
        positions = torch.nonzero(batch["response_mask"][i]).squeeze(-1)
        assert len(positions) == len(response)
        deltas = []
        for g in range(view.num_groups):
            s_members = np.flatnonzero(view.student_groups == g)
            deltas.append(t_lp[torch.from_numpy(view.teacher_groups == g)].sum() - s_lp[s_members].sum())
            expected[positions[s_members]] = deltas[-1]  # every token of the group carries its delta
            checked_multi += int(len(s_members) > 1 or (view.teacher_groups == g).sum() > 1)
        torch.testing.assert_close(batch["rewards"][i], expected, atol=2e-4, rtol=1e-4)
        # Summed over the groups: the sequence log-likelihood ratio; the unfinished response's
        # last group holds the teacher EOS (scored as ending where it was cut).
        assert view.unfinished == (output["stop_reasons"][i] != "stop") and view.response_ids[-1] == t_tok.eos_token_id
        torch.testing.assert_close(torch.stack(deltas).sum(), t_lp.sum() - s_lp.sum(), atol=1e-3, rtol=1e-4)
    assert checked_multi > 0
    assert trainer.all_metrics["gold/unfinished_share"] == 1 / 3 and trainer.all_metrics["gold/empty_unfinished_share"] == 0
    for key in ("gold/groups_per_response", "gold/multi_token_group_share", "gold/alignment_coverage", "gold/span_log_ratio",
                "gold/teacher_payload_bytes_per_token", "gold/alignment_seconds", "gold/truncated_share"):
        assert math.isfinite(trainer.all_metrics[key]), key
    assert trainer.all_metrics["gold/alignment_coverage"] == 1.0
    assert trainer.all_metrics["gold/teacher_payload_bytes_per_token"] < 16


def test_same_tokenizer_rewards_equal_skyrl_on_policy_distillation_exactly(tokenizers):
    tok = tokenizers["llama3.1-instruct"]
    student, teacher = tiny_model("llama", len(tok), seed=5), tiny_model("llama", len(tok), seed=6)
    cfg = gold_cfg(LLAMA, LLAMA)
    batch = gold_step(gold_trainer(cfg, student, teacher), generator_output(tok))

    # SkyRL 0.4.0's own path: its trainer and its stock ref worker give base_action_log_probs;
    # its on-policy distillation example sets rewards = -(logp_student - logp_teacher) * loss_mask.
    stock = build_trainer(cfg, student, teacher, trainer_class=RayPPOTrainer, ref=ref_worker(cfg, teacher, FSDPRefWorkerBase))
    with without_ray():
        stock_batch = stock.fwd_logprobs_values_reward(stock.convert_to_training_input(generator_output(tok), UIDS))
    expected = -(stock_batch["action_log_probs"] - stock_batch["base_action_log_probs"]) * stock_batch["loss_mask"]
    assert torch.equal(batch["rewards"], expected)


@pytest.mark.parametrize("hybrid", [False, True])
def test_loss_mode_forward_backward_lowers_the_gold_loss(tokenizers, hybrid):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    teacher = tiny_model("qwen2", len(t_tok), seed=8)
    cfg = gold_cfg(LLAMA, QWEN, "gold.mode=loss", f"gold.hybrid={str(hybrid).lower()}")
    trainer = gold_trainer(cfg, tiny_model("llama", len(s_tok), seed=7), teacher)
    assert (trainer.dispatch._actor_groups["policy"].worker.hybrid is not None) == hybrid
    batch = gold_step(trainer, generator_output(s_tok))

    # The payload that came back through the dispatch, per sample, is the teacher's on the whole batch.
    with torch.no_grad():
        direct = teacher_forward(wrap(teacher), batch.select(list(TEACHER_INPUT_KEYS), ["gold_num_groups"]), cfg.gold)
    for key in PAYLOAD_KEYS:
        if key in direct:
            torch.testing.assert_close(batch[key], direct[key], atol=1e-5, rtol=1e-5)

    with without_ray():
        batch = trainer.compute_advantages_and_returns(batch)
        losses = []
        for _ in range(6):
            trainer.all_metrics = {}
            status = trainer.train_critic_and_policy(batch)
            losses.append(status["final_loss"])
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] * 0.9, losses
    # The worker's gold/* metrics reach the trainer under their own names.
    for key in ("gold/loss", "gold/uld_distance", "gold/topk_error_bound", "gold/topk_tail_mass") + (("gold/hybrid_jsd",) if hybrid else ()):
        assert math.isfinite(trainer.all_metrics[key]), key
    assert not any(k.startswith("policy/gold/") for k in trainer.all_metrics)
    grads = [p.grad for p in trainer.dispatch._actor_groups["policy"].worker.model.parameters() if p.grad is not None]
    assert all(torch.all(torch.isfinite(g)) for g in grads)


def test_uld_reward_term_subtracts_coef_times_exact_uld_per_group(tokenizers):
    from gold_distillation.gold_forward import group_measures
    from gold_distillation.losses import place_group_values, sorted_l1

    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = tiny_model("llama", len(s_tok), seed=3), tiny_model("qwen2", len(t_tok), seed=4)
    rewards = {}
    for coef in (0.0, 0.5):
        trainer = gold_trainer(gold_cfg(LLAMA, QWEN, f"gold.uld_reward_coef={coef}", "gold.teacher_topk=null"), student, teacher)
        batch = gold_step(trainer, generator_output(s_tok))
        rewards[coef] = batch["rewards"]
    assert math.isfinite(trainer.all_metrics["gold/uld_distance"]) and trainer.all_metrics["gold/uld_distance"] > 0

    g, r, r_t = batch.metadata["gold_num_groups"], batch.metadata["response_length"], batch["teacher_group_ids"].shape[1]
    with torch.no_grad():
        _, out = wrap(student)(batch["sequences"], r, batch["attention_mask"], return_output=True)
        s = group_measures(out["logits"][:, -r - 1 : -1], batch["sequences"][:, -r:], batch["student_group_ids"], g)
        _, out = wrap(teacher)(batch["teacher_sequences"], r_t, batch["teacher_attention_mask"], return_output=True)
        t = group_measures(out["logits"][:, -r_t - 1 : -1], batch["teacher_sequences"][:, -r_t:], batch["teacher_group_ids"], g)
    exact = sorted_l1(s.merged.exp(), t.merged.exp()).reshape(-1, g)
    expected = place_group_values(-0.5 * exact, batch["student_group_ids"]) * batch["loss_mask"]
    torch.testing.assert_close(rewards[0.5] - rewards[0.0], expected, atol=1e-4, rtol=1e-4)
