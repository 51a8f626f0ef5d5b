"""The skyrl 0.4.0 GOLDGymGenerator: the teacher reads the conversation each environment's init
returned (what the student's prompt was rendered from), through SkyRL 0.4.0's own gym generator."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import asyncio
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest

from gold_distillation.adapters.skyrl040.trainer import GOLDGymGenerator
from gold_distillation.teacher_view import render_prompt

from .conftest import TOKENIZERS_DIR
from .rollouts import PROMPTS, FixedAnswerEngine, SystemPromptEnv
from .skyrl040_standins import gold_cfg, plain_trainer

LLAMA, QWEN = str(TOKENIZERS_DIR / "llama3.1-instruct"), str(TOKENIZERS_DIR / "qwen2.5-instruct")


@pytest.mark.parametrize("batched", [False, True])
def test_teacher_reads_the_conversation_the_environment_gave_the_student(tokenizers, batched):
    from skyrl_gym.envs.registration import register, registry

    if "gold_test_system_prompt" not in registry:
        register(id="gold_test_system_prompt", entry_point=SystemPromptEnv)
    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    # Two samples of each of two prompts (0.4.0's mini-batches need the same number per prompt).
    cfg = gold_cfg(LLAMA, QWEN, f"generator.batched={str(batched).lower()}", "generator.n_samples_per_prompt=2", batch_size=2)
    kwargs = {} if batched else {"date_string": "01 Jan 2030"}  # SkyRL rejects template kwargs when batched
    cfg.generator.chat_template_kwargs = kwargs
    generator = GOLDGymGenerator(generator_cfg=cfg.generator, skyrl_gym_cfg=cfg.environment.skyrl_gym,
                                 inference_engine_client=FixedAnswerEngine(s_tok, "The answer is 84."), tokenizer=s_tok,
                                 policy_model_name=LLAMA)
    trainer = plain_trainer(cfg, generator)
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

    uids = ["0", "0", "1", "1"]
    trainer.dispatch = SimpleNamespace(get_lcm_dp_size=lambda: 1)  # one data-parallel rank: no padding rows
    output, uids = trainer.postprocess_generator_output(output, uids)
    batch = trainer.convert_to_training_input(output, uids)
    for row, messages in enumerate(seen):
        teacher_tokens = batch["teacher_sequences"][row][batch["teacher_attention_mask"][row].bool()].tolist()
        expected = render_prompt(t_tok, messages)
        assert teacher_tokens[: len(expected)] == expected, f"row {row}: the teacher saw another conversation"


def test_a_generator_that_cannot_report_the_messages_fails_at_start_up(tokenizers):
    with pytest.raises(ValueError, match="generator .*GOLDGymGenerator"):
        plain_trainer(gold_cfg(LLAMA, QWEN), generator=MagicMock())
    # With one vocabulary the teacher reads the student's own tokens: any generator will do.
    assert plain_trainer(gold_cfg(LLAMA, LLAMA), generator=MagicMock()).same_vocabulary
