"""The teacher side: a SkyRL FSDP ref worker that runs the teacher on its own tokenization of the
student's rollouts and returns compact per-group statistics (GOLD.md section 5), not logits."""

from __future__ import annotations

from .skyrl_compat import patch_skyrl_imports

patch_skyrl_imports()

import ray  # noqa: E402
import torch  # noqa: E402
from skyrl_train.training_batch import TrainingInputBatch, TrainingOutputBatch  # noqa: E402
from skyrl_train.workers.fsdp.fsdp_worker import FSDPRefWorkerBase  # noqa: E402

from .config import needs_teacher_distributions  # noqa: E402
from .gold_forward import teacher_payload  # noqa: E402
from .gold_setup import hybrid_tables, tokenizers_from_cfg  # noqa: E402



def compute_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def teacher_forward(model, batch: TrainingInputBatch, gold, teacher_matched: torch.Tensor | None = None) -> dict:
    """Teacher statistics of one micro-batch (device-agnostic).

    model: SkyRL's HFModelWrapper around the teacher; batch: gold_forward.TEACHER_INPUT_KEYS plus metadata
    gold_num_groups (G). Returns teacher_payload's dict ([B, G] span log-probs and mask; in loss
    mode top-k probs/ids [B, G, k], tail mass [B, G] and, for the hybrid loss, unmatched mass).
    """
    sequences, groups = batch["teacher_sequences"], batch["teacher_group_ids"]
    r = groups.shape[1]
    # The wrapper divides the logits by the temperature in place and gives the tokens' log-probs
    # exactly as SkyRL's stock ref worker computes them.
    token_lp, output = model(sequences, r, batch["teacher_attention_mask"], temperature=gold.teacher_temperature, return_output=True)
    return teacher_payload(
        output["logits"][:, -r - 1 : -1],
        sequences[:, -r:],
        groups,
        batch.metadata["gold_num_groups"],
        merge=gold.merge,
        with_distributions=needs_teacher_distributions(gold),
        topk=gold.teacher_topk,
        teacher_matched=teacher_matched,
        token_logprobs=token_lp,
    )


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


GOLDRefWorker = ray.remote(num_gpus=1)(GOLDRefWorkerBase)
