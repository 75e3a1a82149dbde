"""Loss-scale guidance: does each loss term pull its weight?

After the first logging window of a run brew compares the loss terms and prints one warning per problem, naming
the term, the figures and the fix. The figures:

- gradient share: each term's weighted value is differentiated on its own (`torch.autograd.grad`, graph kept) on
  the student's parameters, on the first micro-batch of a few sampled logging windows (`probe_due`); a term's share
  is its gradient norm over the sum of all the terms' norms, so the shares sum to 1. Norms, not squared norms: a
  term at 1% of the norm pulls a hundredth as hard, where a squared share (0.01%) would exaggerate the gap. The
  probe writes no `.grad` and draws no random number (the backward of dropout reuses the forward's mask), so the
  step that follows is the one an unprobed run takes, bit for bit.
- weighted value: the term's mean value times its weight over the window. Soft cross-entropy and BCE KD are not
  compared by value: their value includes the teacher's own entropy, a constant that says nothing of the pull.
- teacher entropy (KD): the mean normalised entropy of the teacher's target at the run's temperature,
  H(softmax(z_T / T)) / ln C per row (C: the row's classes, or a QA window's context positions), 1 for a uniform
  target; sigmoid KD (multi-label): each label's binary entropy over ln 2, averaged. KD on logits (mse) compares no
  distribution, so it has no entropy (regression has no distribution at all).

Thresholds: RATIO (100x, two orders of magnitude) between the largest term and another, by gradient share or by
weighted value; FLAT (0.95) mean normalised entropy. The quickstart's BBC teacher (logits about 5 apart) gives 0.11
at T=1, 0.58 at T=2, 0.89 at T=4, 0.96 at T=6 and 0.98 at T=8, where its top class holds 0.32 against 0.2 for
uniform. A flat target is flagged only without `distill.scale_by_t2`: with it, a soft target at a high temperature
is Hinton's logit-matching limit, a choice whose size the gradient share still checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RATIO = 100.0  # "orders of magnitude apart": the largest term over another, by gradient share or weighted value
FLAT = 0.95  # mean normalised teacher entropy above which the softened target is "nearly uniform"
PROBES = 5  # gradient probes per run: the first window's and then spread evenly over the run
MASKED_BELOW = -1e3  # a target logit below this marks a masked position (QA fills positions outside the context)


@dataclass
class TermFigures:
    name: str
    key: str  # the recipe key of its weight
    weight: float
    value: float  # mean weighted value over the window
    share: float | None = None  # its share of the gradient (None: not probed)
    floored: bool = False  # its value includes the teacher's entropy (soft CE, BCE): not compared by value
    settled: bool = False  # matched by construction at the start (a copied layer): never flagged as small


@dataclass
class KDFigures:
    temperature: float
    entropy: float | None  # mean normalised entropy of the teacher's target at that temperature
    classes: float | None  # classes (or positions, or labels) per row
    kind: str | None  # softmax | sigmoid | None (KD on logits)
    scale_by_t2: bool
    value: float  # the kd term's mean raw value


# ---------------------------------------------------------------------------------------------- measuring


def target_entropy(zt, tau, kind: str | None) -> tuple[float, float] | None:
    """(mean normalised entropy, mean classes per row) of the KD target softened at `tau` (a number or one per row),
    or None where the term compares no distribution (KD on logits) or no row has two classes."""
    import torch

    if kind is None or zt.numel() == 0:
        return None
    with torch.no_grad():
        z = zt.detach().float()
        t = torch.as_tensor(tau, dtype=z.dtype, device=z.device)
        t = t.reshape(-1, *([1] * (z.dim() - 1))) if t.dim() else t
        if kind == "sigmoid":
            p = torch.sigmoid(z / t).clamp(1e-7, 1 - 1e-7)
            h = -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2)
            return float(h.mean()), float(z.size(-1))
        real = z > MASKED_BELOW
        p = torch.softmax(z / t, dim=-1)
        h = -(p * p.clamp_min(1e-30).log()).sum(-1)
        c = real.sum(-1).float()
        keep = c >= 2
        if not keep.any():
            return None
        return float((h[keep] / c[keep].log()).mean()), float(c[keep].mean())


def probe_due(step: int, total: int, done: int) -> bool:
    """Whether the first micro-batch of the window starting at `step` (1-based) is probed: the first window's, then
    PROBES in all, spread evenly over the run's `total` steps."""
    return done < PROBES and step - 1 >= done * total / PROBES


def grad_norms(weighted: dict, params: list, scale: float = 1.0) -> dict[str, float]:
    """Each weighted term's gradient norm on `params`. `torch.autograd.grad` with the graph kept: no `.grad` is
    written and no random number drawn, so the real backward that follows is unchanged. `scale`: fp16's loss scale,
    applied and divided out again so that small gradients do not underflow."""
    import torch

    out = {}
    for name, value in weighted.items():
        if not value.requires_grad:
            out[name] = 0.0
            continue
        grads = torch.autograd.grad(value * scale, params, retain_graph=True, allow_unused=True)
        sq = sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None)
        out[name] = math.sqrt(sq) / scale
    return out


def shares(norms: dict[str, float]) -> dict[str, float]:
    """Gradient norms -> shares that sum to 1 (all zero: equal shares)."""
    total = sum(norms.values())
    if total <= 0 or not math.isfinite(total):
        return {k: 1 / len(norms) for k in norms}
    return {k: v / total for k, v in norms.items()}


def copied_at_init(student_layer, teacher_layer, init_layers: list[int] | None) -> bool:
    """Whether a match compares a feature the student copied from the teacher (init: teacher-layers): the
    embeddings (hidden 0), and the outputs or maps of student layer k where it copied teacher layers 0..k-1 in order.
    Such a term starts at its minimum (only dropout differs), so its small gradient is no scale problem."""
    if init_layers is None:
        return False
    s = student_layer if isinstance(student_layer, tuple) else (student_layer,)
    t = teacher_layer if isinstance(teacher_layer, tuple) else (teacher_layer,)
    return s == t and all(list(init_layers[:k]) == list(range(k)) for k in s)


def read_terms(terms, weighted: dict, raw: dict, steps: int, share: dict, init_layers=None):
    """(TermFigures per term, KDFigures or None) from the objective's terms and one window's meter figures."""
    figures = []
    for t in terms:
        m = getattr(t, "match", None)
        settled = m is not None and not m.proj and copied_at_init(m.student_layer, m.teacher_layer, init_layers)
        figures.append(TermFigures(t.name, t.key, t.key_weight, weighted.get(t.name, 0.0) / steps, share.get(t.name),
                                   getattr(t, "floored", False), settled))
    kd = next((t for t in terms if t.name == "kd"), None)
    if kd is None:
        return figures, None
    entropy = raw["teacher_entropy"] / steps if "teacher_entropy" in raw else None
    return figures, KDFigures(kd.last_temperature, entropy, kd.last_entropy[1] if kd.last_entropy else None,
                              kd.kind, kd.scale_by_t2, raw.get("kd", 0.0) / steps)


# ---------------------------------------------------------------------------------------------- the run's tally


def tally(old: dict, weighted: dict[str, float], steps: int, norms: dict[str, float] | None) -> dict:
    """The run's loss-term figures with one more logging window: weighted value sums over `steps` optimizer steps,
    and the gradient shares of its probe (if any). A plain dict, so that it travels in the training state."""
    new = {"steps": old.get("steps", 0) + steps, "probes": old.get("probes", 0),
           "weighted": dict(old.get("weighted", {})), "shares": dict(old.get("shares", {}))}
    for name, value in weighted.items():
        new["weighted"][name] = new["weighted"].get(name, 0.0) + value
    if norms:
        new["probes"] += 1
        for name, share in shares(norms).items():
            new["shares"][name] = new["shares"].get(name, 0.0) + share
    return new


def summary(t: dict) -> dict:
    """For metrics.json: each term's mean weighted value per step and mean share of the gradient over the probes."""
    steps, probes = max(t.get("steps", 0), 1), t.get("probes", 0)
    out = {}
    for name, value in t.get("weighted", {}).items():
        share = t["shares"].get(name, 0.0) / probes if probes else 1.0 if len(t["weighted"]) == 1 else None
        out[name] = {"weighted": value / steps, "grad_share": share}
    return {"probes": probes, "terms": out} if out else {}


def summary_table(s: dict):
    """The end-of-run table of `summary`: each term's mean weighted value and share of the gradient."""
    from brewcli.ui import plain_table

    rows = [(name, f"{f['weighted']:.4g}", "-" if f["grad_share"] is None else f"{f['grad_share']:.1%}")
            for name, f in s["terms"].items()]
    return plain_table(f"loss terms (share of the gradient: mean of {s['probes']} probes)",
                       ("term", "weighted value", "gradient share"), rows)


# ---------------------------------------------------------------------------------------------- warnings


def _small(values: dict[str, float], ratio: float) -> tuple[str | None, list[str]]:
    """(the largest, the names at least `ratio` times below it)."""
    if len(values) < 2:
        return None, []
    top = max(values, key=values.get)
    if values[top] <= 0:
        return None, []
    return top, [k for k, v in values.items() if k != top and v * ratio <= values[top]]


def _times(a: float, b: float) -> str:
    return "over 10,000x" if a <= 0 or b / a >= 1e4 else f"{b / a:,.0f}x"


def _figures(t: TermFigures, top: TermFigures, by_share: bool, by_value: bool) -> str:
    parts = []
    if t.share is not None and top.share is not None:
        parts.append(f"gradient share {t.share:.2%} against {top.share:.2%}")
    if not t.floored and not top.floored:
        parts.append(f"weighted value {t.value:.4g} against {top.value:.4g}")
    how = _times(t.share, top.share) if by_share else _times(t.value, top.value)
    return f"{how} below {top.name} ({'; '.join(parts)})"


def _kd_extra(kd: KDFigures | None) -> str:
    if kd is None or kd.scale_by_t2 or kd.temperature <= 1:
        return ""
    return (f", or set distill.scale_by_t2: true (without it the KD gradient shrinks as 1/T^2 = "
            f"1/{kd.temperature ** 2:g} at distill.temperature {kd.temperature:g})")


def flat_warning(kd: KDFigures | None, share: float | None, flat: float = FLAT) -> str | None:
    """The warning for a KD target the temperature has made nearly uniform (None if it is not)."""
    if kd is None or kd.entropy is None or kd.scale_by_t2 or kd.entropy < flat:
        return None
    got = f"; kd gets {share:.1%} of the gradient" if share is not None else ""
    if kd.kind == "sigmoid":
        what = (f"each label's probability is near 0.5 (mean binary entropy {kd.entropy:.3f} of the maximum, "
                f"{kd.classes:.0f} labels)")
    else:
        c = kd.classes or 2
        what = (f"the teacher's distribution is nearly uniform (mean entropy {kd.entropy:.3f} of the uniform one's "
                f"over {c:.0f} {'classes' if c == int(c) else 'positions'}; kd {kd.value:.4f} against "
                f"ln {c:.0f} = {math.log(c):.4f})")
    if kd.temperature <= 1:  # no softening to undo: the teacher itself is unsure
        return (f"loss scale: at distill.temperature {kd.temperature:g} {what}{got}: the teacher itself is unsure. "
                f"Check that it is fine-tuned for this task (brew eval it), or lower distill.kd_weight")
    return (f"loss scale: at distill.temperature {kd.temperature:g} {what}, so kd carries little of what the teacher "
            f"knows{got}. Lower distill.temperature (e.g. {min(4.0, max(1.0, kd.temperature / 4)):g}), or set "
            "distill.scale_by_t2: true to keep its gradient's size")


def warnings(terms: list[TermFigures], kd: KDFigures | None = None, steps: int | None = None,
             ratio: float = RATIO, flat: float = FLAT) -> list[str]:
    """One warning per problem: a term orders of magnitude below the largest by gradient share or weighted value
    (or, with three terms or more, one term above all the others), and a KD target the temperature made flat."""
    byname = {t.name: t for t in terms}
    out = []
    kd_term = byname.get("kd")
    flat_kd = flat_warning(kd, kd_term.share if kd_term else None, flat)
    if flat_kd:
        out.append(flat_kd)
    top_s, small_s = _small({t.name: t.share for t in terms if t.share is not None}, ratio)
    top_v, small_v = _small({t.name: t.value for t in terms if not t.floored}, ratio)
    small = [t.name for t in terms if (t.name in small_s or t.name in small_v) and not t.settled]
    if flat_kd:
        small = [n for n in small if n != "kd"]  # the flat target is that problem, said above
    if not small:
        return out
    when = f" over the first {steps} steps" if steps else " in the first logging window"
    top = byname[top_s or top_v]
    others = [t for t in terms if t.name != top.name and not t.settled]
    if len(others) >= 2 and all(t.name in small for t in others):
        names = ", ".join(t.name for t in others)
        what = (f"takes {top.share:.1%} of the gradient" if top.share is not None
                else f"has weighted value {top.value:.4g}")
        out.append(f"loss scale: {top.name} {what}{when}; every other term ({names}) is at least {ratio:g}x "
                   f"smaller, so they hardly train the student. Lower {top.key} (now {top.weight:g}) or raise "
                   "the others' weights")
        return out
    for name in small:
        t = byname[name]
        ref = byname[top_s] if name in small_s else byname[top_v]
        fix = f"Raise {t.key} (now {t.weight:g}) or lower {ref.key} (now {ref.weight:g})"
        fix += _kd_extra(kd) if name == "kd" else ""
        out.append(f"loss scale: {name} is {_figures(t, ref, name in small_s, name in small_v)}{when}, so it hardly "
                   f"trains the student. {fix}")
    return out
