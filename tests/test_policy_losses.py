"""Reward mode's SkyRL functions: no_op advantages and the importance_sampling policy loss."""

from . import needs_skyrl031  # noqa: F401  (first: skips this module without skyrl-train 0.3.1)

from types import SimpleNamespace

import torch
from skyrl_train.utils.ppo_utils import AdvantageEstimatorRegistry, PolicyLossRegistry

from gold_distillation.adapters.skyrl031.policy_losses import importance_sampling_loss, register_skyrl_functions
from gold_distillation.gold_steps import no_op_advantage


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


def test_reward_mode_reduces_as_skyrls_on_policy_distillation_example():
    """skyrl-train 0.3.1's examples/on_policy_distillation reduces its importance_sampling loss with
    seq_mean_token_sum_norm and config.max_seq_len; GOLD's reward mode does so by default."""
    from .skyrl_standins import gold_cfg
    from .standins import LLAMA, QWEN

    cfg = gold_cfg(LLAMA, QWEN, "generator.sampling_params.max_generate_length=96", "trainer.max_prompt_length=32")
    algorithm = cfg.trainer.algorithm
    assert algorithm.loss_reduction == "seq_mean_token_sum_norm" and algorithm.max_seq_len == 32 + 96
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -4.0, 0.0]])
    old = logp - torch.tensor([[0.1, 0.0, -0.2], [0.0, 0.3, 0.0]])
    advantages = torch.tensor([[1.0, -2.0, 0.5], [3.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    per_token = -torch.exp(logp - old) * advantages * mask
    loss, _ = PolicyLossRegistry.get("importance_sampling")(logp, old, advantages, algorithm, loss_mask=mask)
    torch.testing.assert_close(loss, (per_token.sum(-1) / 128).mean())
    # Overridable; loss mode's own reduction keeps its default.
    algorithm = gold_cfg(LLAMA, QWEN, "trainer.algorithm.loss_reduction=token_mean").trainer.algorithm
    loss, _ = PolicyLossRegistry.get("importance_sampling")(logp, old, advantages, algorithm, loss_mask=mask)
    torch.testing.assert_close(loss, per_token.sum() / 5)
    assert cfg.gold.loss_reduction == "token_mean"
