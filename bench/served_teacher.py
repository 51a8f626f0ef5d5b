"""What a served teacher adds to a reward step: one batch of teacher views scored over HTTP.

Usage (repository root): `.venv/bin/python bench/served_teacher.py [--responses 256 --tokens 1024]`.
A local stand-in of vLLM's API (tests/vllm_standin.py) runs in a subprocess and answers with
precomputed log-probs, so no model forward is timed: the wall time is the transport (requests,
JSON on both ends) of a batch, and the driver's CPU time (this process only) is the client's own
cost per token. Real teacher views: the teacher tokenizer's chat-template prompt + 1024 teacher
tokens of the mixed corpus per response. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import torch

from common import corpus_text
from gold_distillation.gold_setup import load_tokenizer
from gold_distillation.served_teacher import ServedTeacher, response_logprobs
from gold_distillation.teacher_view import render_prompt
from gold_distillation.tests.vllm_standin import precomputed_logprobs

BENCH = Path(__file__).resolve().parent
TOKENIZERS = Path(os.environ.get("GOLD_TOKENIZERS", BENCH.parent.parent / "shared" / "tokenizers"))


def start_server(tokenizer_path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gold_distillation.tests.vllm_standin", "--tokenizer", str(tokenizer_path)],
        stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise SystemExit(f"the vLLM stand-in did not start (said {line!r})")
    return process, f"http://127.0.0.1:{int(line.split()[1])}"


def teacher_views(tokenizer, n: int, length: int) -> list[SimpleNamespace]:
    """n views: one rendered prompt + `length` corpus tokens each, every view a different slice."""
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "Continue the document."}])
    ids = tokenizer(corpus_text(8 * (length + 7 * n)), add_special_tokens=False)["input_ids"]
    if len(ids) < length + 7 * n:
        raise SystemExit("corpus too short for the requested sizes")
    return [SimpleNamespace(prompt_ids=prompt, response_ids=ids[7 * i : 7 * i + length]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="qwen2.5-instruct", help="tokenizer folder name under ../shared/tokenizers")
    parser.add_argument("--responses", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=1024, help="teacher response tokens per view")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)

    tokenizer = load_tokenizer(str(TOKENIZERS / args.teacher))
    views = teacher_views(tokenizer, args.responses, args.tokens)
    n_tokens = sum(len(v.response_ids) for v in views)
    groups = torch.arange(args.tokens).expand(args.responses, args.tokens)  # one group per token
    server, url = start_server(TOKENIZERS / args.teacher)
    try:
        teacher = ServedTeacher(url, tokenizer, concurrency=args.concurrency, max_teacher_length=len(views[0].prompt_ids) + args.tokens)
        teacher.check()
        walls, cpus = [], []
        for _ in range(args.reps):
            wall, cpu = time.perf_counter(), time.process_time()
            payload = teacher.span_logprobs_for(views, groups, args.tokens)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        # The answers were read right: spans equal the server's precomputed log-probs.
        expected = torch.stack([precomputed_logprobs(torch.tensor(v.response_ids)) for v in views]).float()
        torch.testing.assert_close(payload["teacher_span_logprobs"], expected, atol=1e-6, rtol=0)

        # The client's parsing alone, on one answer: JSON decoding and response_logprobs.
        ids = views[0].prompt_ids + views[0].response_ids
        body = json.dumps({"model": teacher.model_name, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}).encode()
        request = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
        text = urllib.request.urlopen(request).read()
        start = time.process_time()
        for _ in range(20):
            response_logprobs(json.loads(text), ids, len(views[0].prompt_ids), url)
        parse_us = (time.process_time() - start) / 20 / len(ids) * 1e6
    finally:
        server.terminate()
        server.wait(timeout=30)
    record = {
        "bench": "served_teacher", "teacher_tokenizer": args.teacher, "responses": args.responses,
        "response_tokens": args.tokens, "prompt_tokens": len(views[0].prompt_ids), "concurrency": args.concurrency,
        "reps": args.reps, "wall_s_median": statistics.median(walls), "wall_s_all": walls,
        "driver_cpu_s_median": statistics.median(cpus),
        "driver_cpu_us_per_response_token": statistics.median(cpus) / n_tokens * 1e6,
        "parse_cpu_us_per_sent_token": parse_us, "answer_bytes_per_token": len(text) / len(ids),
        "requests": teacher.metrics["gold/teacher_requests"], "retries": teacher.metrics["gold/teacher_retries"],
        "note": "stand-in server with precomputed log-probs in a subprocess: no teacher forward is timed",
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
