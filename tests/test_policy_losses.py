"""Reward mode's SkyRL functions: no_op advantages and the importance_sampling policy loss."""

from . import needs_skyrl031  # noqa: F401  (first: skips this module without skyrl-train 0.3.1)

from types import SimpleNamespace

import torch
from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry

from gold_distillation.policy_losses import importance_sampling_loss, no_op_advantage, register_skyrl_functions


def test_importance_sampling_loss_is_policy_gradient_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -4.0, 0.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, -2.0, 0.5], [3.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, clip_ratio = importance_sampling_loss(logp, logp.detach(), advantages * mask, SimpleNamespace(loss_reduction="token_mean"), loss_mask=mask)
    loss.backward()
    # ratio = 1: the value is -mean(advantage) over response tokens, the gradient -advantage / n.
    assert torch.isclose(loss, -(advantages * mask).sum() / 5) and clip_ratio == 0.0
    assert torch.allclose(logp.grad, -(advantages * mask) / 5)


def test_importance_ratio_weights_off_policy_tokens():
    logp, old = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    loss, _ = importance_sampling_loss(logp, old, torch.ones(1, 2), SimpleNamespace(loss_reduction="sequence_mean"), loss_mask=torch.ones(1, 2))
    assert torch.isclose(loss, -(torch.exp(torch.tensor(0.5)) + 1.0) / 2)


def test_no_op_advantages_are_the_rewards_and_registration_is_idempotent():
    rewards = torch.randn(2, 4)
    advantages, returns = no_op_advantage(token_level_rewards=rewards, response_mask=torch.ones(2, 4))
    assert advantages is rewards and returns is rewards
    register_skyrl_functions()
    register_skyrl_functions()
    assert AdvantageEstimatorRegistry.get("no_op") is no_op_advantage
    assert PolicyLossRegistry.get("importance_sampling") is importance_sampling_loss
