"""The GOLD ref worker's forward and the loss-mode GOLD policy worker's step, as plain workers of
the installed SkyRL (skyrl_versions.py): the teacher payload, training that lowers the GOLD loss,
and the micro-batches the step frees."""

import importlib
import math
import weakref

import numpy as np
import pytest
import torch

from gold_distillation.gold_forward import PAYLOAD_KEYS, TEACHER_INPUT_KEYS, group_measures, stats_from_payload
from gold_distillation.gold_steps import teacher_forward
from gold_distillation.losses import sorted_l1, uld_loss

from .conftest import tiny_model
from .rollouts import generator_output
from .skyrl_versions import skyrl
from .standins import LLAMA, QWEN, without_ray
from .test_trainer import gold_step


@pytest.fixture(scope="module")
def models(tokenizers):
    return (
        tiny_model("llama", len(tokenizers["llama3.1-instruct"]), seed=7),
        tiny_model("qwen2", len(tokenizers["qwen2.5-instruct"]), seed=8),
    )


def loss_mode_batch(cfg, models):
    trainer = skyrl.gold_trainer(cfg, *models)
    batch = gold_step(trainer, generator_output(trainer.tokenizer))
    with without_ray():
        batch = trainer.compute_advantages_and_returns(batch)
    batch.metadata["global_step"] = 1
    return trainer, batch


def test_ref_worker_forward_shapes_and_exact_at_full_vocabulary(models):
    student, teacher = models
    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.mode=loss", "gold.teacher_topk=null")
    trainer, batch = loss_mode_batch(cfg, models)
    b, g, v_t = batch.batch_size, batch.metadata["gold_num_groups"], teacher.config.vocab_size
    assert batch["teacher_span_logprobs"].shape == (b, g) and batch["teacher_group_mask"].shape == (b, g)
    assert batch["teacher_top_probs"].shape == (b, g, v_t) and batch["teacher_top_ids"].shape == (b, g, v_t)
    assert batch["teacher_tail_mass"].shape == (b, g)
    assert torch.all(batch["teacher_tail_mass"][batch["teacher_group_mask"].bool()] < 1e-5)
    # The ULD distance from the payload equals the exact sorted L1 of the full merged distributions.
    r_t = batch["teacher_group_ids"].shape[1]
    with torch.no_grad():
        _, out = skyrl.wrap(teacher)(batch["teacher_sequences"], r_t, batch["teacher_attention_mask"], return_output=True)
        t_meas = group_measures(out["logits"][:, -r_t - 1 : -1], batch["teacher_sequences"][:, -r_t:], batch["teacher_group_ids"], g)
        r = batch.metadata["response_length"]
        _, out = skyrl.wrap(student)(batch["sequences"], r, batch["attention_mask"], return_output=True)
        s_meas = group_measures(out["logits"][:, -r - 1 : -1], batch["sequences"][:, -r:], batch["student_group_ids"], g)
    exact = sorted_l1(s_meas.merged.exp(), t_meas.merged.exp())
    payload = {k: batch[k] for k in ("teacher_span_logprobs", "teacher_group_mask", "teacher_top_probs", "teacher_top_ids", "teacher_tail_mass")}
    est, bound = uld_loss(s_meas.merged, stats_from_payload(payload), None)
    both = (s_meas.present & t_meas.present).reshape(-1)
    torch.testing.assert_close(est[both], exact[both], atol=1e-5, rtol=1e-5)


def test_ref_worker_default_topk_payload_is_compact(models):
    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.mode=loss")
    trainer, batch = loss_mode_batch(cfg, models)
    assert batch["teacher_top_probs"].shape[-1] == cfg.gold.teacher_topk
    assert batch["teacher_top_ids"].dtype == torch.int32
    # k probabilities + k ids + a few scalars per group, against 2 * V bytes of bf16 logits per token.
    assert trainer.all_metrics["gold/teacher_payload_bytes_per_token"] < 2 * models[1].config.vocab_size / 500


@pytest.mark.parametrize("hybrid", [False, True])
def test_loss_mode_training_has_finite_gradients_and_lowers_the_gold_loss(models, hybrid):
    student, teacher = models
    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.mode=loss", f"gold.hybrid={str(hybrid).lower()}")
    trainer, batch = loss_mode_batch(cfg, models)
    # The payload that came back from the ref group, per sample, is the teacher's on the whole batch.
    with torch.no_grad():
        direct = teacher_forward(skyrl.wrap(teacher), batch.select(list(TEACHER_INPUT_KEYS), ["gold_num_groups"]), cfg.gold)
    for key in PAYLOAD_KEYS:
        if key in direct:
            torch.testing.assert_close(batch[key], direct[key], atol=1e-5, rtol=1e-5)

    worker, step = skyrl.loss_mode_training(trainer, cfg, tiny_model("llama", student.config.vocab_size, seed=7))  # a fresh copy to train
    assert (worker.hybrid is not None) == hybrid
    status = skyrl.loss_mode_backward(worker, batch)
    grads = [p.grad for p in worker.model.parameters() if p.grad is not None]
    assert grads and all(torch.all(torch.isfinite(g)) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert np.isfinite(status["final_loss"]) and "gold/uld_distance" in status
    worker.optimizer.zero_grad()

    losses = []
    for _ in range(6):
        metrics = step(batch)
        losses.append(metrics["final_loss"])
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] * 0.9, losses
    # The worker's gold/* metrics reach the trainer under their own names.
    for key in ("gold/loss", "gold/uld_distance", "gold/topk_error_bound", "gold/topk_tail_mass") + (("gold/hybrid_jsd",) if hybrid else ()):
        assert math.isfinite(metrics[key]), key
    assert not any(k.startswith("policy/gold/") for k in metrics)
    grads = [p.grad for p in worker.model.parameters() if p.grad is not None]
    assert all(torch.all(torch.isfinite(g)) for g in grads)


def test_loss_mode_frees_each_micro_batch_after_its_step(models, monkeypatch):
    """On a GPU each micro-batch the worker trains on is a device copy: none may outlive its step
    (micro-batches of a mini-batch, several epochs, and after the step returns)."""
    workers = importlib.import_module(f"{skyrl.ADAPTER}.workers")
    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.mode=loss", "trainer.update_epochs_per_batch=2")
    trainer, batch = loss_mode_batch(cfg, models)
    worker, step = skyrl.loss_mode_training(trainer, cfg, tiny_model("llama", models[0].config.vocab_size, seed=7))
    trained_on = []
    real_loss = workers.student_loss

    def recording_loss(model, micro_batch, *args):
        alive = [i for i, ref in enumerate(trained_on) if ref() is not None]
        assert not alive, f"micro-batches {alive} are still referenced at step {len(trained_on)}"
        assert "teacher_top_probs" in micro_batch  # the step sees the teacher payload directly
        trained_on.append(weakref.ref(micro_batch))
        return real_loss(model, micro_batch, *args)

    monkeypatch.setattr(workers, "student_loss", recording_loss)
    metrics = step(batch)
    assert len(trained_on) == 2 * batch.batch_size  # micro_train_batch_size_per_gpu=1, two epochs
    assert all(ref() is None for ref in trained_on) and getattr(worker, "gold_micro_batches", None) is None
    assert np.isfinite(metrics["final_loss"])
