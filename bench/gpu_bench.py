#!/usr/bin/env python3
"""GPU rows of the benchmark: our teacher payload and student loss against TRL 1.16's ULD loss
(trl.experimental.gold ULDLoss, "bayesian" = chain merge) on the same inputs, on one device.

Inputs: synthetic bf16 logits [B, R, V] (V = 128256 student / 151665 teacher, the Llama 3.1 / Qwen
2.5 vocabularies), random token ids, and byte offsets laid out so that both sides' groups are the
same: group g covers bytes [2g, 2g + 2), one or two tokens on each side, never two on both (then
TRL's byte-offset alignment finds exactly our groups). Each of our cases runs twice and the second
run is reported (TRL's once: its per-group loop can take minutes): seconds, and peak device memory above the inputs (torch.cuda.max_memory_allocated after
a reset, minus what was allocated before the case). A case that runs out of memory is reported as
such and the next one runs. TRL runs at the largest batch (B, B/2, ..., 1) that its one-sample
time predicts to fit the remaining budget, and ours-exact runs again at that batch for the ratio.

On the lent GPU machine (after `bash bench/gpu_bench_wheels.sh` here; wheels and tokenizers in .whl/):
    device tool `run`: command "bash bench/gpu_bench.sh", carry [".whl"], timeout_s 420
On CPU at toy sizes (tests/test_gpu_bench.py):
    python bench/gpu_bench.py --device cpu --batch 2 --tokens 48 --vocab 300 280 --tokenizers DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
RECORDS: list[dict] = []


def emit(record: dict) -> None:
    RECORDS.append(record)
    print(json.dumps(record), flush=True)


def group_layout(tokens: int, pattern: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ids [tokens] and byte offsets [tokens, 2] of one sample: group g spans bytes [2g, 2g + 2),
    split into pattern[g % len(pattern)] tokens (1 or 2), as many groups as fit in `tokens`."""
    groups, offsets, g = [], [], 0
    while True:
        n = pattern[g % len(pattern)]
        if len(groups) + n > tokens:
            break
        spans = [(2 * g, 2 * g + 2)] if n == 1 else [(2 * g, 2 * g + 1), (2 * g + 1, 2 * g + 2)]
        groups += [g] * n
        offsets += spans
        g += 1
    pad = tokens - len(groups)
    return torch.tensor(groups + [-1] * pad), torch.tensor(offsets + [(0, 0)] * pad)


def make_inputs(b: int, r: int, vocab_s: int, vocab_t: int, device: str, dtype=torch.bfloat16) -> dict:
    """Student and teacher inputs of the same groups; the teacher side is longer where its pattern
    splits more groups, so both are cut to the groups both sides hold whole."""
    s_groups, s_off = group_layout(r, (1, 2, 1, 1))
    t_groups, t_off = group_layout(r, (1, 1, 2, 1))
    g = int(min(s_groups.max(), t_groups.max()))  # groups both sides hold whole: 0 .. g - 1
    s_groups, t_groups = torch.where(s_groups < g, s_groups, -1), torch.where(t_groups < g, t_groups, -1)
    s_off[s_groups < 0], t_off[t_groups < 0] = 0, 0
    gen = torch.Generator().manual_seed(0)
    s_ids, t_ids = torch.randint(0, vocab_s, (b, r), generator=gen), torch.randint(0, vocab_t, (b, r), generator=gen)
    student = (torch.randn(b, r, vocab_s, generator=gen) * 2).to(dtype)
    teacher = (torch.randn(b, r, vocab_t, generator=gen) * 2).to(dtype)
    return {
        "student_logits": student.to(device), "teacher_logits": teacher.to(device),
        "student_ids": s_ids.to(device), "teacher_ids": t_ids.to(device),
        "student_groups": s_groups.expand(b, r).contiguous().to(device),
        "teacher_groups": t_groups.expand(b, r).contiguous().to(device),
        "student_offsets": s_off.expand(b, r, 2).contiguous().to(device),
        "teacher_offsets": t_off.expand(b, r, 2).contiguous().to(device),
        "num_groups": g,
    }


def measure(fn, device: str, runs: int = 2) -> tuple[float, int | None, object]:
    """(seconds, peak bytes above what was allocated before, result) of fn's last of `runs` runs."""
    out = None
    for _ in range(runs):
        out = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else None
    return seconds, peak, out


def run_case(name: str, fn, device: str, runs: int = 2, **extra) -> dict | None:
    try:
        seconds, peak, out = measure(fn, device, runs)
    except Exception as exc:  # out of memory or a TRL incompatibility: recorded, the run goes on
        oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
        emit({"case": name, **extra, "error": "out of memory" if oom else f"{type(exc).__name__}: {exc}"})
        if not oom:
            print(traceback.format_exc(limit=6), file=sys.stderr)
        if device == "cuda":
            torch.cuda.empty_cache()
        return None
    record = {"case": name, **extra, "seconds": round(seconds, 4),
              "peak_above_inputs_gib": None if peak is None else round(peak / 2**30, 3)}
    if isinstance(out, torch.Tensor):
        record["value"] = float(out)
    emit(record)
    return record


def ours_student(x: dict, b: int, payload: dict, merge: str, topk: int | None, tables=None):
    from gold_distillation.gold_forward import student_gold_loss

    logits = x["student_logits"][:b].detach().requires_grad_(True)

    def run():
        loss, _ = student_gold_loss(logits, x["student_ids"][:b], x["student_groups"][:b],
                                    {k: v[:b] for k, v in payload.items()}, merge=merge, student_topk=topk, hybrid=tables)
        loss.backward()
        return loss.detach()

    return run


def ours_payload(x: dict, merge: str, topk: int | None, matched=None) -> dict:
    from gold_distillation.gold_forward import teacher_payload

    with torch.no_grad():
        return teacher_payload(x["teacher_logits"], x["teacher_ids"], x["teacher_groups"], x["num_groups"],
                               merge=merge, topk=topk, teacher_matched=matched)


def trl_uld(x: dict, b: int, student_tok, teacher_tok):
    """TRL 1.16's ULDLoss, chain ("bayesian") merge, distillation term only, forward + backward.
    TRL reads logits[start - 1 : end - 1]: one prompt position (label -100) goes in front of the
    labels, one unread logit row after the logits."""
    from trl.experimental.gold import gold_trainer as trl_gold

    config = SimpleNamespace(
        uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=1.0,
        uld_teacher_temperature=1.0, uld_skip_student_eos=False, uld_skip_teacher_eos=False, use_extended_uld=True,
        uld_token_merge_strategy="bayesian", uld_use_hybrid_loss=False, uld_hybrid_matched_weight=None,
        uld_hybrid_unmatched_weight=None, beta=0.5,
    )
    loss_fn = trl_gold.ULDLoss(config, student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)
    dev = x["student_logits"].device

    def front(t, fill):
        return torch.cat([torch.full_like(t[:b, :1], fill), t[:b]], 1)

    # Logit row k predicts label k + 1: our rows 0 .. R - 1 predict the labels after the prompt position.
    s_logits = torch.cat([x["student_logits"][:b], x["student_logits"][:b, -1:]], 1).detach().requires_grad_(True)
    t_logits = torch.cat([x["teacher_logits"][:b], x["teacher_logits"][:b, -1:]], 1)
    s_labels = torch.where(x["student_groups"][:b] >= 0, x["student_ids"][:b], -100)
    t_labels = torch.where(x["teacher_groups"][:b] >= 0, x["teacher_ids"][:b], -100)
    pad = torch.full((b, 1), -100, device=dev)
    zero = torch.zeros(b, 1, 2, dtype=x["student_offsets"].dtype, device=dev)
    inputs = dict(
        student_labels=torch.cat([pad, s_labels], 1), teacher_labels=torch.cat([pad, t_labels], 1),
        student_input_ids=front(x["student_ids"], 0), teacher_input_ids=front(x["teacher_ids"], 0),
        student_byte_offsets=torch.cat([zero, x["student_offsets"][:b]], 1),
        teacher_byte_offsets=torch.cat([zero, x["teacher_offsets"][:b]], 1),
    )

    def run():
        s_logits.grad = None
        loss = loss_fn(s_logits, t_logits, **inputs)
        loss.backward()
        return loss.detach()

    return run


def _import_project() -> None:
    """`gold_distillation` from this checkout when it is not installed (the GPU machine), through
    scripts/gpu_check.py's helper."""
    try:
        import gold_distillation  # noqa: F401
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.import_project_from_this_checkout()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, nargs=2, default=(128256, 151665), metavar=("STUDENT", "TEACHER"))
    parser.add_argument("--tokenizers", default=str(ROOT.parent / "shared" / "tokenizers"))
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="logits dtype (TRL computes in it; ours in float32): float32 to compare values")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds after which no new case starts")
    parser.add_argument("--no-trl", action="store_true", help="leave out TRL's loss")
    parser.add_argument("--json", default=None, help="report file (default $OUT/gpu_bench.json when OUT is set)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")

    _import_project()
    from gold_distillation.config import GOLDConfig
    from gold_distillation.gold_setup import hybrid_tables, load_tokenizer

    student_tok = load_tokenizer(str(Path(args.tokenizers) / "llama3.1-instruct"))
    teacher_tok = load_tokenizer(str(Path(args.tokenizers) / "qwen2.5-instruct"))
    vocab_s, vocab_t = args.vocab
    tables = hybrid_tables(student_tok, teacher_tok, GOLDConfig(), device=args.device)
    if vocab_s < len(student_tok) or vocab_t < len(teacher_tok):  # toy vocabularies (CPU test): the map cut to them
        keep = tables.teacher_to_student[:vocab_t]
        keep = torch.where(keep < vocab_s, keep, -1)
        tables.teacher_to_student = keep
        tables.student_matched = torch.zeros(vocab_s, dtype=torch.bool, device=args.device).index_fill(0, keep[keep >= 0], True)
    matched = tables.teacher_to_student >= 0
    x = make_inputs(args.batch, args.tokens, vocab_s, vocab_t, args.device, getattr(torch, args.dtype))
    b, r = args.batch, args.tokens
    size = {"batch": b, "tokens_per_sequence": r, "groups_per_sequence": x["num_groups"],
            "student_vocab": vocab_s, "teacher_vocab": vocab_t}
    from gold_distillation.gold_forward import device_chunk_elements

    emit({"case": "setup", **size, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
          "torch": torch.__version__, "chunk_elements": device_chunk_elements(torch.device(args.device)),
          "dtype": args.dtype, "input_logits_gib": {
              side: round(x[f"{side}_logits"].numel() * x[f"{side}_logits"].element_size() / 2**30, 3)
              for side in ("student", "teacher")}})

    default, exact = (GOLDConfig.merge, GOLDConfig.teacher_topk), ("chain", None)
    payloads = {}
    for name, (merge, topk), hyb in (("default", default, False), ("default", default, True), ("exact", exact, False)):
        if time.monotonic() > deadline:
            break
        label = f"ours teacher_payload {name} ({merge}, top-{topk}){' hybrid' if hyb else ''}"
        record = run_case(label, lambda: ours_payload(x, merge, topk, matched if hyb else None), args.device, **size)
        if record is not None:
            payloads[(name, hyb)] = ours_payload(x, merge, topk, matched if hyb else None)
    for name, (merge, topk), hyb in (("default", default, False), ("default", default, True), ("exact", exact, False)):
        if time.monotonic() > deadline or (name, hyb) not in payloads:
            continue
        label = f"ours student_gold_loss fwd+bwd {name} ({merge}, top-{topk}){' hybrid' if hyb else ''}"
        run_case(label, ours_student(x, b, payloads[(name, hyb)], merge, topk, tables if hyb else None), args.device, **size)

    if not args.no_trl and time.monotonic() < deadline:
        try:
            import trl
        except ImportError as exc:
            emit({"case": "trl", "error": f"TRL not importable: {exc}"})
        else:
            # One run per TRL case (no warm-up run): its per-group loop can take minutes.
            one = run_case("trl ULDLoss fwd+bwd (bayesian)", trl_uld(x, 1, student_tok, teacher_tok), args.device,
                           runs=1, **dict(size, batch=1), trl=trl.__version__)
            n = 1
            if one is not None:
                left = deadline - time.monotonic()
                while n * 2 <= b and one["seconds"] * n * 2 < left / 2:  # half the time left, for ours after it
                    n *= 2
                if n > 1:
                    run_case("trl ULDLoss fwd+bwd (bayesian)", trl_uld(x, n, student_tok, teacher_tok), args.device,
                             runs=1, **dict(size, batch=n), trl=trl.__version__)
            if ("exact", False) in payloads:
                run_case("ours student_gold_loss fwd+bwd exact (chain, top-None), TRL's batch",
                         ours_student(x, n, payloads[("exact", False)], "chain", None), args.device, **dict(size, batch=n))
    summary = summarize()
    print(summary)
    path = args.json or (os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps({"records": RECORDS, "summary": summary}, indent=1))
    return 0 if all("error" not in r for r in RECORDS) else 1


def summarize() -> str:
    """Ours against TRL at the same batch: time and peak-memory ratios, value agreement."""
    lines = ["| case | batch | seconds | peak above inputs (GiB) |", "|---|---|---|---|"]
    for r in RECORDS:
        if r["case"] != "setup":
            lines.append(f"| {r['case']} | {r.get('batch', '-')} | {r.get('seconds', r.get('error'))} | "
                         f"{r.get('peak_above_inputs_gib', '-')} |")
    trl_rows = [r for r in RECORDS if r["case"].startswith("trl ULDLoss") and "seconds" in r]
    ours = [r for r in RECORDS if r["case"].endswith("TRL's batch") and "seconds" in r]
    if trl_rows and ours:
        t, o = trl_rows[-1], ours[-1]
        lines.append(f"\nexact mode vs TRL at batch {o['batch']}: {t['seconds'] / o['seconds']:.1f}x faster"
                     + (f", peak memory {o['peak_above_inputs_gib'] / t['peak_above_inputs_gib']:.2f}x"
                        if o["peak_above_inputs_gib"] and t["peak_above_inputs_gib"] else "")
                     + f", loss {o['value']:.6g} vs {t['value']:.6g} (rel {abs(o['value'] - t['value']) / abs(t['value']):.1e})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
