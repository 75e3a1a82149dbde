"""Relation losses: attention scores and self-attention relations (TinyBERT, MiniLM v1 and v2) and CKD's word and
layer-transforming relations. Pure functions; each returns one scalar.

What the caller supplies:
- `scores` (B, H, L, L): pre-softmax attention scores q_h k_h^T / sqrt(d_h), WITHOUT the additive mask.
- `q`, `k`, `v` (B, L, D): a layer's query, key or value projection outputs, heads concatenated (D = H * d_h).
- `hidden` (B, L, D): hidden states; CKD's layer relations take a list of them per side.
- `mask` (B, L): 1 for real tokens, 0 for padding.

Padding never contributes: padded entries are replaced (masked_fill, never an additive -inf) before any arithmetic,
so a padded batch gives the value of its real tokens alone, and NaN or inf in padded slots reach neither the loss
nor its gradients. A softmax over an empty set (a padded query, a one-token sequence) gives a finite row that is
dropped. Denominators are clamped at 1, so an all-padding batch gives 0. Half-precision inputs are computed in
float32. Teacher tensors are not detached here: the caller runs the teacher without gradients.

Every KL is KL(teacher || student) with the teacher as target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from brewcli.lazy import F, torch

if TYPE_CHECKING:
    from torch import Tensor


# ---------------------------------------------------------------------------------------------------------- helpers
def _float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _real(mask: Tensor, *xs: Tensor, scores: bool = False) -> Tensor:
    """The mask as bool, after checking the features against it: (B, L, ...), or (B, H, L, L) for scores."""
    m = mask.to(torch.bool)
    if m.dim() != 2:
        raise ValueError(f"mask must be (B, L), got {tuple(mask.shape)}")
    (b, l), want = m.shape, "(B, H, L, L)" if scores else "(B, L, ...)"
    for x in xs:
        ok = x.dim() == 4 and x.size(0) == b and x.shape[2:] == (l, l) if scores else tuple(x.shape[:2]) == (b, l)
        if not ok:
            raise ValueError(f"feature of shape {tuple(x.shape)} is not {want} for a mask of (B, L) = {(b, l)}")
    return m


def _zero_pads(x: Tensor, m: Tensor) -> Tensor:
    """(B, L, ...) features with the padded positions set to 0 (masked_fill: no 0 * inf)."""
    return _float(x).masked_fill(~m.reshape(*m.shape, *([1] * (x.dim() - 2))), 0.0)


def _pairs(m: Tensor) -> Tensor:
    return m[:, :, None] & m[:, None, :]  # (B, L, L): query and key both real


def _log_probs(z: Tensor, valid: Tensor) -> Tensor:
    """log-softmax along the last axis over the valid entries only; invalid entries come out as 0.

    Invalid entries get the dtype's most negative finite value, whose exp is exactly 0, so they carry no mass and
    never make an inf; a row with no valid entry is finite (uniform) and then zeroed."""
    lp = F.log_softmax(z.masked_fill(~valid, torch.finfo(z.dtype).min), dim=-1)
    return lp.masked_fill(~valid, 0.0)


def _kl_rows(s: Tensor, t: Tensor, valid: Tensor) -> Tensor:
    """KL(softmax(t) || softmax(s)) along the last axis over the valid entries: one value per row, 0 if none."""
    lp_s, lp_t = _log_probs(s, valid), _log_probs(t, valid)
    p_t = lp_t.exp().masked_fill(~valid, 0.0)
    return (p_t * (lp_t - lp_s)).sum(-1)


def _ce_rows(s: Tensor, t: Tensor, valid: Tensor) -> Tensor:
    """-sum softmax(t) log softmax(s) along the last axis over the valid entries: one value per row, 0 if none."""
    p_t = _log_probs(t, valid).exp().masked_fill(~valid, 0.0)
    return -(p_t * _log_probs(s, valid)).sum(-1)


def _count(n: Tensor, dtype) -> Tensor:
    return n.sum().to(dtype).clamp_min(1)


def _heads(x: Tensor, heads: int, side: str) -> Tensor:
    """(B, L, D) -> (B, heads, L, D / heads), contiguous chunks of D (how attention heads are concatenated)."""
    b, l, d = x.shape
    if heads < 1 or d % heads:
        raise ValueError(f"{side} width {d} does not split into {heads} heads")
    return x.reshape(b, l, heads, d // heads).transpose(1, 2)


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)  # a zero vector stays 0 (and its gradient finite)


# ------------------------------------------------------------------------------------- attention scores (TinyBERT)
def attention_score_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """TinyBERT's attention loss on pre-softmax scores (B, H, L, L): squared error averaged over heads x real
    (query, key) pairs, H * sum_b n_b^2 terms. Head counts must agree.

    TinyBERT itself zeroes scores <= -100 (its scores carry the additive mask, so that drops padded keys, and any
    real score that low) and takes the mean over every entry of the padded batch, padded queries included; without
    padding the two agree."""
    m = _real(mask, s, t, scores=True)
    if s.shape != t.shape:
        raise ValueError(f"attention_score_mse needs equal head counts, got {tuple(s.shape)} and {tuple(t.shape)}")
    pm = _pairs(m)[:, None]  # (B, 1, L, L)
    d = _float(s).masked_fill(~pm, 0.0) - _float(t).masked_fill(~pm, 0.0)
    return (d * d).sum() / (_count(pm, d.dtype) * s.size(1))


def attention_ce_mean_scores(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """TextBrewer's att_ce_mean_loss on pre-softmax scores: average the scores over heads, softmax over the real keys,
    cross-entropy -sum_j p_T log p_S, mean over real query tokens. Head counts may differ. Not 0 for identical
    inputs: its minimum is the teacher's entropy.

    TextBrewer's masked branch softmaxes over every key and relies on the scores carrying the additive mask; on
    such scores it gives this value (its unmasked branch zeroes probabilities wherever a score is <= -1e-3)."""
    m = _real(mask, s, t, scores=True)
    valid = _pairs(m)
    rows = _ce_rows(_float(s).mean(1), _float(t).mean(1), valid)  # (B, L), 0 on padded queries
    return rows.sum() / _count(m, rows.dtype)


# ----------------------------------------------------------------------------------------------- MiniLM v1 and v2
def attention_kl(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """MiniLM v1 self-attention distribution transfer: KL(softmax(t) || softmax(s)) over the real keys, from
    pre-softmax scores (B, H, L, L); mean over heads x real query tokens. Head counts must agree."""
    m = _real(mask, s, t, scores=True)
    if s.shape != t.shape:
        raise ValueError(f"attention_kl needs equal head counts, got {tuple(s.shape)} and {tuple(t.shape)}")
    rows = _kl_rows(_float(s), _float(t), _pairs(m)[:, None])  # (B, H, L)
    return rows.sum() / (_count(m, rows.dtype) * s.size(1))


def relation_kl(s_x: Tensor, t_x: Tensor, mask: Tensor, relation_heads: int) -> Tensor:
    """MiniLM v2 self-attention relation for one of Q, K or V (B, L, D per side, widths may differ): split each side
    into `relation_heads` heads of d_r = D / relation_heads, R = softmax(X_r X_r^T / sqrt(d_r)) over the real keys,
    KL(R_T || R_S); mean over relation heads x real query tokens of the whole batch. The caller sums Q-Q, K-K, V-V.

    bloomberg/minilmv2.bb averages per example first (sum / (A_r * n_b), then / B); the two agree when all
    sequences have the same length. Here every real token weighs the same, as in the other token losses."""
    m = _real(mask, s_x, t_x)
    valid = _pairs(m)[:, None]  # (B, 1, L, L)

    def relation(x: Tensor, side: str) -> Tensor:
        xr = _heads(_zero_pads(x, m), relation_heads, side)  # (B, A_r, L, d_r)
        return xr @ xr.transpose(-1, -2) / math.sqrt(xr.size(-1))

    rows = _kl_rows(relation(s_x, "student"), relation(t_x, "teacher"), valid)  # (B, A_r, L)
    return rows.sum() / (_count(m, rows.dtype) * relation_heads)


def value_relation_kl(s_v: Tensor, t_v: Tensor, mask: Tensor, s_heads: int, t_heads: int) -> Tensor:
    """MiniLM v1 value relation: per attention head VR = softmax(V_h V_h^T / sqrt(d_h)) with each side's own d_h,
    KL(VR_T || VR_S); mean over heads x real query tokens. Head counts must agree; widths may differ."""
    if s_heads != t_heads:
        raise ValueError(f"value_relation_kl needs equal head counts, got student {s_heads} and teacher {t_heads}")
    return relation_kl(s_v, t_v, mask, s_heads)


# ------------------------------------------------------------------------------------------- CKD (Park et al. 2021)
# Official code: GeondoPark/CKD loss.py (WR_Dist, WR_Angle, WR_Angle_window, LTR_Dist, LTR_Angle), with the README's
# settings: distance "cos", lossfunc_d "kldiv", lossfunc_a "l2loss" (squared error), window_size 21. Denominators
# are the official ones (every real pair or triplet, the degenerate self ones included), so the published weights
# keep their scale. The official code stacks the matched layers and divides by the count over all of them; with one
# mask per batch that is the mean over layers of these per-layer values.
def wr_distance(s_h: Tensor, t_h: Tensor, mask: Tensor) -> Tensor:
    """CKD word relation, distance-based: per example and real token i, softmax over the real j != i of
    cos(r_i, r_j) (no temperature), KL(T || S) summed over rows; divided by the number of real (i, j) pairs
    sum_b n_b^2, self pairs included (the official normalisation), i.e. a row's KL / n per token. Widths may differ."""
    m = _real(mask, s_h, t_h)
    eye = torch.eye(m.size(1), dtype=torch.bool, device=m.device)
    valid = _pairs(m) & ~eye

    def cos(x: Tensor) -> Tensor:
        u = _unit(_zero_pads(x, m))
        return u @ u.transpose(1, 2)

    rows = _kl_rows(cos(s_h), cos(t_h), valid)  # (B, L)
    return rows.sum() / _count(m.sum(1).to(rows.dtype) ** 2, rows.dtype)


def _window_cosines(x: Tensor, w: int) -> Tensor:
    """(B, L, D) -> (B, L, 2w+1, 2w+1): at each centre i, cos of the angle between r_j - r_i and r_k - r_i for
    j, k in i-w..i+w (positions outside the sequence are zero rows; the caller masks them)."""
    nb = F.pad(x, (0, 0, w, w)).unfold(1, 2 * w + 1, 1).transpose(-1, -2)  # (B, L, W, D)
    u = _unit(nb - x.unsqueeze(2))  # j = i gives the zero vector: cosines 0 on both sides
    return u @ u.transpose(-1, -2)


def wr_angle(s_h: Tensor, t_h: Tensor, mask: Tensor, window: int = 21) -> Tensor:
    """CKD word relation, angle-based: for each real token i and real j, k within window // 2 positions of i, the
    cosine of the angle between r_j - r_i and r_k - r_i; squared error between student and teacher (the official
    "l2loss"), averaged over those (i, j, k) triplets, sum_i |N(i)|^2, the j = i or k = i ones included (both sides
    0 there; the official code counts them too). Widths may differ. `window` is odd (21 = i-10..i+10).

    Differences from the official WR_Angle_window: it clamps out-of-range neighbours to the first/last position
    (so the edge token appears several times near the borders) and masks only the centre (so padded tokens act as
    neighbours); here a neighbour outside the real tokens is simply absent. A window covering the whole sequence
    gives the official full WR_Angle exactly."""
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive number of tokens, got {window!r}")
    m = _real(mask, s_h, t_h)
    w = min(window // 2, m.size(1) - 1)  # a wider window adds nothing
    near = F.pad(m, (w, w)).unfold(1, 2 * w + 1, 1)  # (B, L, W): neighbour real
    valid = m[:, :, None, None] & near[:, :, :, None] & near[:, :, None, :]
    d = _window_cosines(_zero_pads(s_h, m), w) - _window_cosines(_zero_pads(t_h, m), w)
    se = (d * d).masked_fill(~valid, 0.0)
    return se.sum() / _count(valid, se.dtype)


def _layer_stack(layers: Sequence[Tensor], m: Tensor, side: str) -> Tensor:
    if not layers:
        raise ValueError(f"{side}: no layers given")
    _real(m, *layers)
    return _zero_pads(torch.stack([_float(x) for x in layers], dim=2), m)  # (B, L, N, D)


def _check_layer_counts(s_layers: Sequence[Tensor], t_layers: Sequence[Tensor]) -> None:
    if len(s_layers) != len(t_layers):
        n_s, n_t = len(s_layers), len(t_layers)
        raise ValueError(f"layer relations need as many student layers as teacher ones, got {n_s} and {n_t}")


def ltr_distance(s_layers: Sequence[Tensor], t_layers: Sequence[Tensor], mask: Tensor) -> Tensor:
    """CKD layer-transforming relation, distance-based: for each real token, softmax over the other selected layers
    b != a of cos(r^a, r^b), KL(T || S) summed over the N layer rows; averaged over real tokens x N^2 layer pairs
    (the official normalisation, self pairs included). Lists of (B, L, D), N per side; widths may differ."""
    _check_layer_counts(s_layers, t_layers)
    m = mask.to(torch.bool)
    xs, xt = _layer_stack(s_layers, m, "student"), _layer_stack(t_layers, m, "teacher")
    n = xs.size(2)
    valid = m[:, :, None, None] & ~torch.eye(n, dtype=torch.bool, device=m.device)  # (B, L, N, N)

    def cos(x: Tensor) -> Tensor:
        u = _unit(x)
        return u @ u.transpose(-1, -2)

    rows = _kl_rows(cos(xs), cos(xt), valid)  # (B, L, N)
    return rows.sum() / (_count(m, rows.dtype) * n * n)


def ltr_angle(s_layers: Sequence[Tensor], t_layers: Sequence[Tensor], mask: Tensor) -> Tensor:
    """CKD layer-transforming relation, angle-based: for each real token and layers a, b, c, the cosine of the angle
    between r^b - r^a and r^c - r^a; squared error (the official "l2loss") averaged over real tokens x N^3 layer
    triplets (the official normalisation; the degenerate b = a or c = a ones are 0 on both sides). Widths may differ."""
    _check_layer_counts(s_layers, t_layers)
    m = mask.to(torch.bool)
    xs, xt = _layer_stack(s_layers, m, "student"), _layer_stack(t_layers, m, "teacher")
    n = xs.size(2)

    def cosines(x: Tensor) -> Tensor:  # (B, L, N, N, N): [a, b, c]
        u = _unit(x[:, :, None] - x[:, :, :, None])  # [a, b] = r^b - r^a
        return u @ u.transpose(-1, -2)

    d = cosines(xs) - cosines(xt)
    se = (d * d).masked_fill(~m[:, :, None, None, None], 0.0)
    return se.sum() / (_count(m, se.dtype) * n**3)
