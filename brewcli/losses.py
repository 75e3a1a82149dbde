"""Loss functions, registered by name.

Logit (KD) losses take student and teacher logits of shape (B, C) and a temperature that is a number or a
per-example tensor (B,). They return one loss per example; the caller averages.

Match losses compare one intermediate feature of the student with one of the teacher. Hidden states are
(B, L, D); attention maps are Hugging Face's post-softmax probabilities (B, H, L, L). `mask` is the
attention mask (B, L) with 1 for real tokens, so padding never contributes. Pair losses (`pair=True`) take a
pair of layers per side and compare a similarity matrix built from the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from brewcli import relations as R
from brewcli.lazy import F, torch
from brewcli.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class MatchLoss:
    fn: Callable[..., Tensor]
    feature: str  # the feature kind it reads by default (models/features.py)
    pair: bool = False  # takes [layer_a, layer_b] on each side
    needs_equal_width: bool = True  # hidden size (or head count) must agree, else a projection is needed
    unit: str = "tokens"  # what the loss averages over: real tokens, or rows (pkd's [CLS], pair-similarity losses)
    kinds: tuple[str, ...] = ()  # every kind it accepts, where more than its default (MiniLM v2: q, k or v)
    many: bool = False  # takes a list of layers on each side (CKD's layer-transforming relations)
    args: tuple[str, ...] = ()  # extra arguments: "heads" (both head counts), "relation_heads", "window"

    @property
    def accepts(self) -> tuple[str, ...]:
        return self.kinds or (self.feature,)


@dataclass(frozen=True)
class KDLoss:
    """A logit loss and what it needs to be told apart: the distribution its target is (what several teachers'
    `ensemble: probabilities` averages, and whose entropy guidance reads) and whether its value includes the target's
    entropy (soft cross-entropies: their value never reaches 0, so guidance does not compare it by value)."""

    fn: Callable[..., Tensor]
    target: str | None  # softmax | sigmoid | None (KD on the logits themselves)
    floored: bool = False
    args: tuple[str, ...] = ()  # distill.* settings it also takes (jsd_beta, skew_alpha)

    def __call__(self, s: Tensor, t: Tensor, temperature, **kwargs) -> Tensor:
        return self.fn(s, t, temperature, **kwargs)


KD_LOSSES: Registry[KDLoss] = Registry("kd loss", "losses")


def _kd(name: str, doc: str, target: str | None, floored: bool = False, args: tuple[str, ...] = ()):
    return lambda fn: (KD_LOSSES.add(name, KDLoss(fn, target, floored, args), doc), fn)[1]
MATCH_LOSSES: Registry[MatchLoss] = Registry("loss", "losses")


def _t(temperature: Tensor | float, like: Tensor) -> Tensor:
    t = torch.as_tensor(temperature, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1) if t.dim() else t


@_kd("ce", "soft cross-entropy -sum softmax(zT/t) * log_softmax(zS/t) (TextBrewer's default)", "softmax", True)
def kd_ce(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    return -(F.softmax(t / tau, dim=-1) * F.log_softmax(s / tau, dim=-1)).sum(-1)


@_kd("kl", "KL(teacher || student) of the softened distributions (Hinton, DistilBERT)", "softmax")
def kd_kl(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    log_pt = F.log_softmax(t / tau, dim=-1)
    return (log_pt.exp() * (log_pt - F.log_softmax(s / tau, dim=-1))).sum(-1)


@_kd("bce", "binary cross-entropy of sigmoid(zS/t) against sigmoid(zT/t), mean over labels (multi-label)", "sigmoid",
     True)
def kd_bce(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    return F.binary_cross_entropy_with_logits(s / tau, torch.sigmoid(t / tau), reduction="none").mean(-1)


@_kd("mse", "mean squared error of zS/t and zT/t; the one to use for regression", None)
def kd_mse(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    return ((s / tau - t / tau) ** 2).mean(-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mix(log_p: Tensor, log_q: Tensor, w: float) -> Tensor:
    """log(w p + (1-w) q), from the two log-probabilities, for 0 < w < 1."""
    return torch.logsumexp(torch.stack([log_p + math.log(w), log_q + math.log(1 - w)]), dim=0)


@_kd("reverse_kl", "KL(student || teacher) of the softened distributions (mode-seeking; MiniLLM, GKD)", "softmax")
def kd_reverse_kl(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    return _kl(F.log_softmax(s / tau, dim=-1), F.log_softmax(t / tau, dim=-1))


@_kd("jsd", "generalized JSD at distill.jsd_beta, scaled by 1/(b(1-b)): forward KL at b=0, reverse KL at b=1, "
     "continuous between (GKD)", "softmax", args=("jsd_beta",))
def kd_jsd(s: Tensor, t: Tensor, temperature: Tensor | float, jsd_beta: float = 0.5) -> Tensor:
    """With M = b P_T + (1-b) P_S: [b KL(T || M) + (1-b) KL(S || M)] / (b (1-b)). The unscaled form (TRL's) tends to
    0 at both ends; scaled, it tends to KL(T || S) as b -> 0 and KL(S || T) as b -> 1, which are its values there."""
    tau = _t(temperature, s)
    log_pt, log_ps = F.log_softmax(t / tau, dim=-1), F.log_softmax(s / tau, dim=-1)
    b = float(jsd_beta)
    if b <= 0:
        return _kl(log_pt, log_ps)
    if b >= 1:
        return _kl(log_ps, log_pt)
    log_m = _log_mix(log_pt, log_ps, b)
    return (b * _kl(log_pt, log_m) + (1 - b) * _kl(log_ps, log_m)) / (b * (1 - b))


@_kd("tvd", "total variation 1/2 sum |P_T - P_S| of the softened distributions", "softmax")
def kd_tvd(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    tau = _t(temperature, s)
    return 0.5 * (F.softmax(t / tau, dim=-1) - F.softmax(s / tau, dim=-1)).abs().sum(-1)


@_kd("skew_kl", "skew KL(T || a P_T + (1-a) P_S) at a = distill.skew_alpha (DistiLLM); a=0: forward KL", "softmax",
     args=("skew_alpha",))
def kd_skew_kl(s: Tensor, t: Tensor, temperature: Tensor | float, skew_alpha: float = 0.1) -> Tensor:
    tau = _t(temperature, s)
    log_pt, log_ps = F.log_softmax(t / tau, dim=-1), F.log_softmax(s / tau, dim=-1)
    a = float(skew_alpha)
    if a <= 0:
        return _kl(log_pt, log_ps)
    if a >= 1:
        return log_pt.new_zeros(log_pt.shape[:-1])
    return _kl(log_pt, _log_mix(log_pt, log_ps, a))


@_kd("cosine", "1 - cos(zS, zT) per row, no temperature (sentence embeddings)", None)
def kd_cosine(s: Tensor, t: Tensor, temperature: Tensor | float) -> Tensor:
    return 1 - F.cosine_similarity(s, t, dim=-1)


def _pair_mask(mask: Tensor) -> Tensor:
    m = mask.to(torch.float32)
    return m.unsqueeze(2) * m.unsqueeze(1)  # (B, L, L)


def hidden_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(s.dtype).unsqueeze(-1)
    return ((s - t) ** 2 * m).sum() / (m.sum() * s.size(-1))


def cosine(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(s.dtype)
    return ((1 - F.cosine_similarity(s, t, dim=-1)) * m).sum() / m.sum()


def pkd(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    s0, t0 = F.normalize(s[:, 0], dim=-1), F.normalize(t[:, 0], dim=-1)
    return ((s0 - t0) ** 2).sum(-1).mean()


def mmd(s: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
    gs = s[0] @ s[1].transpose(1, 2) / s[0].size(-1)
    gt = t[0] @ t[1].transpose(1, 2) / t[0].size(-1)
    pm = _pair_mask(mask).to(gs.dtype)
    return ((gs - gt) ** 2 * pm).sum() / pm.sum()


def fsp(s: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
    m = mask.to(s[0].dtype).unsqueeze(-1)
    n = m.sum(1, keepdim=True)  # (B, 1, 1) real tokens per example

    def gram(x: tuple[Tensor, Tensor]) -> Tensor:
        return (x[0] * m).transpose(1, 2) @ (x[1] * m) / n

    return F.mse_loss(gram(s), gram(t))


def attention_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    pm = _pair_mask(mask).to(s.dtype).unsqueeze(1)  # (B, 1, L, L)
    return ((s - t) ** 2 * pm).sum() / (pm.sum() * s.size(1))


def attention_mse_sum(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    pm = _pair_mask(mask).to(s.dtype)
    return ((s.sum(1) - t.sum(1)) ** 2 * pm).sum() / pm.sum()


def _attention_ce(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    # s, t: (B, H, L, L) probabilities. No second softmax: Hugging Face already returns probabilities.
    m = mask.to(s.dtype)
    row = -(t * torch.log(s.clamp_min(1e-12)) * m[:, None, None, :]).sum(-1)  # (B, H, L)
    return (row * m[:, None, :]).sum() / (m.sum() * s.size(1))


def attention_ce(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    return _attention_ce(s, t, mask)


def attention_prob_ce_mean(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    return _attention_ce(s.mean(1, keepdim=True), t.mean(1, keepdim=True), mask)


MATCH_LOSSES.add("hidden_mse", MatchLoss(hidden_mse, "hidden"), "masked MSE of hidden states (TinyBERT, TextBrewer)")
MATCH_LOSSES.add("cos", MatchLoss(cosine, "hidden"), "1 - cosine similarity per token, masked mean (DistilBERT)")
MATCH_LOSSES.add("pkd", MatchLoss(pkd, "hidden", unit="rows"), "MSE of the L2-normalised [CLS] vectors (BERT-PKD)")
MATCH_LOSSES.add(
    "mmd",
    MatchLoss(mmd, "hidden", pair=True, needs_equal_width=False, unit="rows"),
    "token-token similarity matrices X1 X2^T / D, masked MSE; widths may differ",
    aliases=("nst",),
)
MATCH_LOSSES.add(
    "fsp", MatchLoss(fsp, "hidden", pair=True, unit="rows"), "feature gram matrices X1^T X2 / L, MSE (FSP)", aliases=("gram",)
)
MATCH_LOSSES.add("attention_mse", MatchLoss(attention_mse, "attention"), "masked MSE of attention maps, head by head")
MATCH_LOSSES.add(
    "attention_mse_sum",
    MatchLoss(attention_mse_sum, "attention", needs_equal_width=False),
    "masked MSE of attention maps summed over heads; head counts may differ",
)
MATCH_LOSSES.add(
    "attention_ce", MatchLoss(attention_ce, "attention"), "cross-entropy of attention distributions, head by head"
)
MATCH_LOSSES.add(
    "attention_prob_ce_mean",
    MatchLoss(attention_prob_ce_mean, "attention", needs_equal_width=False),
    "cross-entropy of the head-averaged attention probabilities; head counts may differ",
)
MATCH_LOSSES.add(
    "attention_ce_mean",
    MatchLoss(R.attention_ce_mean_scores, "scores", needs_equal_width=False),
    "cross-entropy of softmax(head-averaged scores), TextBrewer's att_ce_mean; head counts may differ",
)



# ---------------------------------------------------------------------------------------------- relation losses
# TinyBERT's scores, MiniLM's relations and CKD's (brewcli/relations.py). attention_ce_mean is TextBrewer's formula
# (softmax of the head-averaged scores); brew's earlier one, the mean of the probabilities, is attention_prob_ce_mean.
def _relation_losses() -> None:
    add = MATCH_LOSSES.add
    add("attention_score_mse", MatchLoss(R.attention_score_mse, "scores"),
        "MSE of the attention scores before the softmax, head by head, masked pairs left out (TinyBERT)")
    add("attention_kl", MatchLoss(R.attention_kl, "scores"),
        "KL of the self-attention distributions, head by head (MiniLM v1)")
    add("value_relation", MatchLoss(lambda s, t, mask, heads: R.value_relation_kl(s, t, mask, heads, heads), "v",
                                    needs_equal_width=False, args=("heads",)),
        "KL of the value relations softmax(V V^T / sqrt(d)) per head; equal head counts, any widths (MiniLM v1)")
    add("relation_kl", MatchLoss(R.relation_kl, "q", needs_equal_width=False, kinds=("q", "k", "v"),
                                 args=("relation_heads",)),
        "KL of Q-Q, K-K or V-V relations over relation_heads; any widths the heads divide (MiniLM v2)")
    add("wr_distance", MatchLoss(R.wr_distance, "hidden", needs_equal_width=False),
        "word relations by distance: softmax of token-token cosines, KL (CKD)")
    add("wr_angle", MatchLoss(R.wr_angle, "hidden", needs_equal_width=False, args=("window",)),
        "word relations by angle among tokens within a window (default 21), MSE (CKD)")
    add("ltr_distance", MatchLoss(R.ltr_distance, "hidden", needs_equal_width=False, many=True),
        "layer-transforming relations by distance across a list of layers, per token (CKD)")
    add("ltr_angle", MatchLoss(R.ltr_angle, "hidden", needs_equal_width=False, many=True),
        "layer-transforming relations by angle across a list of layers, per token (CKD)")


_relation_losses()
