"""The served teacher (served_teacher.py) against a real local HTTP stand-in of vLLM's API
(tests/vllm_standin.py): same rewards as the GOLD ref worker, and every bad answer an error."""

import asyncio
import dataclasses
import socket

import pytest
import torch

from gold_distillation.config import GOLDConfig, validate_gold_config
from gold_distillation.losses import span_logprobs, span_rewards
from gold_distillation.served_teacher import ServedTeacher, ServedTeacherError
from gold_distillation.teacher_view import build_teacher_views, collate_views

from .conftest import tiny_model
from .rollouts import PROMPTS, generator_output
from .vllm_standin import StandInVLLM

PAIRS = {"llama->qwen": ("llama3.1-instruct", "qwen2.5-instruct", "qwen2"),
         "qwen->llama": ("qwen2.5-instruct", "llama3.1-instruct", "llama")}  # student, teacher, teacher family


@pytest.fixture(scope="module")
def qwen_server(tokenizers):
    """A stand-in vLLM with the Qwen tokenizer and precomputed log-probs (fast answers, so that
    only the "slow" fault hits the client's timeout); stopped whatever the tests do."""
    server = StandInVLLM(tokenizers["qwen2.5-instruct"], None, slow_seconds=1.5).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(qwen_server):
    qwen_server.faults.clear()
    yield qwen_server
    qwen_server.faults.clear()


# Chinese text: Llama 3 cuts it finer than Qwen, so a Llama teacher also has multi-token groups.
CHINESE = ([{"role": "user", "content": "Describe the weather in Chinese."}], "今天天气很好，我们去公园散步。")


def views_for(tokenizers, student_name, teacher_name, max_teacher_length=None):
    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    chinese = s_tok(CHINESE[1], add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id]
    responses = generator_output(s_tok)["response_ids"] + [chinese]
    views = build_teacher_views(responses, PROMPTS + [CHINESE[0]], s_tok, t_tok, max_teacher_length=max_teacher_length)
    return views, collate_views(views, t_tok.pad_token_id or 0)


def client(server, tok, **kwargs):
    settings = dict(max_teacher_length=1024, backoff=0.01) | kwargs
    return ServedTeacher(server.url, tok, **settings)


# ---------------------------------------------------------------------------- same rewards as the ref worker
@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_served_span_logprobs_and_rewards_equal_the_ref_worker_path(tokenizers, pair, truncate):
    from gold_distillation.gold_steps import teacher_forward

    from .skyrl_versions import skyrl  # the ref worker's teacher pass: the installed SkyRL's model wrapper and batch

    student_name, teacher_name, family = PAIRS[pair]
    t_tok = tokenizers[teacher_name]
    # float64: a padded batch (ref worker) and one unpadded sequence (server) round differently in
    # float32 (1e-6 relative, measured); in float64 the comparison sees the transport and span code only.
    teacher = tiny_model(family, len(t_tok), seed=11).double()
    views, collated = views_for(tokenizers, student_name, teacher_name)
    assert any(len(v.response_ids) > v.num_groups for v in views)  # multi-token groups are summed
    if truncate:  # cut every response a few tokens in: cut groups must be masked on both paths
        limit = max(len(v.prompt_ids) for v in views) + 6
        views, collated = views_for(tokenizers, student_name, teacher_name, limit)
        assert all(v.truncated for v in views) and all(v.response_ids for v in views)

    batch = skyrl.TrainingInputBatch({
        "teacher_sequences": collated.sequences, "teacher_attention_mask": collated.attention_mask,
        "teacher_group_ids": collated.teacher_group_ids,
    })
    batch.metadata = {"gold_num_groups": collated.num_groups}
    with torch.no_grad():
        expected = teacher_forward(skyrl.wrap(teacher), batch, GOLDConfig())

    with StandInVLLM(t_tok, teacher) as server:
        served = client(server, t_tok)
        served.check()
        payload = served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)
    assert set(payload) == set(expected)
    assert torch.equal(payload["teacher_group_mask"], expected["teacher_group_mask"])
    torch.testing.assert_close(payload["teacher_span_logprobs"], expected["teacher_span_logprobs"], atol=1e-5, rtol=0)
    # The rewards of the reward step, from each side's spans against the same student spans.
    student_spans = span_logprobs(-torch.rand(collated.student_group_ids.shape), collated.student_group_ids, collated.num_groups)
    torch.testing.assert_close(
        span_rewards(student_spans, payload["teacher_span_logprobs"], collated.student_group_ids),
        span_rewards(student_spans, expected["teacher_span_logprobs"], collated.student_group_ids), atol=1e-5, rtol=0,
    )
    assert served.metrics["gold/teacher_requests"] == sum(bool(v.response_ids) for v in views)
    assert served.metrics["gold/teacher_retries"] == 0 and served.metrics["gold/teacher_seconds"] > 0


def test_sync_call_works_inside_a_running_event_loop(server, tokenizers):
    """SkyRL 0.4.0's trainer step is async: the synchronous API must not call asyncio.run on its loop."""
    views, collated = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    served = client(server, tokenizers["qwen2.5-instruct"])
    plain = served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)

    async def inside():
        return served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)

    assert torch.equal(asyncio.run(inside())["teacher_span_logprobs"], plain["teacher_span_logprobs"])


def test_a_round_scores_views_sent_one_by_one_as_the_batch_call_does(server, tokenizers):
    """A trainer sends each view as its rollout returns, from the generator's event loop, and
    collects the batch later: the same log-probs as one batch call; a bad answer fails the round."""
    views, collated = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    served = client(server, tokenizers["qwen2.5-instruct"])
    plain = served.token_logprobs(views)
    scoring = served.begin()

    async def rollouts_return():  # out of order, each from a task of a running loop
        async def rollout(row):
            await asyncio.sleep(0.01 * (len(views) - row))
            scoring.send(row, views[row])
        await asyncio.gather(*(rollout(row) for row in range(len(views))))

    asyncio.run(rollouts_return())
    assert all(torch.equal(a, b) for a, b in zip(scoring.token_logprobs(len(views)), plain))
    assert served.metrics["gold/teacher_requests"] == len(views) and served.metrics["gold/teacher_wait_seconds"] >= 0
    scoring = served.begin()
    for row, view in enumerate(views[:-1]):
        scoring.send(row, view)
    with pytest.raises(ValueError, match=f"rows \\[{len(views) - 1}\\] .* never sent"):
        scoring.token_logprobs(len(views))
    server.faults[:] = ["nan"]
    scoring = served.begin()
    for row, view in enumerate(views):
        scoring.send(row, view)
    with pytest.raises(ServedTeacherError, match="non-finite"):
        scoring.token_logprobs(len(views))


def test_a_step_resends_a_rollout_the_generator_changed_after_reporting_it(server, tokenizers):
    """ServedTeacherStep: rows reported as their rollouts return are not sent again when the batch
    holds the same inputs; a row whose inputs changed after the report (SkyRL's generate may rewrite a
    rollout after its agent loop) is sent again, and rows never reported are sent with the batch. The
    log-probs are those of the batch's own views (gold_steps.teacher_views, the ref-worker path's)."""
    from gold_distillation.gold_steps import served_teacher_step, teacher_views

    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    gold = dataclasses.replace(GOLDConfig(), teacher_backend="served", teacher_url=server.url, max_teacher_length=2048)
    step = served_teacher_step(gold, s_tok, t_tok, same_vocab=False)
    out = generator_output(s_tok)
    responses, prompt_ids = out["response_ids"], out["prompt_token_ids"]
    masks = [[1] * len(r) for r in responses]
    step.begin()
    step.rollout_done(0, PROMPTS[0], [], prompt_ids[0], responses[0], masks[0])
    step.rollout_done(1, PROMPTS[1], [], prompt_ids[1], responses[1][:-3], masks[1][:-3])  # cut later
    reported = dict(step.round.futures)
    views = step.batch_views(responses, masks, PROMPTS, [[] for _ in responses], prompt_ids)
    assert step.round.futures[0] is reported[0] and step.round.futures[1] is not reported[1]
    assert sorted(step.round.futures) == list(range(len(responses)))
    expected = teacher_views(responses, masks, PROMPTS, None, s_tok, t_tok, gold)
    assert [v.prompt_ids + v.response_ids for v in views] == [v.prompt_ids + v.response_ids for v in expected]
    plain = client(server, t_tok).token_logprobs(expected)
    got = step.round.token_logprobs(len(responses))
    assert all(torch.equal(a, b) for a, b in zip(got, plain))
    assert step.teacher.metrics["gold/teacher_requests"] == len(responses) + 1  # row 1 twice


# ---------------------------------------------------------------------------- faults
def test_transient_errors_are_retried_and_give_the_clean_answer(server, tokenizers):
    views, collated = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    served = client(server, tokenizers["qwen2.5-instruct"], timeout=0.5, retries=3)
    clean = served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)
    for faults, retries in ((["503", "503"], 2), (["slow"], 1), (["503", "slow", "503"], 3)):
        server.faults[:] = faults
        again = served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)
        assert torch.equal(again["teacher_span_logprobs"], clean["teacher_span_logprobs"]), faults
        assert served.metrics["gold/teacher_retries"] == retries, faults
        assert not server.faults


@pytest.mark.parametrize("fault,setting", [("503", "gold.teacher_retries"), ("slow", "gold.teacher_timeout")])
def test_transient_errors_past_the_retries_fail_naming_the_settings(server, tokenizers, fault, setting):
    views, collated = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    served = client(server, tokenizers["qwen2.5-instruct"], timeout=0.5, retries=1)
    server.faults[:] = [fault] * 2
    with pytest.raises(ServedTeacherError, match=setting) as err:
        served.span_logprobs_for(views[:1], collated.teacher_group_ids[:1], collated.num_groups)
    assert "failed 2 times" in str(err.value)


@pytest.mark.parametrize(
    "fault,message",
    [
        ("malformed", "malformed JSON"),
        ("missing", "no choices\\[0\\].prompt_logprobs"),
        ("short", "prompt log-probs for"),
        ("long", "prompt log-probs for"),
        ("nan", "non-finite log-prob nan"),
        ("wrong_key", "without the sent token's entry"),
    ],
)
def test_a_bad_answer_fails_the_whole_batch_with_a_clear_error(server, tokenizers, fault, message):
    views, collated = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    served = client(server, tokenizers["qwen2.5-instruct"])
    served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)
    before = dict(served.metrics)
    # One bad answer among the batch's requests: no payload at all, not a payload with a bad row.
    server.faults[:] = [fault]
    with pytest.raises(ServedTeacherError, match=message) as err:
        served.span_logprobs_for(views, collated.teacher_group_ids, collated.num_groups)
    assert "gold.teacher_url" in str(err.value)
    assert served.metrics == before
    assert not server.faults


def test_unknown_model_name_fails_at_start_up_and_per_request(server, tokenizers):
    tok = tokenizers["qwen2.5-instruct"]
    with pytest.raises(ServedTeacherError, match="gold.teacher_model_name='Qwen/other' is not served") as err:
        client(server, tok, model_name="Qwen/other").check()
    assert "['teacher']" in str(err.value)
    # Past the start-up check (model_name set, no /v1/models listing): vLLM's 404 names the model.
    views, _ = views_for(tokenizers, "llama3.1-instruct", "qwen2.5-instruct")
    with pytest.raises(ServedTeacherError, match="does not serve model 'Qwen/other'.*gold.teacher_model_name"):
        client(server, tok, model_name="Qwen/other").token_logprobs(views)


def test_wrong_urls_fail_naming_gold_teacher_url(server, tokenizers):
    tok = tokenizers["qwen2.5-instruct"]
    with pytest.raises(ServedTeacherError, match="no /v1/models at gold.teacher_url=.*/api.*HTTP 404"):
        ServedTeacher(server.url + "/api", tok, max_teacher_length=1024).check()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ServedTeacherError, match="gold.teacher_url=http://127.0.0.1:.* is a running vLLM server") as err:
        ServedTeacher(f"http://127.0.0.1:{closed}", tok, retries=2, backoff=0.01, max_teacher_length=1024).check()
    assert "failed 3 times" in str(err.value)
    gold = dataclasses.replace(GOLDConfig(), teacher_backend="served", teacher_url=server.url + "/v1")
    with pytest.raises(ValueError, match="gold.teacher_url: .*/v1' ends in an API path"):
        ServedTeacher.from_config(gold, tok)


def test_a_server_with_another_tokenizer_fails_the_start_up_check(tokenizers):
    """The server's model scores Qwen ids, but its tokenizer is Llama's: every reward would be wrong."""
    qwen, llama = tokenizers["qwen2.5-instruct"], tokenizers["llama3.1-instruct"]
    with StandInVLLM(llama, tiny_model("qwen2", len(qwen), seed=4)) as server:
        with pytest.raises(ServedTeacherError, match="spells token id .*trainer.ref.model.path") as err:
            client(server, qwen).check()
    assert "different tokenizers" in str(err.value)


def test_a_teacher_context_longer_than_the_server_accepts_fails_at_start_up(tokenizers):
    tok = tokenizers["qwen2.5-instruct"]
    with StandInVLLM(tok, None, max_model_len=512) as server:
        for length in (None, 600):
            with pytest.raises(ServedTeacherError, match=f"gold.max_teacher_length={length} .* at most 511"):
                client(server, tok, max_teacher_length=length).check()
        client(server, tok, max_teacher_length=511).check()


def test_from_config_resolves_the_single_served_model(server, tokenizers):
    gold = dataclasses.replace(GOLDConfig(), teacher_backend="served", teacher_url=server.url, max_teacher_length=2048)
    served = ServedTeacher.from_config(gold, tokenizers["qwen2.5-instruct"])
    assert served.model_name == "teacher" and served.url == server.url
    assert (served.concurrency, served.timeout, served.retries) == (gold.teacher_concurrency, gold.teacher_timeout, gold.teacher_retries)


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "changes,key",
    [
        (dict(teacher_backend="vllm"), "gold.teacher_backend"),
        (dict(teacher_backend="served"), "gold.teacher_url"),
        (dict(teacher_backend="served", teacher_url="localhost:8000"), "gold.teacher_url"),
        (dict(teacher_backend="served", teacher_url="http://h:8000/v1/"), "gold.teacher_url"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", mode="loss"), "gold.teacher_backend"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", uld_reward_coef=0.1), "gold.teacher_backend"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", teacher_temperature=0.7), "gold.teacher_temperature"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", teacher_concurrency=0), "gold.teacher_concurrency"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", teacher_timeout=0), "gold.teacher_timeout"),
        (dict(teacher_backend="served", teacher_url="http://h:8000", teacher_retries=-1), "gold.teacher_retries"),
    ],
)
def test_served_teacher_settings_are_validated_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + ":.*Fix: ") as err:
        validate_gold_config(dataclasses.replace(GOLDConfig(), **changes))
    if "mode" in changes or "uld_reward_coef" in changes:
        assert "gold.mode" in str(err.value) and "gold.uld_reward_coef" in str(err.value)


def test_served_teacher_settings_compose_through_the_run_config():
    from .skyrl_versions import skyrl
    from .standins import LLAMA, QWEN

    cfg = skyrl.gold_cfg(LLAMA, QWEN, "gold.teacher_backend=served", "gold.teacher_url=http://h:8000", "gold.teacher_concurrency=8")
    validate_gold_config(cfg.gold)
    assert (cfg.gold.teacher_backend, cfg.gold.teacher_url, cfg.gold.teacher_concurrency) == ("served", "http://h:8000", 8)
    assert GOLDConfig().teacher_backend == "ref_worker"
