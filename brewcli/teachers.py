"""Teacher sources: where the teacher's Features come from. The loop calls one without knowing which it is.

`LiveTeacher` runs the model (eval mode, no gradients) and computes only what the loss terms read; a cached
teacher and an ensemble of teachers plug in here with the same call.
"""

from __future__ import annotations

import torch

from brewcli.batch import Batch, Features, Needs, run_model


class LiveTeacher:
    def __init__(self, model, task, needs: Needs):
        self.model, self.task, self.needs = model.eval().requires_grad_(False), task, needs

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Features:
        return run_model(self.model, batch.for_teacher(), self.needs, self.task)
