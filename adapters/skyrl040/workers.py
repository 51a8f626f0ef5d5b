"""The GOLD workers on skyrl 0.4.0.

Ref worker: its forward runs the teacher on the teacher's own tokenization and returns the GOLD
payload (GOLD.md section 5). 0.4.0's stock ref forward keeps only the `output` tensor of its micro-
batches, so this forward builds its WorkerOutput itself: one dict per sample holding that sample's
payload rows, the per-sample form WorkerOutput.cat concatenates across data-parallel ranks.

Policy worker: in loss mode forward_backward (which 0.4.0 hands the whole mini-batch, every key)
computes the GOLD loss against the teacher payload per micro-batch; its metrics go through SkyRL's
reduction. Given student group ids, forward returns the student's group distributions (the
reward-mode ULD term). Otherwise it is SkyRL's policy worker.
"""

from collections import defaultdict

import torch

import ray
from skyrl.backends.skyrl_train.distributed.dispatch import WorkerOutput
from skyrl.backends.skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch
from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import FSDPPolicyWorkerBase, FSDPRefWorkerBase
from skyrl.backends.skyrl_train.workers.worker_utils import all_reduce_metrics, reduce_metrics

from ...gold_setup import hybrid_tables, load_tokenizer
from ...gold_steps import compute_device, student_loss, student_statistics, teacher_forward


def tokenizers_from_trainer_cfg(cfg):
    """(student, teacher) tokenizers of a worker's config (0.4.0 workers get `cfg.trainer`)."""
    gold = cfg.gold
    return (
        load_tokenizer(cfg.policy.model.path, bool(gold.student_trust_remote_code)),
        load_tokenizer(cfg.ref.model.path, bool(gold.teacher_trust_remote_code)),
    )


def per_sample_outputs(batch: TrainingOutputBatch) -> list[dict[str, torch.Tensor]]:
    """One dict per sample of a [B, ...] output batch (rows copied, so each ships alone)."""
    return [{key: value[i].clone() for key, value in batch.items()} for i in range(batch.batch_size)]


def stack_outputs(outputs: list[dict], keys=None) -> dict[str, torch.Tensor]:
    """The inverse of per_sample_outputs: [B, ...] tensors from per-sample dicts (WorkerOutput.loss_fn_outputs)."""
    keys = outputs[0].keys() if keys is None else keys
    return {key: torch.stack([o[key] for o in outputs]) for key in keys}


def _run_micro_batches(worker, data: TrainingInputBatch, size: int) -> WorkerOutput:
    # Micro-batches by sample count (the teacher's sequences are not the ones a token budget
    # would measure); every data-parallel rank holds the same number of samples.
    outputs = [worker._forward_micro_batch(micro) for micro in data.chunk(size)]
    return WorkerOutput(loss_fn_outputs=per_sample_outputs(TrainingOutputBatch.cat(outputs)), metrics={})


class GOLDRefWorkerBase(FSDPRefWorkerBase):
    """FSDP ref worker whose forward is gold_steps.teacher_forward on the teacher's sequences."""

    def init_model(self, model_path):
        super().init_model(model_path)
        self.setup_gold()

    def setup_gold(self):
        """Teacher-side tables of the hybrid loss (loaded once, from the two tokenizers)."""
        self.teacher_matched = None
        if self.cfg.gold.mode == "loss" and self.cfg.gold.hybrid:
            student_tok, teacher_tok = tokenizers_from_trainer_cfg(self.cfg)
            self.teacher_matched = hybrid_tables(student_tok, teacher_tok, self.cfg.gold).teacher_to_student >= 0

    def forward(self, data: TrainingInputBatch) -> WorkerOutput:
        """Per-sample teacher payloads (gold_forward.PAYLOAD_KEYS rows) of the batch."""
        return _run_micro_batches(self, data, self.cfg.micro_forward_batch_size_per_gpu)

    def _forward_micro_batch(self, micro_batch: TrainingInputBatch) -> TrainingOutputBatch:
        device = compute_device()
        micro_batch.to(device)
        matched = None if self.teacher_matched is None else self.teacher_matched.to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            payload = teacher_forward(self.model, micro_batch, self.cfg.gold, matched)
        return TrainingOutputBatch({key: value.cpu() for key, value in payload.items()})


class GOLDPolicyWorkerBase(FSDPPolicyWorkerBase):
    """FSDP policy worker: GOLD loss in loss mode, student group statistics on request."""

    def init_model(self, model_path, num_training_steps: int = None):
        super().init_model(model_path, num_training_steps=num_training_steps)
        self.setup_gold()

    def setup_gold(self):
        """Student-side tables of the hybrid loss (loaded once, from the two tokenizers)."""
        self.hybrid = None
        if self.cfg.gold.mode == "loss" and self.cfg.gold.hybrid:
            student_tok, teacher_tok = tokenizers_from_trainer_cfg(self.cfg)
            self.hybrid = hybrid_tables(student_tok, teacher_tok, self.cfg.gold, compute_device())

    def forward(self, data: TrainingInputBatch, loss_fn=None, loss_fn_config=None, return_per_token_outputs: bool = True) -> WorkerOutput:
        if "student_group_ids" not in data:
            return super().forward(data, loss_fn=loss_fn, loss_fn_config=loss_fn_config, return_per_token_outputs=return_per_token_outputs)
        return _run_micro_batches(self, data, self.cfg.micro_forward_batch_size_per_gpu)

    def _forward_micro_batch(self, micro_batch: TrainingInputBatch) -> TrainingOutputBatch:
        if "student_group_ids" not in micro_batch:
            return super()._forward_micro_batch(micro_batch)
        micro_batch.to(compute_device())
        self.model.eval()
        with torch.no_grad():
            stats = student_statistics(self.model, micro_batch, self.cfg.gold)
        return TrainingOutputBatch({key: value.cpu() for key, value in stats.items()})

    def forward_backward(self, data: TrainingInputBatch, loss_fn=None, loss_fn_config=None, return_per_token_outputs: bool = True) -> WorkerOutput:
        if self.cfg.gold.mode != "loss" or loss_fn is not None:
            return super().forward_backward(data, loss_fn=loss_fn, loss_fn_config=loss_fn_config, return_per_token_outputs=return_per_token_outputs)
        self.model.train()
        metrics = defaultdict(list)
        for micro_batch in data.chunk(self.cfg.micro_train_batch_size_per_gpu):
            micro_batch.to(compute_device())
            loss, gold_metrics = student_loss(
                self.model, micro_batch, self.cfg.gold, self.cfg.algorithm.loss_reduction, self.cfg.algorithm.max_seq_len, self.hybrid
            )
            # Each micro-batch's loss is a mean over its groups; weighted by its share of the
            # mini-batch they sum to the mini-batch mean, and data-parallel gradient averaging
            # makes that the mean over ranks (the weighting 0.4.0 gives its KL and entropy terms).
            weighted = loss * (micro_batch.batch_size / data.batch_size)
            self.strategy.backward(weighted, self.model, self.optimizer)
            # Divided by the ranks: the all-reduce below sums final_loss over them.
            metrics["final_loss"].append(float(weighted.detach()) / self.mesh_rank.dp_size)
            for key, value in gold_metrics.items():
                metrics[key].append(value)
        metrics["policy_lr"].append(self.scheduler.get_last_lr()[0])
        # final_loss sums over micro-batches and ranks; gold/* are means (SkyRL's rule: `*_loss` sums).
        result = reduce_metrics(dict(metrics), sum_loss_metrics=True)
        result = all_reduce_metrics(result, self.strategy, group=self.device_mesh.get_group("dp"), sum_loss_metrics=True)
        return WorkerOutput(metrics=result)


GOLDRefWorker = ray.remote(num_gpus=1)(GOLDRefWorkerBase)
GOLDPolicyWorker = ray.remote(num_gpus=1)(GOLDPolicyWorkerBase)
