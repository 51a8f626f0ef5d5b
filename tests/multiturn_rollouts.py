"""A deterministic multi-turn environment and a stand-in inference engine for SkyRL's gym generator
(any SkyRL version): 2-3 turns per task, observations of varied length and roles, answers cut by the
length limit. Used by the multi-turn tests of the teacher view and of both trainers."""

import copy

import torch
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput
from skyrl_gym.envs.registration import register, registry

from gold_distillation.multiturn_view import assistant_runs
from gold_distillation.teacher_view import continuation_backend

ENV_NAME = "gold_test_scripted"
LLAMA, QWEN, PHI3 = "llama3.1-instruct", "qwen2.5-instruct", "phi3-mini"
MAX_TOKENS = 14  # generator.sampling_params.max_generate_length: longer answers are cut ("length")

# Per task: the student's answer of each turn, and the environment's observations after each turn.
# Observations start and end with a newline and turns before one end with a letter, so that no token
# of the whole text crosses a turn's edge when they are written into one assistant message
# (use_conversation_multi_turn=false): byte-level BPE joins punctuation to the newlines after it.
SCRIPTS = {
    "primes": {
        "answers": [
            'I will call the tool: search("primes") now',
            "Next I check 13 with the calculator",
            "A prime has exactly two divisors, one and itself, but the number one has only a single divisor.",
        ],
        "observations": [
            [{"role": "tool", "content": "\n2, 3, 5, 7, 11, 13\n"}],
            [{"role": "user", "content": "\nCorrect. Now explain why 1 is not prime, in detail, with every reason you know of.\n"}],
            [{"role": "user", "content": "\nThanks.\n"}],
        ],
    },
    "sum": {
        "answers": [
            "Let me add them one at a time, starting from the largest number in the list, which is nineteen.",
            "Done: the sum is 41.",
        ],
        "observations": [[{"role": "user", "content": "\nGo on.\n"}], []],
    },
    # A turn ending in punctuation before an observation starting with a newline (one message:
    # tokenizing the whole text at once would join them, test_pieces_are_tokenized_apart...).
    "merge": {"answers": ["Check this.", "Fine"], "observations": [[{"role": "user", "content": "\nOk\n"}], []]},
    # A special-token string of the teacher written as text by the student (test_special_token...).
    "imstart": {"answers": ["Write <|im_start|> here", "Ok"], "observations": [[{"role": "user", "content": "\nWhy?\n"}], []]},
    "header": {"answers": ["Write <|start_header_id|> here", "Ok"], "observations": [[{"role": "user", "content": "\nWhy?\n"}], []]},
    # Turns after the first written as the text continues ("continued": no start-of-segment prefix,
    # as a model writes mid-message): a SentencePiece student's turn then starts with a word without
    # "\u2581" and with a newline; the scripts' other turns start with "\u2581" (a space) there.
    "spacing": {
        "answers": ["Look here", "again now", "\nAnd done"],
        "observations": [[{"role": "user", "content": "\nSay it again:\n"}], [{"role": "user", "content": "\nOk"}], []],
        "continued": True,
    },
}
PROMPTS = {
    "merge": [{"role": "user", "content": "Task merge: check."}],
    "imstart": [{"role": "user", "content": "Task imstart: spell a marker."}],
    "header": [{"role": "user", "content": "Task header: spell a marker."}],
    "primes": [{"role": "system", "content": "You solve tasks with tools."}, {"role": "user", "content": "Task primes: list primes."}],
    "sum": [{"role": "user", "content": "Task sum: add 3, 19, 7, 12."}],
    "spacing": [{"role": "user", "content": "Task spacing: write on."}],
}


class ScriptedEnv(BaseTextEnv):
    """Answers each turn with the task's next observations; done after the task's last turn."""

    def __init__(self, env_config=None, extras=None):
        super().__init__()
        self.script = SCRIPTS[extras["task"]]
        self.turn = 0

    def init(self, prompt):
        return prompt, {}

    def step(self, action):
        obs = self.script["observations"][self.turn]
        self.turn += 1
        return BaseTextEnvStepOutput(observations=copy.deepcopy(obs), reward=float(self.turn), done=self.turn == len(self.script["answers"]), metadata={})


class ScriptedEngine:
    """Stand-in inference engine client: the student's scripted answer for the task named in the
    prompt and the turn reached (its tokens + EOS), cut to max_tokens tokens without EOS ("length").
    A "continued" task's turns after the first are tokenized as text that continues the message."""

    def __init__(self, tokenizer, max_tokens):
        self.tokenizer, self.max_tokens, self.calls = tokenizer, max_tokens, {}

    async def generate(self, engine_input, **kwargs):
        prompt = self.tokenizer.decode(engine_input["prompt_token_ids"][0])
        task = next(t for t in SCRIPTS if f"Task {t}:" in prompt)
        session = engine_input["session_ids"][0]
        turn = self.calls[session] = self.calls.get(session, -1) + 1
        text = SCRIPTS[task]["answers"][turn]
        if turn > 0 and SCRIPTS[task].get("continued"):
            ids = continuation_backend(self.tokenizer, specials_as_text=False).encode(text, add_special_tokens=False).ids
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids + [self.tokenizer.eos_token_id]
        stop = "stop"
        if len(ids) > self.max_tokens:
            ids, stop = ids[: self.max_tokens], "length"
        text = self.tokenizer.decode(ids)  # what vLLM returns (keeps the EOS string here; SkyRL strips it)
        return {"responses": [text], "response_ids": [ids], "stop_reasons": [stop], "response_logprobs": None}

    async def finish_session(self, session_id):  # skyrl 0.4.0 releases each trajectory's session
        pass


def register_env():
    if ENV_NAME not in registry:
        register(id=ENV_NAME, entry_point=ScriptedEnv)


def generator_input(tasks):
    """SkyRL's GeneratorInput for the tasks (one trajectory each)."""
    return {"prompts": [copy.deepcopy(PROMPTS[t]) for t in tasks], "env_classes": [ENV_NAME] * len(tasks),
            "env_extras": [{"task": t} for t in tasks], "sampling_params": None}


def teacher_conversation(task, recorded, multi_turn, turn_texts=None):
    """What the teacher's template is applied to: the prompt and the recorded messages up to the
    last assistant turn; with use_conversation_multi_turn=false, one assistant message holding the
    turns and the observations' text, as the student wrote and read them. turn_texts: the text of
    each assistant turn (student_turn_texts) in place of the recorded one (the engine's decode of
    the turn on its own, which for a SentencePiece student drops a continuation's leading space)."""
    last = max(i for i, m in enumerate(recorded) if m["role"] == "assistant")
    messages = recorded[: last + 1]
    if turn_texts is not None:
        texts = iter(turn_texts)
        messages = [{**m, "content": next(texts)} if m["role"] == "assistant" else m for m in messages]
    if not multi_turn:
        messages = [{"role": "assistant", "content": "".join(m["content"] for m in messages)}]
    return PROMPTS[task] + messages


def text_in_context(tokenizer, ids, context, start, stop):
    """The text tokens ids[start:stop] add to the tokenizer's own decode of ids[context:stop]: what
    they spell where they stand in a message that starts at `context` (HF's decoder on the whole,
    not on the piece alone)."""
    decode = lambda part: tokenizer.decode(part, clean_up_tokenization_spaces=False)  # noqa: E731
    before, whole = decode(ids[context:start]), decode(ids[context:stop])
    assert whole.startswith(before), (before, whole)
    return whole[len(before):]


def student_turn_texts(tokenizer, response_ids, loss_mask, multi_turn, end_ids):
    """Each assistant turn's text (a final end token excluded, where the turn ends its message) as
    the student's tokenizer decodes it in its assistant message: with use_conversation_multi_turn
    every turn is a message, else the whole response is one."""
    runs = assistant_runs(loss_mask).tolist()
    texts = []
    for k, (a, b) in enumerate(runs):
        closes = multi_turn or k == len(runs) - 1
        stop = b - 1 if closes and response_ids[b - 1] in end_ids else b
        texts.append(text_in_context(tokenizer, response_ids, a if multi_turn else 0, a, stop))
    return texts


def token_logprobs(model, ids):
    """log p(token_t | tokens before t) for t >= 1 of one unpadded sequence: [len(ids) - 1]."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)


def gold_generator(student_path, teacher_path, student_tokenizer, multi_turn: bool, *overrides):
    """The installed SkyRL's GOLDGymGenerator (its adapter's) around ScriptedEngine, with the run
    config the GOLD entrypoint of that version builds: (cfg, generator)."""
    from .skyrl_versions import skyrl

    register_env()
    settings = [
        "generator.max_turns=3", f"generator.use_conversation_multi_turn={str(multi_turn).lower()}",
        f"generator.sampling_params.max_generate_length={MAX_TOKENS}", "trainer.max_prompt_length=4096",
        "environment.skyrl_gym.max_env_workers=0", *skyrl.STAND_IN_ENGINE_SETTINGS, *overrides,
    ]
    cfg = skyrl.gold_cfg(student_path, teacher_path, *settings, batch_size=2)
    return cfg, skyrl.gym_generator(cfg, ScriptedEngine(student_tokenizer, MAX_TOKENS), student_tokenizer, student_path)


def direct_turn_rewards(student, teacher, prompt_ids, response_ids, view):
    """Each student token's reward computed directly: its group's span log-ratio from unpadded
    forwards of the two models over their own renderings (the student's prompt + response, the
    teacher's view), 0 on tokens without a group. view: the rollout's TeacherView. Returns [R]."""
    s_lp = token_logprobs(student, list(prompt_ids) + list(response_ids))[len(prompt_ids) - 1 :]
    t_lp = token_logprobs(teacher, view.prompt_ids + view.response_ids)[len(view.prompt_ids) - 1 :]
    expected = torch.zeros(len(response_ids))
    for g in range(view.num_groups):
        members = torch.from_numpy(view.student_groups == g)
        expected[members] = t_lp[torch.from_numpy(view.teacher_groups == g)].sum() - s_lp[members].sum()
    return expected
