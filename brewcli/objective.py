"""The training objective: a list of loss terms built once from the plan, weighted and summed.

Distillers differ only by their terms: hard labels, logit KD, one term per layer match. Plain fine-tuning is
the hard-label term alone. Each term says what it reads from each model (`Needs`), so the models compute no
more than that, and over what it averages (rows, labelled tokens or real tokens), so that a gradient
accumulation window is normalised by its total count rather than per micro-batch. No term reads the recipe
at step time.
"""

from __future__ import annotations

import torch
from torch import nn

from brewcli.batch import Batch, Features, Needs
from brewcli.guidance import target_entropy
from brewcli.losses import KD_LOSSES, MATCH_LOSSES
from brewcli.schedulers import TEMPERATURE, WEIGHT
from brewcli.topk import TopK


def make_projection(kind: str, d_in: int, d_out: int) -> nn.Module:
    linear = nn.Linear(d_in, d_out)
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear if kind == "linear" else nn.Sequential(linear, nn.ReLU() if kind == "relu" else nn.Tanh())


class TeacherPCA(nn.Module):
    """A fixed map of the teacher's vectors onto their first principal components, at the student's width
    (sentence-transformers' distillation into a narrower student): fitted once on the teacher's vectors of training
    texts (centred for the fit, applied without centring, as sentence-transformers' Dense layer does), saved with
    the projections so a resumed run reads the same map."""

    teacher_side = True

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.out_features = d_out
        self.register_buffer("weight", torch.zeros(d_out, d_in))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, x: torch.Tensor) -> None:
        _, _, v = torch.linalg.svd((x - x.mean(0)).double(), full_matrices=False)
        n = min(self.out_features, v.size(0))
        self.weight.zero_()
        self.weight[:n] = v[:n].to(self.weight.dtype)
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def probability_shift(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Swap the teacher's top logit with the gold label's, so the gold class is always the argmax."""
    rows = torch.arange(logits.size(0), device=logits.device)
    top = logits.argmax(-1)
    out = logits.clone()
    out[rows, labels], out[rows, top] = logits[rows, top], logits[rows, labels]
    return out


def ensemble_target(logits: list[torch.Tensor], weights: list[float], tau, kind: str | None,
                    dim: int = -1) -> torch.Tensor:
    """Teacher logits whose softened distribution (over `dim`) is the weighted mean of the teachers' (`kind` softmax
    or sigmoid), or the weighted mean of the logits themselves (`kind` None). One teacher: its logits, unchanged."""
    if len(logits) == 1:
        return logits[0]
    w = torch.tensor(weights, dtype=logits[0].dtype, device=logits[0].device) / sum(weights)
    if kind is None:
        return sum(wi * z for wi, z in zip(w, logits))
    t = torch.as_tensor(tau, dtype=logits[0].dtype, device=logits[0].device)
    t = t.reshape(-1, *([1] * (logits[0].dim() - 1))) if t.dim() else t
    if kind == "softmax":
        p = sum(wi * torch.softmax(z / t, dim=dim) for wi, z in zip(w, logits))
        return t * torch.log(p.clamp_min(1e-30))  # softmax(this / t) == p
    p = sum(wi * torch.sigmoid(z / t) for wi, z in zip(w, logits)).clamp(1e-7, 1 - 1e-7)
    return t * torch.logit(p)  # sigmoid(this / t) == p


def unit_counts(batch: Batch, task) -> dict[str, int]:
    """What a term's mean can run over, counted in a batch: rows, the task's labelled items, real tokens, and the
    labelled items of the rows with gold labels (`gold`: all of them unless data.augment added teacher-only rows)."""
    return {"rows": batch.size, "labels": task.units(batch), "tokens": int(batch.mask.sum()),
            "gold": task.units(batch, batch.gold)}


class Term:
    """One loss term: its value on a micro-batch (a mean over `unit`), its weight and what it reads."""

    name: str
    key: str  # the recipe key of its weight (for messages)
    unit: str = "rows"  # a key of unit_counts: rows | labels | tokens | gold
    student = Needs()
    teacher: dict[str, Needs] = {}  # teacher name -> what it reads from that teacher

    def __init__(self, weight: float, schedule: str = "none"):
        self.weight, self.schedule_name, self.schedule = weight, schedule, WEIGHT.get(schedule)
        self.key_weight = weight  # the value the recipe gives at `key` (a preset's term: its weights entry)

    def describe(self) -> str:
        """What the term computes, for the plan's table of loss terms."""
        return ""

    def weight_at(self, progress: float) -> float:
        return self.weight * self.schedule(progress)

    def __call__(self, batch: Batch, s: Features, t: dict[str, Features]) -> torch.Tensor:
        raise NotImplementedError


class HardLabel(Term):
    """The head's own loss on the gold labels (cross-entropy, MSE, BCE or span CE, as the model computes it), over
    the rows that have them: augmented rows are left to the teacher's terms (Task.gold_labels)."""

    name, key = "hard_label", "distill.hard_label_weight"
    unit = "gold"
    student = Needs(loss=True)

    def __init__(self, weight, schedule, alone: bool = False):
        super().__init__(weight, schedule)
        self.alone = alone

    def describe(self) -> str:
        return "task loss on gold labels" + (" (plain fine-tuning)" if self.alone else "")

    def __call__(self, batch, s, t):
        return s.loss if s.loss is not None else batch.mask.new_zeros((), dtype=torch.float32)  # no gold row here


class LogitKD(Term):
    """KD on what the task compares (rows of logits, padding and ignored positions removed), at a temperature.
    Several teachers: the target is their weighted ensemble (of softened probabilities, or of logits)."""

    name, key = "kd", "distill.kd_weight"
    student = Needs(logits=True)

    def __init__(self, task, distill, kd_loss: str, weight: float, schedule: str, teachers: list, label_names=None,
                 projection: nn.Module | None = None):
        super().__init__(weight, schedule)
        self.projection = projection  # sentence embeddings: a narrower student's vectors to the teachers' width, or
        # (TeacherPCA) the teachers' to the student's
        self.teacher_side = getattr(projection, "teacher_side", False)
        self.task, self.unit, self.distill, self.label_names = task, task.label_unit, distill, label_names
        self.teachers = [(t.name, t.spec.weight, t.label_order) for t in teachers if t.spec.weight > 0]
        self.several = len(teachers) > 1
        self.teacher = {name: Needs(logits=True) for name, _, _ in self.teachers}
        self.loss, self.loss_name = KD_LOSSES.get(kd_loss), kd_loss
        self.kind = self.loss.target  # the target's distribution: softmax, sigmoid or none (KD on logits)
        self.floored = self.loss.floored  # its value includes the target's entropy (a constant)
        self.mix = self.kind if distill.ensemble == "probabilities" else None
        self.temperature, self.scale_by_t2, self.shift = distill.temperature, distill.scale_by_t2, distill.probability_shift
        self.top_k = TopK.of(distill)  # the teacher's logits arrive packed (brewcli/topk.py)
        self.scheduler = TEMPERATURE.get(distill.temperature_scheduler.name)
        self.scheduler_args = distill.temperature_scheduler.kwargs()
        self.last_temperature: float | None = None
        self.last_entropy: tuple[float, float] | None = None  # (normalised entropy, classes) of the last target

    def describe(self) -> str:
        d, sched = self.distill, self.distill.temperature_scheduler
        kw = ", ".join(f"{k}={v}" for k, v in sched.kwargs().items())
        mixed = f"; target: the teachers' weighted mean {d.ensemble}" if self.several else ""
        compared = self.task.describe(self.label_names)[1]
        if self.top_k is not None:
            compared += f", as {self.top_k.describe()}"
        if d.on_policy > 0:
            compared += f"; {d.on_policy:.0%} of batches on continuations the student samples"
        if self.teacher_side:
            compared += f", the teacher's through PCA to the student's {self.projection.out_features}"
        elif self.projection is not None:
            compared += f", the student's through a learned projection to {self.projection.out_features}"
        if not self.task.tempered:
            return f"{self.loss_name} on {compared}{mixed}"
        return (f"{self.loss_name} on {compared}{mixed}, T={d.temperature:g} ({sched.name}{', ' + kw if kw else ''})"
                + (", x T^2" if d.scale_by_t2 else "") + (", probability shift" if d.probability_shift else ""))

    def __call__(self, batch, s, t):
        zts, weights = [], []
        mine = s.logits.float() if self.projection is None or self.teacher_side else self.projection(s.logits.float())
        for name, weight, order in self.teachers:
            z = t[name].logits.float()
            z = self.projection(z) if self.teacher_side else z
            zs, zt = self.task.views(mine, z[..., order] if order else z, batch, batch.teachers.get(name))
            zts.append(zt)
            weights.append(weight)
        labels = self.task.view_labels(batch) if self.shift else None
        shift = (lambda z: probability_shift(z, labels)) if self.shift else (lambda z: z)  # noqa: E731
        zt = shift(ensemble_target(zts, weights, None, None))  # the weighted mean of the logits
        tau = self.scheduler(self.temperature, zs, zt, **self.scheduler_args)
        if self.mix is not None and len(zts) > 1:  # mixing probabilities needs the temperature first
            zt = shift(ensemble_target(zts, weights, tau, self.mix))
        softened = tau
        if self.top_k is not None:  # log-probabilities over k+1 buckets, already at the temperature
            zs, zt = self.top_k.buckets(zs, zt)
            softened = 1.0
        per_row = self.loss(zs, zt, softened, **{a: getattr(self.distill, a) for a in self.loss.args})
        if self.scale_by_t2:
            per_row = per_row * torch.as_tensor(tau, device=zs.device) ** 2
        self.last_temperature = float(torch.as_tensor(tau).float().mean())
        self.last_entropy = target_entropy(zt, softened, self.kind)
        return per_row.mean() if per_row.numel() else zs.sum() * 0.0


class Match(Term):
    """An intermediate match: a hidden-state or attention feature of the student pulled towards the teacher's."""

    def __init__(self, match, name: str, projection: nn.Module | None):
        super().__init__(match.weight)
        self.match, self.name, self.projection = match, name, projection
        self.key, self.key_weight = match.weight_key, match.key_weight
        info = MATCH_LOSSES.get(match.loss)
        self.fn, self.several, self.unit = info.fn, info.pair or info.many, info.unit
        self.options = dict(match.options)
        self.student = Needs.of(match.feature, match.layers("student"))
        self.teacher = {match.teacher: Needs.of(match.feature, match.layers("teacher"))}

    def _feature(self, f: Features, side: str):
        feats = []
        for layer in self.match.layers(side):
            x = f.at(self.match.feature, layer)
            feats.append(self.projection(x) if side == "student" and self.projection is not None else x)
        return tuple(feats) if self.several else feats[0]

    def __call__(self, batch, s, t):
        return self.fn(self._feature(s, "student"), self._feature(t[self.match.teacher], "teacher"), s.mask,
                       **self.options)


class EMD(Term):
    """BERT-EMD (brewcli/emd.py): every student layer against every teacher layer, weighted by the optimal flow."""

    def __init__(self, e, state, projection: nn.Module | None):
        super().__init__(e.weight)
        self.e, self.name, self.key, self.state, self.projection = e, e.name, f"{e.key}.weight", state, projection
        info = MATCH_LOSSES.get(e.loss)
        self.fn, self.unit = info.fn, info.unit
        self.student = Needs.of(e.feature, e.student_layers)
        self.teacher = {e.teacher: Needs.of(e.feature, e.teacher_layers)}
        self.last_flow: torch.Tensor | None = None

    def describe(self) -> str:
        e = self.e
        return (f"{e.loss} of every student layer {e.student_layers[0]}..{e.student_layers[-1]} against every "
                f"teacher layer {e.teacher_layers[0]}..{e.teacher_layers[-1]}, weighted by the optimal flow; "
                + (f"adaptive layer weights (T={e.temperature:g})" if e.adaptive else "uniform layer weights"))

    def __call__(self, batch, s, t):
        from brewcli.emd import emd_loss

        mine = [s.at(self.e.feature, i) for i in self.e.student_layers]
        if self.projection is not None:
            mine = [self.projection(x) for x in mine]
        theirs = [t[self.e.teacher].at(self.e.feature, j) for j in self.e.teacher_layers]
        cost = torch.stack([torch.stack([self.fn(x, y, s.mask) for y in theirs]) for x in mine])
        loss, self.last_flow = emd_loss(cost, self.state, self.e.adaptive, self.e.temperature,
                                        update=torch.is_grad_enabled())
        return loss


class Objective(nn.Module):
    """The terms of a run. Holds the projections (trained with the student, saved beside it)."""

    def __init__(self, terms: list[Term], projections: dict[str, nn.Module]):
        super().__init__()
        self.terms = terms
        self.projections = nn.ModuleDict(projections)
        self.student_needs = Needs()
        self.teacher_needs: dict[str, Needs] = {}  # teacher name -> what the terms read from it
        for term in terms:
            self.student_needs = self.student_needs | term.student
            for name, needs in term.teacher.items():
                self.teacher_needs[name] = self.teacher_needs.get(name, Needs()) | needs

    def forward(self, batch: Batch, s: Features, t: dict[str, Features] | None, progress: float,
                scale: dict[str, float]):
        """(weighted sum, {term: (value, weight)}, logged scalars). `scale[unit]` is this micro-batch's share of
        its accumulation window, so the window's gradient is a mean over all of its rows or tokens."""
        values = {term.name: (term(batch, s, t), term.weight_at(progress)) for term in self.terms}
        total = sum(self.weighted(values, scale).values())
        scalars = {}
        for term in self.terms:
            if isinstance(term, LogitKD) and term.task.tempered:
                scalars["temperature"] = term.last_temperature
                if term.last_entropy is not None:
                    scalars["teacher_entropy"] = term.last_entropy[0]
        return total, values, scalars

    def weighted(self, values: dict, scale: dict[str, float]) -> dict:
        """Each term's contribution to the micro-batch's loss (value x weight x its share of the window)."""
        return {term.name: values[term.name][0] * values[term.name][1] * scale[term.unit] for term in self.terms}


def unique_names(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        while name in out:
            name += "_"
        out.append(name)
    return out


def _kd_projection(plan) -> nn.Module | None:
    """For a task that projects its logits (sentence embeddings) when the widths differ: a learned linear map from
    the student's vectors to the teachers', or (task.projection: pca) the teachers' PCA down to the student's width.
    The teachers must agree on their width."""
    task = plan.task
    if not task.projects_logits:
        return None
    mine = task.logit_width(plan.student.config)
    theirs = {t.key: task.logit_width(t.config) for t in plan.teachers if t.spec.weight > 0}
    widths = set(theirs.values())
    if len(widths) > 1:
        from brewcli.errors import RecipeError

        said = ", ".join(f"{k}: {w}" for k, w in theirs.items())
        raise RecipeError("teacher", f"the teachers' vectors differ in width ({said}), so one student vector cannot "
                          "be compared with them all", "use teachers of one width")
    if not widths or widths == {mine}:
        return None
    theirs = widths.pop()
    if getattr(task.options, "projection", "learned") == "pca":
        if mine > theirs:
            from brewcli.errors import RecipeError

            raise RecipeError("task.projection", f"is pca, which reduces the teacher's {theirs}-wide vectors, but the "
                              f"student's are wider ({mine})", "set task.projection: learned")
        return TeacherPCA(theirs, mine)
    return make_projection("linear", mine, theirs)


def build_objective(plan) -> Objective:
    """The terms a plan asks for: plain training is the hard-label term; distillation adds KD and the matches."""
    r, task = plan.recipe, plan.task
    d = r.distill
    if r.teacher is None:
        return Objective([HardLabel(1.0, "none", alone=True)], {})
    terms: list[Term] = []
    projections, slot = {}, {}  # a group's matches share one projection (named for the group)
    if d.kd_weight > 0:
        names = plan.splits.label_names if getattr(plan, "splits", None) is not None else None
        proj = _kd_projection(plan)
        if proj is not None:
            projections["kd"] = proj
        terms.append(LogitKD(task, d, r.kd_loss, d.kd_weight, d.kd_weight_schedule, plan.teachers, names, proj))
    if d.hard_label_weight > 0:
        terms.append(HardLabel(d.hard_label_weight, d.hard_label_weight_schedule))
    for i, m in enumerate(plan.matches):
        if m.proj:
            slot[i] = m.group or str(i)
            if slot[i] not in projections:
                projections[slot[i]] = make_projection(m.proj, m.student_width, m.teacher_width)
    names = unique_names([m.name for m in plan.matches])
    terms += [Match(m, name, projections.get(slot.get(i))) for i, (m, name) in enumerate(zip(plan.matches, names))]
    for e in getattr(plan, "emd", []):
        from brewcli.emd import EMDWeights

        weights = projections[e.name] = EMDWeights(len(e.student_layers), len(e.teacher_layers))
        # the embedding match 0 -> 0 (a plain match, above) and the EMD term share one projection, as TinyBERT's
        shared = next((projections[slot[i]] for i, m in enumerate(plan.matches)
                       if m.key == e.key and m.feature == e.feature and i in slot), None)
        proj = shared or (make_projection(e.proj, e.student_width, e.teacher_width) if e.proj else None)
        if proj is not None and shared is None:
            projections[e.name + "_proj"] = proj
        terms.append(EMD(e, weights, proj))
    return Objective(terms, projections)
