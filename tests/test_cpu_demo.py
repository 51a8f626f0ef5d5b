"""The CPU demo: its built-in tokenizers are of the kinds GOLD supports and decode like HF, and a
shortened run (a few steps of every method) goes through the whole loop and writes its files."""

import json
import math

import numpy as np
import pytest
import torch

from gold_distillation.alignment import decode_with_spans, token_bytes
from gold_distillation.cpu_demo import _DrawNext, main
from gold_distillation.demo_task import (
    all_problems,
    answer_ids,
    byte_level_tokenizer,
    prompt_ids,
    sentencepiece_tokenizer,
    tokenizer_corpus,
)
from gold_distillation.losses import LOG_FLOOR
from gold_distillation.teacher_view import build_teacher_view


@pytest.fixture(scope="module")
def demo_tokenizers():
    return byte_level_tokenizer(), sentencepiece_tokenizer()


def test_tokenizers_are_deterministic_and_different(demo_tokenizers):
    teacher, student = demo_tokenizers
    assert byte_level_tokenizer().get_vocab() == teacher.get_vocab()
    assert sentencepiece_tokenizer().get_vocab() == student.get_vocab()
    assert teacher.eos_token != student.eos_token
    # Different segmentations: the student marks words with "▁", the teacher does not.
    assert teacher.tokenize("What is the sum?") != student.tokenize("What is the sum?")


@pytest.mark.parametrize("side", [0, 1])
def test_token_bytes_decode_like_hf(demo_tokenizers, side):
    tok = demo_tokenizers[side]
    table = token_bytes(tok)
    texts = tokenizer_corpus() + ["ünïcode ✓ 12", "  two  spaces", "15"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert decode_with_spans(table, ids).text == expected == text


def test_answers_align_across_tokenizers(demo_tokenizers):
    teacher, student = demo_tokenizers
    problem = all_problems()[-1]  # 9+9=18
    view = build_teacher_view(answer_ids(student, problem.answer), problem.messages, student, teacher)
    assert view.completion_text == "18"
    assert view.response_ids == answer_ids(teacher, "18")
    # "▁" (zero-width after the leading-space strip) joins "1": groups {▁,1}|{1}, {8}|{8}, EOS|EOS.
    assert view.student_groups.tolist() == [0, 0, 1, 2]
    assert view.teacher_groups.tolist() == [0, 1, 2]
    assert prompt_ids(teacher, [problem])[0][-1] != prompt_ids(student, [problem])[0][-1]


def test_sampler_draws_from_the_softmax_and_never_a_token_of_probability_zero():
    # One row of scores repeated: 6 live tokens (one at -30: allowed, too rare to be drawn here),
    # the rest of a 300-token vocabulary at LOG_FLOOR, as the benchmark's support heads give.
    torch.manual_seed(0)
    live = torch.tensor([3, 17, 18, 90, 250, 299])
    row = torch.full((300,), LOG_FLOOR)
    row[live] = torch.tensor([0.5, -1.0, 2.0, 0.0, -3.0, -30.0])
    n = 50_000
    out = _DrawNext()(None, row.expand(n, -1).contiguous())
    picks = out.argmax(-1)
    assert torch.isin(picks, live).all()
    assert (out.max(-1).values == 0).all() and torch.isinf(out).sum(-1).eq(299).all()
    freq = torch.bincount(picks, minlength=300)[live].double() / n
    p = torch.softmax(row.double(), -1)[live]
    # Within 5 standard errors of each token's probability.
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all(), (freq, p)


def test_quick_run_learns_and_writes_its_files(tmp_path, capsys):
    summary = main(["--quick", "--out", str(tmp_path)])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk.keys() >= {"task", "teacher", "methods", "config", "wall_seconds"}
    assert on_disk["methods"].keys() == {"reward", "loss", "sft"}
    assert on_disk["teacher"]["accuracy"] >= 0.9

    steps = summary["config"]["steps"]
    for method in ("reward", "loss", "sft"):
        res = on_disk["methods"][method]
        assert res.keys() >= {"before", "after", "gap_closed", "seconds"}
        assert res["before"].keys() == res["after"].keys() >= {"accuracy", "teacher_loglik"}
        rows = [r for r in records if r["method"] == method]
        assert [r["step"] for r in rows] == list(range(steps + 1))
        for row in rows:
            values = [v for v in row.values() if isinstance(v, float)]
            assert values and all(math.isfinite(v) for v in values), row
        trained = [r for r in rows if r["step"] > 0]
        assert all("loss" in r for r in trained)
        if method != "sft":
            # The GOLD signal went through the teacher payload: log-ratios (and, for the loss,
            # ULD distances; reward mode does not compute the loss).
            assert all("gold/sequence_log_ratio" in r for r in trained)
            assert all(("gold/uld_distance" in r) == (method == "loss") for r in trained)
            assert all(r["gold/uld_distance"] >= 0 for r in trained if method == "loss")
        # Learning happened: more problems answered, and the teacher likes the student's greedy
        # answers better than before.
        assert res["after"]["accuracy"] > res["before"]["accuracy"], (method, res)
        assert res["after"]["teacher_loglik"] > res["before"]["teacher_loglik"], (method, res)
    # Not a terminal: no progress bar redraws, one line per evaluation.
    out = capsys.readouterr()
    assert "\r" not in out.err and out.out.count("reward step") == steps // summary["config"]["eval_every"]
