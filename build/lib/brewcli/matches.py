"""Layer matches: which teacher feature each student feature is pulled towards, and with which loss.

Layer numbers follow the models' `hidden_states`: 0 is the embedding output, k the output of layer k (so
for a 12-layer teacher, 12 is the last layer). Attention maps exist for layers 1..N only. Pair losses (mmd,
fsp) take `[a, b]` on each side. Presets carry TextBrewer's tables (written for a 12-layer teacher); the
`uniform` generator pairs student layer m with teacher layer round(m*N/M) for any depths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from brewcli.errors import RecipeError
from brewcli.losses import MATCH_LOSSES
from brewcli.registry import Registry

Pair = tuple[int, int]  # (teacher layer, student layer)


@dataclass(frozen=True)
class MatchPreset:
    feature: str
    loss: str
    pairs: tuple[Pair, ...]  # empty for the uniform generator


def _p(*pairs: Pair) -> tuple[Pair, ...]:
    return pairs


L3, L3A = _p((0, 0), (4, 1), (8, 2), (12, 3)), _p((4, 1), (8, 2), (12, 3))
L4, L4A = _p((0, 0), (3, 1), (6, 2), (9, 3), (12, 4)), _p((3, 1), (6, 2), (9, 3), (12, 4))
L6 = _p((0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6))
SMALL = tuple((i, i) for i in range(0, 13, 2))

MATCH_PRESETS: Registry[MatchPreset] = Registry("match", "matches")
MATCH_PRESETS.add("uniform", MatchPreset("hidden", "hidden_mse", ()),
                  "generator for any depths: student layer m <- teacher layer round(m*N/M); set feature and loss")
for _name, _feature, _loss, _pairs, _doc in [
    ("L3_hidden_mse", "hidden", "hidden_mse", L3, "3-layer student: hidden 0,4,8,12 -> 0,1,2,3"),
    ("L3_hidden_smmd", "hidden", "mmd", L3, "3-layer student: self-similarity (mmd) at 0,4,8,12 -> 0..3"),
    ("L3n_hidden_mse", "hidden", "hidden_mse", L3, "3-layer narrow student (T3-small): hidden_mse with projection"),
    ("L3l_hidden_mse", "hidden", "hidden_mse", L3, "3-layer wide student: hidden_mse with projection"),
    ("L4t_hidden_mse", "hidden", "hidden_mse", L4, "T4-tiny: hidden 0,3,6,9,12 -> 0..4 with projection"),
    ("L4t_hidden_sgram", "hidden", "fsp", L4, "T4-tiny: gram (FSP) matrices at 0,3,6,9,12 -> 0..4"),
    ("L4_hidden_smmd", "hidden", "mmd", L4, "4-layer student: self-similarity (mmd) at 0,3,6,9,12 -> 0..4"),
    ("L6_hidden_mse", "hidden", "hidden_mse", L6, "6-layer student: hidden 0,2,..,12 -> 0..6"),
    ("L6_hidden_smmd", "hidden", "mmd", L6, "6-layer student: self-similarity (mmd) at 0,2,..,12 -> 0..6"),
    ("small_hidden_mse", "hidden", "hidden_mse", SMALL, "12-layer narrow student (T12-nano): 0,2,..,12 -> same"),
    ("small_hidden_smmd", "hidden", "mmd", SMALL, "12-layer narrow student: self-similarity at 0,2,..,12"),
] + [
    (f"L{n}_attention_{loss[len('attention_'):] or 'mse'}", "attention", loss, pairs,
     f"{n}-layer student: {loss} at teacher layers {','.join(str(t) for t, _ in pairs)}")
    for n, pairs in ((3, L3A), (4, L4A))
    for loss in ("attention_mse", "attention_ce", "attention_mse_sum", "attention_ce_mean")
]:
    MATCH_PRESETS.add(_name, MatchPreset(_feature, _loss, _pairs), _doc)


@dataclass(frozen=True)
class ResolvedMatch:
    key: str  # recipe key of the entry it came from, for messages
    feature: str
    loss: str
    teacher_layer: int | tuple[int, int]
    student_layer: int | tuple[int, int]
    weight: float
    proj: str | None  # projection applied to the student feature: linear, relu, tanh or None
    teacher_width: int  # hidden size, or head count for attention
    student_width: int
    teacher: str = "teacher"  # the name of the teacher it pulls towards

    @property
    def name(self) -> str:
        fmt = lambda x: "-".join(map(str, x)) if isinstance(x, tuple) else str(x)  # noqa: E731
        return f"{self.feature}_{self.loss}_{fmt(self.student_layer)}_{fmt(self.teacher_layer)}"

    def layers(self, side: str) -> tuple[int, ...]:
        layer = self.teacher_layer if side == "teacher" else self.student_layer
        return layer if isinstance(layer, tuple) else (layer,)


def _uniform(feature: str, n_teacher: int, n_student: int) -> tuple[Pair, ...]:
    first = 0 if feature == "hidden" else 1
    return tuple((round(m * n_teacher / n_student), m) for m in range(first, n_student + 1))


def _layer(value, pair: bool, key: str, loss: str):
    if pair:
        if not (isinstance(value, list) and len(value) == 2):
            raise RecipeError(key, f"loss '{loss}' compares two layers per model; give a pair such as [4, 4]")
        return tuple(value)
    if isinstance(value, list):
        raise RecipeError(key, f"loss '{loss}' takes one layer, got a list", "pairs are for mmd/fsp")
    return value


def resolve_matches(specs, teachers: dict, student_config) -> list[ResolvedMatch]:
    """Expand presets and check every match against the configs of its teacher (by name; default the first) and of
    the student (no weights needed)."""
    out: list[ResolvedMatch] = []
    first = next(iter(teachers))
    for i, spec in enumerate(specs):
        teacher = spec.teacher or first
        teacher_config = teachers[teacher]
        depth = {"teacher": teacher_config.num_hidden_layers, "student": student_config.num_hidden_layers}
        key = f"distill.matches[{i}]"
        if spec.preset:
            preset = MATCH_PRESETS.get(spec.preset)
            feature = spec.feature or preset.feature
            loss = MATCH_LOSSES.canonical(spec.loss or preset.loss)
            pairs = preset.pairs or _uniform(feature, depth["teacher"], depth["student"])
        else:
            default = "attention_mse" if spec.feature == "attention" else "hidden_mse"
            loss = MATCH_LOSSES.canonical(spec.loss or default)
            feature = spec.feature or MATCH_LOSSES.get(loss).feature
            pairs = ((spec.teacher_layer, spec.student_layer),)
        info = MATCH_LOSSES.get(loss)
        if info.feature != feature:
            raise RecipeError(f"{key}.loss", f"'{loss}' is a loss on {info.feature} features, but feature is '{feature}'")
        for t, s in pairs:
            if spec.preset:
                t, s = ([t, t], [s, s]) if info.pair else (t, s)
            t = _layer(t, info.pair, f"{key}.teacher_layer", loss)
            s = _layer(s, info.pair, f"{key}.student_layer", loss)
            for side, layer, name in (("teacher", t, "teacher_layer"), ("student", s, "student_layer")):
                low = 0 if feature == "hidden" else 1
                for n in layer if isinstance(layer, tuple) else (layer,):
                    if not low <= n <= depth[side]:
                        where = f"{key}.{name}" if not spec.preset else f"{key} (preset {spec.preset})"
                        raise RecipeError(where, f"{side} layer {n} is out of range: the {side} has {depth[side]} "
                                          f"layers, so {feature} layers run {low}..{depth[side]}",
                                          "use preset: uniform to pair layers for any depths")
            out.append(replace(_with_widths(key, spec, feature, loss, t, s, teacher_config, student_config),
                               teacher=teacher))
    return out


def _with_widths(key, spec, feature, loss, t, s, tc, sc) -> ResolvedMatch:
    info = MATCH_LOSSES.get(loss)
    if feature == "attention":
        wt, ws = tc.num_attention_heads, sc.num_attention_heads
        if spec.proj not in ("auto", "none"):
            raise RecipeError(f"{key}.proj", "projections apply to hidden features, not attention maps",
                              "drop proj or set it to auto")
        if info.needs_equal_width and wt != ws:
            raise RecipeError(f"{key}.loss", f"'{loss}' compares attention head by head, but the teacher has {wt} "
                              f"heads and the student {ws}", f"use '{loss}_sum'" if loss == "attention_mse"
                              else "use 'attention_ce_mean'")
        return ResolvedMatch(key, feature, loss, t, s, spec.weight, None, wt, ws)
    wt, ws = tc.hidden_size, sc.hidden_size
    proj = spec.proj
    if proj == "auto":
        proj = "linear" if (wt != ws and info.needs_equal_width) else None
    elif proj == "none":
        proj = None
        if wt != ws and info.needs_equal_width:
            raise RecipeError(f"{key}.proj", f"hidden sizes differ (student {ws}, teacher {wt}) and proj is none",
                              "set proj: auto (or linear/relu/tanh) to learn a projection")
    return ResolvedMatch(key, feature, loss, t, s, spec.weight, proj, wt, ws)
