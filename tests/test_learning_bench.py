"""The learning benchmark (bench/learning.py) at its CI size: the summary's schema, the models'
output support (the student samples only what its distribution allows, over the real
vocabulary), and that the GOLD loss moved the student towards the teacher."""

import importlib.util
import json
import math
import subprocess
import sys
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
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 5, len(tok))
    probs = torch.softmax(logits, -1)
    outside = torch.ones(len(tok), dtype=torch.bool)
    outside[support] = False
    assert float(probs[..., outside].sum()) == 0.0 and torch.allclose(probs.sum(-1), torch.ones(1, 5))
    # compact scores are the same distribution restricted to the support
    model.lm_head.use_compact = True
    with torch.no_grad():
        compact = torch.log_softmax(model(input_ids=ids).logits, -1)
    assert torch.allclose(compact, torch.log_softmax(logits, -1)[..., model.lm_head.support], atol=1e-5)


def test_warm_start_teaches_each_candidate_answer_at_its_weight(learning):
    # The student's start (--start-sum-rate): trained on one problem whose answer is "7" with
    # probability 0.25 and "8" otherwise, its first answer token carries about those probabilities.
    tok = learning.load_tokenizer(TOKENIZERS_DIR / "llama3.1-instruct")
    support = learning.student_support(tok)
    problem = learning.Problem("3+4=", "7")
    prompt = tok.apply_chat_template(problem.messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    args = type("A", (), {"hidden": 32, "layers": 1})()
    model = learning.task_model("llama", len(tok), support, list(prompt), args, seed=0)
    learning.support_fit(model, tok, lambda ps: [list(prompt)] * len(ps), [problem], [["7", "8"]], 150, 3e-3, 256, 0, (0.25, 0.75))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
    seven, eight = (tok(a, add_special_tokens=False)["input_ids"][0] for a in ("7", "8"))
    assert abs(float(probs[seven]) - 0.25) < 0.05 and abs(float(probs[eight]) - 0.75) < 0.05, (float(probs[seven]), float(probs[eight]))


def test_quick_benchmark_schema_and_learning(learning, tmp_path):
    learning.main(["--quick", "--seeds", "0", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| reward |" in (tmp_path / "table.md").read_text()
    assert on_disk.keys() >= {"task", "teacher", "seeds", "steps", "methods", "curves", "config", "wall_seconds"}
    assert on_disk["methods"].keys() == set(learning.METHODS)
    for method, row in on_disk["methods"].items():
        assert row.keys() >= {"accuracy_before", "accuracy", "teacher_loglik", "student_tokens", "gap_closed", "steps_to_outcome_rl_final"}
        assert len(row["accuracy"]) == len(on_disk["seeds"]) == 1
        assert all(math.isfinite(v) and v <= 0 for v in row["teacher_loglik"])
    # Equal student samples per step: every on-policy method generated tokens, sft and the
    # student alone generated none.
    tokens = {m: r["student_tokens"][0] for m, r in on_disk["methods"].items()}
    assert all(tokens[m] > 0 for m in ("reward", "loss-uld", "loss-hybrid", "outcome-rl"))
    assert tokens["sft"] == tokens["student"] == 0
    curves = on_disk["curves"]["0"]
    assert [c["step"] for c in curves["reward"]] == [0, 10, 20] and len(curves["student"]) == 1
    # Learning happened. Reward mode: the teacher's log-likelihood of the student's greedy answers
    # (what its span log-ratio rewards push up) rose, by 0.85 nats when measured. The ULD loss brought
    # the student's group distributions closer to the teacher's (the distance it minimizes).
    reward = curves["reward"]
    assert reward[-1]["teacher_loglik"] > reward[0]["teacher_loglik"] + 0.25, reward
    uld = curves["loss-uld"]
    assert uld[-1]["uld_distance"] < uld[0]["uld_distance"], uld


def test_seeds_in_processes_of_their_own_match_one_process(learning, tmp_path):
    # The command line's default: one spawned process per seed. Seed 0's curves there equal the
    # in-process run's: each seed's randomness is its own, whatever runs beside it.
    learning.main(["--quick", "--seeds", "0", "--methods", "reward,outcome-rl", "--jobs", "1", "--out", str(tmp_path / "one")])
    subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--seeds", "0,1", "--methods", "reward,outcome-rl", "--jobs", "2", "--out", str(tmp_path / "two")],
        check=True, capture_output=True,
    )
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["seeds"] == [0, 1] and two["config"]["jobs"] == 2
    assert two["curves"]["0"] == one["curves"]["0"]
    assert two["curves"]["1"] != two["curves"]["0"]
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert {(r.get("seed"), r["method"]) for r in records} >= {(s, m) for s in (0, 1) for m in ("reward", "outcome-rl")}
