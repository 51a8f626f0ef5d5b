"""Rollouts for trainer tests on any SkyRL version: chat prompts, student responses as SkyRL's
generator returns them, and log-probs computed directly from a model (the reference)."""

import torch
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

PROMPTS = [
    [{"role": "user", "content": "What is 12 * 7?"}],
    [{"role": "user", "content": "Write a haiku about spring in Japan."}],
    [{"role": "user", "content": "Print the squares."}],
]
RESPONSES = [
    "12 * 7 = 84, so the answer is $\\boxed{84}$.",
    "Cherry 🌸 blossoms fall\n  softly on the pond — 日本の春",
    "for i in range(3):\n    print(i ** 2)",
]


def generator_output(tok, eos=(True, False, True)):
    """SkyRL's GeneratorOutput for PROMPTS/RESPONSES written by the student tokenizer `tok`."""
    prompt_ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False) for p in PROMPTS]
    responses = [tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else []) for t, e in zip(RESPONSES, eos)]
    return {
        "prompt_token_ids": prompt_ids,
        "response_ids": responses,
        "rewards": [[0.0] * len(r) for r in responses],  # per token, as after postprocess_generator_output
        "loss_masks": [[1] * len(r) for r in responses],
        "stop_reasons": ["stop" if e else "length" for e in eos],
        "rollout_metrics": None,
        "rollout_logprobs": None,
        "gold_prompt_messages": PROMPTS,  # what GOLDGymGenerator reports: each environment's init output
    }


def direct_token_logprobs(model, prompt_ids, response_ids):
    """log p(response token | everything before it), unpadded, one sequence."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    p = len(prompt_ids)
    return logp[p - 1 : -1].gather(-1, ids[0, p:, None]).squeeze(-1)


class SystemPromptEnv(BaseTextEnv):
    """An environment whose init adds a system message naming its trajectory (as environments may
    rewrite or extend the dataset prompt); one turn, reward 0."""

    def __init__(self, env_config=None, extras=None):
        super().__init__()
        self.tag = extras["tag"]

    def init(self, prompt):
        return [{"role": "system", "content": f"You are agent {self.tag}. Answer briefly."}, *prompt], {}

    def step(self, action):
        return BaseTextEnvStepOutput(observations=[], reward=0.0, done=True, metadata={})


class FixedAnswerEngine:
    """Stand-in inference engine client: answers every prompt (token ids or messages) with the
    same student tokens (and log-probs, which skyrl 0.4.0's generator passes on per token)."""

    def __init__(self, tokenizer, text):
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.text = text

    async def generate(self, engine_input, model=None):
        n = len(engine_input.get("prompt_token_ids") or engine_input["prompts"])
        return {"responses": [self.text] * n, "response_ids": [list(self.ids) for _ in range(n)],
                "stop_reasons": ["stop"] * n, "response_logprobs": [[0.0] * len(self.ids) for _ in range(n)]}

    async def finish_session(self, session_id):
        """skyrl 0.4.0's agent loop ends each trajectory's engine session (nothing to end here)."""
