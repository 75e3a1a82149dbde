"""Task registry. A task says which Hugging Face head to build, how labels are encoded, which metrics it
reports and which KD losses make sense for it. New tasks (token classification, QA, embeddings, MLM, causal
LM) register here; nothing else in the loop is task-specific."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from brewcli.registry import Registry


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # name of the transformers Auto* class that builds the model with this task's head
    metrics: tuple[str, ...]  # reported metrics; the first is the main one
    kd_losses: tuple[str, ...]  # KD losses that make sense for the task's outputs
    regression: bool
    compute_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def model_class(self):
        import transformers

        return getattr(transformers, self.auto_class)


TASKS: Registry[Task] = Registry("task", "tasks")
LOWER_IS_BETTER = {"mse"}


def retained_pct(metric: str, student: float, teacher: float) -> float | None:
    """Student as a percentage of the teacher on `metric` (inverted for metrics where lower is better)."""
    if not teacher or not student:
        return None
    return round(100 * (teacher / student if metric in LOWER_IS_BETTER else student / teacher), 2)

from brewcli.tasks import sequence  # noqa: E402,F401  (registers its tasks)
