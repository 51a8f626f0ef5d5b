"""Runs TRL's GOLD code inside a peer venv (bench/.venvs/trl-X) and prints one JSON object.

Called by run.py as `<peer python> peer_runner.py {align|loss} <input.json>`. It calls TRL's own
functions (trl.experimental.gold) on the inputs run.py wrote; nothing of TRL is copied here. TRL
methods that only read a few attributes of their object are called with a namespace holding them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import trl  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl.experimental.gold import gold_trainer as G  # noqa: E402

from common import checksum, max_rss_bytes, time_call, zipf_logits  # noqa: E402

# Since TRL 0.26 the alignment walks byte offsets; before, it decodes every prefix of both sides.
BYTE_OFFSETS = hasattr(G.ULDLoss, "_align_by_byte_offsets")


def load(path):
    return AutoTokenizer.from_pretrained(path, use_fast=True)


def trl_alignment(student_tok, teacher_tok, ids: list[int], prompt: str):
    """TRL's path from sampled student ids to aligned groups; returns the number of groups."""
    text = student_tok.batch_decode([ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)[0]
    if not BYTE_OFFSETS:
        teacher_ids, _, _, prompt_len = G.build_teacher_inputs_from_texts(teacher_tok, [prompt], [text])
        answer = teacher_ids[0, prompt_len:-1].tolist()  # one row, no padding; drop the appended EOS
        owner = SimpleNamespace(student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)
        s_groups, _ = G.ULDLoss._build_alignment_groups_from_ids(owner, ids, answer)
        return len(s_groups)
    # Student byte offsets from the ids (TRL's on-policy path), teacher ids and offsets from the text.
    owner = SimpleNamespace(
        use_uld_loss=True, teacher_tokenizer=teacher_tok, _tokenizer=student_tok,
        uld_loss_fn=SimpleNamespace(use_extended_uld=True),
    )
    batch = {"input_ids": torch.tensor([[0] + ids]), "labels": torch.tensor([[-100] + ids])}
    G.GOLDTrainer._maybe_add_completion_byte_offsets(owner, batch)
    _, teacher_labels, _, teacher_offsets = G.build_teacher_inputs_from_texts(teacher_tok, [prompt], [text])
    answer = (teacher_labels[0] != -100).nonzero()[:, 0]
    s_offsets = batch["byte_offsets"][0, 1:].tolist()
    t_offsets = teacher_offsets[0, answer[0] : answer[-1]].tolist()  # without the appended EOS
    s_groups, _ = G.ULDLoss._align_by_byte_offsets(s_offsets, t_offsets)
    return len(s_groups)


def run_align(spec):
    """Seconds per sequence at each size; past the time budget, one repetition, then extrapolation
    from the growth exponent of the two largest measured sizes."""
    student_tok, teacher_tok = load(spec["student_tokenizer"]), load(spec["teacher_tokenizer"])
    trl_alignment(student_tok, teacher_tok, spec["cases"][0]["ids"][:64], spec["prompt"])  # warm caches
    out, measured = [], []
    for case in spec["cases"]:
        n = len(case["ids"])
        if len(measured) >= 2:
            (n0, t0), (n1, t1) = measured[-2], measured[-1]
            growth = max(torch.log(torch.tensor(t1 / t0)).item() / torch.log(torch.tensor(n1 / n0)).item(), 1.0)
            predicted = t1 * (n / n1) ** growth
            if predicted > spec["budget_s"]:
                out.append({"tokens": n, "seconds": predicted, "reps": 0, "extrapolated": True,
                            "growth_exponent": growth, "groups": None})
                continue
        groups = [None]
        if measured and measured[-1][1] * (n / measured[-1][0]) ** 2 > spec["budget_s"] / 3:
            t0 = time.perf_counter()
            groups[0] = trl_alignment(student_tok, teacher_tok, case["ids"], spec["prompt"])
            seconds, reps = time.perf_counter() - t0, 1
        else:
            def once():
                groups[0] = trl_alignment(student_tok, teacher_tok, case["ids"], spec["prompt"])
            seconds, reps = time_call(once)
        measured.append((n, seconds))
        out.append({"tokens": n, "seconds": seconds, "reps": reps, "extrapolated": False, "groups": groups[0]})
    return {"trl": trl.__version__, "byte_offsets": BYTE_OFFSETS, "results": out}


def run_loss(spec):
    """TRL's ULDLoss (bayesian merge = chain rule) on the synthetic logits, forward and backward,
    with the peak memory above the inputs."""
    student_tok, teacher_tok = load(spec["student_tokenizer"]), load(spec["teacher_tokenizer"])
    config = SimpleNamespace(
        uld_crossentropy_weight=0.0, uld_distillation_weight=1.0,
        uld_student_temperature=1.0, uld_teacher_temperature=1.0,
        uld_skip_student_eos=False, uld_skip_teacher_eos=False, use_extended_uld=True,
        uld_token_merge_strategy="bayesian", uld_use_hybrid_loss=spec["hybrid"],
        uld_hybrid_matched_weight=None, uld_hybrid_unmatched_weight=None, beta=spec["beta"],
    )
    loss_fn = G.ULDLoss(config, student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)
    trl_matched = None
    if spec["hybrid"]:
        trl_matched = len(loss_fn._vocab_mapping)
        # Same byte-equal vocabulary map as ours (TRL matches token strings, specials included).
        pairs = dict(zip(spec["matched_teacher_ids"], spec["matched_student_ids"]))
        loss_fn._vocab_mapping = pairs
        loss_fn._teacher_matched_ids = set(pairs)
        loss_fn._student_matched_ids = set(pairs.values())
        loss_fn.mapping_tensor = torch.full((max(pairs) + 1,), -1, dtype=torch.long)
        loss_fn.mapping_tensor[list(pairs)] = torch.tensor(list(pairs.values()))

    s_ids, t_ids = spec["student_ids"], spec["teacher_ids"]
    # One prompt position in front: with the bayesian strategy TRL reads logits[start - 1 : end - 1].
    student_logits = zipf_logits(len(s_ids) + 1, spec["student_vocab"], spec["student_seed"], s_ids, requires_grad=True)
    teacher_logits = zipf_logits(len(t_ids) + 1, spec["teacher_vocab"], spec["teacher_seed"], t_ids)
    inputs = dict(
        student_labels=torch.tensor([[-100] + s_ids]), teacher_labels=torch.tensor([[-100] + t_ids]),
        student_input_ids=torch.tensor([[0] + s_ids]), teacher_input_ids=torch.tensor([[0] + t_ids]),
        student_byte_offsets=torch.tensor([[[0, 0]] + spec["student_offsets"]]),
        teacher_byte_offsets=torch.tensor([[[0, 0]] + spec["teacher_offsets"]]),
    )
    sums = [checksum(student_logits[:-1]), checksum(teacher_logits[:-1])]
    base = max_rss_bytes()
    t0 = time.perf_counter()
    loss = loss_fn(student_logits.unsqueeze(0), teacher_logits.unsqueeze(0), **inputs)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    groups = len(G.ULDLoss._align_by_byte_offsets(spec["student_offsets"], spec["teacher_offsets"])[0])
    result = {
        "trl": trl.__version__, "loss": float(loss.detach()), "forward_s": t1 - t0, "forward_backward_s": t2 - t0,
        "peak_bytes": max_rss_bytes() - base, "checksums": sums, "groups": groups,
        "grad_checksum": checksum(student_logits.grad[:-1]), "trl_matched_entries": trl_matched,
    }
    if spec["hybrid"]:
        result["matched_part"] = float(loss_fn.last_matched_loss)
        result["unmatched_part"] = float(loss_fn.last_unmatched_loss)
    return result


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    mode, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        spec = json.load(f)
    print(json.dumps(run_align(spec) if mode == "align" else run_loss(spec)))
