"""Layer matches: which teacher feature each student feature is pulled towards, and with which loss.

Layer numbers follow the models' `hidden_states`: 0 is the embedding output, k the output of layer k (so
for a 12-layer teacher, 12 is the last layer). Attention maps, scores and q/k/v exist for layers 1..N only
(models/features.py). Pair losses (mmd, fsp) take `[a, b]` on each side, CKD's layer-transforming relations a
list. Presets carry TextBrewer's tables (written for a 12-layer teacher); the `uniform` generator pairs student
layer m with teacher layer round(m*N/M) for any depths; `tinybert`, `minilm`, `minilm-v2` and `ckd` expand into
the matches of those methods for any depth pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from brewcli.errors import RecipeError
from brewcli.losses import MATCH_LOSSES
from brewcli.registry import Registry

Pair = tuple[int, int]  # (teacher layer, student layer)


@dataclass(frozen=True)
class MatchPreset:
    feature: str
    loss: str
    pairs: tuple[Pair, ...]  # empty for the uniform generator
    expand: Callable | None = None  # a family of matches for any depths (tinybert, minilm, ckd): see below
    options: tuple[str, ...] = ()  # the MatchSpec keys it reads besides weight (relation_heads, weights, ...)


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
    (f"L{n}_attention_{loss[len('attention_'):] or 'mse'}", MATCH_LOSSES.get(loss).feature, loss, pairs,
     f"{n}-layer student: {loss} at teacher layers {','.join(str(t) for t, _ in pairs)}")
    for n, pairs in ((3, L3A), (4, L4A))
    for loss in ("attention_mse", "attention_ce", "attention_mse_sum", "attention_ce_mean")
]:
    MATCH_PRESETS.add(_name, MatchPreset(_feature, _loss, _pairs), _doc)


@dataclass(frozen=True)
class Planned:
    """One match a composite preset expands into, before its widths are read."""

    feature: str
    loss: str
    teacher_layer: int | tuple[int, ...]
    student_layer: int | tuple[int, ...]
    weight: float = 1.0
    group: str | None = None  # matches of one group share one projection (TinyBERT's hidden matches)
    options: tuple = ()  # (name, value) pairs the loss takes (relation_heads, window)
    term: str | None = None  # a composite preset's term: its weight is the entry's weights.TERM


def _ratio_layers(n_teacher: int, n_student: int, first: int) -> list[Pair]:
    return [(round(m * n_teacher / n_student), m) for m in range(first, n_student + 1)]


def _tinybert(spec, key: str, nt: int, ns: int, tw, sw) -> list[Planned]:
    """TinyBERT: hidden MSE through one shared projection (embedding output included) and MSE of the attention
    scores before the softmax, student layer m <- teacher layer m*N/M."""
    w = _weights(spec, key, ("hidden_mse", "attention_score_mse"))
    return ([Planned("hidden", "hidden_mse", t, s, w["hidden_mse"], "tinybert", term="hidden_mse")
             for t, s in _ratio_layers(nt, ns, 0)]
            + [Planned("scores", "attention_score_mse", t, s, w["attention_score_mse"], term="attention_score_mse")
               for t, s in _ratio_layers(nt, ns, 1)])


def _minilm(spec, key: str, nt: int, ns: int, tw, sw) -> list[Planned]:
    """MiniLM v1: the last layer's self-attention distributions (KL) and value relations (KL)."""
    w = _weights(spec, key, ("attention_kl", "value_relation"))
    return [Planned("scores", "attention_kl", nt, ns, w["attention_kl"], term="attention_kl"),
            Planned("v", "value_relation", nt, ns, w["value_relation"], term="value_relation")]


def relation_heads_for(tw: int, sw: int, wanted: int | None = None) -> int:
    """MiniLM v2's relation heads: `wanted`, or the most heads up to 48 (its choice for base teachers) that divide
    both widths."""
    if wanted is not None:
        return wanted
    g = math.gcd(tw, sw)
    return max(d for d in range(1, 49) if g % d == 0)


def _minilm_v2(spec, key: str, nt: int, ns: int, tw, sw) -> list[Planned]:
    """MiniLM v2: Q-Q, K-K and V-V self-attention relations over relation heads, teacher layer (default the last)
    to the student's last layer."""
    t = spec.teacher_layer if spec.teacher_layer is not None else nt
    heads = relation_heads_for(tw.hidden, sw.hidden, spec.relation_heads)
    w = _weights(spec, key, ("q", "k", "v"))
    return [Planned(kind, "relation_kl", t, ns, w[kind], options=(("relation_heads", heads),), term=kind)
            for kind in "qkv"]


def ckd_layers(n: int, other: int) -> tuple[int, ...]:
    """CKD's layer selection for one side: the embedding output and every step-th layer, step = n / gcd(n, other)."""
    step = n // math.gcd(n, other)
    return tuple(range(0, n + 1, step))


def _ckd(spec, key: str, nt: int, ns: int, tw, sw) -> list[Planned]:
    """CKD: word relations (distance, angle) at each selected layer pair, layer-transforming relations (distance,
    angle) across the selected layers. Relations only: no projection, any widths."""
    w = _weights(spec, key, ("wr_distance", "wr_angle", "ltr_distance", "ltr_angle"))
    ts, ss = ckd_layers(nt, ns), ckd_layers(ns, nt)
    window = (("window", spec.window),) if spec.window else ()
    # the paper averages the word relations over the selected layers: each layer's term weighs 1/len of the weight
    out = [Planned("hidden", loss, t, s, w[loss] / len(ts), options=window if loss == "wr_angle" else (), term=loss)
           for t, s in zip(ts, ss) for loss in ("wr_distance", "wr_angle") if w[loss] > 0]
    if len(ts) < 3:  # two layers relate one way only: the layer relations are constant (0), so they are left out
        return out
    return out + [Planned("hidden", loss, ts, ss, w[loss], term=loss) for loss in ("ltr_distance", "ltr_angle")
                  if w[loss] > 0]


def _weights(spec, key: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each term's weight: the match's `weight` times its entry in `weights` (default 1)."""
    given = spec.weights or {}
    unknown = [k for k in given if k not in names]
    if unknown:
        from brewcli.errors import did_you_mean

        raise RecipeError(f"{key}.weights.{unknown[0]}", f"preset '{spec.preset}' has no term "
                          f"'{unknown[0]}'; its terms are {', '.join(names)}", did_you_mean(unknown[0], names))
    return {n: spec.weight * given.get(n, 1.0) for n in names}


for _name, _fn, _opts, _doc in [
    ("tinybert", _tinybert, ("weights",), "TinyBERT: hidden_mse (one shared projection, embeddings included) and "
     "attention_score_mse, student layer m <- teacher m*N/M"),
    ("minilm", _minilm, ("weights",), "MiniLM v1: last-layer attention distributions and value relations (KL); "
     "equal head counts, any widths"),
    ("minilm-v2", _minilm_v2, ("weights", "relation_heads", "teacher_layer"), "MiniLM v2: Q-Q, K-K, V-V relations "
     "(KL) over relation_heads (default: most up to 48 dividing both widths), teacher_layer (default last) -> the "
     "student's last"),
    ("ckd", _ckd, ("weights", "window"), "CKD: word relations (wr_distance, wr_angle) per selected layer and "
     "layer-transforming relations (ltr_distance, ltr_angle); embeddings + every N/gcd-th layer"),
]:
    MATCH_PRESETS.add(_name, MatchPreset("hidden", "", (), _fn, _opts), _doc)


@dataclass(frozen=True)
class ResolvedMatch:
    key: str  # recipe key of the entry it came from, for messages
    feature: str  # its feature kind (models/features.py)
    loss: str
    teacher_layer: int | tuple[int, ...]
    student_layer: int | tuple[int, ...]
    weight: float
    proj: str | None  # projection applied to the student feature: linear, relu, tanh or None
    teacher_width: int  # hidden size, or head count for attention maps and scores
    student_width: int
    teacher: str = "teacher"  # the name of the teacher it pulls towards
    group: str | None = None  # matches of one group share one projection
    options: tuple = field(default=())  # (name, value) pairs passed to the loss
    term: str | None = None  # a composite preset's term (Planned.term)
    key_weight: float = 1.0  # the value at weight_key (a preset's term: its weights entry, not the product)

    @property
    def weight_key(self) -> str:
        """The recipe key that sets this match's weight (for messages)."""
        return f"{self.key}.weights.{self.term}" if self.term else f"{self.key}.weight"

    @property
    def name(self) -> str:
        fmt = lambda x: "-".join(map(str, x)) if isinstance(x, tuple) else str(x)  # noqa: E731
        return f"{self.feature}_{self.loss}_{fmt(self.student_layer)}_{fmt(self.teacher_layer)}"

    def layers(self, side: str) -> tuple[int, ...]:
        layer = self.teacher_layer if side == "teacher" else self.student_layer
        return layer if isinstance(layer, tuple) else (layer,)


def _uniform(feature: str, n_teacher: int, n_student: int) -> tuple[Pair, ...]:
    from brewcli.models.features import FEATURE_KINDS

    return tuple(_ratio_layers(n_teacher, n_student, FEATURE_KINDS.get(feature).first_layer))


def _layer(value, info, key: str, loss: str):
    if info.many:
        if not (isinstance(value, (list, tuple)) and len(value) >= 2):
            raise RecipeError(key, f"loss '{loss}' relates several layers of each model; give a list such as [0, 2, 4]")
        return tuple(value)
    if info.pair:
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise RecipeError(key, f"loss '{loss}' compares two layers per model; give a pair such as [4, 4]")
        return tuple(value)
    if isinstance(value, list):
        raise RecipeError(key, f"loss '{loss}' takes one layer, got a list", "pairs are for mmd/fsp")
    return value


def _planned(spec, key: str, depth: dict, teacher_widths, student_widths) -> list[Planned]:
    """The matches one recipe entry stands for."""
    if spec.preset:
        preset = MATCH_PRESETS.get(spec.preset)
        extra = [k for k in ("relation_heads", "weights", "window", "teacher_layer")
                 if getattr(spec, k) is not None and k not in preset.options]
        if extra:
            raise RecipeError(f"{key}.{extra[0]}", f"preset '{spec.preset}' does not take {extra[0]}",
                              f"presets that do: {', '.join(e.name for e in MATCH_PRESETS.entries() if extra[0] in e.obj.options)}")
        if preset.expand is not None:
            return preset.expand(spec, key, depth["teacher"], depth["student"], teacher_widths, student_widths)
        feature = spec.feature or preset.feature
        loss = MATCH_LOSSES.canonical(spec.loss or preset.loss)
        pairs = preset.pairs or _uniform(feature, depth["teacher"], depth["student"])
        pair = MATCH_LOSSES.get(loss).pair
        return [Planned(feature, loss, [t, t] if pair else t, [s, s] if pair else s, spec.weight) for t, s in pairs]
    default = {"attention": "attention_mse", "scores": "attention_score_mse", "q": "relation_kl", "k": "relation_kl",
               "v": "relation_kl"}.get(spec.feature or "", "hidden_mse")
    loss = MATCH_LOSSES.canonical(spec.loss or default)
    feature = spec.feature or MATCH_LOSSES.get(loss).feature
    options = []
    if "relation_heads" in MATCH_LOSSES.get(loss).args:
        options.append(("relation_heads", relation_heads_for(teacher_widths.hidden, student_widths.hidden,
                                                             spec.relation_heads)))
    if "window" in MATCH_LOSSES.get(loss).args and spec.window:
        options.append(("window", spec.window))
    return [Planned(feature, loss, spec.teacher_layer, spec.student_layer, spec.weight, options=tuple(options))]


def resolve_matches(specs, teachers: dict, student_config) -> list[ResolvedMatch]:
    """Expand presets and check every match against the configs of its teacher (by name; default the first) and of
    the student (no weights needed)."""
    return [m for i, spec in enumerate(specs) for m in resolve_match(spec, f"distill.matches[{i}]", teachers,
                                                                     student_config)]


def resolve_match(spec, key: str, teachers: dict, student_config) -> list[ResolvedMatch]:
    """One entry (a preset may give several matches), checked; `key` names it in messages."""
    teacher = spec.teacher or next(iter(teachers))
    teacher_config = teachers[teacher]
    from brewcli.models.families import loose_widths

    widths = {"teacher": loose_widths(teacher_config), "student": loose_widths(student_config)}
    depth = {side: w.layers for side, w in widths.items()}
    return [replace(_checked(key, spec, p, depth, widths, teacher_config, student_config), teacher=teacher)
            for p in _planned(spec, key, depth, widths["teacher"], widths["student"])]


def _key_weight(spec, p: Planned) -> float:
    return (spec.weights or {}).get(p.term, 1.0) if p.term else p.weight


def _checked(key: str, spec, p: Planned, depth: dict, widths: dict, tc, sc) -> ResolvedMatch:
    from brewcli.models.features import FEATURE_KINDS
    from brewcli.models.hooks import hook_problem

    info = MATCH_LOSSES.get(p.loss)
    where = lambda name: f"{key}.{name}" if not spec.preset else f"{key} (preset {spec.preset})"  # noqa: E731
    if p.feature not in info.accepts:
        raise RecipeError(f"{key}.loss", f"'{p.loss}' is a loss on {' or '.join(info.accepts)} features, but feature "
                          f"is '{p.feature}'", _moved(p.loss, p.feature))
    kind = FEATURE_KINDS.get(p.feature)
    for side, w in widths.items():
        if w.heads == 0 and (kind.layout == "att" or kind.source == "projections"):
            raise RecipeError(where("feature"), f"'{p.loss}' reads {p.feature} features, but the {side} is a BiGRU, "
                              "which has no attention (it offers hidden states only)",
                              "match hidden states: {preset: uniform, feature: hidden, loss: hidden_mse}, or preset: ckd")
    t = _layer(p.teacher_layer, info, f"{key}.teacher_layer", p.loss)
    s = _layer(p.student_layer, info, f"{key}.student_layer", p.loss)
    for side, layer, name in (("teacher", t, "teacher_layer"), ("student", s, "student_layer")):
        low = kind.first_layer
        for n in layer if isinstance(layer, tuple) else (layer,):
            if not low <= n <= depth[side]:
                raise RecipeError(where(name), f"{side} layer {n} is out of range: the {side} has {depth[side]} "
                                  f"layers, so {p.feature} layers run {low}..{depth[side]}",
                                  "use preset: uniform to pair layers for any depths")
    if kind.source == "projections":
        for side, cfg in (("teacher", tc), ("student", sc)):
            problem = hook_problem(cfg, p.feature)
            if problem:
                raise RecipeError(where("feature"), f"'{p.loss}' reads {p.feature} features, but {problem}",
                                  "match hidden states (e.g. preset: ckd, which needs only hidden states)")
    wt, ws = kind.width(widths["teacher"]), kind.width(widths["student"])
    options = dict(p.options)
    if "relation_heads" in info.args:
        heads = options["relation_heads"]
        bad = [w for w in (wt, ws) if w % heads]
        if bad:
            valid = relation_heads_for(wt, ws)
            raise RecipeError(f"{key}.relation_heads", f"is {heads}, which does not divide the width {bad[0]} (teacher "
                              f"{wt}, student {ws}); relation heads must divide both widths",
                              f"use relation_heads: {valid}")
    if "heads" in info.args:
        th, sh = widths["teacher"].heads, widths["student"].heads
        if th != sh:
            raise RecipeError(f"{key}.loss", f"'{p.loss}' compares relations head by head, but the teacher has {th} "
                              f"heads and the student {sh}", "use preset: minilm-v2 (relation heads, any head counts)")
        options["heads"] = th
    if kind.layout == "att":
        if spec.proj not in ("auto", "none"):
            raise RecipeError(f"{key}.proj", "projections apply to hidden features, not attention maps",
                              "drop proj or set it to auto")
        if info.needs_equal_width and wt != ws:
            raise RecipeError(f"{key}.loss", f"'{p.loss}' compares attention head by head, but the teacher has {wt} "
                              f"heads and the student {ws}", f"use '{p.loss}_sum'" if p.loss == "attention_mse"
                              else "use 'attention_ce_mean'")
        return ResolvedMatch(key, p.feature, p.loss, t, s, p.weight, None, wt, ws, options=tuple(options.items()),
                             term=p.term, key_weight=_key_weight(spec, p))
    proj = spec.proj
    if proj == "auto":
        proj = "linear" if (wt != ws and info.needs_equal_width) else None
    elif proj == "none":
        proj = None
        if wt != ws and info.needs_equal_width:
            raise RecipeError(f"{key}.proj", f"hidden sizes differ (student {ws}, teacher {wt}) and proj is none",
                              "set proj: auto (or linear/relu/tanh) to learn a projection")
    return ResolvedMatch(key, p.feature, p.loss, t, s, p.weight, proj, wt, ws, group=p.group if proj else None,
                         options=tuple(options.items()), term=p.term, key_weight=_key_weight(spec, p))


def _moved(loss: str, feature: str) -> str | None:
    if loss == "attention_ce_mean" and feature == "attention":
        return ("attention_ce_mean now reads the scores before the softmax, as TextBrewer's does; for the mean of "
                "probabilities use attention_prob_ce_mean")
    return None
