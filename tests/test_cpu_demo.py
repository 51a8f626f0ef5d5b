"""The CPU demo: its built-in tokenizers are of the kinds GOLD supports and decode like HF, and a
shortened run (a few steps of every method) goes through the whole loop and writes its files."""

import json
import math

import numpy as np
import pytest

from gold_distillation.alignment import decode_with_spans, token_bytes
from gold_distillation.cpu_demo import main
from gold_distillation.demo_task import (
    all_problems,
    answer_ids,
    byte_level_tokenizer,
    prompt_ids,
    sentencepiece_tokenizer,
    tokenizer_corpus,
)
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


def test_quick_run_writes_finite_metrics(tmp_path):
    summary = main(["--quick", "--out", str(tmp_path)])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["methods"].keys() == {"reward", "loss", "sft"}

    steps = summary["config"]["steps"]
    for method in ("reward", "loss", "sft"):
        rows = [r for r in records if r["method"] == method]
        assert [r["step"] for r in rows] == list(range(steps + 1))
        for r in rows:
            values = [v for v in r.values() if isinstance(v, float)]
            assert values and all(math.isfinite(v) for v in values), r
        trained = [r for r in rows if r["step"] > 0]
        assert all("loss" in r for r in trained)
        if method != "sft":
            # The GOLD signal went through the teacher payload: span log-ratios and ULD distances.
            assert all("gold/span_log_ratio" in r and r["gold/uld_distance"] >= 0 for r in trained)
        after = summary["methods"][method]["after"]
        assert 0.0 <= after["accuracy"] <= 1.0 and after["teacher_loglik"] <= 0.0
    teacher = [r for r in records if r["method"] == "teacher"]
    assert len(teacher) == 1 and np.isfinite(teacher[0]["eval/teacher_loglik"])
