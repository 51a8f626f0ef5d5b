"""GOLDDistillationTrainer of the installed SkyRL driven through its GOLD steps on CPU (GOLD.md
section 2), with tiny random Llama (student) and Qwen2 (teacher) models in plain workers standing in
for SkyRL's worker groups (skyrl_versions.py), and generation through SkyRL's own gym generator."""

import asyncio
import math
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import numpy as np
import pytest
import torch

from gold_distillation.teacher_view import build_teacher_view, render_prompt

from .conftest import tiny_model
from .rollouts import PROMPTS, FixedAnswerEngine, SystemPromptEnv, direct_token_logprobs, generator_output
from .skyrl_versions import skyrl
from .standins import LLAMA, QWEN, without_ray

UIDS = [str(i) for i in range(len(PROMPTS))]


def gold_step(trainer, output):
    """generate -> convert_to_training_input -> fwd_logprobs_values_reward -> apply_reward_kl_penalty."""
    trainer.generator.generate = AsyncMock(return_value=dict(output))
    with without_ray():
        output = asyncio.run(trainer.generate({"prompts": PROMPTS}))
        batch = trainer.convert_to_training_input(output, UIDS)
        batch = trainer.fwd_logprobs_values_reward(batch)
        return trainer.apply_reward_kl_penalty(batch)


def response_positions(batch, row):
    """The columns of the row's response tokens (skyrl 0.4.0 right-aligns responses, 0.3.1 left-aligns them)."""
    return torch.nonzero(batch["response_mask"][row]).squeeze(-1)


def test_reward_mode_rewards_are_span_log_ratios_of_the_models(tokenizers):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = tiny_model("llama", len(s_tok), seed=3), tiny_model("qwen2", len(t_tok), seed=4)
    trainer = skyrl.gold_trainer(skyrl.gold_cfg(LLAMA, QWEN), student, teacher)
    output = generator_output(s_tok)
    batch = gold_step(trainer, output)

    checked_multi = 0
    for i, (prompt, response) in enumerate(zip(PROMPTS, output["response_ids"])):
        view = build_teacher_view(response, prompt, s_tok, t_tok)
        s_lp = direct_token_logprobs(student, output["prompt_token_ids"][i], response)
        t_lp = direct_token_logprobs(teacher, view.prompt_ids, view.response_ids)
        expected = torch.zeros(batch["rewards"].shape[1])
        positions = response_positions(batch, i)
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
    # Reward mode ships span log-probs only: a few bytes per token, never logits.
    assert trainer.all_metrics["gold/teacher_payload_bytes_per_token"] < 16


def test_same_tokenizer_rewards_equal_skyrl_on_policy_distillation_exactly(tokenizers):
    tok = tokenizers["llama3.1-instruct"]
    student, teacher = tiny_model("llama", len(tok), seed=5), tiny_model("llama", len(tok), seed=6)
    cfg = skyrl.gold_cfg(LLAMA, LLAMA)
    trainer = skyrl.gold_trainer(cfg, student, teacher)
    batch = gold_step(trainer, generator_output(tok))
    # SkyRL's stock path gives the teacher's log-probs of the student's own sequences; its on-policy
    # distillation example sets rewards = -(logp_student - logp_teacher) * loss_mask.
    assert torch.equal(batch["rewards"], skyrl.stock_distillation_rewards(cfg, generator_output(tok), UIDS, batch, student, teacher))
    assert trainer.all_metrics["gold/multi_token_group_share"] == 0.0


def test_truncated_teacher_context_is_counted_not_fatal(tokenizers):
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.max_teacher_length=40")
    trainer = skyrl.gold_trainer(cfg, tiny_model("llama", len(s_tok), seed=3), tiny_model("qwen2", len(t_tok), seed=4))
    batch = gold_step(trainer, generator_output(s_tok))
    assert trainer.all_metrics["gold/truncated_share"] > 0
    assert trainer.all_metrics["gold/alignment_coverage"] < 1.0
    assert batch["teacher_attention_mask"].sum(-1).max() <= 40
    assert torch.all(torch.isfinite(batch["rewards"]))
    # Student tokens whose teacher tokens were cut get no reward instead of a wrong one.
    assert torch.all(batch["rewards"][batch["student_group_ids"] < 0] == 0)


def test_uld_reward_term_subtracts_coef_times_exact_uld_per_group(tokenizers):
    from gold_distillation.gold_forward import group_measures
    from gold_distillation.losses import place_group_values, sorted_l1

    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = tiny_model("llama", len(s_tok), seed=3), tiny_model("qwen2", len(t_tok), seed=4)
    rewards = {}
    for coef in (0.0, 0.5):
        trainer = skyrl.gold_trainer(skyrl.gold_cfg(LLAMA, QWEN, f"gold.uld_reward_coef={coef}", "gold.teacher_topk=null"), student, teacher)
        batch = gold_step(trainer, generator_output(s_tok))
        rewards[coef] = batch["rewards"]
    assert math.isfinite(trainer.all_metrics["gold/uld_distance"]) and trainer.all_metrics["gold/uld_distance"] > 0

    g, r, r_t = batch.metadata["gold_num_groups"], batch.metadata["response_length"], batch["teacher_group_ids"].shape[1]
    with torch.no_grad():
        _, out = skyrl.wrap(student)(batch["sequences"], r, batch["attention_mask"], return_output=True)
        s = group_measures(out["logits"][:, -r - 1 : -1], batch["sequences"][:, -r:], batch["student_group_ids"], g)
        _, out = skyrl.wrap(teacher)(batch["teacher_sequences"], r_t, batch["teacher_attention_mask"], return_output=True)
        t = group_measures(out["logits"][:, -r_t - 1 : -1], batch["teacher_sequences"][:, -r_t:], batch["teacher_group_ids"], g)
    exact = sorted_l1(s.merged.exp(), t.merged.exp()).reshape(-1, g)
    expected = place_group_values(-0.5 * exact, batch["student_group_ids"]) * batch["loss_mask"]
    torch.testing.assert_close(rewards[0.5] - rewards[0.0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batched", [False, True])
def test_teacher_reads_the_conversation_the_environment_gave_the_student(tokenizers, batched):
    """Through SkyRL's own gym generator (agent loops, or generate_batched as in SkyRL's on-policy
    distillation example): the teacher's prompt is the environment's init output, not the dataset's."""
    from skyrl_gym.envs.registration import register, registry

    if "gold_test_system_prompt" not in registry:
        register(id="gold_test_system_prompt", entry_point=SystemPromptEnv)
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    # Two samples of each of two prompts (0.4.0's mini-batches need the same number per prompt).
    cfg = skyrl.gold_cfg(LLAMA, QWEN, f"generator.batched={str(batched).lower()}", "generator.n_samples_per_prompt=2", batch_size=2)
    kwargs = {} if batched else {"date_string": "01 Jan 2030"}  # SkyRL rejects template kwargs when batched
    with skyrl.editable(cfg):
        cfg.generator.chat_template_kwargs = kwargs
    generator = skyrl.gym_generator(cfg, FixedAnswerEngine(s_tok, "The answer is 84."), s_tok, LLAMA)
    trainer = skyrl.plain_trainer(cfg, generator)
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    output = asyncio.run(trainer.generate({
        "prompts": prompts, "env_classes": ["gold_test_system_prompt"] * 4,
        "env_extras": [{"tag": i} for i in range(4)], "sampling_params": None,
    }))

    seen = [[{"role": "system", "content": f"You are agent {i}. Answer briefly."}, *p] for i, p in enumerate(prompts)]
    assert output["gold_prompt_messages"] == seen and trainer.rollout_prompts == seen
    # They are what the student's prompt was rendered from, with generator.chat_template_kwargs.
    for ids, messages in zip(output["prompt_token_ids"], seen):
        assert list(ids) == s_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs)
    if kwargs:
        assert "01 Jan 2030" in s_tok.decode(output["prompt_token_ids"][0])

    skyrl.one_data_parallel_rank(trainer)
    output, uids = skyrl.postprocess(trainer, output, ["0", "0", "1", "1"])
    with without_ray():
        batch = trainer.convert_to_training_input(output, uids)
    for row, messages in enumerate(seen):
        teacher_tokens = batch["teacher_sequences"][row][batch["teacher_attention_mask"][row].bool()].tolist()
        expected = render_prompt(t_tok, messages)
        assert teacher_tokens[: len(expected)] == expected, f"row {row}: the teacher saw another conversation"


def test_a_generator_that_cannot_report_the_messages_fails_at_start_up(tokenizers):
    with pytest.raises(ValueError, match="generator .*GOLDGymGenerator"):
        skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, QWEN), generator=MagicMock())
    # With one vocabulary the teacher reads the student's own tokens: any generator will do.
    assert skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, LLAMA), generator=MagicMock()).same_vocabulary


FAMILY = {"llama3.1-instruct": "llama", "qwen2.5-instruct": "qwen2"}


def multi_turn_step(tokenizers, student_path, teacher_path, multi_turn, *overrides):
    """Multi-turn rollouts of the scripted environment through GOLDGymGenerator (SkyRL's gym
    generator) and the trainer's GOLD steps: (trainer, generator output, batch, tokenizers, models)."""
    from .multiturn_rollouts import generator_input, gold_generator

    s_tok, t_tok = tokenizers[Path(student_path).name], tokenizers[Path(teacher_path).name]
    cfg, generator = gold_generator(student_path, teacher_path, s_tok, multi_turn, *overrides)
    student = tiny_model(FAMILY[Path(student_path).name], len(s_tok), seed=13)
    teacher = tiny_model(FAMILY[Path(teacher_path).name], len(t_tok), seed=14)
    trainer = skyrl.gold_trainer(cfg, student, teacher, generator)
    with without_ray():
        output = asyncio.run(trainer.generate(generator_input(["primes", "sum"])))
        output, uids = skyrl.postprocess(trainer, output, ["0", "1"])
        batch = trainer.convert_to_training_input(output, uids)
        batch = trainer.fwd_logprobs_values_reward(batch)
        batch = trainer.apply_reward_kl_penalty(batch)
    return trainer, output, batch, (s_tok, t_tok), (student, teacher)


@pytest.mark.parametrize("multi_turn", [True, False], ids=["conversation", "one_message"])
@pytest.mark.parametrize("student_path,teacher_path", [(LLAMA, QWEN), (QWEN, LLAMA)])
def test_multi_turn_rollouts_are_scored_per_assistant_turn(tokenizers, student_path, teacher_path, multi_turn):
    """Through SkyRL's own generator and the trainer's steps: the teacher's sequence is its template
    of the recorded conversation, token for token; loss-mask-0 tokens get no reward; each assistant
    turn's rewards are its span log-ratios from unpadded forwards of the two models."""
    from gold_distillation.multiturn_view import build_multiturn_view

    from .multiturn_rollouts import PROMPTS, direct_turn_rewards, teacher_conversation

    trainer, output, batch, (s_tok, t_tok), (student, teacher) = multi_turn_step(tokenizers, student_path, teacher_path, multi_turn)
    assert output["stop_reasons"] == ["length", "stop"]
    for i, task in enumerate(["primes", "sum"]):
        recorded = trainer.rollout_conversations[i]
        teacher_row = batch["teacher_sequences"][i][batch["teacher_attention_mask"][i].bool()].tolist()
        template = t_tok.apply_chat_template(teacher_conversation(task, recorded, multi_turn), tokenize=True, return_dict=False)
        assert teacher_row == template
        ids, positions = output["response_ids"][i], response_positions(batch, i)
        assert len(positions) == len(ids)
        mask, rewards = batch["loss_mask"][i, positions], batch["rewards"][i, positions]
        assert torch.all(rewards[mask == 0] == 0) and torch.all(batch["student_group_ids"][i, positions][mask == 0] == -1)
        view = build_multiturn_view(ids, output["loss_masks"][i], PROMPTS[task], recorded, s_tok, t_tok, one_assistant_message=not multi_turn)
        assert view.prompt_ids + view.response_ids == teacher_row
        expected = direct_turn_rewards(student, teacher, output["prompt_token_ids"][i], ids, view)
        torch.testing.assert_close(rewards, expected, atol=2e-4, rtol=1e-4)
        assert torch.all(expected[mask == 1] != 0)
    assert trainer.all_metrics["gold/turns_per_rollout"] == 2.5
    share = sum(map(sum, output["loss_masks"])) / sum(map(len, output["loss_masks"]))
    assert trainer.all_metrics["gold/assistant_token_share"] == pytest.approx(share) and share < 1
    assert trainer.all_metrics["gold/alignment_coverage"] == pytest.approx(share)  # every assistant token is in a group


def test_multi_turn_same_tokenizer_rewards_equal_skyrl_on_policy_distillation_exactly(tokenizers):
    trainer, output, batch, _, (student, teacher) = multi_turn_step(tokenizers, QWEN, QWEN, True)
    stock = skyrl.stock_distillation_rewards(trainer.cfg, output, ["0", "1"], batch, student, teacher)
    assert torch.equal(batch["rewards"], stock) and torch.all(batch["student_group_ids"][batch["loss_mask"] == 0] == -1)
    assert trainer.all_metrics["gold/turns_per_rollout"] == 2.5


def test_custom_chat_template_with_retokenized_history(tokenizers):
    """generator.chat_template (SkyRL re-tokenizes the history each turn; the loss mask is its
    template's assistant-token mask): the turns are still scored per assistant turn."""
    from gold_distillation.multiturn_view import build_multiturn_view

    from .multiturn_rollouts import PROMPTS, direct_turn_rewards, teacher_conversation

    trainer, output, batch, (s_tok, t_tok), (student, teacher) = multi_turn_step(
        tokenizers, QWEN, LLAMA, True, "generator.chat_template.name_or_path=qwen3_with_thinking"
    )
    for i, task in enumerate(["primes", "sum"]):
        recorded = trainer.rollout_conversations[i]
        ids = output["response_ids"][i]
        assert ids[:2] == s_tok("<|im_start|>assistant", add_special_tokens=False)["input_ids"]  # SkyRL's re-rendered turns
        teacher_row = batch["teacher_sequences"][i][batch["teacher_attention_mask"][i].bool()].tolist()
        assert teacher_row == t_tok.apply_chat_template(teacher_conversation(task, recorded, True), tokenize=True, return_dict=False)
        view = build_multiturn_view(ids, output["loss_masks"][i], PROMPTS[task], recorded, s_tok, t_tok)
        positions = response_positions(batch, i)
        mask, rewards = batch["loss_mask"][i, positions], batch["rewards"][i, positions]
        assert torch.all(rewards[mask == 0] == 0)
        torch.testing.assert_close(rewards, direct_turn_rewards(student, teacher, output["prompt_token_ids"][i], ids, view), atol=2e-4, rtol=1e-4)
