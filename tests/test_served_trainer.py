"""The GOLD trainer of the installed SkyRL with a served teacher (gold.teacher_backend=served): the
same rewards as the ref-worker path for the same teacher model, scored through the local vLLM
stand-in, also when each rollout is sent as it returns from SkyRL's gym generator; no ref group; the
start-up check at trainer construction; the settings a served teacher refuses."""

import asyncio
import copy
import socket
from unittest.mock import AsyncMock, patch

import pytest
import torch

from gold_distillation.served_teacher import ServedTeacherError

from .conftest import tiny_model
from .processes import actor_class_location
from .rollouts import PROMPTS, FixedAnswerEngine, SystemPromptEnv, generator_output
from .skyrl_versions import actor_groups_built, skyrl
from .standins import LLAMA, QWEN, without_ray
from .vllm_standin import StandInVLLM

PATHS = {"llama3.1-instruct": LLAMA, "qwen2.5-instruct": QWEN}
FAMILY = {"llama3.1-instruct": "llama", "qwen2.5-instruct": "qwen2"}
PAIRS = {"llama->qwen": ("llama3.1-instruct", "qwen2.5-instruct"), "qwen->llama": ("qwen2.5-instruct", "llama3.1-instruct"),
         "llama->llama": ("llama3.1-instruct", "llama3.1-instruct")}  # student, teacher
UIDS = [str(i) for i in range(len(PROMPTS))]


def served(url: str, *more) -> tuple[str, ...]:
    """The overrides of a served-teacher run: backend, server, SkyRL's ref group off, and a teacher
    context the stand-in accepts (it serves max_model_len 4096)."""
    return ("gold.teacher_backend=served", f"gold.teacher_url={url}", "trainer.algorithm.use_kl_in_reward=false",
            "gold.max_teacher_length=4095", *more)


def models(tokenizers, student_name, teacher_name):
    # float64 teacher: the ref worker scores a padded batch, the server each sequence unpadded; in
    # float32 they differ by rounding (1e-6 relative), in float64 only GOLD's code is compared.
    student = tiny_model(FAMILY[student_name], len(tokenizers[student_name]), seed=3)
    return student, tiny_model(FAMILY[teacher_name], len(tokenizers[teacher_name]), seed=4).double()


def skyrl_step(trainer, output):
    """SkyRL's train loop from generation to rewards (RayPPOTrainer.train, steps 1.1 to 1.5), on a
    given generator output."""
    trainer.generator.generate = AsyncMock(return_value=copy.deepcopy(output))
    with without_ray():
        output = asyncio.run(trainer.generate({"prompts": PROMPTS}))
        batch = trainer.convert_to_training_input(output, UIDS)
        batch = trainer.fwd_logprobs_values_reward(batch)
        if trainer.cfg.trainer.algorithm.use_kl_in_reward:
            batch = trainer.apply_reward_kl_penalty(batch)
    return batch


def ref_worker_rewards(trainer, output, uids, input_batch):
    """The ref-worker path's batch on the rollouts the served trainer scored (its generate reads the
    same environment messages)."""
    trainer.generator.generate = AsyncMock(return_value={**copy.deepcopy(output), "rollout_metrics": None})
    with without_ray():
        asyncio.run(trainer.generate(input_batch))
        expected = trainer.convert_to_training_input(copy.deepcopy(output), uids)
        return trainer.apply_reward_kl_penalty(trainer.fwd_logprobs_values_reward(expected))


@pytest.mark.parametrize("pair", list(PAIRS))
def test_served_teacher_rewards_equal_the_ref_worker_path(tokenizers, pair):
    student_name, teacher_name = PAIRS[pair]
    student, teacher = models(tokenizers, student_name, teacher_name)
    output = generator_output(tokenizers[student_name])
    ref = skyrl.gold_trainer(skyrl.gold_cfg(PATHS[student_name], PATHS[teacher_name]), student, teacher)
    expected = skyrl_step(ref, output)

    with StandInVLLM(tokenizers[teacher_name], teacher) as server:
        cfg = skyrl.gold_cfg(PATHS[student_name], PATHS[teacher_name], *served(server.url))
        skyrl.validate_run_config(cfg)
        trainer = skyrl.gold_trainer(cfg, student)
        assert trainer.ref_model is None
        batch = skyrl_step(trainer, output)
        sent = server.completions
    torch.testing.assert_close(batch["rewards"], expected["rewards"], atol=1e-5, rtol=0)
    assert torch.equal(batch["teacher_group_mask"], expected["teacher_group_mask"]) and (batch["rewards"] != 0).any()
    metrics = trainer.all_metrics
    assert metrics["gold/span_log_ratio"] == pytest.approx(ref.all_metrics["gold/span_log_ratio"], abs=1e-5)
    # One request per response, plus the start-up check's.
    assert metrics["gold/teacher_requests"] == len(PROMPTS) == sent - 1 and metrics["gold/teacher_retries"] == 0
    assert metrics["gold/teacher_seconds"] > 0 and metrics["gold/teacher_wait_seconds"] >= 0
    with patch(f"{skyrl.TRAINER_MODULE}.RayPPOTrainer.train_critic_and_policy", return_value={}):
        trainer.train_critic_and_policy(batch)
    assert 0 <= trainer.all_metrics["gold/teacher_step_share"] <= 1


def test_each_rollout_is_sent_as_it_returns_from_the_generator(tokenizers):
    """Through SkyRL's gym generator: every rollout's request is on its way before generate() returns
    (the batch step sends nothing more), and the rewards equal the ref-worker path's."""
    from skyrl_gym.envs.registration import register, registry

    if "gold_test_system_prompt" not in registry:
        register(id="gold_test_system_prompt", entry_point=SystemPromptEnv)
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = models(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    input_batch = {"prompts": prompts, "env_classes": ["gold_test_system_prompt"] * 4,
                   "env_extras": [{"tag": i} for i in range(4)], "sampling_params": None}
    uids = ["0", "1", "2", "3"]  # one sample per prompt, as the config says
    with StandInVLLM(t_tok, teacher) as server:
        cfg = skyrl.gold_cfg(LLAMA, QWEN, *served(server.url), batch_size=4)
        generator = skyrl.gym_generator(cfg, FixedAnswerEngine(s_tok, "The answer is 84."), s_tok, LLAMA)
        trainer = skyrl.gold_trainer(cfg, student, generator=generator)
        step = trainer.served_teacher
        with without_ray():
            output = asyncio.run(trainer.generate(input_batch))
            assert sorted(step.round.futures) == [0, 1, 2, 3] and generator.rollout_done is None
            sent = dict(step.round.futures)
            output, uids = skyrl.postprocess(trainer, output, uids)
            batch = trainer.convert_to_training_input(output, uids)
            assert step.round.futures == sent  # nothing re-sent after generation
            batch = trainer.fwd_logprobs_values_reward(batch)
    expected = ref_worker_rewards(skyrl.gold_trainer(skyrl.gold_cfg(LLAMA, QWEN, batch_size=4), student, teacher), output, uids, input_batch)
    torch.testing.assert_close(batch["rewards"], expected["rewards"], atol=1e-5, rtol=0)
    assert torch.equal(batch["teacher_sequences"], expected["teacher_sequences"])


@pytest.mark.parametrize("multi_turn", [True, False], ids=["conversation", "one_message"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_multi_turn_rollouts_through_the_served_teacher_equal_the_ref_worker_path(tokenizers, pair, multi_turn):
    """Multi-turn rollouts of the scripted environment through SkyRL's gym generator (tool and user
    observations, a turn cut by the length limit): each is sent as it returns, in the view the
    ref-worker path builds (the teacher's template of the recorded conversation), and the rewards equal
    that path's on the same rollouts; observation tokens get none."""
    from .multiturn_rollouts import generator_input, gold_generator

    student_name, teacher_name = PAIRS[pair]
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    student, teacher = models(tokenizers, student_name, teacher_name)
    with StandInVLLM(t_tok, teacher) as server:
        cfg, generator = gold_generator(PATHS[student_name], PATHS[teacher_name], s_tok, multi_turn, *served(server.url))
        skyrl.validate_run_config(cfg)
        trainer = skyrl.gold_trainer(cfg, student, generator=generator)
        step = trainer.served_teacher
        with without_ray():
            output = asyncio.run(trainer.generate(generator_input(["primes", "sum"])))
            assert sorted(step.round.futures) == [0, 1]
            sent = dict(step.round.futures)
            output, uids = skyrl.postprocess(trainer, output, ["0", "1"])
            batch = trainer.convert_to_training_input(output, uids)
            assert step.round.futures == sent  # the views sent during generation are the batch's
            batch = trainer.fwd_logprobs_values_reward(batch)
        assert server.completions == 1 + 2
    assert output["stop_reasons"] == ["length", "stop"] and trainer.all_metrics["gold/turns_per_rollout"] == 2.5
    ref_cfg, _ = gold_generator(PATHS[student_name], PATHS[teacher_name], s_tok, multi_turn, "gold.max_teacher_length=4095")
    ref = skyrl.gold_trainer(ref_cfg, student, teacher)
    expected = ref_worker_rewards(ref, output, uids, generator_input(["primes", "sum"]))
    if student_name != teacher_name:
        for i, view in enumerate(step.round.views[row] for row in range(2)):
            row = expected["teacher_sequences"][i][expected["teacher_attention_mask"][i].bool()].tolist()
            assert view.prompt_ids + view.response_ids == row
    torch.testing.assert_close(batch["rewards"], expected["rewards"], atol=1e-5, rtol=0)
    assert torch.equal(batch["teacher_group_mask"], expected["teacher_group_mask"])
    responses = batch["response_mask"] > 0  # skyrl 0.4.0 right-aligns responses, 0.3.1 left-aligns them
    assert torch.all(batch["loss_mask"][~responses] == 0)
    assert torch.all(batch["rewards"][batch["loss_mask"] == 0] == 0) and (batch["rewards"][responses & (batch["loss_mask"] == 1)] != 0).all()
    assert trainer.all_metrics["gold/span_log_ratio"] == pytest.approx(ref.all_metrics["gold/span_log_ratio"], abs=1e-5)


def test_no_ref_group_is_built_with_a_served_teacher(tokenizers):
    """SkyRL builds the groups its config asks for: with use_kl_in_reward=false no ref group, so no
    teacher weights on the training GPUs."""

    def groups_built(cfg):
        trainer = skyrl.plain_trainer(cfg)
        return [actor_class_location(cls)[1] for cls in actor_groups_built(trainer)], trainer.ref_model

    with StandInVLLM(tokenizers["qwen2.5-instruct"]) as server:
        names, ref_model = groups_built(skyrl.gold_cfg(LLAMA, QWEN, *served(server.url)))
    assert names == ["GOLDPolicyWorkerBase"] and ref_model is None
    names, ref_model = groups_built(skyrl.gold_cfg(LLAMA, QWEN))
    assert names == ["GOLDPolicyWorkerBase", "GOLDRefWorkerBase"] and ref_model is not None


def test_the_start_up_check_runs_when_the_trainer_is_built(tokenizers):
    with StandInVLLM(tokenizers["qwen2.5-instruct"]) as server:
        trainer = skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, QWEN, *served(server.url)))
        assert server.completions == 1 and trainer.served_teacher.teacher.model_name == "teacher"
    # A server with another tokenizer than trainer.ref.model.path's fails before any rollout.
    with StandInVLLM(tokenizers["llama3.1-instruct"], tiny_model("qwen2", len(tokenizers["qwen2.5-instruct"]))) as server:
        with pytest.raises(ServedTeacherError, match="different tokenizers"):
            skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, QWEN, *served(server.url)))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ServedTeacherError, match="gold.teacher_url=http://127.0.0.1"):
        skyrl.plain_trainer(skyrl.gold_cfg(LLAMA, QWEN, *served(f"http://127.0.0.1:{closed}", "gold.teacher_retries=0")))


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["gold.mode=loss"], "gold.teacher_backend"),
        (["gold.uld_reward_coef=0.5"], "gold.teacher_backend"),
        (["trainer.algorithm.use_kl_in_reward=true"], "trainer.algorithm.use_kl_in_reward"),
    ],
)
def test_a_served_teacher_refuses_what_needs_the_ref_group(overrides, key):
    cfg = skyrl.gold_cfg(LLAMA, QWEN, *served("http://h:8000"), *overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + ":") as err:
        skyrl.validate_run_config(cfg)
    assert "Fix" in str(err.value) or "set it to" in str(err.value)
    skyrl.validate_run_config(skyrl.gold_cfg(LLAMA, QWEN, *served("http://h:8000")))
