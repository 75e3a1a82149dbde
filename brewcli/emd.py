"""BERT-EMD (Li et al., EMNLP 2020): many-to-many layer matching by the earth mover's distance.

Instead of pairing student layer i with one teacher layer, every student layer is compared with every teacher
layer: a cost matrix C[i, j] (the match loss, e.g. hidden_mse through one shared projection, or the attention score
MSE) and layer weights w_S (student) and w_T (teacher), each summing to 1. The flow F is the optimal transport plan
between the two weightings under C (the `pot` package, exactly, on the detached costs), and the loss is
sum_ij F_ij C_ij: the gradient reaches each layer pair in proportion to how much weight flows between them.

With `adaptive: true` (the paper's weight update, which TextBrewer's example leaves commented out) the weights
follow the costs after every training step: a layer's cost per unit of its weight, c_i = sum_j F_ij C_ij / w_i,
becomes w_i = softmax_i((sum_k c_k / c_i) / temperature), so layers that transfer cheaply get more weight. The
weights live in the objective's state (saved in every checkpoint, so a resumed run continues them exactly).
Hidden states match layers 1..N (the embedding outputs are matched directly, 0 -> 0, as in the paper);
attention compares the scores before the softmax, layers 1..N (TinyBERT's and BERT-EMD's attention loss). With
`feature: both` the two get separate weights (the paper's `separate` variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brewcli.errors import BrewError, RecipeError

FEATURES = {"hidden": ("hidden", "hidden_mse"), "attention": ("scores", "attention_score_mse")}


@dataclass(frozen=True)
class ResolvedEMD:
    key: str  # distill.emd
    feature: str  # the feature kind (hidden, scores)
    loss: str  # the cost of one layer pair (a match loss)
    student_layers: tuple[int, ...]
    teacher_layers: tuple[int, ...]
    proj: str | None
    student_width: int
    teacher_width: int
    teacher: str
    adaptive: bool
    temperature: float
    weight: float

    @property
    def name(self) -> str:
        return f"emd_{self.feature}"


def require_pot():
    try:
        import ot
    except ImportError:
        raise BrewError("distill.emd needs the optimal-transport package pot: pip install 'brewcli[emd]' "
                        "(or pip install pot)") from None
    return ot


def resolve_emd(spec, teachers: dict, student_config) -> tuple[list[ResolvedEMD], list]:
    """(EMD terms, plain matches): one EMD term per feature, and for hidden states the embedding outputs matched
    0 -> 0 as an ordinary match. Checked like a match of the same loss (widths, heads, projections, attention)."""
    from brewcli.matches import resolve_match
    from brewcli.models.families import loose_widths
    from brewcli.recipe import MatchSpec

    if spec is None:
        return [], []
    require_pot()
    teacher = spec.teacher or next(iter(teachers))
    if teacher not in teachers:
        raise RecipeError("distill.emd.teacher", f"no teacher is named '{teacher}'", f"use one of {', '.join(teachers)}")
    out, extra = [], []
    for feature in (("hidden", "attention") if spec.feature == "both" else (spec.feature,)):
        kind, default = FEATURES[feature]
        loss = (spec.loss if feature == "hidden" else spec.attention_loss) or default
        probe = MatchSpec(feature=kind, loss=loss, proj=spec.proj, teacher=teacher, teacher_layer=1, student_layer=1)
        m = resolve_match(probe, "distill.emd", teachers, student_config)[0]  # one pair stands for all
        n_teacher, n_student = loose_widths(teachers[teacher]).layers, loose_widths(student_config).layers
        out.append(ResolvedEMD("distill.emd", kind, loss, tuple(range(1, n_student + 1)),
                               tuple(range(1, n_teacher + 1)), m.proj, m.student_width, m.teacher_width, teacher,
                               spec.adaptive, spec.temperature, spec.weight))
        if feature == "hidden" and spec.embeddings:
            zero = MatchSpec(feature="hidden", loss=loss, proj=spec.proj, teacher=teacher, teacher_layer=0,
                             student_layer=0, weight=spec.weight)
            extra += resolve_match(zero, "distill.emd", teachers, student_config)
    return out, extra


class EMDWeights(nn.Module):
    """The layer weights of one EMD term, as buffers: saved with the objective's state in every checkpoint."""

    def __init__(self, n_student: int, n_teacher: int):
        super().__init__()
        self.register_buffer("student", torch.full((n_student,), 1.0 / n_student, dtype=torch.float64))
        self.register_buffer("teacher", torch.full((n_teacher,), 1.0 / n_teacher, dtype=torch.float64))


def flow(student_weights: torch.Tensor, teacher_weights: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """The optimal transport plan (M, N) between the two weightings under `cost` (exact; pot's network simplex)."""
    ot = require_pot()
    a = student_weights.detach().cpu().double().numpy()
    b = teacher_weights.detach().cpu().double().numpy()
    plan = ot.emd(a / a.sum(), b / b.sum(), cost.detach().cpu().double().numpy())
    return torch.as_tensor(plan, dtype=cost.dtype, device=cost.device)


def updated_weights(weights: torch.Tensor, flows: torch.Tensor, cost: torch.Tensor, temperature: float) -> torch.Tensor:
    """BERT-EMD's update for the layers along dim 0 of `flows`/`cost`: each layer's transported cost per unit of
    its weight, inverted against their sum, then a softmax at `temperature`."""
    per_unit = (flows * cost).sum(1).double() / weights.clamp_min(1e-12)
    score = torch.where(per_unit > 0, per_unit.sum() / per_unit.clamp_min(1e-30), torch.zeros_like(per_unit))
    return torch.softmax(score / temperature, 0)


def emd_loss(cost: torch.Tensor, state: EMDWeights, adaptive: bool, temperature: float, update: bool):
    """(the loss sum F * C, the flow F) for a cost matrix (M, N) with grad; moves the weights when `update`."""
    f = flow(state.student, state.teacher, cost)
    loss = (f * cost).sum()
    if adaptive and update:
        c = cost.detach()
        with torch.no_grad():
            state.student.copy_(updated_weights(state.student, f, c, temperature))
            state.teacher.copy_(updated_weights(state.teacher, f.t(), c.t(), temperature))
    return loss, f
