"""Reward mode's SkyRL functions, not built into skyrl-train 0.3.1: the `no_op` advantage estimator
(gold_steps.no_op_advantage) and the `importance_sampling` policy loss, with SkyRL's call signatures."""

from __future__ import annotations

import torch
from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry, reduce_loss

from ...gold_steps import no_op_advantage


def importance_sampling_loss(log_probs, old_log_probs, advantages, config, loss_mask=None, rollout_logprobs=None, **kwargs):
    """-ratio * advantage with ratio = exp(log_probs - old_log_probs), all [B, R], reduced with
    config.loss_reduction as SkyRL reduces its losses. Returns (loss, clip ratio 0.0)."""
    loss = -torch.exp(log_probs - old_log_probs) * advantages
    return reduce_loss(loss, loss_mask, config.loss_reduction, getattr(config, "max_seq_len", None)), 0.0


def register_skyrl_functions() -> None:
    """Register both once per process (SkyRL's registries are global and raise on a second
    registration)."""
    if "no_op" not in AdvantageEstimatorRegistry.list_available():
        AdvantageEstimatorRegistry.register("no_op", no_op_advantage)
    if "importance_sampling" not in PolicyLossRegistry.list_available():
        PolicyLossRegistry.register("importance_sampling", importance_sampling_loss)
