"""The GOLD workers on skyrl-train 0.3.1.

Ref worker: a SkyRL FSDP ref worker whose forward runs the teacher on its own tokenization of the
student's rollouts and returns compact per-group statistics (GOLD.md section 5), not logits.

Policy worker: in `loss` mode its micro-batch step is the GOLD loss of the student's logits against
the teacher's per-group statistics (GOLD.md section 6); given group ids, its forward returns the
student's compressed group distributions (the reward-mode ULD term). Otherwise it is SkyRL's policy
worker; the trainer hands it to SkyRL in every mode, since its module applies the 0.3.1 import fix
(this package's __init__) that a Ray worker process needs before SkyRL's fsdp_worker module.
"""

from __future__ import annotations

import ray
import torch
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch
from skyrl_train.workers.fsdp.fsdp_worker import FSDPPolicyWorkerBase, FSDPRefWorkerBase

from ...gold_setup import hybrid_tables, tokenizers_from_cfg
from ...gold_steps import compute_device, student_loss, student_statistics, teacher_forward


class GOLDRefWorkerBase(FSDPRefWorkerBase):
    """FSDP ref worker whose forward is `teacher_forward` on the teacher's sequences and groups."""

    def init_model(self, model_path):
        super().init_model(model_path)
        self.setup_gold()

    def setup_gold(self):
        """Teacher-side tables of the hybrid loss (loaded once, from the two tokenizers)."""
        self.teacher_matched = None
        if self.cfg.gold.mode == "loss" and self.cfg.gold.hybrid:
            student_tok, teacher_tok = tokenizers_from_cfg(self.cfg)
            self.teacher_matched = hybrid_tables(student_tok, teacher_tok, self.cfg.gold).teacher_to_student >= 0

    def _forward_micro_batch(self, micro_batch: TrainingInputBatch) -> TrainingOutputBatch:
        device = compute_device()
        micro_batch.to(device)
        matched = None if self.teacher_matched is None else self.teacher_matched.to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            payload = teacher_forward(self.model, micro_batch, self.cfg.gold, matched)
        output = TrainingOutputBatch({key: value.cpu() for key, value in payload.items()})
        output.metadata = micro_batch.metadata
        return output


class GOLDPolicyWorkerBase(FSDPPolicyWorkerBase):
    """FSDP policy worker: GOLD loss in loss mode, student group statistics on request."""

    def init_model(self, model_path, num_training_steps: int = None):
        super().init_model(model_path, num_training_steps=num_training_steps)
        self.setup_gold()

    def setup_gold(self):
        """Student-side tables of the hybrid loss (loaded once, from the two tokenizers)."""
        self.hybrid = None
        if self.cfg.gold.mode == "loss" and self.cfg.gold.hybrid:
            student_tok, teacher_tok = tokenizers_from_cfg(self.cfg)
            self.hybrid = hybrid_tables(student_tok, teacher_tok, self.cfg.gold, compute_device())

    def _forward_micro_batch(self, micro_batch: TrainingInputBatch) -> TrainingOutputBatch:
        if "student_group_ids" not in micro_batch:
            return super()._forward_micro_batch(micro_batch)
        micro_batch.to(compute_device())
        self.model.eval()
        with torch.no_grad():
            stats = student_statistics(self.model, micro_batch, self.cfg.gold)
        output = TrainingOutputBatch({key: value.cpu() for key, value in stats.items()})
        output.metadata = micro_batch.metadata
        return output

    def ppo_train(self, train_data: TrainingInputBatch):
        if self.cfg.gold.mode != "loss":
            return super().ppo_train(train_data)
        # skyrl-train 0.3.1 hands forward_backward an Experience that drops extra batch keys; walk
        # the same micro-batches (same chunk size, same order, every epoch) to read the teacher payload.
        # Each is sliced when its step asks for it, so only that step's device copy exists at a time.
        micro = self.cfg.trainer.micro_train_batch_size_per_gpu
        starts = range(0, train_data.batch_size, micro)
        epochs = range(self.cfg.trainer.update_epochs_per_batch)
        self.gold_micro_batches = (train_data.slice(i, i + micro) for _ in epochs for i in starts)
        try:
            return super().ppo_train(train_data)
        finally:
            self.gold_micro_batches = None

    def forward_backward(self, experience, accumulation_steps: int) -> dict[str, float]:
        if self.cfg.gold.mode != "loss":
            return super().forward_backward(experience, accumulation_steps)
        # A fresh slice moved to the device: nothing else references it, so it is freed on return.
        batch = next(self.gold_micro_batches).to(compute_device())
        self.model.train()
        algorithm = self.cfg.trainer.algorithm
        loss, metrics = student_loss(self.model, batch, self.cfg.gold, algorithm.loss_reduction, algorithm.get("max_seq_len"), self.hybrid)
        self.strategy.backward(loss / accumulation_steps, self.model, self.optimizer)
        return {"final_loss": float(loss.detach()), **metrics}


GOLDRefWorker = ray.remote(num_gpus=1)(GOLDRefWorkerBase)
GOLDPolicyWorker = ray.remote(num_gpus=1)(GOLDPolicyWorkerBase)
