"""brewcli.relations: values worked out by hand, identity, padding invariance, finite gradients, and the reference
implementations reproduced here (TinyBERT, TextBrewer, bloomberg/minilmv2.bb, GeondoPark/CKD) to compare numbers."""

import math

import pytest
import torch
import torch.nn.functional as F

from brewcli import relations as R

SQ2 = math.sqrt(2.0)
INF = float("inf")


def tensor(x):
    return torch.tensor(x, dtype=torch.float64)  # small KLs lose digits to cancellation in float32


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def scores(blocks, pad=0, fill=50.0):
    """(1, H, n + pad, n + pad) scores from H real n x n blocks; the padded rows and columns hold `fill`."""
    h, n = len(blocks), len(blocks[0])
    out = torch.full((1, h, n + pad, n + pad), fill, dtype=torch.float64)
    out[0, :, :n, :n] = tensor(blocks)
    return out


def mask_of(*lengths, total=None):
    total = total or max(lengths)
    return torch.tensor([[1] * n + [0] * (total - n) for n in lengths])


# ------------------------------------------------------------------------------------------------ by hand
def test_attention_score_mse_by_hand():
    s = scores([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, -1.0]]], pad=1, fill=9.0)
    t = scores([[[1.0, 0.0], [0.0, 4.0]], [[0.0, 2.0], [1.0, 1.0]]], pad=1, fill=-9.0)
    expected = ((0 + 4 + 9 + 0) + (0 + 4 + 0 + 4)) / (2 * 4)  # 2 heads x 4 real pairs
    assert R.attention_score_mse(s, t, mask_of(2, total=3)).item() == pytest.approx(expected, rel=1e-6)


def test_attention_ce_mean_scores_by_hand_with_different_head_counts():
    ln3 = math.log(3.0)
    s = scores([[[0.0, 2.0], [0.0, 2 * ln3]], [[2.0, 0.0], [0.0, 0.0]]], pad=1)  # head mean: [1, 1], [0, ln 3]
    t = scores([[[0.0, ln3], [0.0, 0.0]]], pad=1)  # one head
    rows = [-(0.25 * math.log(0.5) + 0.75 * math.log(0.5)), -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))]
    got = R.attention_ce_mean_scores(s, t, mask_of(2, total=3))
    assert got.item() == pytest.approx(sum(rows) / 2, rel=1e-6)


def test_attention_kl_by_hand():
    s = scores([[[0.0, 0.0], [1.0, 2.0]]], pad=1)
    t = scores([[[0.0, math.log(3.0)], [1.0, 2.0]]], pad=1, fill=-50.0)
    expected = (kl([0.25, 0.75], [0.5, 0.5]) + 0.0) / 2
    assert R.attention_kl(s, t, mask_of(2, total=3)).item() == pytest.approx(expected, rel=1e-6)


def test_value_relation_kl_by_hand_scales_by_each_sides_head_size():
    s_v = tensor([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]])  # d_h 2: V V^T / sqrt 2 = I / sqrt 2
    t_v = tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]]])  # d_h 4: 2 I / 2 = I
    row = kl(softmax([1.0, 0.0]), softmax([1 / SQ2, 0.0]))  # both rows alike by symmetry
    assert R.value_relation_kl(s_v, t_v, mask_of(2, total=3), 1, 1).item() == pytest.approx(row, rel=1e-6)


def test_relation_kl_by_hand_splits_into_relation_heads():
    s = tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # 2 relation heads of d_r 1: columns 0 and 1
    t = tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]]])  # d_r 2: columns 0:2, 2:4
    # head 0: S [[1, 0], [0, 0]], T [[2, 0], [0, 0]] / sqrt 2; head 1 the mirror image: one non-zero row each
    k = kl(softmax([SQ2, 0.0]), softmax([1.0, 0.0]))
    assert R.relation_kl(s, t, mask_of(2, total=3), 2).item() == pytest.approx(2 * k / (2 * 2), rel=1e-6)


WR_S = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]  # cos: c01 = 0, c02 = 1, c12 = 0
WR_T = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # all cos 0: every row uniform
WR_EXPECTED = 2 * kl([0.5, 0.5], softmax([0.0, 1.0])) / 9  # rows 0 and 2 alike, row 1 uniform on both; / n^2 pairs


def test_wr_distance_by_hand():
    s = tensor([WR_S + [[5.0, 5.0]]])
    t = tensor([WR_T + [[5.0, 1.0, 2.0]]])
    assert R.wr_distance(s, t, mask_of(3, total=4)).item() == pytest.approx(WR_EXPECTED, rel=1e-6)


ANG_S = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]  # cos at 0, 1, 2: 0, 1/sqrt 2, 1/sqrt 2
ANG_T = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]  # collinear: 1, -1, 1
ANG_FULL = 2 * ((0 - 1) ** 2 + (1 / SQ2 + 1) ** 2 + (1 / SQ2 - 1) ** 2) / 27  # (j, k) and (k, j); n^3 triplets


def test_wr_angle_by_hand_full_and_windowed():
    s = tensor([ANG_S + [[4.0, -3.0]]])
    t = tensor([ANG_T + [[0.0, 4.0, 4.0]]])
    mask = mask_of(3, total=4)
    assert R.wr_angle(s, t, mask).item() == pytest.approx(ANG_FULL, rel=1e-6)
    # window 3: only token 1 has two neighbours; |N(i)|^2 = 4 + 9 + 4 (the pad is no neighbour of token 2)
    assert R.wr_angle(s, t, mask, window=3).item() == pytest.approx(2 * (1 / SQ2 + 1) ** 2 / 17, rel=1e-6)


def _layers(points, pad_point):
    """One real token whose representation in layer a is points[a], then a padded token."""
    return [tensor([[p, pad_point]]) for p in points]


def test_ltr_distance_and_angle_by_hand():
    mask = mask_of(1, total=2)
    got = R.ltr_distance(_layers(WR_S, [3.0, 3.0]), _layers(WR_T, [1.0, 2.0, 3.0]), mask)
    assert got.item() == pytest.approx(WR_EXPECTED, rel=1e-6)  # 1 token x 3^2 layer pairs
    got = R.ltr_angle(_layers(ANG_S, [3.0, 3.0]), _layers(ANG_T, [1.0, 2.0, 3.0]), mask)
    assert got.item() == pytest.approx(ANG_FULL, rel=1e-6)  # 1 token x 3^3 layer triplets


# --------------------------------------------------------------------- properties shared by every loss
def _rand(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=dtype)


def _tok(ds, dt, layers=None):
    def make(g, b, l, dtype=torch.float32):
        if layers:
            s = [_rand(g, b, l, ds, dtype=dtype) for _ in range(layers)]
            return s, [_rand(g, b, l, dt, dtype=dtype) for _ in range(layers)]
        return _rand(g, b, l, ds, dtype=dtype), _rand(g, b, l, dt, dtype=dtype)

    return make


def _att(hs, ht):
    def make(g, b, l, dtype=torch.float32):
        return _rand(g, b, hs, l, l, dtype=dtype) * 2, _rand(g, b, ht, l, l, dtype=dtype) * 2

    return make


CASES = {
    "attention_score_mse": (R.attention_score_mse, _att(3, 3)),
    "attention_ce_mean_scores": (R.attention_ce_mean_scores, _att(2, 3)),
    "attention_kl": (R.attention_kl, _att(3, 3)),
    "value_relation_kl": (lambda s, t, m: R.value_relation_kl(s, t, m, 2, 2), _tok(8, 12)),
    "relation_kl": (lambda s, t, m: R.relation_kl(s, t, m, 4), _tok(8, 12)),
    "wr_distance": (R.wr_distance, _tok(8, 12)),
    "wr_angle": (R.wr_angle, _tok(8, 12)),
    "wr_angle_window3": (lambda s, t, m: R.wr_angle(s, t, m, window=3), _tok(8, 12)),
    "ltr_distance": (R.ltr_distance, _tok(8, 12, layers=4)),
    "ltr_angle": (R.ltr_angle, _tok(8, 12, layers=4)),
}


def _pad(x, p, fill, left=False):
    """Append (or prepend) p padded positions holding `fill` to token features, scores or lists of them."""
    if isinstance(x, list):
        return [_pad(v, p, fill, left) for v in x]
    if x.dim() == 4:  # (B, H, L, L)
        b, h, l, _ = x.shape
        out = torch.full((b, h, l + p, l + p), fill, dtype=x.dtype)
        at = slice(p, None) if left else slice(0, l)
        out[:, :, at, at] = x
        return out
    pad = torch.full((x.size(0), p, x.size(2)), fill, dtype=x.dtype)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


@pytest.mark.parametrize("name", [n for n in CASES if n != "attention_ce_mean_scores"])
def test_identical_student_and_teacher_give_zero(name):
    fn, make = CASES[name]
    g = torch.Generator().manual_seed(1)
    s, _ = make(g, 2, 6)
    m = mask_of(6, 4)
    assert abs(fn(s, s, m).item()) < 1e-6


def test_attention_ce_mean_scores_is_smallest_when_identical():
    # a cross-entropy: identical inputs give the teacher's entropy, not 0
    g = torch.Generator().manual_seed(1)
    s, t = _att(2, 2)(g, 1, 4)
    p = F.softmax(t.mean(1), dim=-1)[0]
    entropy = -sum(p[i, j].item() * math.log(p[i, j].item()) for i in range(4) for j in range(4)) / 4
    assert R.attention_ce_mean_scores(t, t, torch.ones(1, 4)).item() == pytest.approx(entropy, rel=1e-6)
    assert R.attention_ce_mean_scores(s, t, torch.ones(1, 4)).item() > entropy


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("name", list(CASES))
def test_padding_changes_nothing(name, left):
    fn, make = CASES[name]
    g = torch.Generator().manual_seed(2)
    s, t = make(g, 1, 5)
    alone = fn(s, t, torch.ones(1, 5)).item()
    for fill in (1e3, -1e3):
        m = torch.tensor([[0] * 3 + [1] * 5]) if left else mask_of(5, total=8)
        padded = fn(_pad(s, 3, fill, left), _pad(t, 3, -fill, left), m).item()
        assert padded == pytest.approx(alone, rel=1e-6, abs=1e-6)


def _poison(x, m):
    """Copies of x with NaN wherever the mask says padding, as leaves that take gradients."""
    if isinstance(x, list):
        return [_poison(v, m) for v in x]
    x = x.clone()
    if x.dim() == 4:
        x[~(m[:, None, :, None] & m[:, None, None, :]).expand_as(x)] = float("nan")
    else:
        x[~m] = float("nan")
    return x.requires_grad_()


def _leaves(x):
    return x if isinstance(x, list) else [x]


@pytest.mark.parametrize("name", list(CASES))
def test_finite_gradients_with_nan_in_padding_and_empty_rows(name):
    fn, make = CASES[name]
    g = torch.Generator().manual_seed(3)
    m = mask_of(6, 3, 1, 0).bool()  # a one-token example and an all-padding one
    s, t = (_poison(x, m) for x in make(g, 4, 6))
    loss = fn(s, t, m)
    loss.backward()
    assert torch.isfinite(loss)
    for leaf in _leaves(s) + _leaves(t):
        assert torch.isfinite(leaf.grad).all()
        pads = ~(m[:, None, :, None] & m[:, None, None, :]).expand_as(leaf) if leaf.dim() == 4 else ~m
        assert (leaf.grad[pads] == 0).all()
    assert any(leaf.grad.abs().sum() > 0 for leaf in _leaves(s))
    detached = [[v.detach() for v in x] if isinstance(x, list) else x.detach() for x in (s, t)]
    assert fn(*detached, torch.zeros(4, 6)).item() == 0  # an all-padding batch


def test_half_precision_is_computed_in_float32():
    g = torch.Generator().manual_seed(4)
    s, t = _tok(8, 12)(g, 2, 5)
    m = mask_of(5, 3)
    for fn in (R.wr_distance, R.wr_angle, lambda a, b, mm: R.relation_kl(a, b, mm, 4)):
        got = fn(s.half(), t.bfloat16(), m)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(fn(s.half().float(), t.bfloat16().float(), m).item(), rel=1e-6)


def test_shape_errors():
    x, y = torch.randn(1, 3, 8), torch.randn(1, 3, 12)
    m = torch.ones(1, 3)
    with pytest.raises(ValueError, match="equal head counts"):
        R.value_relation_kl(x, y, m, 2, 4)
    with pytest.raises(ValueError, match="does not split into 5 heads"):
        R.relation_kl(x, y, m, 5)
    with pytest.raises(ValueError, match="odd"):
        R.wr_angle(x, y, m, window=4)
    with pytest.raises(ValueError, match="as many student layers"):
        R.ltr_angle([x, x], [y], m)
    with pytest.raises(ValueError, match="head counts"):
        R.attention_kl(torch.randn(1, 2, 3, 3), torch.randn(1, 3, 3, 3), m)
    with pytest.raises(ValueError, match=r"\(B, H, L, L\)"):
        R.attention_kl(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), m)


# ------------------------------------------------------------------------------ TinyBERT and TextBrewer
def tinybert_attention_loss(s, t, mask):
    # huawei-noah/Pretrained-Language-Model TinyBERT/task_distill.py: the scores carry BERT's additive mask, entries
    # <= -1e2 are zeroed, MSELoss() takes the mean over every entry
    add = (1.0 - mask[:, None, None, :].to(s.dtype)) * -10000.0
    s, t = s + add, t + add
    s = torch.where(s <= -1e2, torch.zeros_like(s), s)
    t = torch.where(t <= -1e2, torch.zeros_like(t), t)
    return F.mse_loss(s, t)


def textbrewer_att_ce_mean_loss(attention_S, attention_T, mask):
    # airaria/TextBrewer src/textbrewer/losses.py att_ce_mean_loss, the branch with a mask
    attention_S, attention_T = attention_S.mean(dim=1), attention_T.mean(dim=1)
    probs_T = F.softmax(attention_T, dim=-1)
    mask = mask.to(attention_S)
    return -((probs_T * F.log_softmax(attention_S, dim=-1) * mask.unsqueeze(1)).sum(dim=-1) * mask).sum() / mask.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_losses_match_tinybert_and_textbrewer(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = _att(4, 4)(g, 3, 7, dtype=torch.float64)
    full = torch.ones(3, 7)
    ref = tinybert_attention_loss(s, t, full).item()
    assert R.attention_score_mse(s, t, full).item() == pytest.approx(ref, abs=1e-12)
    s12, t4 = _rand(g, 3, 12, 7, 7, dtype=torch.float64), _rand(g, 3, 4, 7, 7, dtype=torch.float64)
    ref = textbrewer_att_ce_mean_loss(s12, t4, full).item()
    assert R.attention_ce_mean_scores(s12, t4, full).item() == pytest.approx(ref, abs=1e-12)
    # padded: TextBrewer on scores that carry the additive mask (as BERT's do) agrees with ours on raw scores
    m = mask_of(7, 4, 2)
    add = (1.0 - m[:, None, None, :].double()) * -10000.0
    ref = textbrewer_att_ce_mean_loss(s12 + add, t4 + add, m).item()
    assert R.attention_ce_mean_scores(s12, t4, m).item() == pytest.approx(ref, abs=1e-12)


# ------------------------------------------------------------------------------------------------ MiniLM
def bloomberg_kl_loss(rel_T, rel_S, attention_mask, A_r):
    # bloomberg/minilmv2.bb minilmv2/minilmv2.py, MiniLM._get_kl_loss: right padding assumed, per-example normalisation
    loss = 0.0
    batch_size = attention_mask.shape[0]
    seq_lengths = attention_mask.sum(-1).tolist()
    for b in range(batch_size):
        n = seq_lengths[b]
        R_L_T = torch.softmax(rel_T[b, :, :n, :n], dim=-1)
        R_M_S = F.log_softmax(rel_S[b, :, :n, :n], dim=-1)
        loss += F.kl_div(R_M_S.reshape(-1, n), R_L_T.reshape(-1, n), reduction="sum") / (A_r * n)
    return loss / batch_size


def bloomberg_relation(x, A_r):
    # the same file: _transpose_for_scores_relation, then X X^T / sqrt(d_r)
    d_r = x.size(-1) // A_r
    x = x.view(*x.size()[:-1], A_r, d_r).permute(0, 2, 1, 3)
    return x @ x.transpose(-1, -2) / math.sqrt(d_r)


def naive_relation_kl(s, t, mask, heads):
    """Per example, relation head and real token, in plain Python; pooled over every real token of the batch."""

    def logits(x, b, r, i, idx):
        d = x.size(-1) // heads
        rows = x[b, :, r * d:(r + 1) * d].tolist()
        return [sum(u * v for u, v in zip(rows[i], rows[j])) / math.sqrt(d) for j in idx]

    total = 0.0
    for b in range(s.size(0)):
        idx = [i for i in range(s.size(1)) if mask[b, i]]
        for r in range(heads):
            for i in idx:
                total += kl(softmax(logits(t, b, r, i, idx)), softmax(logits(s, b, r, i, idx)))
    return total / (heads * int(mask.sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relation_kl_matches_a_naive_loop_and_bloomberg(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = _rand(g, 3, 6, 8, dtype=torch.float64), _rand(g, 3, 6, 12, dtype=torch.float64)
    m = mask_of(6, 4, 2)
    for heads in (2, 4):
        got = R.relation_kl(s, t, m, heads).item()
        assert got == pytest.approx(naive_relation_kl(s, t, m, heads), abs=1e-10)
        # bloomberg averages per example: it is the mean of our value on each example alone
        ref = bloomberg_kl_loss(bloomberg_relation(t, heads), bloomberg_relation(s, heads), m, heads).item()
        alone = [R.relation_kl(s[b:b + 1, :n], t[b:b + 1, :n], m[b:b + 1, :n], heads).item()
                 for b, n in enumerate((6, 4, 2))]
        assert ref == pytest.approx(sum(alone) / 3, abs=1e-12)
        # with equal lengths (padded or not) the two normalisations agree
        same = mask_of(4, 4, 4, total=6)
        ref = bloomberg_kl_loss(bloomberg_relation(t, heads), bloomberg_relation(s, heads), same, heads).item()
        assert R.relation_kl(s, t, same, heads).item() == pytest.approx(ref, abs=1e-12)
    # MiniLM v1's value relation is the same computation with the attention heads as relation heads
    assert R.value_relation_kl(s, t, m, 4, 4).item() == pytest.approx(naive_relation_kl(s, t, m, 4), abs=1e-10)


def naive_attention_kl(s, t, mask):
    total = 0.0
    for b in range(s.size(0)):
        idx = [i for i in range(s.size(-1)) if mask[b, i]]
        for h in range(s.size(1)):
            for i in idx:
                total += kl(softmax([t[b, h, i, j].item() for j in idx]), softmax([s[b, h, i, j].item() for j in idx]))
    return total / (s.size(1) * int(mask.sum()))


@pytest.mark.parametrize("seed", [0, 1])
def test_attention_kl_matches_a_naive_loop_and_bloomberg(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = _att(3, 3)(g, 3, 6, dtype=torch.float64)
    m = mask_of(6, 4, 2)
    assert R.attention_kl(s, t, m).item() == pytest.approx(naive_attention_kl(s, t, m), abs=1e-10)
    same = mask_of(5, 5, 5, total=6)
    assert R.attention_kl(s, t, same).item() == pytest.approx(bloomberg_kl_loss(t, s, same, 3).item(), abs=1e-12)


# ------------------------------------------------------------------------------------------------------ CKD
# GeondoPark/CKD loss.py (commit 28b124b), forward passes with the README's options (distance "cos", lossfunc_d
# "kldiv", lossfunc_a "l2loss"). Inputs are stacked layers (B, N, L, D); argument order (teacher, student) as there.
# One change: F.kl_div as torch computed it when the code was written (entries with target 0 contribute 0). Current
# torch computes 0 * -inf = NaN there (test_official_wr_dist_is_nan_under_current_torch).
def kl_div_sum_then(log_s, t):
    return torch.where(t > 0, t * (t.log() - log_s), torch.zeros_like(t)).sum()


def _cos_softmax(x, mask, log):
    n = x.size(-2)
    x_norm = F.normalize(x, p=2, dim=-1)
    d = (x_norm @ x_norm.transpose(-1, -2)) * mask
    diagonal = torch.ones(n, n, dtype=x.dtype) - torch.eye(n, dtype=x.dtype)
    d = d.masked_fill(diagonal == 0, -INF).masked_fill(mask == 0, -INF)
    return (F.log_softmax(d, dim=-1) if log else F.softmax(d, dim=-1)) * mask


def ckd_wr_dist(t_embed, s_embed, attention_mask, kl_div=kl_div_sum_then):
    _, layer_num, max_len, dim = t_embed.size()
    t_embed = t_embed.reshape(-1, max_len, dim)
    s_embed = s_embed.reshape(-1, max_len, s_embed.size(-1))
    mask = attention_mask.unsqueeze(2) * attention_mask.unsqueeze(1)
    mask = mask.unsqueeze(1).repeat(1, layer_num, 1, 1).to(t_embed.dtype).view(-1, max_len, max_len)
    return kl_div(_cos_softmax(s_embed, mask, True), _cos_softmax(t_embed, mask, False)) / mask.sum().item()


def _angles(x):
    n, dim = x.size(1), x.size(2)
    sub = F.normalize(x.unsqueeze(1) - x.unsqueeze(2), p=2, dim=3).view(-1, n, dim)
    return torch.bmm(sub, sub.transpose(1, 2)).view(-1, n, n, n)


def ckd_wr_angle(t_embed, s_embed, attention_mask):
    _, layer_num, max_len, dim = t_embed.size()
    t_embed, s_embed = t_embed.reshape(-1, max_len, dim), s_embed.reshape(-1, max_len, s_embed.size(-1))
    am = attention_mask
    mask = am.unsqueeze(2).unsqueeze(3) * am.unsqueeze(1).unsqueeze(3) * am.unsqueeze(1).unsqueeze(2)
    mask = mask.unsqueeze(1).repeat(1, layer_num, 1, 1, 1).to(t_embed.dtype).view(-1, max_len, max_len, max_len)
    return F.mse_loss(_angles(s_embed) * mask, _angles(t_embed) * mask, reduction="sum") / mask.sum().item()


def ckd_wr_angle_window(t_embed, s_embed, attention_mask, window, neighbours=None):
    """WR_Angle_window. With `neighbours` (B, L), our change: a neighbour outside the sequence or not in `neighbours`
    is masked out (and not counted) instead of being clamped to the edge position. Without it, the official code."""
    bsz, layer_num, max_len, dim = t_embed.size()
    sdim = s_embed.size(-1)
    t_embed, s_embed = t_embed.reshape(-1, max_len, dim), s_embed.reshape(-1, max_len, sdim)
    new_bsz, w2 = bsz * layer_num, (window - 1) // 2
    raw = torch.arange(max_len)[None, :, None] + torch.arange(-w2, w2 + 1)[None, None, :]  # window_index
    idx = raw.clamp(0, max_len - 1).repeat(new_bsz, 1, 1) + (torch.arange(new_bsz) * max_len).view(-1, 1, 1)
    t_round, s_round = t_embed.reshape(new_bsz * max_len, -1)[idx, :], s_embed.reshape(new_bsz * max_len, -1)[idx, :]
    am = attention_mask.to(t_embed.dtype)
    mask = am.unsqueeze(2).unsqueeze(3).repeat(1, 1, window, window)
    mask = mask.unsqueeze(1).repeat(1, layer_num, 1, 1, 1).view(-1, max_len, window, window)
    if neighbours is not None:
        nb = neighbours.to(t_embed.dtype).unsqueeze(1).repeat(1, layer_num, 1).reshape(-1)
        real = nb[idx] * ((raw >= 0) & (raw < max_len))
        mask = mask * real[:, :, :, None] * real[:, :, None, :]

    def angle(x, rnd, d):
        sub = F.normalize(x.unsqueeze(2) - rnd, p=2, dim=3).view(-1, window, d)
        return torch.bmm(sub, sub.transpose(1, 2)).view(new_bsz, max_len, window, window) * mask

    return F.mse_loss(angle(s_embed, s_round, sdim), angle(t_embed, t_round, dim), reduction="sum") / mask.sum().item()


def ckd_ltr_dist(t_embed, s_embed, attention_mask, kl_div=kl_div_sum_then):
    _, layer_num, _, dim = t_embed.size()
    t_embed = t_embed.transpose(1, 2).reshape(-1, layer_num, dim)
    s_embed = s_embed.transpose(1, 2).reshape(-1, layer_num, s_embed.size(-1))
    mask = attention_mask.unsqueeze(2).unsqueeze(3).repeat(1, 1, layer_num, layer_num).to(t_embed.dtype)
    mask = mask.view(-1, layer_num, layer_num)
    return kl_div(_cos_softmax(s_embed, mask, True), _cos_softmax(t_embed, mask, False)) / mask.sum().item()


def ckd_ltr_angle(t_embed, s_embed, attention_mask):
    _, layer_num, _, dim = t_embed.size()
    t_embed = t_embed.transpose(1, 2).reshape(-1, layer_num, dim)
    s_embed = s_embed.transpose(1, 2).reshape(-1, layer_num, s_embed.size(-1))
    mask = attention_mask.unsqueeze(2).unsqueeze(3).unsqueeze(4).repeat(1, 1, layer_num, layer_num, layer_num)
    mask = mask.to(t_embed.dtype).view(-1, layer_num, layer_num, layer_num)
    return F.mse_loss(_angles(s_embed) * mask, _angles(t_embed) * mask, reduction="sum") / mask.sum().item()


def _ckd_inputs(seed, n_layers=3, lengths=(9, 6, 3), total=9, ds=8, dt=12):
    g = torch.Generator().manual_seed(seed)
    s = [_rand(g, len(lengths), total, ds, dtype=torch.float64) for _ in range(n_layers)]
    t = [_rand(g, len(lengths), total, dt, dtype=torch.float64) for _ in range(n_layers)]
    return s, t, mask_of(*lengths, total=total)


def _mean_over_layers(fn, s, t, m, **kw):
    return sum(fn(a, b, m, **kw).item() for a, b in zip(s, t)) / len(s)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ckd_word_relations_match_the_official_code(seed):
    s, t, m = _ckd_inputs(seed)
    S, T = torch.stack(s, 1), torch.stack(t, 1)  # (B, N, L, D): the official code takes every matched layer at once
    assert _mean_over_layers(R.wr_distance, s, t, m) == pytest.approx(ckd_wr_dist(T, S, m).item(), abs=1e-12)
    # a window that covers the sequence is the official full WR_Angle, padding included
    assert _mean_over_layers(R.wr_angle, s, t, m, window=21) == pytest.approx(ckd_wr_angle(T, S, m).item(), abs=1e-12)
    for window in (3, 5, 21):
        ref = ckd_wr_angle_window(T, S, m, window, neighbours=m).item()
        assert _mean_over_layers(R.wr_angle, s, t, m, window=window) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ckd_layer_relations_match_the_official_code(seed):
    s, t, m = _ckd_inputs(seed, n_layers=4)
    S, T = torch.stack(s, 1), torch.stack(t, 1)
    assert R.ltr_distance(s, t, m).item() == pytest.approx(ckd_ltr_dist(T, S, m).item(), abs=1e-12)
    assert R.ltr_angle(s, t, m).item() == pytest.approx(ckd_ltr_angle(T, S, m).item(), abs=1e-12)


def test_official_window_differs_only_by_its_border_clamping():
    # unpadded, a window smaller than the sequence. Official centres near either end clamp their missing neighbours
    # to the edge token (counted several times); our variant of the official code drops them and equals ours
    s, t, m = _ckd_inputs(0, n_layers=1, lengths=(16, 16), total=16)
    S, T = torch.stack(s, 1), torch.stack(t, 1)
    ours = R.wr_angle(s[0], t[0], m, window=5).item()
    assert ours == pytest.approx(ckd_wr_angle_window(T, S, m, 5, neighbours=m).item(), abs=1e-12)
    # at the interior centres (the official code only masks centres) the variant and the official code agree exactly
    interior = m.clone()
    interior[:, :2] = interior[:, -2:] = 0
    ref = ckd_wr_angle_window(T, S, interior, 5).item()
    assert ckd_wr_angle_window(T, S, interior, 5, neighbours=m).item() == pytest.approx(ref, abs=1e-12)
    assert ours != pytest.approx(ckd_wr_angle_window(T, S, m, 5).item(), abs=1e-6)  # the border effect


def test_official_wr_dist_is_nan_under_current_torch():
    s, t, m = _ckd_inputs(0, lengths=(9, 9, 9))
    def current(log_s, p):
        return F.kl_div(log_s, p, reduction="sum")

    assert torch.isnan(ckd_wr_dist(torch.stack(t, 1), torch.stack(s, 1), m, kl_div=current))
    assert math.isfinite(R.wr_distance(s[0], t[0], m).item())
