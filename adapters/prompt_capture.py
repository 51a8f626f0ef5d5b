"""Capture of the conversation each environment's init returned, for SkyRL's gym generator (the same
hooks in skyrl-train 0.3.1 and skyrl 0.4.0: generate -> agent_loop per trajectory, or
generate_batched, each calling env.init through _run_in_executor_if_available).

The student's prompt is rendered from what env.init returned (with generator.chat_template_kwargs),
which may rewrite or extend the dataset prompt; the teacher must read the same conversation.
"""

from __future__ import annotations

import contextvars
import copy

from skyrl_gym import Env

# The messages env.init returned, in the task of the trajectory's agent loop.
_INIT_MESSAGES = contextvars.ContextVar("gold_init_messages")


class InitMessagesCapture:
    """Mixin for SkyRL's gym generator (put it first among the bases): the output also holds, per
    trajectory and in output order, the messages its environment's init returned
    (`gold_prompt_messages`). While `rollout_done` is set (the trainer's generate with a served
    teacher), each trajectory's agent loop calls rollout_done(row, messages, prompt ids, response
    ids) as soon as it returns, so that its teacher request goes out while others still generate."""

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


def require_prompt_capture(generator, same_vocab: bool) -> None:
    """Start-up check: with different vocabularies the teacher needs the captured conversations."""
    if not same_vocab and not isinstance(generator, InitMessagesCapture):
        raise ValueError(
            f"the generator ({type(generator).__name__}) does not report the messages each environment's "
            "init returned, which the teacher must read (the student's prompt was rendered from them). Fix: "
            "use GOLDDistillationExp.get_generator's GOLDGymGenerator, or a subclass of it"
        )
