"""What the GOLD trainer and workers load from the config: tokenizers (remote code off unless
asked for) and the byte-equal vocabulary tables of the hybrid loss."""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from .alignment import token_bytes, vocab_map
from .config import hybrid_weights
from .gold_forward import HybridTables
from .teacher_view import end_of_turn_id, teacher_end_id


@lru_cache(maxsize=4)
def load_tokenizer(path: str, trust_remote_code: bool = False):
    """A fast tokenizer from a local folder or hub id; code shipped in the folder runs only with
    trust_remote_code (off by default)."""
    from transformers import AutoTokenizer

    if not path:
        raise ValueError(
            "empty tokenizer path. Fix: set trainer.policy.model.path (student) and trainer.ref.model.path "
            "(teacher) to model folders or hub ids"
        )
    if path.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(path)):
        raise ValueError(f"tokenizer path {path!r} does not exist. Fix: point the model path at a model folder")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, use_fast=True)
    token_bytes(tokenizer)  # fails early, with the reason, for tokenizers GOLD cannot align
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def hybrid_tables(student_tokenizer, teacher_tokenizer, gold, device="cpu") -> HybridTables:
    """Vocabulary map of the pair as tensors, with the configured (or adaptive) part weights.

    The end tokens of the two views are matched to each other: the student's first
    gold.student_eos_token_ids entry (default: the end-of-turn token its chat template writes) and the
    teacher's end token (gold.teacher_end_token, default its template's end-of-turn token). Phi-3 ends
    a turn with <|end|>, not its EOS <|endoftext|>; pairing the EOS tokens would leave the end group's
    matched part empty."""
    student_end = gold.student_eos_token_ids[0] if gold.student_eos_token_ids else end_of_turn_id(student_tokenizer)
    teacher_end = teacher_end_id(teacher_tokenizer, gold.teacher_end_token)
    ends = None if student_end is None else (int(student_end), int(teacher_end))
    vmap = vocab_map(token_bytes(student_tokenizer), token_bytes(teacher_tokenizer), ends)
    matched, unmatched = hybrid_weights(gold, vmap.matched_share)
    return HybridTables(
        teacher_to_student=torch.from_numpy(vmap.teacher_to_student).to(device),
        student_matched=torch.from_numpy(vmap.student_matched).to(device),
        matched_weight=matched,
        unmatched_weight=unmatched,
    )


def tokenizers_from_cfg(cfg):
    """(student, teacher) tokenizers named by trainer.policy.model.path and trainer.ref.model.path."""
    return (
        load_tokenizer(cfg.trainer.policy.model.path, bool(cfg.gold.student_trust_remote_code)),
        load_tokenizer(cfg.trainer.ref.model.path, bool(cfg.gold.teacher_trust_remote_code)),
    )
