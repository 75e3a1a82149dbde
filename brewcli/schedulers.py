"""Schedules: the temperature of the KD loss, the loss weights, and the learning rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from brewcli.lazy import F
from brewcli.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

TEMPERATURE: Registry[Callable[..., Tensor | float]] = Registry("temperature scheduler", "schedulers")
WEIGHT: Registry[Callable[[float], float]] = Registry("weight schedule", "schedulers")
LR: Registry[str] = Registry("lr schedule", "schedulers")


@TEMPERATURE.register("constant", "the configured temperature for every example")
def constant_temperature(tau: float, s: Tensor, t: Tensor) -> float:
    return tau


@TEMPERATURE.register("flsw", "per-example t + beta*(mean(w) - w), w = (1 - cos(zS, zT))^gamma (Wen et al. 2019); "
                      "the exact cosine, without TextBrewer's 1e-4 added to the norms")
def flsw(tau: float, s: Tensor, t: Tensor, beta: float = 1.0, gamma: float = 2.0) -> Tensor:
    """Per-example temperature tau + beta * (mean(w) - w), w = (1 - cos(student logits, teacher logits))^gamma.

    TextBrewer divides each logit vector by its norm plus 1e-4 (`v / (|v| + eps)`), which shrinks the cosine by
    a relative 1e-4/|zS| + 1e-4/|zT| (under 2e-4 for logits of norm 1 or more; more for near-zero logits, whose
    w it pushes toward 1). brew takes the exact, scale-free cosine (F.normalize, whose 1e-12 floor only guards a
    zero vector, where both give cos 0 and w = 1), and clamps 1 - cos at 0 so that rounding above cos = 1 cannot
    raise a negative base to a fractional gamma (NaN), which TextBrewer's epsilon also prevented.
    """
    v, u = F.normalize(s.detach(), dim=-1), F.normalize(t.detach(), dim=-1)
    w = (1 - (v * u).sum(-1)).clamp_min(0) ** gamma
    return tau + (w.mean() - w) * beta


@TEMPERATURE.register("cwsm", "per-example t + beta*(mean(w) - w), w = 1/(max softmax(zS) + 1e-3) (Wen et al. 2019)")
def cwsm(tau: float, s: Tensor, t: Tensor, beta: float = 1.0) -> Tensor:
    w = 1.0 / (F.softmax(s.detach(), dim=-1).amax(-1) + 1e-3)
    return tau + (w.mean() - w) * beta


WEIGHT.add("none", lambda x: 1.0, "keep the configured weight")
WEIGHT.add("linear_decay", lambda x: 1.0 - x, "configured weight x (1 - progress): from full to 0")
WEIGHT.add("linear_growth", lambda x: x, "configured weight x progress: from 0 to full")

LR.add("linear", "linear", "linear warmup, then linear decay to 0")
LR.add("cosine", "cosine", "linear warmup, then cosine decay to 0")
LR.add("constant", "constant_with_warmup", "linear warmup, then constant")
