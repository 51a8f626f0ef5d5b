"""The student side: a SkyRL FSDP policy worker whose micro-batch step, in `loss` mode, is the GOLD
loss of the student's logits against the teacher's per-group statistics (GOLD.md section 6), and
whose forward, given group ids, returns the student's compressed group distributions (for the
reward-mode ULD term). Otherwise it is SkyRL's policy worker."""

from __future__ import annotations

from .skyrl_compat import patch_skyrl_imports

patch_skyrl_imports()

import ray  # noqa: E402
import torch  # noqa: E402
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch  # noqa: E402
from skyrl_train.workers.fsdp.fsdp_worker import FSDPPolicyWorkerBase  # noqa: E402

from .gold_forward import PAYLOAD_KEYS, HybridTables, student_gold_loss, student_payload  # noqa: E402
from .gold_ref_worker import compute_device  # noqa: E402
from .gold_setup import hybrid_tables, tokenizers_from_cfg  # noqa: E402


def student_loss(model, batch: TrainingInputBatch, cfg, hybrid: HybridTables | None = None):
    """GOLD loss of one micro-batch with gradient through the student (device-agnostic).

    model: SkyRL's HFModelWrapper around the student; batch: the trainer's batch (sequences,
    attention_mask, loss_mask, student_group_ids, teacher payload). Returns (loss, metrics).
    """
    gold = cfg.gold
    sequences, r = batch["sequences"], batch.metadata["response_length"]
    _, output = model(sequences, r, batch["attention_mask"], temperature=gold.student_temperature, return_output=True)
    # Tokens outside the loss mask (e.g. padding rows added for data parallelism) get no signal.
    groups = torch.where(batch["loss_mask"] > 0, batch["student_group_ids"], -1)
    return student_gold_loss(
        output["logits"][:, -r - 1 : -1],  # already divided by the temperature by the wrapper
        sequences[:, -r:],
        groups,
        {key: batch[key] for key in PAYLOAD_KEYS if key in batch},
        merge=gold.merge,
        student_topk=gold.teacher_topk,
        hybrid=hybrid,
        beta=gold.beta,
        reduction=gold.loss_reduction or cfg.trainer.algorithm.loss_reduction,
        max_len=cfg.trainer.algorithm.get("max_seq_len"),
    )


def student_statistics(model, batch: TrainingInputBatch, gold) -> dict:
    """The student's compressed group distributions of one micro-batch (device-agnostic, no grad):
    student_payload's dict for sequences, attention_mask, student_group_ids and gold_num_groups."""
    sequences, r = batch["sequences"], batch.metadata["response_length"]
    _, output = model(sequences, r, batch["attention_mask"], temperature=gold.student_temperature, return_output=True)
    return student_payload(
        output["logits"][:, -r - 1 : -1], sequences[:, -r:], batch["student_group_ids"],
        batch.metadata["gold_num_groups"], gold.merge, gold.teacher_topk,
    )


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
        loss, metrics = student_loss(self.model, batch, self.cfg, self.hybrid)
        self.strategy.backward(loss / accumulation_steps, self.model, self.optimizer)
        return {"final_loss": float(loss.detach()), **metrics}


GOLDPolicyWorker = ray.remote(num_gpus=1)(GOLDPolicyWorkerBase)
