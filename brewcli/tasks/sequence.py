"""Sequence-level tasks: classification of one text or a text pair, and regression."""

from __future__ import annotations

import numpy as np

from brewcli.tasks import TASKS, Task


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds = logits.argmax(-1)
    f1s = []
    for c in np.unique(np.concatenate([labels, preds])):
        tp = np.sum((preds == c) & (labels == c))
        denom = np.sum(preds == c) + np.sum(labels == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average ranks of ties
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def regression_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds = logits.reshape(-1)
    return {
        "pearson": _pearson(preds, labels),
        "spearman": _pearson(_ranks(preds), _ranks(labels)),
        "mse": float(np.mean((preds - labels) ** 2)),
    }


TASKS.add(
    "classification",
    Task(
        "classification",
        "AutoModelForSequenceClassification",
        ("accuracy", "macro_f1"),
        ("ce", "kl", "mse"),
        False,
        classification_metrics,
    ),
    "label one text or a text pair (sentiment, topic, NLI, paraphrase); accuracy and macro-F1",
)
TASKS.add(
    "regression",
    Task(
        "regression",
        "AutoModelForSequenceClassification",
        ("pearson", "spearman", "mse"),
        ("mse",),
        True,
        regression_metrics,
    ),
    "predict a number for one text or a text pair (STS-B similarity); Pearson, Spearman, MSE",
)
