"""Teacher sources: where the teacher's Features come from. The loop calls one without knowing which it is.

`LiveTeacher` runs the model (eval mode, no gradients) and computes only what the loss terms read; a cached
teacher and an ensemble of teachers plug in here with the same call.
"""

from __future__ import annotations

import torch

from brewcli.batch import Batch, Features, Needs, run_model


class Teachers:
    """Every teacher of a run, each behind its own source (live or cached): batch -> {name: Features}. A teacher
    that no loss term reads from is not run."""

    def __init__(self, sources: dict):
        self.sources = sources

    def __call__(self, batch: Batch) -> dict[str, Features]:
        return {name: source(batch) for name, source in self.sources.items()}


class Ensemble(torch.nn.Module):
    """Several teacher models as one, for scoring: the weighted mean of their probabilities (or of their logits,
    with `ensemble: logits`), each put in the first teacher's label order."""

    def __init__(self, models: list, weights: list[float], orders: list, task, mix: str | None):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.weights, self.orders, self.task, self.mix = weights, orders, task, mix

    def forward(self, **inputs):
        from types import SimpleNamespace

        from brewcli.objective import ensemble_target

        zs = []
        for model, order in zip(self.models, self.orders):
            z = self.task.logits(model(**inputs), inputs["attention_mask"]).float()
            zs.append(z[..., order] if order else z)
        z = ensemble_target(zs, self.weights, 1.0, self.mix, self.task.distribution_dim)
        return SimpleNamespace(logits=z, start_logits=z[..., 0], end_logits=z[..., -1])  # QA's task.logits reads these


class LiveTeacher:
    """The teacher model itself. With `top_k` (distill.top_k), its vocabulary-wide logits are reduced on its device
    to the top-k target (brewcli/topk.py), as the cache stores it."""

    def __init__(self, model, task, needs: Needs, name: str | None = None, top_k=None):
        self.model, self.task, self.needs, self.name = model.eval().requires_grad_(False), task, needs, name
        self.top_k = top_k

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Features:
        f = run_model(self.model, batch.for_teacher(self.name), self.needs, self.task)
        if self.top_k is not None and f.logits is not None:
            f.logits = self.top_k.pack(f.logits)
        return f
