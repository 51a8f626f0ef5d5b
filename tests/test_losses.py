"""GOLD mathematics (GOLD.md sections 4-6): span log-likelihoods, rewards, merges, ULD, JSD, hybrid."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gold_distillation.alignment import token_bytes, vocab_map
from gold_distillation.gold_forward import HybridTables, group_measures, response_logits, student_gold_loss, teacher_payload
from gold_distillation.losses import (
    compress_teacher_groups,
    descending_order,
    generalized_jsd,
    hybrid_loss,
    merge_groups,
    place_group_values,
    sorted_l1,
    sorted_l1_from_top,
    sort_descending,
    span_rewards,
    uld_loss,
)
from gold_distillation.teacher_view import build_teacher_views, collate_views

from .corpus import CORPUS
from .test_alignment import MID_TEXT_SPECIALS, mid_text_special_response


def random_logm(m, v, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(m, v, generator=g) * scale, dim=-1)


def teacher_batch(tokenizers, student="llama3.1-instruct", teacher="qwen2.5-instruct", texts=("prose", "code", "emoji")):
    s_tok, t_tok = tokenizers[student], tokenizers[teacher]
    responses = [s_tok(CORPUS[k], add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id] for k in texts]
    prompts = [[{"role": "user", "content": f"Write some {k}."}] for k in texts]
    views = build_teacher_views(responses, prompts, s_tok, t_tok)
    return responses, views, collate_views(views, pad_token_id=0)


def test_span_logprob_equals_brute_force_chain_rule(tokenizers, tiny_qwen):
    _, views, batch = teacher_batch(tokenizers)
    r = batch.teacher_group_ids.shape[1]
    with torch.no_grad():
        logits = response_logits(tiny_qwen, batch.sequences, batch.attention_mask, r)
        measures = group_measures(logits, batch.sequences[:, -r:], batch.teacher_group_ids, batch.num_groups, merge=None)
        for i, view in enumerate(views[:2]):
            full = view.prompt_ids + view.response_ids
            token_lp = []
            for j in range(len(view.prompt_ids), len(full)):
                # Unpadded, one prefix at a time: log p(token_j | tokens before j).
                row = tiny_qwen(input_ids=torch.tensor([full[:j]])).logits[0, -1]
                token_lp.append(torch.log_softmax(row.float(), -1)[full[j]])
            token_lp = torch.stack(token_lp)
            for g in range(view.num_groups):
                expected = token_lp[torch.from_numpy(view.teacher_groups == g)].sum()
                torch.testing.assert_close(measures.span_logprob[i, g], expected, atol=2e-4, rtol=1e-5)


def test_same_tokenizer_rewards_equal_negative_logprob_difference(tokenizers, tiny_llama):
    responses, views, batch = teacher_batch(tokenizers, "llama3.1-instruct", "llama3.1-instruct")
    r = batch.teacher_group_ids.shape[1]
    with torch.no_grad():
        t_logits = response_logits(tiny_llama, batch.sequences, batch.attention_mask, r)
        s_logits = t_logits * 0.7 + 0.3 * torch.randn_like(t_logits)  # any other model of the same vocabulary
    ids = batch.sequences[:, -r:]
    t_meas = group_measures(t_logits, ids, batch.teacher_group_ids, batch.num_groups, merge=None)
    s_meas = group_measures(s_logits, ids, batch.student_group_ids, batch.num_groups, merge=None)
    rewards = span_rewards(s_meas.span_logprob, t_meas.span_logprob, batch.student_group_ids)
    expected = -(s_meas.token_logprobs - t_meas.token_logprobs) * (batch.student_group_ids >= 0)
    torch.testing.assert_close(rewards, expected, atol=0, rtol=0)


def test_every_token_of_a_group_carries_its_value():
    group_ids = torch.tensor([[0, 0, 1, 2, 2, 2, -1], [0, 1, 1, 1, -1, -1, -1]])
    values = torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, 0.0]])
    assert place_group_values(values, group_ids).tolist() == [[1.0, 1.0, -2.0, 3.0, 3.0, 3.0, 0], [0.5, 4.0, 4.0, 4.0, 0, 0, 0]]


def student_batch(prompt_ids, responses, pad_id=0):
    """Prompt + response rows (one shared prompt), right-padded: (sequences [B, P + R], attention
    mask, response ids [B, R], response width R)."""
    width = max(len(r) for r in responses)
    seq = torch.full((len(responses), len(prompt_ids) + width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(seq)
    for i, r in enumerate(responses):
        seq[i, : len(prompt_ids) + len(r)] = torch.tensor(list(prompt_ids) + list(r))
        attn[i, : len(prompt_ids) + len(r)] = 1
    return seq, attn, seq[:, len(prompt_ids) :], width


def group_rewards(student_model, teacher_model, s_tok, t_tok, responses, prompt="Say something."):
    """Views, student token log-probs [B, R] (with gradient), span deltas [B, G], rewards [B, R]
    and the student response mask, through the functions reward mode runs."""
    views = build_teacher_views(responses, [prompt] * len(responses), s_tok, t_tok)
    tb = collate_views(views, pad_token_id=0)
    r_t = tb.teacher_group_ids.shape[1]
    with torch.no_grad():
        t_logits = response_logits(teacher_model, tb.sequences, tb.attention_mask, r_t)
    payload = teacher_payload(t_logits, tb.sequences[:, -r_t:], tb.teacher_group_ids, tb.num_groups, with_distributions=False)
    seq, attn, ids, width = student_batch(s_tok(prompt)["input_ids"], responses)
    logits = response_logits(student_model, seq, attn, width)
    groups = tb.student_group_ids[:, :width]
    s_meas = group_measures(logits, ids, groups, tb.num_groups, merge=None)
    delta = payload["teacher_span_logprobs"] - s_meas.span_logprob.detach()
    rewards = span_rewards(s_meas.span_logprob.detach(), payload["teacher_span_logprobs"], groups)
    return views, s_meas.token_logprobs, delta, rewards, (groups >= 0).float()


def test_macro_action_gradient_equals_delta_weighted_group_logprob_gradient(tokenizers, tiny_qwen):
    """Reward mode's per-token policy gradient (no_op advantages, importance_sampling loss, token
    mean) is sum_g delta_g * grad log P_S(g) / N: each group is one macro-action."""
    from types import SimpleNamespace

    pytest.importorskip("skyrl_train", reason="the importance_sampling loss written by the skyrl-train 0.3.1 adapter (skyrl 0.4.0 has its own)")
    from gold_distillation.adapters.skyrl031.policy_losses import importance_sampling_loss
    from gold_distillation.losses import span_logprobs

    from .conftest import tiny_model

    s_tok, t_tok = tokenizers["llama2"], tokenizers["qwen2.5-instruct"]
    student = tiny_model("llama", len(s_tok), seed=7)
    responses = [s_tok(CORPUS[k], add_special_tokens=False)["input_ids"] + [s_tok.eos_token_id] for k in ("prose", "emoji", "numbers")]
    views, token_lp, delta, rewards, mask = group_rewards(student, tiny_qwen, s_tok, t_tok, responses)
    groups = collate_views(views, 0).student_group_ids[:, : mask.shape[1]]
    # Groups of several student tokens ("▁" + word pieces, byte pieces of emoji): there the
    # placement decides the gradient.
    assert max(int(torch.bincount(row[row >= 0]).max()) for row in groups) > 1
    params = [p for p in student.parameters() if p.requires_grad]
    loss, _ = importance_sampling_loss(token_lp, token_lp.detach(), rewards * mask, SimpleNamespace(loss_reduction="token_mean"), loss_mask=mask)
    got = torch.autograd.grad(loss, params, retain_graph=True)
    macro = -(delta * span_logprobs(token_lp, groups, delta.shape[1])).sum() / mask.sum()
    expected = torch.autograd.grad(macro, params)
    for g_got, g_exp in zip(got, expected):
        torch.testing.assert_close(g_got, g_exp, atol=1e-6, rtol=1e-4)
    assert sum(float(g.abs().sum()) for g in expected) > 0


@pytest.mark.parametrize("student_name,special,teacher_name", MID_TEXT_SPECIALS)
def test_special_token_reward_is_span_log_ratio_of_its_literal_text(tokenizers, student_name, special, teacher_name):
    from .conftest import tiny_model

    s_tok, t_tok = tokenizers[student_name], tokenizers[teacher_name]
    student, teacher = tiny_model("llama", len(s_tok), seed=8), tiny_model("qwen2", len(t_tok), seed=9)
    ids, at = mid_text_special_response(s_tok, special)
    views, token_lp, delta, rewards, _ = group_rewards(student, teacher, s_tok, t_tok, [ids])
    view = views[0]
    g = int(view.student_groups[at])
    # Brute force: the teacher's log-probability of the literal string's tokens after the text
    # before it, minus the student's log-probability of its special token.
    full = view.prompt_ids + view.response_ids
    members = np.flatnonzero(view.teacher_groups == g) + len(view.prompt_ids)
    with torch.no_grad():
        t_lp = torch.log_softmax(teacher(input_ids=torch.tensor([full])).logits[0].float(), -1)
    expected = sum(t_lp[j - 1, full[j]] for j in members) - token_lp[0, at].detach()
    torch.testing.assert_close(rewards[0, at], expected, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(delta[0, g], expected, atol=2e-4, rtol=1e-5)
    # The literal string as the student's decode writes it there (with tokenizers >= 0.23, Llama 2's
    # normalized specials carry their SentencePiece space: " </s>").
    written = s_tok.decode(ids[: at + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert written.endswith(t_tok.decode([full[j] for j in members])) and t_tok.decode([full[j] for j in members]).strip() == special


def test_special_tokens_only_response_is_rewarded_below_a_plain_answer(tokenizers):
    """The escape of issue 14: a response of special tokens used to have no text, no group and
    reward 0, above the negative rewards of honest answers. Now the teacher reads them as text."""
    from .conftest import tiny_model

    s_tok, t_tok = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    student, teacher = tiny_model("llama", len(s_tok), seed=10), tiny_model("qwen2", len(t_tok), seed=11)
    specials = [s_tok.convert_tokens_to_ids(t) for t in ("<|start_header_id|>", "<|end_header_id|>")]
    plain = s_tok("Paris", add_special_tokens=False)["input_ids"]
    responses = [specials + [s_tok.eos_token_id], specials, plain + [s_tok.eos_token_id], plain]
    views, _, delta, rewards, mask = group_rewards(student, teacher, s_tok, t_tok, responses)
    assert all(np.all(v.student_groups >= 0) for v in views)  # every token has a group
    sequence_ratio = delta.sum(-1)  # the sequence log-likelihood ratio (absent groups hold 0 on both sides)
    assert all(torch.all(delta[i, v.num_groups :] == 0) for i, v in enumerate(views))
    # Ended with EOS, and unfinished: the specials-only response is below the one-word answer.
    assert sequence_ratio[0] < sequence_ratio[2] and sequence_ratio[1] < sequence_ratio[3]
    assert torch.all(rewards[:2][mask[:2] > 0] < 0)


def test_sorted_l1_is_invariant_to_vocabulary_permutations():
    p, q = random_logm(5, 300, 0).exp(), random_logm(5, 200, 1).exp()
    base = sorted_l1(p, q)
    assert torch.all(base > 0)
    torch.testing.assert_close(sorted_l1(p[:, torch.randperm(300)], q[:, torch.randperm(200)]), base)
    torch.testing.assert_close(sorted_l1(p, p[:, torch.randperm(300)]), torch.zeros(5))


def test_numpy_sorts_equal_torch_stable_sort_in_order_values_and_gradient():
    """The CPU float32 path (NumPy) against torch.sort on rows with ties, zeros, -inf and huge values."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(9, 5000, generator=g)
    x[0, ::7] = 0.0  # ties
    x[1, :50] = float("-inf")
    x[2] = x[2].round()  # many ties
    x[3, 10] = 3e38
    x[4] = -x[4].abs()
    ref = torch.sort(x, dim=-1, descending=True, stable=True)
    assert torch.equal(descending_order(x), ref.indices)
    weight = torch.randn(9, 5000, generator=g)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    values = sort_descending(ours)
    assert torch.equal(values, ref.values)
    (torch.where(values.isfinite(), values, 0.0) * weight).sum().backward()
    (torch.where(ref.values.isfinite(), torch.sort(theirs, dim=-1, descending=True, stable=True).values, 0.0) * weight).sum().backward()
    assert torch.equal(ours.grad, theirs.grad) and ours.grad.abs().sum() > 0
    # float64 and non-2-D inputs take torch.sort
    assert torch.equal(sort_descending(x.double()), ref.values.double())


@pytest.mark.parametrize("merge", ["geometric", "chain"])
def test_merges_equal_their_definition_with_empty_and_interleaved_groups(merge):
    """merge_groups against a per-group loop of its definition: groups without tokens, groups of
    one and of several tokens, tokens of a group not next to each other."""
    rows = random_logm(9, 40, 12)
    rows[4, :5] = float("-inf")  # masked logits: the geometric floor keeps the merge finite
    tokens = torch.tensor([3, 7, 1, 9, 8, 2, 0, 5, 6])
    token_lp = rows.gather(1, tokens[:, None]).squeeze(1)
    index = torch.tensor([0, 2, 2, 4, 2, 5, 5, 5, 0])  # groups 1 and 3 are empty
    merged = merge_groups(rows, token_lp, index, 6, merge)
    for group in range(6):
        members = torch.nonzero(index == group).squeeze(-1)
        if members.numel() == 0:
            expected = torch.full((40,), float("-inf")) if merge == "chain" else torch.full((40,), -np.log(40.0))
        elif merge == "geometric":
            expected = torch.log_softmax(rows[members].clamp(min=-1.0e4).mean(0), -1)
        else:
            expected = rows[members[-1]] + token_lp[members[:-1]].sum()
        torch.testing.assert_close(merged[group], expected.float())
    empty_rows = merge_groups(rows[:0], token_lp[:0], index[:0], 3, merge)
    assert empty_rows.shape == (3, 40)


def test_geometric_merge_of_single_token_group_is_identity_and_chain_sums_to_prefix_probability():
    rows = random_logm(6, 50, 2)
    tokens = torch.tensor([3, 7, 1, 9, 4, 2])
    token_lp = rows.gather(1, tokens[:, None]).squeeze(1)
    index = torch.tensor([0, 1, 1, 1, 2, 2])
    geometric = merge_groups(rows, token_lp, index, 3, "geometric")
    torch.testing.assert_close(geometric[0], rows[0])
    torch.testing.assert_close(geometric[1], torch.log_softmax(rows[1:4].mean(0), -1))
    chain = merge_groups(rows, token_lp, index, 3, "chain")
    torch.testing.assert_close(chain.exp().sum(-1), torch.stack([torch.tensor(1.0), token_lp[1:3].sum().exp(), token_lp[4].exp()]))
    torch.testing.assert_close(chain[0], rows[0])


@pytest.mark.parametrize("merge", ["geometric", "chain"])
def test_topk_at_full_vocabulary_is_exact_and_smaller_k_within_bound(merge):
    m, vs, vt = 8, 400, 300
    s_rows, t_rows = random_logm(2 * m, vs, 3), random_logm(2 * m, vt, 4)
    index = torch.arange(2 * m) // 2
    s_lm = merge_groups(s_rows, s_rows[:, 0], index, m, merge)
    t_lm = merge_groups(t_rows, t_rows[:, 0], index, m, merge)
    exact = sorted_l1(s_lm.exp(), t_lm.exp())
    full = compress_teacher_groups(t_lm, torch.zeros(m), topk=vt)
    est, bound = uld_loss(s_lm, full, student_topk=None)
    torch.testing.assert_close(est, exact, atol=1e-6, rtol=1e-6)
    assert torch.all(bound == 0)
    for k in (4, 32, 128):
        est, bound = uld_loss(s_lm, compress_teacher_groups(t_lm, torch.zeros(m), topk=k), student_topk=k)
        assert torch.all(est <= exact + 1e-6) and torch.all(exact <= est + bound + 1e-6)


@pytest.mark.parametrize("student_k,teacher_k", [(None, 5), (5, None), (3, 17), (64, 2)])
def test_sorted_l1_from_unequal_topk_widths_stays_within_its_bound(student_k, teacher_k):
    """Issue 10, item 4: the two sides keep different k (or one keeps its whole vocabulary); the
    estimate is still a lower bound of the exact sorted L1 and estimate + bound an upper one."""
    m = 2000
    p, q = random_logm(m, 50, 7, scale=2.0).exp(), random_logm(m, 60, 8, scale=2.0).exp()
    exact = sorted_l1(p, q)

    def top(x, k):
        return torch.sort(x, -1, descending=True).values[:, :k]

    est, bound = sorted_l1_from_top(top(p, student_k), p.sum(-1), top(q, teacher_k), q.sum(-1))
    assert torch.all(est <= exact + 1e-5)
    assert torch.all(exact <= est + bound + 1e-5)
    # The loss path the same way: full student vocabulary against a teacher top-5.
    if (student_k, teacher_k) == (None, 5):
        est, bound = uld_loss(p.log(), compress_teacher_groups(q.log(), torch.zeros(m), topk=5), student_topk=None)
        assert torch.all(est <= exact + 1e-5) and torch.all(exact <= est + bound + 1e-5)


def test_jsd_endpoints_are_forward_and_reverse_kl():
    s, t = random_logm(4, 100, 5), random_logm(4, 100, 6)
    forward = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)  # KL(teacher || student)
    reverse = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)  # KL(student || teacher)
    torch.testing.assert_close(generalized_jsd(s, t, 0.0), forward)
    torch.testing.assert_close(generalized_jsd(s, t, 1.0), reverse)
    mid = generalized_jsd(s, t, 0.5)
    mix = torch.logaddexp(s, t) - torch.log(torch.tensor(2.0))
    expected = 0.5 * F.kl_div(mix, t, log_target=True, reduction="none").sum(-1) + 0.5 * F.kl_div(mix, s, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(mid, expected)
    torch.testing.assert_close(generalized_jsd(s, s, 0.3), torch.zeros(4), atol=1e-6, rtol=0)


def exact_hybrid(s_lm, t_lm, t2s, s_matched, beta, w_m, w_u):
    """Reference: JSD over {matched entries, unmatched mass} and sorted L1 of unmatched entries."""
    p, q = s_lm.exp(), t_lm.exp()
    t_ids = torch.nonzero(t2s >= 0).squeeze(-1)
    p_atoms = torch.cat([p[:, t2s[t_ids]], p[:, ~s_matched].sum(-1, keepdim=True)], -1)
    q_atoms = torch.cat([q[:, t_ids], q[:, t2s < 0].sum(-1, keepdim=True)], -1)
    norm = lambda x: torch.log(x / x.sum(-1, keepdim=True))
    jsd = generalized_jsd(norm(p_atoms), norm(q_atoms), beta)
    return w_m * jsd + w_u * sorted_l1(p[:, ~s_matched], q[:, t2s < 0])


def test_hybrid_topk_at_full_vocabulary_equals_exact_definition():
    m, vs, vt = 6, 120, 100
    g = torch.Generator().manual_seed(7)
    t2s = torch.full((vt,), -1)
    t2s[:60] = torch.randperm(vs, generator=g)[:60]
    s_matched = torch.zeros(vs, dtype=torch.bool)
    s_matched[t2s[:60]] = True
    s_lm, t_lm = random_logm(m, vs, 8), random_logm(m, vt, 9)
    for beta in (0.0, 0.5, 1.0):
        stats = compress_teacher_groups(t_lm, torch.zeros(m), topk=None, teacher_matched=t2s >= 0)
        got = hybrid_loss(s_lm, stats, t2s, s_matched, beta, 0.6, 0.4, student_topk=None)["loss"]
        torch.testing.assert_close(got, exact_hybrid(s_lm, t_lm, t2s, s_matched, beta, 0.6, 0.4), atol=1e-5, rtol=1e-5)


def test_same_tokenizer_hybrid_equals_full_vocabulary_jsd(tokenizers):
    table = token_bytes(tokenizers["gpt2"])
    vmap = vocab_map(table, table)
    v = table.vocab_size
    s_lm, t_lm = random_logm(3, v, 10), random_logm(3, v, 11)
    stats = compress_teacher_groups(t_lm, torch.zeros(3), topk=None, teacher_matched=torch.from_numpy(vmap.teacher_to_student >= 0))
    got = hybrid_loss(s_lm, stats, torch.from_numpy(vmap.teacher_to_student), torch.from_numpy(vmap.student_matched), 0.5, vmap.matched_share, 1 - vmap.matched_share)
    torch.testing.assert_close(got["loss"], generalized_jsd(s_lm, t_lm, 0.5), atol=1e-5, rtol=1e-4)
    assert torch.all(got["l1"] == 0)


@pytest.mark.parametrize("hybrid", [False, True])
def test_student_gold_loss_gradients_reach_logits_and_are_finite(tokenizers, tiny_qwen, hybrid):
    responses, views, batch = teacher_batch(tokenizers)
    r_t = batch.teacher_group_ids.shape[1]
    s_tab, t_tab = token_bytes(tokenizers["llama3.1-instruct"]), token_bytes(tokenizers["qwen2.5-instruct"])
    vmap = vocab_map(s_tab, t_tab)
    with torch.no_grad():
        t_logits = response_logits(tiny_qwen, batch.sequences, batch.attention_mask, r_t)
    payload = teacher_payload(t_logits, batch.sequences[:, -r_t:], batch.teacher_group_ids, batch.num_groups, topk=16,
                              teacher_matched=torch.from_numpy(vmap.teacher_to_student >= 0) if hybrid else None)
    r_s = batch.student_group_ids.shape[1]
    ids = torch.full((len(responses), r_s), 0)
    for i, resp in enumerate(responses):
        ids[i, : len(resp)] = torch.tensor(resp)
    s_logits = torch.randn(len(responses), r_s, s_tab.vocab_size, requires_grad=True)
    tables = HybridTables(torch.from_numpy(vmap.teacher_to_student), torch.from_numpy(vmap.student_matched),
                          vmap.matched_share, 1 - vmap.matched_share) if hybrid else None
    loss, metrics = student_gold_loss(s_logits, ids, batch.student_group_ids, payload, student_topk=16, hybrid=tables)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.all(torch.isfinite(s_logits.grad)) and s_logits.grad.abs().sum() > 0
    # Padding positions get no gradient.
    assert s_logits.grad[batch.student_group_ids < 0].abs().sum() == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
