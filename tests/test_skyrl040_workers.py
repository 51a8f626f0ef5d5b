"""The skyrl 0.4.0 GOLD policy worker's loss-mode step, driven through the trainer on CPU."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import weakref

from .conftest import tiny_model
from .rollouts import generator_output
from .skyrl040_standins import gold_cfg, without_ray
from .test_skyrl040_trainer import LLAMA, QWEN, gold_step, gold_trainer


def test_loss_mode_frees_each_micro_batch_after_its_step(tokenizers, monkeypatch):
    """On a GPU each micro-batch the worker trains on is a device copy: none may outlive its step
    (micro-batches of a mini-batch, several epochs, and after the step returns)."""
    import gold_distillation.adapters.skyrl040.workers as workers

    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    cfg = gold_cfg(LLAMA, QWEN, "gold.mode=loss", "trainer.update_epochs_per_batch=2")
    trainer = gold_trainer(cfg, tiny_model("llama", len(s_tok), seed=7), tiny_model("qwen2", len(t_tok), seed=8))
    batch = gold_step(trainer, generator_output(s_tok))
    trained_on = []
    real_loss = workers.student_loss

    def recording_loss(model, micro_batch, *args):
        alive = [i for i, ref in enumerate(trained_on) if ref() is not None]
        assert not alive, f"micro-batches {alive} are still referenced at step {len(trained_on)}"
        assert "teacher_top_probs" in micro_batch  # forward_backward sees the teacher payload directly
        trained_on.append(weakref.ref(micro_batch))
        return real_loss(model, micro_batch, *args)

    monkeypatch.setattr(workers, "student_loss", recording_loss)
    with without_ray():
        trainer.train_critic_and_policy(trainer.compute_advantages_and_returns(batch))
    assert len(trained_on) == 2 * batch.batch_size  # micro_train_batch_size_per_gpu=1, two epochs
    assert all(ref() is None for ref in trained_on)
