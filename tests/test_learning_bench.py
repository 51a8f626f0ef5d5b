"""The learning benchmark (bench/learning.py) at its CI size: the summary's schema, the models'
output support (the student samples only what its distribution allows, over the real
vocabulary), and that the GOLD loss moved the student towards the teacher."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import TOKENIZERS_DIR

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    for name in ("qwen2.5-instruct", "llama3.1-instruct"):
        if not (TOKENIZERS_DIR / name).is_dir():
            pytest.skip(f"real tokenizer {name!r} not found at {TOKENIZERS_DIR} (set GOLD_TOKENIZERS_DIR)")
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_support_head_is_the_full_vocabulary_distribution(learning, tokenizers):
    tok = tokenizers["llama3.1-instruct"]
    support = learning.student_support(tok)
    args = type("A", (), {"hidden": 32, "layers": 1})()
    model = learning.task_model("llama", len(tok), support, [1, 2, 3], args, seed=0)
    ids = torch.tensor([[1, 2, 3, 5, 7]])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, 5, len(tok))
    probs = torch.softmax(logits, -1)
    outside = torch.ones(len(tok), dtype=torch.bool)
    outside[support] = False
    assert float(probs[..., outside].sum()) == 0.0 and torch.allclose(probs.sum(-1), torch.ones(1, 5))
    # compact scores are the same distribution restricted to the support
    model.lm_head.use_compact = True
    compact = torch.log_softmax(model(input_ids=ids).logits, -1)
    assert torch.allclose(compact, torch.log_softmax(logits, -1)[..., model.lm_head.support], atol=1e-5)


def test_quick_benchmark_schema_and_learning(learning, tmp_path):
    learning.main(["--quick", "--seeds", "0,1", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| reward |" in (tmp_path / "table.md").read_text()
    assert on_disk["methods"].keys() == set(learning.METHODS)
    for method, row in on_disk["methods"].items():
        assert row.keys() >= {"accuracy_before", "accuracy", "teacher_loglik", "student_tokens", "gap_closed"}
        assert len(row["accuracy"]) == len(on_disk["seeds"]) == 2
        assert all(math.isfinite(v) and v <= 0 for v in row["teacher_loglik"])
    # Equal student samples per step: every on-policy method generated tokens, sft and the
    # student alone generated none.
    tokens = {m: r["student_tokens"] for m, r in on_disk["methods"].items()}
    assert all(t > 0 for m in ("reward", "loss-uld", "loss-hybrid", "outcome-rl") for t in tokens[m])
    assert tokens["sft"] == tokens["student"] == [0, 0]
    # Learning happened: the hybrid GOLD loss raised the teacher's log-likelihood of the student's
    # greedy answers on every seed, and the untrained student did not move.
    for seed in ("0", "1"):
        curves = on_disk["curves"][seed]
        hybrid = curves["loss-hybrid"]
        assert hybrid[-1]["teacher_loglik"] > hybrid[0]["teacher_loglik"], hybrid
        assert len(curves["student"]) == 1
