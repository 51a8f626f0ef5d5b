"""Tiny cross-tokenizer GOLD distillation on CPU: `python -m gold_distillation.cpu_demo`.

A Qwen2 teacher (byte-level BPE tokenizer) is trained briefly on single-digit addition; a Llama
student (SentencePiece-style tokenizer), warm-started on a teacher-independent task and then by a
short SFT stage on teacher samples, is distilled from it on-policy, in one process, through the
functions the SkyRL path runs: build_teacher_views + collate_views (teacher view and alignment),
teacher_payload (the GOLD ref worker's computation), then either span rewards with SkyRL's no_op
advantages and importance_sampling policy loss (reward mode) or student_gold_loss (loss mode).
Beside them the usual cross-tokenizer alternative runs for the same number of steps: supervised
fine-tuning of the student on teacher-generated completions.

The student samples from exactly the distribution it is trained on (the full softmax at
temperature 1): a special token it writes mid-answer is text the teacher reads and costs the
teacher's log-probability of that string, and an answer cut at the length limit is scored as
ending where it was cut (build_teacher_view).

Writes <out>/metrics.jsonl, <out>/curves.png and <out>/summary.json, and prints a summary table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .alignment import decode_with_spans, token_bytes
from .config import GOLDConfig, needs_teacher_distributions, validate_gold_config
from .demo_task import (
    OPERAND_MAX,
    Problem,
    all_problems,
    answer_ids,
    byte_level_tokenizer,
    load_tokenizer,
    prompt_ids,
    sentencepiece_tokenizer,
    tiny_model,
    warm_start_answers,
)
from .gold_forward import HybridTables, group_measures, response_logits, student_gold_loss, teacher_payload
from .gold_metrics import response_end_metrics, span_ratio_metric
from .gold_setup import hybrid_tables
from .losses import gather_token_logprobs, reduce_group_loss, span_rewards
from .teacher_view import build_teacher_views, collate_views

METHODS = ("reward", "loss", "sft")
MAX_NEW_TOKENS = 5


@dataclass
class DemoConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    # Reward mode's policy gradient is a sampled, noisy estimate: at 1e-3 it collapsed on seed 1
    # (README "CPU demo").
    reward_lr: float = 3e-4
    teacher_steps: int = 300
    teacher_lr: float = 3e-3
    warm_start_steps: int = 200
    # Then brief SFT on teacher samples (off-policy distillation, the usual first stage of the
    # on-policy distillation recipe), so that the student writes two-digit answers at all. Reward
    # mode only reinforces what the student samples: from a student that gives every two-digit
    # answer probability e^-10 or less it closed 26-45% of the gap (README "CPU demo").
    sft_warm_start_steps: int = 75
    # Gradient clipping of every method's on-policy steps, as SkyRL clips the policy's
    # (trainer.policy.optimizer_config.max_grad_norm, default 1.0).
    max_grad_norm: float = 1.0
    eval_every: int = 50
    hidden: int = 64
    layers: int = 2
    modes: tuple = METHODS
    seed: int = 0
    gold: GOLDConfig = field(default_factory=lambda: GOLDConfig(hybrid=True))


# ---------------------------------------------------------------------------------------------
# Batches in the SkyRL layout: prompts left-padded, responses right-padded.


@dataclass
class Batch:
    """sequences, attention_mask: [B, P + R]; response_ids, response_mask: [B, R]."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor


def pack(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> Batch:
    p = max(len(x) for x in prompts)
    r = max(max(len(x) for x in responses), 1)
    seq = torch.full((len(prompts), p + r), pad_id, dtype=torch.long)
    attn = torch.zeros_like(seq)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        seq[i, p - len(prompt) : p] = torch.tensor(prompt)
        seq[i, p : p + len(response)] = torch.tensor(response, dtype=torch.long)
        attn[i, p - len(prompt) : p + len(response)] = 1
    return Batch(seq, attn, seq[:, p:], attn[:, p:])


class _DrawNext(LogitsProcessor):
    """Draws each next token from softmax(scores) by inverse-CDF sampling and returns scores whose
    argmax is the draw, so that greedy decoding takes it: the distribution HF's sampling draws
    from, at a seventh of the cost of its multinomial over a 128k-token vocabulary (measured)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = torch.softmax(scores.float(), -1).cumsum(-1, dtype=torch.float64)
        u = torch.rand(scores.shape[0], 1, dtype=torch.float64) * cdf[:, -1:]
        # right=True: the first token whose cumulative mass exceeds u, never one of probability 0.
        pick = torch.searchsorted(cdf, u, right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter(-1, pick, 0.0)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], sample: bool) -> list[list[int]]:
    """Responses (up to and including the first EOS) to left-padded prompts; sample=True draws
    from the model's full distribution at temperature 1 (on-policy: the one its log-probs are
    computed from), else greedy."""
    batch = pack(prompts, [[]] * len(prompts), tokenizer.pad_token_id)
    width = batch.sequences.shape[1] - 1
    out = model.generate(
        input_ids=batch.sequences[:, :width], attention_mask=batch.attention_mask[:, :width],
        max_new_tokens=MAX_NEW_TOKENS, do_sample=False, temperature=None, top_k=None, top_p=None,
        logits_processor=LogitsProcessorList([_DrawNext()] if sample else []),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )[:, width:]
    responses = []
    for row in out.tolist():
        cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        responses.append(row[:cut])
    return responses


def completion_text(tokenizer, response: list[int]) -> str:
    """The text of a response as the teacher reads it: without its final EOS, other special
    tokens as their literal strings (an answer padded with special tokens is not correct)."""
    body = response[:-1] if response and response[-1] == tokenizer.eos_token_id else response
    return decode_with_spans(token_bytes(tokenizer), body).text


# ---------------------------------------------------------------------------------------------
# The GOLD signal of a batch of student responses: teacher view, alignment, teacher payload.


@dataclass
class World:
    student_tok: object
    teacher_tok: object
    teacher: torch.nn.Module
    gold: GOLDConfig
    hybrid: HybridTables | None
    teacher_matched: torch.Tensor | None
    student_prompts: dict = field(default_factory=dict)
    teacher_prompts: dict = field(default_factory=dict)
    # What SkyRL's importance_sampling loss reads of its trainer.algorithm config: reward mode's
    # default reduction, each sample's token sum over a fixed max_seq_len (SkyRL sets it to
    # max_input_length + max_generate_length); set by make_world.
    algorithm: SimpleNamespace = field(default_factory=SimpleNamespace)

    def prompts(self, problems: list[Problem], side: str) -> list[list[int]]:
        cache, tok = (self.student_prompts, self.student_tok) if side == "student" else (self.teacher_prompts, self.teacher_tok)
        missing = [p for p in problems if p.question not in cache]
        for p, ids in zip(missing, prompt_ids(tok, missing)):
            cache[p.question] = ids
        return [cache[p.question] for p in problems]


def make_world(student_tok, teacher_tok, teacher, gold: GOLDConfig, problems: list[Problem]) -> World:
    hybrid = hybrid_tables(student_tok, teacher_tok, gold) if gold.hybrid else None
    matched = None if hybrid is None else hybrid.teacher_to_student >= 0
    world = World(student_tok, teacher_tok, teacher, gold, hybrid, matched)
    max_input = max(len(ids) for ids in world.prompts(problems, "student"))
    world.algorithm = SimpleNamespace(loss_reduction="seq_mean_token_sum_norm", max_seq_len=max_input + MAX_NEW_TOKENS)
    return world


@torch.no_grad()
def teacher_signal(world: World, problems: list[Problem], responses: list[list[int]], width: int, with_distributions: bool = True):
    """Teacher view + alignment of the student responses, and the teacher payload computed the
    way the GOLD ref worker computes it (with_distributions=False: span log-probs only, as reward
    mode's ref worker ships them). Returns (payload, student group ids [B, width], metrics
    of how the responses end)."""
    views = build_teacher_views(
        responses, [p.messages for p in problems], world.student_tok, world.teacher_tok,
    )
    tb = collate_views(views, world.teacher_tok.pad_token_id, student_response_length=width)
    r_t = tb.teacher_group_ids.shape[1]
    logits = response_logits(world.teacher, tb.sequences, tb.attention_mask, r_t)
    payload = teacher_payload(
        logits, tb.sequences[:, -r_t:], tb.teacher_group_ids, tb.num_groups,
        temperature=world.gold.teacher_temperature, merge=world.gold.merge, topk=world.gold.teacher_topk,
        teacher_matched=world.teacher_matched, with_distributions=with_distributions,
    )
    return payload, tb.student_group_ids, response_end_metrics(views)


def gold_terms(world: World, logits: torch.Tensor, batch: Batch, payload: dict, student_groups: torch.Tensor, with_loss: bool = True):
    """Student-side GOLD quantities from student logits [B, R, V] (with gradient).

    Returns (gold loss or None, metrics, token log-probs [B, R], span rewards [B, R]); every
    student token of group g carries delta_g = log P_T(g) - log P_S(g), computed without gradient.
    with_loss=False skips the GOLD loss (and its metric gold/uld_distance), as reward mode's SkyRL
    path does: over real vocabularies it is most of a reward step's cost."""
    loss, metrics = None, {}
    if with_loss:
        loss, metrics = student_gold_loss(
            logits, batch.response_ids, student_groups, payload, temperature=world.gold.student_temperature,
            merge=world.gold.merge, student_topk=world.gold.teacher_topk, hybrid=world.hybrid, beta=world.gold.beta,
        )
    measures = group_measures(
        logits, batch.response_ids, student_groups, payload["teacher_span_logprobs"].shape[1],
        world.gold.student_temperature, merge=None,
    )
    rewards = span_rewards(measures.span_logprob.detach(), payload["teacher_span_logprobs"], student_groups)
    both = measures.present & payload["teacher_group_mask"].bool()
    metrics.update(span_ratio_metric(measures.span_logprob.detach(), payload["teacher_span_logprobs"], both))
    delta = payload["teacher_span_logprobs"] - measures.span_logprob.detach()
    metrics["gold/sequence_log_ratio"] = float(torch.where(both, delta, 0.0).sum(-1).mean())
    return loss, metrics, measures.token_logprobs, rewards


# ---------------------------------------------------------------------------------------------
# Training steps.


def supervised_loss(model, batch: Batch) -> torch.Tensor:
    """Token-mean cross-entropy of the response tokens."""
    mask = batch.response_mask.float()
    return -(response_logprobs(model, batch) * mask).sum() / mask.sum().clamp(min=1)


def response_logprobs(model, batch: Batch) -> torch.Tensor:
    """Log-probs [B, R] of the response tokens under `model`."""
    logits = response_logits(model, batch.sequences, batch.attention_mask, batch.response_ids.shape[1])
    return gather_token_logprobs(torch.log_softmax(logits.float(), -1), batch.response_ids)


def gold_step(world: World, student, mode: str, problems: list[Problem]) -> tuple[torch.Tensor, dict]:
    """One on-policy GOLD step: the student samples, the teacher scores, the loss of `mode`."""
    prompts = world.prompts(problems, "student")
    responses = generate(student, world.student_tok, prompts, sample=True)
    batch = pack(prompts, responses, world.student_tok.pad_token_id)
    distributions = needs_teacher_distributions(replace(world.gold, mode=mode))
    payload, groups, end_metrics = teacher_signal(world, problems, responses, batch.response_ids.shape[1], distributions)
    logits = response_logits(student, batch.sequences, batch.attention_mask, batch.response_ids.shape[1])
    gold_loss, metrics, logprobs, rewards = gold_terms(world, logits, batch, payload, groups, with_loss=distributions)
    metrics.update(end_metrics)
    metrics["demo/student_tokens"] = int(batch.response_mask.sum())
    if mode == "loss":
        return gold_loss, metrics
    # no_op advantages: the per-token rewards are the advantages. SkyRL's importance_sampling loss,
    # -ratio * advantage, reduced as reward mode reduces it (world.algorithm); one update per batch,
    # so the sampling policy is the current one (old log-probs = current, detached; ratio 1).
    # Written out so the demo needs no SkyRL.
    mask = batch.response_mask.float()
    loss = reduce_group_loss(-torch.exp(logprobs - logprobs.detach()) * rewards * mask, mask, world.algorithm.loss_reduction, world.algorithm.max_seq_len)
    return loss, metrics


def sft_step(world: World, student, problems: list[Problem]) -> tuple[torch.Tensor, dict]:
    """Supervised fine-tuning on teacher-sampled completions, re-tokenized for the student."""
    responses = generate(world.teacher, world.teacher_tok, world.prompts(problems, "teacher"), sample=True)
    targets = []
    for r in responses:
        ids = world.student_tok(completion_text(world.teacher_tok, r), add_special_tokens=False)["input_ids"]
        targets.append(ids + ([world.student_tok.eos_token_id] if r and r[-1] == world.teacher_tok.eos_token_id else []))
    batch = pack(world.prompts(problems, "student"), targets, world.student_tok.pad_token_id)
    return supervised_loss(student, batch), {"demo/student_tokens": 0, "demo/teacher_tokens": sum(map(len, responses))}


# ---------------------------------------------------------------------------------------------
# Evaluation: greedy answers on every problem.


@torch.no_grad()
def evaluate(world: World, model, tokenizer, side: str, problems: list[Problem]) -> dict:
    """Exact-match accuracy of greedy answers and the teacher's log-likelihood of them (nats per
    answer, EOS included); for the student also the GOLD span log-ratio and ULD distance."""
    prompts = world.prompts(problems, side)
    responses = generate(model, tokenizer, prompts, sample=False)
    correct = [completion_text(tokenizer, r) == p.answer for r, p in zip(responses, problems)]
    out = {"accuracy": sum(correct) / len(problems)}
    batch = pack(prompts, responses, tokenizer.pad_token_id)
    if side == "teacher":
        out["teacher_loglik"] = float((response_logprobs(model, batch) * batch.response_mask).sum(-1).mean())
        return out
    payload, groups, _ = teacher_signal(world, problems, responses, batch.response_ids.shape[1])
    logits = response_logits(model, batch.sequences, batch.attention_mask, batch.response_ids.shape[1])
    _, metrics, _, _ = gold_terms(world, logits, batch, payload, groups)
    out["teacher_loglik"] = float((payload["teacher_span_logprobs"] * payload["teacher_group_mask"]).sum(-1).mean())
    out["span_log_ratio"] = metrics["gold/span_log_ratio"]
    out["uld_distance"] = metrics["gold/uld_distance"]
    return out


# ---------------------------------------------------------------------------------------------
# The run.


def fit(world: World, model, side: str, problems: list[Problem], answers, steps: int, lr: float, progress, label: str) -> None:
    """Supervised full-batch training of `model` (teacher or student side); answers(step) gives
    the target answer of every problem at that step."""
    tok = world.teacher_tok if side == "teacher" else world.student_tok
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    prompts = world.prompts(problems, side)
    model.train()
    for step in range(steps):
        batch = pack(prompts, [answer_ids(tok, a) for a in answers(step)], tok.pad_token_id)
        loss = supervised_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress.update(1)
        progress.set_postfix_str(f"{label} loss {loss.item():.3f}")
    model.eval()


def sft_warm_start(world: World, student, problems: list[Problem], steps: int, lr: float, batch_size: int, seed: int, progress=None) -> None:
    """`steps` steps of sft_step (teacher samples) on random batches of `problems`, at a constant `lr`."""
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 3)
    for _ in range(steps):
        chosen = [problems[i] for i in torch.randint(len(problems), (batch_size,), generator=generator).tolist()]
        student.train()
        loss, _ = sft_step(world, student, chosen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"student SFT warm start loss {loss.item():.3f}")
    student.eval()


def linear_decay(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate falling linearly from its value to 0 over `steps` steps: at a constant rate
    single steps spike (loss mode at 3e-3 went from 0.94 to 0.66 accuracy in the last 50 steps of
    a measured run), and the last evaluation is what the table reports."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / max(steps, 1)))


def run_method(world, cfg: DemoConfig, method: str, student, problems, eval_problems, log, progress) -> dict:
    """Train `student` with one method for cfg.steps steps; evaluate every cfg.eval_every steps."""
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.reward_lr if method == "reward" else cfg.lr, weight_decay=0.0)
    schedule = linear_decay(opt, cfg.steps)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    torch.manual_seed(cfg.seed + 2)  # same sampling randomness for every method
    evals = {0: evaluate(world, student, world.student_tok, "student", eval_problems)}
    log({"method": method, "step": 0, **{f"eval/{k}": v for k, v in evals[0].items()}})
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        pick = torch.randint(len(problems), (cfg.batch_size,), generator=generator).tolist()
        chosen = [problems[i] for i in pick]
        student.train()
        loss, metrics = sft_step(world, student, chosen) if method == "sft" else gold_step(world, student, method, chosen)
        opt.zero_grad()
        loss.backward()
        metrics["demo/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm))
        opt.step()
        schedule.step()
        student.eval()
        record = {"method": method, "step": step, "loss": loss.item(), **metrics}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            evals[step] = evaluate(world, student, world.student_tok, "student", eval_problems)
            record.update({f"eval/{k}": v for k, v in evals[step].items()})
            if progress.disable:  # no terminal: one line per evaluation instead of a redrawn bar
                print(f"{method} step {step}/{cfg.steps}: loss {loss.item():.3f}, accuracy {evals[step]['accuracy']:.2f}", flush=True)
        log(record)
        progress.update(1)
        progress.set_postfix_str(f"{method} loss {loss.item():.3f} acc {evals[max(evals)]['accuracy']:.2f}")
    return {"before": evals[0], "after": evals[cfg.steps], "seconds": time.perf_counter() - start}


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("gold/sequence_log_ratio", "log P_T(y) - log P_S(y) of the student's samples y (nats)"),
        ("gold/uld_distance", "ULD distance per group of loss mode's samples (the loss it minimizes)"),
        ("eval/accuracy", "task accuracy (greedy, all problems)"),
        ("eval/teacher_loglik", "teacher log-likelihood of greedy answers (nats)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        for method in METHODS:
            points = [(r["step"], r[key]) for r in records if r.get("method") == method and key in r]
            if points:
                ax.plot(*zip(*points), label=method, marker="o" if key.startswith("eval/") else None, markersize=3)
        if key == "eval/accuracy":
            teacher = [r["eval/accuracy"] for r in records if r.get("method") == "teacher"]
            if teacher:
                ax.axhline(teacher[0], color="gray", linestyle="--", label="teacher")
        if key == "eval/accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gap_closed(before: float, after: float, teacher: float) -> float | None:
    """Share of the accuracy gap between the untrained student and the teacher that was closed;
    None when there is no gap (the teacher is no better than the untrained student)."""
    gap = teacher - before
    return None if gap <= 0 else (after - before) / gap


def summary_table(summary: dict) -> str:
    t = summary["teacher"]
    lines = [
        f"GOLD CPU demo: {summary['task']}  |  teacher {summary['teacher_model']}  ->  student {summary['student_model']}",
        f"teacher: accuracy {t['accuracy']:.2f}, teacher log-likelihood of its own answers {t['teacher_loglik']:.2f} nats",
        "",
        f"{'method':<8}{'acc before':>11}{'acc after':>11}{'gap closed':>12}{'T-loglik before':>17}{'after':>9}{'time s':>9}",
    ]
    for method, r in summary["methods"].items():
        closed = "n/a" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
        lines.append(
            f"{method:<8}{r['before']['accuracy']:>11.2f}{r['after']['accuracy']:>11.2f}{closed:>12} "
            f"{r['before']['teacher_loglik']:>16.2f}{r['after']['teacher_loglik']:>9.2f}{r['seconds']:>9.1f}"
        )
    lines += ["", f"total wall time {summary['wall_seconds']:.0f} s; files in {summary['out']}"]
    return "\n".join(lines)


def run(cfg: DemoConfig, out: Path, student_tokenizer: str | None = None, teacher_tokenizer: str | None = None) -> dict:
    from tqdm import tqdm

    wall = time.perf_counter()
    validate_gold_config(cfg.gold)
    unknown = set(cfg.modes) - set(METHODS)
    if unknown:
        raise ValueError(f"--modes: unknown method {sorted(unknown)[0]!r}; use a comma-separated subset of {','.join(METHODS)}")
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    teacher_tok = load_tokenizer(teacher_tokenizer) if teacher_tokenizer else byte_level_tokenizer()
    student_tok = load_tokenizer(student_tokenizer) if student_tokenizer else sentencepiece_tokenizer()
    teacher = tiny_model("qwen2", len(teacher_tok), cfg.hidden, cfg.layers, seed=cfg.seed)
    student0 = tiny_model("llama", len(student_tok), cfg.hidden, cfg.layers, seed=cfg.seed + 100).eval()
    problems = all_problems()
    world = make_world(student_tok, teacher_tok, teacher, cfg.gold, problems)

    records: list[dict] = []
    metrics_file = (out / "metrics.jsonl").open("w")

    def log(record: dict) -> None:
        records.append(record)
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    # A redrawn bar floods logs that are not a terminal (CI, `| tee`); there run_method prints a
    # line per evaluation.
    progress = tqdm(
        total=cfg.teacher_steps + cfg.warm_start_steps + cfg.sft_warm_start_steps + cfg.steps * len(cfg.modes), desc="GOLD CPU demo", unit="step",
        disable=not sys.stderr.isatty(),
    )
    truth = [p.answer for p in problems]
    fit(world, teacher, "teacher", problems, lambda step: truth, cfg.teacher_steps, cfg.teacher_lr, progress, "teacher")
    # The student starts where on-policy distillation assumes a student starts: it reads its prompt
    # and writes a number (a warm start on a teacher-independent task), then a short off-policy
    # distillation stage (SFT on teacher samples) gives it the answers' form (two-digit sums); it
    # answers about half the problems after it.
    warm = warm_start_answers(problems)
    fit(world, student0, "student", problems, lambda step: warm, cfg.warm_start_steps, cfg.teacher_lr, progress, "student warm start")
    sft_warm_start(world, student0, problems, cfg.sft_warm_start_steps, cfg.lr, cfg.batch_size, cfg.seed, progress)
    teacher_eval = evaluate(world, teacher, teacher_tok, "teacher", problems)
    log({"method": "teacher", "step": cfg.teacher_steps, **{f"eval/{k}": v for k, v in teacher_eval.items()}})

    results = {}
    for method in cfg.modes:
        student = copy.deepcopy(student0)
        # The task is a finite table: training prompts are drawn from it and accuracy is measured
        # on all of it.
        results[method] = run_method(world, cfg, method, student, problems, problems, log, progress)
        results[method]["gap_closed"] = gap_closed(
            results[method]["before"]["accuracy"], results[method]["after"]["accuracy"], teacher_eval["accuracy"]
        )
    progress.close()
    metrics_file.close()
    plot(records, out / "curves.png")
    summary = {
        "task": f"a+b= with a, b in 0..{OPERAND_MAX} ({len(problems)} problems)",
        "teacher_model": f"Qwen2 {cfg.layers}x{cfg.hidden}, vocab {len(teacher_tok)}",
        "student_model": f"Llama {cfg.layers}x{cfg.hidden}, vocab {len(student_tok)}",
        "teacher": teacher_eval,
        "methods": results,
        "config": {**asdict(cfg), "gold": asdict(cfg.gold)},
        "wall_seconds": time.perf_counter() - wall,
        "out": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(summary_table(summary))
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = DemoConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per method")
    p.add_argument("--modes", default=",".join(METHODS), help="methods to run: reward, loss (GOLD) and sft (baseline)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="student learning rate of loss mode and sft (and of the warm start)")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps)
    p.add_argument("--reward-lr", type=float, default=d.reward_lr, help="student learning rate of reward mode")
    p.add_argument(
        "--warm-start-steps", type=int, default=d.warm_start_steps,
        help="warm-start the student on a teacher-independent task first (answer the larger operand); 0 = random student",
    )
    p.add_argument(
        "--sft-warm-start-steps", type=int, default=d.sft_warm_start_steps,
        help="then SFT on teacher samples for this many steps (the off-policy first stage of on-policy distillation); 0 = none",
    )
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="gradient clipping of the on-policy steps (SkyRL's default)")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--no-hybrid", action="store_true", help="loss mode: plain ULD instead of the hybrid loss")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--student-tokenizer", help="real tokenizer folder for the student, e.g. ../shared/tokenizers/llama3.1-instruct")
    p.add_argument("--teacher-tokenizer", help="real tokenizer folder for the teacher, e.g. ../shared/tokenizers/qwen2.5-instruct")
    p.add_argument("--quick", action="store_true", help="300 steps per method (the CI test)")
    args = p.parse_args(argv)
    cfg = DemoConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, teacher_steps=args.teacher_steps,
        reward_lr=args.reward_lr, warm_start_steps=args.warm_start_steps, sft_warm_start_steps=args.sft_warm_start_steps, max_grad_norm=args.max_grad_norm,
        eval_every=args.eval_every, hidden=args.hidden, layers=args.layers,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()), seed=args.seed,
        gold=GOLDConfig(hybrid=not args.no_hybrid),
    )
    if args.quick:  # the CI size: long enough to see every method learn, a fraction of the default
        cfg.steps, cfg.eval_every = 300, 100
    return cfg, args


def main(argv=None) -> dict:
    # Tiny tensors: one thread is as fast as two alone and much faster beside other processes.
    torch.set_num_threads(1)
    cfg, args = parse_args(argv)
    return run(cfg, args.out, args.student_tokenizer, args.teacher_tokenizer)


if __name__ == "__main__":
    main()
