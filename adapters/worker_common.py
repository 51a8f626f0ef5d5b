"""What GOLD adds to SkyRL's FSDP ref and policy workers, the same on every SkyRL version.

SkyRL-free mixins: loading the hybrid loss's tables once the model is in place, and running one
micro-batch on the device into plain CPU tensors. Each version's workers.py puts them before its
SkyRL worker base, says how its config names the two tokenizers (`gold_tokenizers`) and wraps the
tensors in its own batch types.
"""

from __future__ import annotations

import torch

from ..gold_setup import hybrid_tables
from ..gold_steps import compute_device, student_statistics, teacher_forward


class _GOLDWorkerMixin:
    def init_model(self, *args, **kwargs):
        super().init_model(*args, **kwargs)
        self.setup_gold()

    def gold_tokenizers(self):
        """(student, teacher) tokenizers named by this worker's config (the version adapter says how)."""
        raise NotImplementedError

    def _hybrid_tables(self, device="cpu"):
        """The hybrid loss's tables in loss mode with gold.hybrid, else None."""
        if self.cfg.gold.mode == "loss" and self.cfg.gold.hybrid:
            return hybrid_tables(*self.gold_tokenizers(), self.cfg.gold, device)
        return None


class GOLDRefMixin(_GOLDWorkerMixin):
    """Ref worker: the teacher payload (gold_steps.teacher_forward) of a micro-batch."""

    def setup_gold(self):
        """Teacher-side table of the hybrid loss: which teacher ids have a byte-equal student id."""
        tables = self._hybrid_tables()
        self.teacher_matched = None if tables is None else tables.teacher_to_student >= 0

    def gold_payload(self, micro_batch) -> dict[str, torch.Tensor]:
        """Teacher payload of one micro-batch, computed on the device (bf16 autocast on CUDA), on CPU."""
        device = compute_device()
        micro_batch.to(device)
        matched = None if self.teacher_matched is None else self.teacher_matched.to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            payload = teacher_forward(self.model, micro_batch, self.cfg.gold, matched)
        return {key: value.cpu() for key, value in payload.items()}


class GOLDPolicyMixin(_GOLDWorkerMixin):
    """Policy worker: the hybrid tables of the GOLD loss, and the student's group statistics."""

    def setup_gold(self):
        """Student-side tables of the hybrid loss, on the device the loss runs on."""
        self.hybrid = self._hybrid_tables(compute_device())

    def gold_statistics(self, micro_batch) -> dict[str, torch.Tensor]:
        """The student's compressed group distributions of one micro-batch (reward-mode ULD term), on CPU."""
        micro_batch.to(compute_device())
        self.model.eval()
        with torch.no_grad():
            stats = student_statistics(self.model, micro_batch, self.cfg.gold)
        return {key: value.cpu() for key, value in stats.items()}
