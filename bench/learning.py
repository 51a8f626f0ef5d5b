"""Learning benchmark: what GOLD is worth where the digits do not match (`make learn`).

Task: "a+b=" with a, b in 0..--operand-max (default 9: 100 problems, answers 0..18). The teacher
reads and writes with the real Qwen2.5 tokenizer (one token per digit), the student with the real
Llama 3.1 tokenizer (one token for every number below 1000), so a two-digit answer is one student
token against two teacher tokens (and the chat templates differ). A tiny Qwen2 teacher is trained
on the task first. A tiny Llama student starts from a teacher-independent warm start that gives it
what a pretrained student brings to distillation, the skill without the precision: it is trained
on answers that are the sum with probability --start-sum-rate (default 0.2) and the sum plus one
otherwise, so it can add (it was taught the right answer one time in five) but its greedy answer
is wrong. Each method then trains a copy of it for the same number of steps with the same number
of student samples per step:

- reward: GOLD span log-ratio rewards, no_op advantages, importance_sampling policy loss;
- loss-uld, loss-hybrid: the GOLD loss (sorted L1; JSD on byte-equal entries + sorted L1);
- sft: fine-tuning on teacher samples, re-tokenized for the student;
- outcome-rl: the task's 0/1 reward with SkyRL's GRPO advantages (group-normalized over
  --group samples of each prompt) and the same policy loss;
- student: the warm-started student alone (no further training).

Everything goes through the demo's functions (cpu_demo: generate, teacher_signal, gold_step,
sft_step, evaluate), which are the SkyRL path's functions.

Output layers: with the real vocabularies (151665 / 128256 entries) the output layer is nearly all
of a tiny model's cost. Each model's output layer scores only the tokens of its task support (the
student: the numbers 0..999 and its end tokens; the teacher: the ten digits and its end token) and
gives every other token of the real vocabulary probability exactly 0. That support defines the
model: the student samples from exactly the distribution it is trained on, and every tensor is
over the real vocabulary and token ids.

Writes <out>/metrics.jsonl, <out>/summary.json, <out>/table.md and <out>/curves.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from itertools import repeat
from pathlib import Path

import torch

from gold_distillation.config import GOLDConfig
from gold_distillation.cpu_demo import (
    completion_text,
    evaluate,
    gap_closed,
    generate,
    gold_step,
    linear_decay,
    make_world,
    pack,
    response_logprobs,
    sft_step,
)
from gold_distillation.demo_task import Problem, answer_ids, load_tokenizer, tiny_model
from gold_distillation.gold_forward import response_logits
from gold_distillation.losses import LOG_FLOOR, reduce_group_loss

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS_DIR = Path(os.environ.get("GOLD_TOKENIZERS_DIR", ROOT / ".." / "shared" / "tokenizers"))
METHODS = ("reward", "loss-uld", "loss-hybrid", "sft", "outcome-rl", "student")
# Policy-gradient methods (sampled, noisy gradients) train with a smaller learning rate than the
# methods with a full-distribution or supervised target; measured on the CPU demo.
PG_METHODS = ("reward", "outcome-rl")
# Embedding rows start at 10x HF's initializer range (std 0.2, not 0.02). The output layer is tied
# to them, and at 0.02 its logits start near +-0.2: in a probe a student trained on the true answers
# stayed at or below 0.10 accuracy for 800 steps of 16, where at 10x it reached 0.89 at step 500.
EMBEDDING_INIT_SCALE = 10.0


def problems(operand_max: int) -> list[Problem]:
    return [Problem(f"{a}+{b}=", str(a + b)) for a in range(operand_max + 1) for b in range(operand_max + 1)]


class TaskEmbedding(torch.nn.Module):
    """Input embedding over the real vocabulary with a row of its own for each token id the task
    uses (prompts of both tokenizers, the output support) and one shared row for every other id:
    a [vocab, H] table would make the optimizer step cost 100x the model's forward."""

    def __init__(self, used: list[int], vocab: int, init: torch.Tensor):
        super().__init__()
        used = torch.tensor(sorted(set(used)))
        row = torch.full((vocab,), len(used), dtype=torch.long)
        row[used] = torch.arange(len(used))
        self.register_buffer("row", row)
        self.weight = torch.nn.Parameter(torch.cat([init[used], init.mean(0, keepdim=True)]).clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(self.row[ids], self.weight)


class SupportHead(torch.nn.Module):
    """An output layer whose distribution lives on `support` (token ids of the real vocabulary).

    hidden [..., H] -> logits [..., vocab]: scores against the (tied) input embedding rows of the
    support, LOG_FLOOR elsewhere (exp(LOG_FLOOR) is exactly 0 in float32, so those tokens have
    probability 0 and are never sampled). With use_compact the support scores alone [..., K].
    """

    def __init__(self, embedding: TaskEmbedding, support: list[int], vocab: int):
        super().__init__()
        self.embedding = embedding
        self.register_buffer("support", torch.tensor(sorted(set(support))))
        self.vocab = vocab
        self.use_compact = False

    def compact(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embedding(self.support).T

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.compact(hidden)
        if self.use_compact:
            return scores
        return hidden.new_full((*hidden.shape[:-1], self.vocab), LOG_FLOOR).index_copy(-1, self.support, scores)


def task_model(family: str, vocab: int, support: list[int], used: list[int], args, seed: int):
    """A tiny random model of `family` over the real vocabulary with the task's embedding and
    output support."""
    model = tiny_model(family, vocab, args.hidden, args.layers, seed=seed)
    init = model.model.embed_tokens.weight.detach() * EMBEDDING_INIT_SCALE
    model.model.embed_tokens = TaskEmbedding(used + support, vocab, init)
    model.lm_head = SupportHead(model.model.embed_tokens, support, vocab)
    return model


def support_fit(
    model, tok, prompts_of, problems_, answers: list[list[str]], steps: int, lr: float, batch_size: int, seed: int,
    answer_weights: tuple[float, ...] = (1.0,),
):
    """Supervised training on (problem, answer) pairs through the support scores (the same
    log-probabilities as the full output layer, without the vocabulary-sized tensor), the learning
    rate falling linearly to 0. answers[i] lists candidate answers of problems_[i]; each sample
    takes candidate k with probability answer_weights[k]."""
    head = model.lm_head
    position = torch.full((head.vocab,), -1, dtype=torch.long)
    position[head.support] = torch.arange(len(head.support))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = linear_decay(opt, steps)
    generator = torch.Generator().manual_seed(seed)
    targets = [[answer_ids(tok, a) for a in candidates] for candidates in answers]
    weights = torch.tensor(answer_weights, dtype=torch.float)
    model.train()
    head.use_compact = True
    try:
        for _ in range(steps):
            pick = torch.randint(len(problems_), (batch_size,), generator=generator).tolist()
            which = torch.multinomial(weights, batch_size, replacement=True, generator=generator).tolist()
            batch = pack(prompts_of([problems_[i] for i in pick]), [targets[i][k] for i, k in zip(pick, which)], tok.pad_token_id)
            logits = response_logits(model, batch.sequences, batch.attention_mask, batch.response_ids.shape[1])
            logp = torch.log_softmax(logits.float(), -1).gather(-1, position[batch.response_ids].clamp(min=0).unsqueeze(-1))
            mask = batch.response_mask.float()
            loss = -(logp.squeeze(-1) * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    finally:
        head.use_compact = False
        model.eval()


def grpo_advantages(scores: torch.Tensor, group: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's outcome advantages of scores [B] in consecutive groups of `group` samples (group > 1):
    (score - group mean) / (group std + eps), SkyRL's grpo_norm_by_std default. Returns [B]."""
    per_group = scores.view(-1, group)
    return ((per_group - per_group.mean(-1, keepdim=True)) / (per_group.std(-1, keepdim=True) + eps)).flatten()


def outcome_rl_step(world, student, chosen: list[Problem], group: int):
    """GRPO on the task's 0/1 reward: `group` samples of each of len(chosen) // group prompts,
    group-normalized outcome advantages as SkyRL's GRPO estimator computes them, the
    importance_sampling policy loss."""
    chosen = [p for p in chosen[: max(len(chosen) // group, 1)] for _ in range(group)]
    tok = world.student_tok
    prompts = world.prompts(chosen, "student")
    responses = generate(student, tok, prompts, sample=True)
    batch = pack(prompts, responses, tok.pad_token_id)
    mask = batch.response_mask.float()
    correct = torch.tensor([float(completion_text(tok, r) == p.answer) for r, p in zip(responses, chosen)])
    advantages = grpo_advantages(correct, group).unsqueeze(-1) * mask
    logprobs = response_logprobs(student, batch)
    loss = reduce_group_loss(-torch.exp(logprobs - logprobs.detach()) * advantages * mask, mask, world.algorithm.loss_reduction, world.algorithm.max_seq_len)
    return loss, {"outcome/reward": float(correct.mean()), "demo/student_tokens": int(mask.sum())}


def train_method(worlds, method, student, train, eval_set, args, seed, log):
    world = worlds["uld" if method == "loss-uld" else "hybrid"]
    lr = args.pg_lr if method in PG_METHODS else args.lr
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    schedule = linear_decay(opt, args.steps)
    generator = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 2)
    curve = []
    tokens = 0

    def evaluate_at(step):
        e = evaluate(world, student, world.student_tok, "student", eval_set)
        curve.append({"step": step, "student_tokens": tokens, **e})
        log({"seed": seed, "method": method, "step": step, "student_tokens": tokens, **{f"eval/{k}": v for k, v in e.items()}})

    evaluate_at(0)
    start, cpu = time.perf_counter(), time.process_time()
    steps = 0 if method == "student" else args.steps
    for step in range(1, steps + 1):
        chosen = [train[i] for i in torch.randint(len(train), (args.batch_size,), generator=generator).tolist()]
        student.train()
        if method == "sft":
            loss, metrics = sft_step(world, student, chosen)
        elif method == "outcome-rl":
            loss, metrics = outcome_rl_step(world, student, chosen, args.group)
        else:
            loss, metrics = gold_step(world, student, "loss" if method.startswith("loss") else "reward", chosen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), args.max_grad_norm)
        opt.step()
        schedule.step()
        student.eval()
        tokens += metrics["demo/student_tokens"]
        if step % args.eval_every == 0 or step == steps:
            evaluate_at(step)
    return {"curve": curve, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def steps_to_reach(curve: list[dict], accuracy: float) -> int | None:
    """First evaluated step whose accuracy is at least `accuracy` (None if never)."""
    return next((c["step"] for c in curve if c["accuracy"] >= accuracy), None)


class Setting:
    """What every process of the benchmark builds the same way: the real tokenizers, the problems,
    the evaluation set, the two GOLD worlds (hybrid and plain ULD tables) and an untrained teacher."""

    def __init__(self, args):
        teacher_tok = load_tokenizer(TOKENIZERS_DIR / "qwen2.5-instruct")
        student_tok = load_tokenizer(TOKENIZERS_DIR / "llama3.1-instruct")
        self.train = problems(args.operand_max)
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(1234))
        self.eval_set = [self.train[i] for i in order[: args.eval_size].tolist()]
        world = make_world(student_tok, teacher_tok, None, GOLDConfig(hybrid=True), self.train)
        used = sorted({i for ids in world.prompts(self.train, "teacher") for i in ids})
        world.teacher = task_model("qwen2", len(teacher_tok), teacher_support(teacher_tok), used, args, 0)
        world.teacher.eval()
        self.worlds = {"hybrid": world, "uld": replace(world, gold=GOLDConfig(hybrid=False), hybrid=None, teacher_matched=None)}


def seed_job(seed: int, args, teacher_state: dict | None, setting: Setting | None = None) -> tuple[dict, list[dict]]:
    """One seed's runs: the student's warm start, then every method from it. In a process of its own
    (setting None) it builds the setting and loads the trained teacher_state; in the main process it
    uses `setting`, whose teacher is trained. Returns (per-method results, metric records)."""
    torch.set_num_threads(1)
    if setting is None:  # a fresh process: its teacher is untrained until the trained weights arrive
        setting = Setting(args)
        setting.worlds["hybrid"].teacher.load_state_dict(teacher_state)
    records = []
    return run_seed(seed, args, setting.worlds, setting.train, setting.eval_set, records.append, sys.stdout), records


def run_seed(seed, args, worlds, train, eval_set, log, progress) -> dict:
    torch.manual_seed(seed)
    world = worlds["hybrid"]
    tok = world.student_tok
    used = sorted({i for ids in world.prompts(train, "student") for i in ids})
    student0 = task_model("llama", len(tok), student_support(tok), used, args, seed + 100)
    support_fit(
        student0, tok, lambda ps: world.prompts(ps, "student"), train, [[q.answer, str(int(q.answer) + 1)] for q in train],
        args.warm_start_steps, args.lr, args.teacher_batch_size, seed, (args.start_sum_rate, 1 - args.start_sum_rate),
    )
    out = {}
    for method in args.methods:
        out[method] = train_method(worlds, method, copy.deepcopy(student0), train, eval_set, args, seed, log)
        c = out[method]["curve"]
        print(f"seed {seed} {method}: accuracy {c[0]['accuracy']:.2f} -> {c[-1]['accuracy']:.2f} "
              f"({out[method]['seconds']:.0f} s, {out[method]['cpu_seconds']:.0f} s CPU)", file=progress, flush=True)
    return out


def student_support(tok) -> list[int]:
    numbers = [tok(str(n), add_special_tokens=False)["input_ids"] for n in range(1000)]
    assert all(len(ids) == 1 for ids in numbers), "the student tokenizer must write every number below 1000 as one token"
    return [ids[0] for ids in numbers] + [tok.eos_token_id]


def teacher_support(tok) -> list[int]:
    digits = [tok(str(d), add_special_tokens=False)["input_ids"] for d in range(10)]
    assert all(len(ids) == 1 for ids in digits), "the teacher tokenizer must write every digit as one token"
    return [ids[0] for ids in digits] + [tok.eos_token_id]


def summarize(per_seed: dict, teacher_eval: dict, methods) -> dict:
    """Mean and spread (min, max over seeds) of the final accuracy, teacher log-likelihood and
    student tokens of each method; gap closed and steps-to-outcome-RL's-final-accuracy per seed."""
    table = {}
    for method in methods:
        finals = [per_seed[s][method]["curve"][-1] for s in per_seed]
        befores = [per_seed[s][method]["curve"][0] for s in per_seed]
        gaps = [gap_closed(b["accuracy"], f["accuracy"], teacher_eval["accuracy"]) for b, f in zip(befores, finals)]
        row = {
            "accuracy_before": [b["accuracy"] for b in befores],
            "accuracy": [f["accuracy"] for f in finals],
            "teacher_loglik": [f["teacher_loglik"] for f in finals],
            "student_tokens": [f["student_tokens"] for f in finals],
            "gap_closed": gaps,
        }
        if "outcome-rl" in methods:
            rl = [per_seed[s]["outcome-rl"]["curve"] for s in per_seed]
            row["steps_to_outcome_rl_final"] = [
                steps_to_reach(per_seed[s][method]["curve"], r[-1]["accuracy"]) for s, r in zip(per_seed, rl)
            ]
        table[method] = row
    return table


def _stat(values) -> str:
    if any(v is None for v in values):
        return "n/a"
    return f"{statistics.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def markdown(summary: dict) -> str:
    t = summary["teacher"]
    lines = [
        f"teacher accuracy {t['accuracy']:.2f}; mean [min, max] over seeds {summary['seeds']}; "
        f"{summary['steps']} steps x {summary['batch_size']} samples",
        "",
        "| method | accuracy before | accuracy after | gap closed (per seed) | teacher log-lik of answers | student tokens | steps to outcome-RL's final accuracy (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, r in summary["methods"].items():
        gaps = ", ".join("n/a" if g is None else f"{g:.0%}" for g in r["gap_closed"])
        reach = ", ".join("never" if s is None else str(s) for s in r.get("steps_to_outcome_rl_final", []))
        lines.append(
            f"| {method} | {_stat(r['accuracy_before'])} | {_stat(r['accuracy'])} | {gaps} | {_stat(r['teacher_loglik'])} "
            f"| {statistics.mean(r['student_tokens']):.0f} | {reach} |"
        )
    return "\n".join(lines)


def plot(records: list[dict], methods, teacher_accuracy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in zip(axes, ("eval/accuracy", "eval/teacher_loglik"), ("accuracy (greedy, eval set)", "teacher log-likelihood of greedy answers (nats)")):
        for i, method in enumerate(methods):
            seeds = sorted({r["seed"] for r in records if r.get("method") == method})
            for j, seed in enumerate(seeds):
                pts = [(r["step"], r[key]) for r in records if r.get("method") == method and r["seed"] == seed and key in r]
                ax.plot(*zip(*pts), color=f"C{i}", alpha=0.8, marker="o", markersize=2, label=method if j == 0 else None)
        if key == "eval/accuracy":
            ax.axhline(teacher_accuracy, color="gray", linestyle="--", label="teacher")
        ax.set_title(title + " - one line per seed", fontsize=10)
        ax.set_xlabel("step (same student samples per step for every method but sft)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="student samples per step (outcome-rl: prompts x --group)")
    p.add_argument("--group", type=int, default=4, help="outcome-rl: samples per prompt (GRPO group)")
    p.add_argument("--lr", type=float, default=3e-3, help="loss modes, sft, warm start and teacher")
    p.add_argument("--pg-lr", type=float, default=3e-4, help="reward mode and outcome-rl (the demo's reward-mode rate)")
    p.add_argument("--teacher-steps", type=int, default=600)
    p.add_argument("--teacher-batch-size", type=int, default=64)
    p.add_argument("--warm-start-steps", type=int, default=600, help="student's warm start (teacher-independent), --teacher-batch-size a step")
    p.add_argument("--start-sum-rate", type=float, default=0.2, help="student's warm start: share of answers that are the sum (the rest: sum + 1)")
    p.add_argument("--operand-max", type=int, default=9, help="a, b in 0..operand-max")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping of every method's steps (SkyRL's default)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-size", type=int, default=100, help="evaluation problems (greedy answers); 100 = all")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="seeds trained at once, one process each")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learning")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CI test)")
    args = p.parse_args(argv)
    args.methods = tuple(m for m in args.methods.split(",") if m)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"--methods: unknown {sorted(unknown)}; choose from {','.join(METHODS)}")
    if not 0.0 <= args.start_sum_rate <= 1.0:
        p.error(f"--start-sum-rate: {args.start_sum_rate} is not a probability; choose a value in [0, 1]")
    if args.quick:
        # The smallest sizes at which reward mode measurably moves its answers towards the teacher's.
        args.steps, args.eval_every, args.eval_size, args.batch_size, args.group = 20, 10, 16, 16, 4
        args.teacher_steps, args.warm_start_steps, args.teacher_batch_size, args.hidden = 200, 200, 64, 32
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in ("qwen2.5-instruct", "llama3.1-instruct"):
        if not (TOKENIZERS_DIR / name).is_dir():
            sys.exit(f"real tokenizer {name} not found in {TOKENIZERS_DIR} (set GOLD_TOKENIZERS_DIR)")
    wall = time.perf_counter()
    setting = Setting(args)
    train, eval_set, world = setting.train, setting.eval_set, setting.worlds["hybrid"]
    teacher_tok = world.teacher_tok
    support_fit(
        world.teacher, teacher_tok, lambda ps: world.prompts(ps, "teacher"), train, [[q.answer] for q in train],
        args.teacher_steps, args.lr, args.teacher_batch_size, 0,
    )
    teacher_eval = evaluate(world, world.teacher, teacher_tok, "teacher", eval_set)
    print(f"teacher: accuracy {teacher_eval['accuracy']:.2f} ({time.perf_counter() - wall:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    records = [{"method": "teacher", **{f"eval/{k}": v for k, v in teacher_eval.items()}}]
    per_seed = {}
    with (args.out / "metrics.jsonl").open("w") as f, ExitStack() as stack:
        f.write(json.dumps(records[0]) + "\n")
        # Seeds are independent: a process each (single-threaded), args.jobs at a time.
        if min(args.jobs, len(seeds)) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(min(args.jobs, len(seeds)), mp_context=multiprocessing.get_context("spawn")))
            results = pool.map(seed_job, seeds, repeat(args), repeat(world.teacher.state_dict()))
        else:
            results = (seed_job(s, args, None, setting) for s in seeds)
        for seed, (result, seed_records) in zip(seeds, results):
            per_seed[seed] = result
            records += seed_records
            f.writelines(json.dumps(r) + "\n" for r in seed_records)
            f.flush()
    summary = {
        "task": f"a+b= with a, b in 0..{args.operand_max}; teacher Qwen2.5 tokenizer, student Llama 3.1 tokenizer; "
        f"student warm-started on the sum with probability {args.start_sum_rate}, else the sum + 1",
        "teacher": teacher_eval,
        "seeds": seeds,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "methods": summarize(per_seed, teacher_eval, args.methods),
        "curves": {str(s): {m: r["curve"] for m, r in per_seed[s].items()} for s in per_seed},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - wall,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary)
    (args.out / "table.md").write_text(table + "\n")
    plot(records, args.methods, teacher_eval["accuracy"], args.out / "curves.png")
    print(table)
    print(f"total wall time {summary['wall_seconds']:.0f} s; files in {args.out}")
    return summary


if __name__ == "__main__":
    main()
