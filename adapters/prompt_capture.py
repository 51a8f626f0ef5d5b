"""Capture of each trajectory's conversation for SkyRL's gym generator (the same hooks in
skyrl-train 0.3.1 and skyrl 0.4.0: generate -> agent_loop per trajectory, or generate_batched, each
calling env.init through _run_in_executor_if_available; every turn of an agent loop, in all three
of its multi-turn modes, appends the assistant message and the observations to the chat history
through _update_chat_history).

The student's prompt is rendered from what env.init returned (with generator.chat_template_kwargs),
which may rewrite or extend the dataset prompt, and a multi-turn response holds the turns and
observations the generator appended after it; the teacher must read the same conversation.
"""

from __future__ import annotations

import contextvars
import copy
from dataclasses import dataclass, field

from skyrl_gym import Env

# The trajectory an agent loop is recording, in the task of that agent loop.
_TRAJECTORY = contextvars.ContextVar("gold_trajectory")


@dataclass
class _Trajectory:
    init_messages: list | None = None
    response_messages: list = field(default_factory=list)


class ConversationCapture:
    """Mixin for SkyRL's gym generator (put it first among the bases): the output also holds, per
    trajectory and in output order, the messages its environment's init returned
    (`gold_prompt_messages`) and the messages the generator appended to the chat history after them
    (`gold_response_messages`: each assistant turn as SkyRL recorded it, and the observations with
    their roles; empty with generator.batched=true, which is single-turn). While `rollout_done` is set
    (the trainer's generate with a served teacher), each trajectory's agent loop calls
    rollout_done(row, init messages, response messages, prompt ids, response ids, loss mask) as soon
    as it returns, so that its teacher request goes out while others still generate."""

    rollout_done = None

    async def generate(self, input_batch, disable_tqdm: bool = False):
        self.trajectories = []
        output = await super().generate(input_batch, disable_tqdm)
        output["gold_prompt_messages"] = [t.init_messages for t in self.trajectories]
        output["gold_response_messages"] = [t.response_messages for t in self.trajectories]
        return output

    def agent_loop(self, *args, **kwargs):
        # generate() calls this once per trajectory, in output order, before awaiting any of them.
        trajectory = _Trajectory()
        self.trajectories.append(trajectory)
        return self._recording_agent_loop(len(self.trajectories) - 1, trajectory, *args, **kwargs)

    async def _recording_agent_loop(self, row, trajectory, *args, **kwargs):
        _TRAJECTORY.set(trajectory)  # local to this trajectory's task
        output = await super().agent_loop(*args, **kwargs)
        if self.rollout_done is not None:
            self.rollout_done(
                row, trajectory.init_messages, trajectory.response_messages, output.prompt_ids,
                output.response_ids, output.loss_mask,
            )
        return output

    async def _run_in_executor_if_available(self, func, *args, **kwargs):
        result = await super()._run_in_executor_if_available(func, *args, **kwargs)
        if getattr(func, "__name__", None) == "init" and isinstance(getattr(func, "__self__", None), Env):
            trajectory = _TRAJECTORY.get(None)
            if trajectory is None:  # generate_batched: no agent loop, env.init runs for each trajectory in order
                trajectory = _Trajectory()
                self.trajectories.append(trajectory)
            trajectory.init_messages = copy.deepcopy(result[0])
        return result

    def _update_chat_history(self, chat_history, output, new_obs):
        before = len(chat_history)
        result = super()._update_chat_history(chat_history, output, new_obs)
        _TRAJECTORY.get().response_messages.extend(copy.deepcopy(result[before:]))
        return result


def require_prompt_capture(generator, same_vocab: bool) -> None:
    """Start-up check: with different vocabularies the teacher needs the captured conversations."""
    if not same_vocab and not isinstance(generator, ConversationCapture):
        raise ValueError(
            f"the generator ({type(generator).__name__}) does not report each trajectory's conversation (the "
            "messages its environment's init returned and the turns and observations after them), which the "
            "teacher must read. Fix: "
            "use GOLDDistillationExp.get_generator's GOLDGymGenerator, or a subclass of it"
        )
