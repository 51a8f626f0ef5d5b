"""Helpers shared by our side (run.py, project venv) and the peer runner (TRL venvs): the corpus,
the synthetic logits, timing and peak memory. Only the standard library and torch, so both
environments import it and build bit-identical inputs from the same seed."""

from __future__ import annotations

import resource
import statistics
import time

import torch

# One paragraph per kind of text; the corpus cycles through them with a running index so no two
# paragraphs are equal (a tokenizer's cache cannot make repeats free).
_PARAGRAPHS = (
    "Paragraph {i}. The committee met on Tuesday to review the proposal; after a long discussion about "
    "costs, schedules and the risks nobody had priced in, it voted 7 to 2 to fund a smaller pilot first. "
    "\"We'd rather learn cheaply,\" said the chair, \"than fail expensively.\"\n\n",
    "```python\ndef moving_average_{i}(xs: list[float], window: int = {w}) -> list[float]:\n"
    "    if window <= 0:\n        raise ValueError(f\"window must be positive, got {{window}}\")\n"
    "    out, acc = [], 0.0\n    for k, x in enumerate(xs):\n        acc += x\n"
    "        if k >= window:\n            acc -= xs[k - window]\n"
    "        out.append(acc / min(k + 1, window))\n    return out\n```\n\n",
    "By Stokes' theorem, $\\oint_{{\\partial \\Sigma}} \\mathbf{{F}} \\cdot d\\mathbf{{r}} = "
    "\\iint_\\Sigma (\\nabla \\times \\mathbf{{F}}) \\cdot d\\mathbf{{S}}$, and for $n = {i}$ we get "
    "$$\\sum_{{k=1}}^{{n}} k^2 = \\frac{{n(n+1)(2n+1)}}{{6}} = {sq}.$$\n\n",
    "Ledger {i}: 3.14159265358979 x {w} = {prod:.6f}; balance -1,234,567.89 -> +{i}0,000.05 "
    "(rate 0.0425%, id 0x{i:04X}FF, 2024-03-{d:02d}T12:{d:02d}:00Z).\n\n",
    "Reactions 🎉🔥👍🏽 to post #{i}: 👨‍👩‍👧‍👦 family, 🇯🇵 🇫🇷 flags, ❤️‍🔥 and 🧑🏻‍💻 — "
    "\"so good 😂😂\" ✨.\n\n",
    "第{i}章：今天天气很好，我们去公园散步。東京の春は桜がとても綺麗です。"
    "한국어 문장도 섞여 있습니다. 数字 {w} と記号「」も。\n\n",
)


def corpus_text(n_chars: int) -> str:
    """A deterministic mixed text (prose, code, LaTeX, numbers, emoji, CJK) of at least n_chars."""
    parts, size, i = [], 0, 0
    while size < n_chars:
        w = 3 + i % 17
        para = _PARAGRAPHS[i % len(_PARAGRAPHS)].format(
            i=i, w=w, sq=i * (i + 1) * (2 * i + 1) // 6, prod=3.14159265358979 * w, d=1 + i % 28
        )
        parts.append(para)
        size += len(para)
        i += 1
    return "".join(parts)


def zipf_logits(
    rows: int, vocab: int, seed: int, favored: list[int] | None = None, requires_grad: bool = False
) -> torch.Tensor:
    """Peaked, LLM-like logits [rows, vocab] (float32): row r ranks the vocabulary by a random
    cyclic shift of one shared permutation and gives rank j the logit -s_r * log(j + 1) plus small
    noise, with a Zipf exponent s_r drawn uniformly in [1.2, 2.5] per row (most mass on a few
    dozen entries, a long thin tail). favored[r]: the token row r predicts (a sampled response
    token) gets the row's top logit, as it would on-policy. Bit-identical for the same seed and
    torch build."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(vocab, generator=g)
    logits = torch.empty(rows, vocab)
    # Built in row chunks so no full-size temporary raises the process's peak memory before the
    # measured work starts (peak memory is read as a high-water mark).
    for lo in range(0, rows, 32):
        n = min(32, rows - lo)
        shift = torch.randint(0, vocab, (n, 1), generator=g)
        exponent = 1.2 + 1.3 * torch.rand(n, 1, generator=g)
        ranks = (perm.unsqueeze(0) + shift) % vocab
        logits[lo : lo + n] = -exponent * torch.log1p(ranks.float()) + 0.3 * torch.randn(n, vocab, generator=g)
    if favored:
        rows_idx = torch.arange(len(favored))
        logits[rows_idx, torch.tensor(favored)] = logits[: len(favored)].amax(-1) + 0.5
    return logits.requires_grad_(requires_grad)


def checksum(t: torch.Tensor) -> float:
    """A cheap fingerprint to prove both sides got the same tensor."""
    t = t.detach().double()
    return float(t.sum() + (t[:, :7] * 1.618).sum())


def time_call(fn, min_reps: int = 3, min_seconds: float = 0.5, max_reps: int = 50) -> tuple[float, int]:
    """Median seconds of fn() over at least min_reps calls and min_seconds in total."""
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
