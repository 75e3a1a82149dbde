"""Each loss against a value computed by hand (plain Python loops or closed forms), masks included."""

import math

import pytest
import torch

from brewcli.losses import KD_LOSSES, MATCH_LOSSES
from brewcli.objective import probability_shift
from brewcli.schedulers import TEMPERATURE, WEIGHT


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


S, T = [1.0, 2.0, 0.5], [0.0, 3.0, 1.0]


def test_kd_ce_matches_hand_value():
    tau = 2.0
    ps, pt = softmax([x / tau for x in S]), softmax([x / tau for x in T])
    expected = -sum(p * math.log(q) for p, q in zip(pt, ps))
    got = KD_LOSSES.get("ce")(torch.tensor([S]), torch.tensor([T]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_kl_is_ce_minus_teacher_entropy():
    tau = 3.0
    ps, pt = softmax([x / tau for x in S]), softmax([x / tau for x in T])
    expected = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    got = KD_LOSSES.get("kl")(torch.tensor([S]), torch.tensor([T]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert KD_LOSSES.get("kl")(torch.tensor([T]), torch.tensor([T]), tau).item() == pytest.approx(0, abs=1e-7)


def test_kd_mse_and_per_example_temperature():
    tau = torch.tensor([1.0, 2.0])
    s, t = torch.tensor([S, S]), torch.tensor([T, T])
    got = KD_LOSSES.get("mse")(s, t, tau)
    for row, temp in enumerate((1.0, 2.0)):
        expected = sum((a / temp - b / temp) ** 2 for a, b in zip(S, T)) / 3
        assert got[row].item() == pytest.approx(expected, rel=1e-6)


def test_hidden_mse_ignores_padding():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    t = torch.tensor([[[0.0, 2.0], [3.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    expected = (1 + 0 + 0 + 4) / (2 * 2)  # two real tokens x width 2
    assert MATCH_LOSSES.get("hidden_mse").fn(s, t, mask).item() == pytest.approx(expected)


def test_cos_loss():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert MATCH_LOSSES.get("cos").fn(s, t, mask).item() == pytest.approx((1 + 0) / 2, abs=1e-6)


def test_pkd_uses_normalised_cls():
    s = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    expected = (0.6 - 1.0) ** 2 + (0.8 - 0.0) ** 2
    assert MATCH_LOSSES.get("pkd").fn(s, t, torch.ones(1, 2)).item() == pytest.approx(expected, rel=1e-6)


def test_mmd_self_similarity_masked_and_width_free():
    x_s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]])  # width 2
    x_t = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])  # width 3
    mask = torch.tensor([[1, 1, 0]])
    g_s = [[0.5, 0.0], [0.0, 0.5]]  # X X^T / 2 on the two real tokens
    g_t = [[4 / 3, 0.0], [0.0, 3.0]]  # X X^T / 3
    expected = sum((g_s[i][j] - g_t[i][j]) ** 2 for i in range(2) for j in range(2)) / 4
    got = MATCH_LOSSES.get("nst").fn((x_s, x_s), (x_t, x_t), mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_fsp_gram_over_real_tokens():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [50.0, 50.0]]])
    b = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [50.0, 50.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # G = A^T B / 2 over the two real tokens: [[3, 1], [4, 2]] / 2
    g_s = torch.tensor([[1.5, 0.5], [2.0, 1.0]])
    expected = ((g_s - torch.zeros(2, 2)) ** 2).mean().item()
    zero = torch.zeros_like(a)
    assert MATCH_LOSSES.get("gram").fn((a, b), (zero, zero), mask).item() == pytest.approx(expected, rel=1e-6)


def _attention(rows):
    return torch.tensor(rows).reshape(1, 1, 2, 2)


def test_attention_mse_and_sum_over_heads():
    s = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[1.0, 0.0], [0.5, 0.5]]]])  # (1, 2 heads, 2, 2)
    t = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5]]]])
    mask = torch.ones(1, 2)
    per_head = [(0.25 + 0.25) / 4, (1 + 1) / 4]
    assert MATCH_LOSSES.get("attention_mse").fn(s, t, mask).item() == pytest.approx(sum(per_head) / 2)
    summed = ((s.sum(1) - t.sum(1)) ** 2).mean().item()  # [[1.5,.5],[1.5,.5]] vs [[1,1],[1.5,.5]]
    assert summed == pytest.approx((0.25 + 0.25) / 4)
    assert MATCH_LOSSES.get("attention_mse_sum").fn(s, t, mask).item() == pytest.approx(summed)


def test_attention_mse_masks_padded_rows_and_columns():
    s = torch.tensor([[[[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]]]])
    t = torch.tensor([[[[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]]]])
    mask = torch.tensor([[1, 1, 0]])
    expected = (0.25 + 0.25) / 4
    assert MATCH_LOSSES.get("attention_mse").fn(s, t, mask).item() == pytest.approx(expected)


def test_attention_ce_takes_probabilities_without_a_second_softmax():
    s = _attention([[0.25, 0.75], [0.5, 0.5]])
    t = _attention([[0.5, 0.5], [1.0, 0.0]])
    rows = [-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), -(1.0 * math.log(0.5))]
    got = MATCH_LOSSES.get("attention_ce").fn(s, t, torch.ones(1, 2))
    assert got.item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    # identical distributions: the loss is the teacher's entropy, its minimum
    assert MATCH_LOSSES.get("attention_ce").fn(t.clamp_min(1e-9), t, torch.ones(1, 2)).item() <= got.item()


def test_attention_prob_ce_mean_averages_probabilities_over_heads_first():
    s = torch.tensor([[[[0.2, 0.8]], [[0.6, 0.4]]]])  # (1, 2, 1, 2): mean [0.4, 0.6]
    t = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # mean [0.5, 0.5]
    expected = -(0.5 * math.log(0.4) + 0.5 * math.log(0.6))
    got = MATCH_LOSSES.get("attention_prob_ce_mean").fn(s, t, torch.ones(1, 1))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_attention_ce_mean_is_textbrewers_softmax_of_head_averaged_scores():
    s = torch.tensor([[[0.0, 2.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # (1, 2, 2, 2): mean [0, 1]
    t = torch.tensor([[[0.0, 4.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # mean [0, 2]
    ps1 = math.exp(1) / (1 + math.exp(1))  # softmax([0, 1])[1]
    pt1 = math.exp(2) / (1 + math.exp(2))  # softmax([0, 2])[1]
    expected = -((1 - pt1) * math.log(1 - ps1) + pt1 * math.log(ps1))
    info = MATCH_LOSSES.get("attention_ce_mean")
    assert info.feature == "scores"
    assert info.fn(s, t, torch.ones(1, 2)).item() == pytest.approx(expected, rel=1e-6)
    # averaging the probabilities instead (attention_prob_ce_mean) is another formula: another value here
    probs = MATCH_LOSSES.get("attention_prob_ce_mean").fn(s.softmax(-1), t.softmax(-1), torch.ones(1, 2))
    assert abs(probs.item() - expected) > 1e-2


def test_temperature_schedulers():
    s, t = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert TEMPERATURE.get("constant")(4.0, s, t) == 4.0
    # flsw: cos = [1, 0] -> w = (1 - cos)^2 = [0, 1]; tau_i = 4 + (mean(w) - w_i) * beta
    got = TEMPERATURE.get("flsw")(4.0, s, t, beta=1.0, gamma=2.0)
    assert got.tolist() == pytest.approx([4.5, 3.5])
    # flsw by hand: rows at 60 and 90 degrees and an identical pair; gamma 1.5, beta 2
    s = torch.tensor([[3.0, 0.0], [0.0, 5.0], [1e-3, 1e-3]])
    t = torch.tensor([[1.0, math.sqrt(3.0)], [7.0, 0.0], [2e-3, 2e-3]])
    w = [(1 - 0.5) ** 1.5, 1.0, 0.0]  # cos 60 = 1/2, cos 90 = 0, cos 0 = 1 (exact: no epsilon on tiny logits)
    got = TEMPERATURE.get("flsw")(8.0, s, t, beta=2.0, gamma=1.5)
    assert got.tolist() == pytest.approx([8.0 + (sum(w) / 3 - wi) * 2.0 for wi in w], rel=1e-6)
    assert not torch.isnan(TEMPERATURE.get("flsw")(8.0, t, t * 3, gamma=0.5)).any()  # cos rounds to 1: no NaN
    # TextBrewer's v / (|v| + 1e-4) gives the tiny (parallel) pair cos = 1.414/1.514 * 2.828/2.928 = 0.902, not 1
    tb = lambda z: z / (z.norm(dim=-1, keepdim=True) + 1e-4)  # noqa: E731
    assert (tb(s[2]) * tb(t[2])).sum().item() == pytest.approx(0.902, abs=1e-3)
    # cwsm: w = 1 / (max softmax + 1e-3); the more confident row gets the higher temperature
    s = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
    w = [1 / (1 / (1 + math.exp(-x)) + 1e-3) for x in (2.0, 0.5)]
    expected = [4.0 + (sum(w) / 2 - wi) * 0.5 for wi in w]
    assert TEMPERATURE.get("cwsm")(4.0, s, t, beta=0.5).tolist() == pytest.approx(expected, rel=1e-6)


def test_weight_schedules_multiply():
    assert WEIGHT.get("linear_decay")(0.25) == 0.75
    assert WEIGHT.get("linear_growth")(0.25) == 0.25
    assert WEIGHT.get("none")(0.9) == 1.0


def test_probability_shift_makes_gold_the_argmax():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    shifted = probability_shift(logits, torch.tensor([2, 1]))
    assert shifted.tolist() == [[2.0, 1.0, 3.0], [0.0, 5.0, 1.0]]


def test_aliases_resolve():
    assert MATCH_LOSSES.canonical("nst") == "mmd" and MATCH_LOSSES.canonical("gram") == "fsp"
