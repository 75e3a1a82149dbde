"""Extractive question answering (SQuAD v1.1 and v2.0): answer scoring and logits-to-text post-processing.

Scoring follows the official scripts (`version`): answers are normalised (lower case, no punctuation, no articles,
single spaces) and exact match and token F1 take the max over the gold answers. The two scripts differ at the edges:

* "v2.0" (evaluate-v2.0.py): gold answers that normalise to nothing are dropped, and a question left with none
  (an empty list, or only answers such as "the" or ".") is scored against "" (1 only for an empty prediction);
  token F1 is 1 when both sides are empty. A question counts as answerable when its raw gold list is not empty,
  so the has-answer / no-answer split is the script's.
* "v1.1" (evaluate-v1.1.py): every gold answer is kept, even one that normalises to nothing, and token F1 is 0
  without a common token (so also when both are empty). An empty gold list is scored against "".

Scores are fractions in [0, 1], not percentages.

Post-processing follows the Hugging Face `run_qa` example: a span's score is its start logit plus its end logit,
spans must lie inside the context, and for SQuAD v2.0 the answer is empty when the null score (the [CLS] logits)
beats the best span by more than a threshold.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from brewcli.lazy import np

Candidate = tuple[float, int, int]  # (score, start_char, end_char exclusive)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the and collapse whitespace (official SQuAD rules)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


VERSIONS = ("v1.1", "v2.0")


def _golds(golds: Sequence[str] | str, version: str = "v2.0") -> list[str]:
    """The gold answers a prediction is scored against (see the module docstring); a string is one answer."""
    if isinstance(golds, str):
        golds = [golds]
    if version not in VERSIONS:
        raise ValueError(f"unknown SQuAD version {version!r}; choose one of {', '.join(VERSIONS)}")
    if version == "v1.1":
        return list(golds) or [""]
    return [g for g in golds if normalize_answer(g)] or [""]


def _token_f1(pred: str, gold: str, version: str = "v2.0") -> float:
    """Bag-of-tokens F1 between two answers, computed as the official scripts do (precision, recall, their mean)."""
    pred_toks, gold_toks = normalize_answer(pred).split(), normalize_answer(gold).split()
    if version == "v2.0" and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)
    same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = 1.0 * same / len(pred_toks), 1.0 * same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def exact_match(pred: str, golds: Sequence[str] | str, version: str = "v2.0") -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    norm = normalize_answer(pred)
    return float(any(norm == normalize_answer(g) for g in _golds(golds, version)))


def f1(pred: str, golds: Sequence[str] | str, version: str = "v2.0") -> float:
    """The best token F1 between the prediction and any gold answer."""
    return max(_token_f1(pred, g, version) for g in _golds(golds, version))


def has_answer(golds: Sequence[str] | str) -> bool:
    """Whether a question has a gold answer: its raw gold list is not empty (the official v2.0 script's split, even
    when every answer normalises to nothing); a string is one answer."""
    return bool([golds] if isinstance(golds, str) else golds)


def best_spans(start_logits: Sequence[float], end_logits: Sequence[float], offsets: Sequence[Sequence[int] | None],
               context_mask: Sequence[bool], n_best: int = 20,
               max_answer_len: int = 30) -> tuple[list[Candidate], float]:
    """The best answer spans of one feature (window) and its null score.

    Takes the `n_best` highest start and end logits among context tokens (`context_mask` True), pairs them with
    end >= start and at most `max_answer_len` tokens, and returns up to `n_best` (score, start_char, end_char)
    candidates, best first, with score = start logit + end logit and the characters taken from `offsets` (one
    (start, end) pair per token). The null score is start_logits[0] + end_logits[0], the [CLS] position.
    """
    start, end = np.asarray(start_logits, dtype=np.float64), np.asarray(end_logits, dtype=np.float64)
    null_score = float(start[0] + end[0])
    context = np.flatnonzero(np.asarray(context_mask, dtype=bool))
    if not len(context):
        return [], null_score
    starts = context[np.argsort(-start[context], kind="stable")[:n_best]]
    ends = context[np.argsort(-end[context], kind="stable")[:n_best]]
    s, e = np.meshgrid(starts, ends, indexing="ij")
    ok = (e >= s) & (e - s < max_answer_len)
    s, e = s[ok], e[ok]
    scores = start[s] + end[e]
    order = np.argsort(-scores, kind="stable")[:n_best]
    spans = [(float(scores[i]), int(offsets[s[i]][0]), int(offsets[e[i]][1])) for i in order]
    return spans, null_score


def predict_answer(example_context: str, features: list[dict], n_best: int = 20, max_answer_len: int = 30,
                   null_threshold: float | None = None) -> str:
    """The answer text for one example from the logits of its features (overlapping windows of the context).

    Each feature is a dict with `start_logits`, `end_logits`, `offsets` (character offsets into
    `example_context`, one pair per token) and `context_mask`. The best-scoring span over all windows wins. With
    `null_threshold` set (SQuAD v2.0) the answer is "" when the smallest null score over the windows minus the
    best span score exceeds the threshold, as in Hugging Face's `postprocess_qa_predictions`. No span: "".
    Of equally scored spans the first found wins (earlier window, then higher start logit).
    """
    best: Candidate | None = None
    null_score = float("inf")
    for feat in features:
        spans, feat_null = best_spans(feat["start_logits"], feat["end_logits"], feat["offsets"],
                                      feat["context_mask"], n_best, max_answer_len)
        null_score = min(null_score, feat_null)
        if spans and (best is None or spans[0][0] > best[0]):
            best = spans[0]
    if best is None or (null_threshold is not None and null_score - best[0] > null_threshold):
        return ""
    return example_context[best[1]:best[2]]


@dataclass
class QACounter:
    """Running SQuAD scores under one `version`; `merge` or `state`/`from_state` sum them across processes."""

    count: int = 0
    exact: float = 0.0  # sum of exact-match scores
    f1: float = 0.0  # sum of F1 scores
    no_answer_count: int = 0  # questions without a gold answer (an empty raw list)
    no_answer_f1: float = 0.0  # sum of their F1 scores
    no_answer_exact: float = 0.0  # sum of their exact-match scores
    version: str = "v2.0"

    def update(self, pred_text: str, gold_texts: Sequence[str] | str) -> None:
        """Add one question: the predicted answer and the gold answers (empty for an unanswerable question)."""
        score, exact = f1(pred_text, gold_texts, self.version), exact_match(pred_text, gold_texts, self.version)
        self.count += 1
        self.exact += exact
        self.f1 += score
        if not has_answer(gold_texts):
            self.no_answer_count += 1
            self.no_answer_f1 += score
            self.no_answer_exact += exact

    def state(self) -> dict[str, float]:
        """The running sums and counts."""
        return {"count": self.count, "exact": self.exact, "f1": self.f1, "no_answer_count": self.no_answer_count,
                "no_answer_f1": self.no_answer_f1, "no_answer_exact": self.no_answer_exact}

    @classmethod
    def from_state(cls, state: dict[str, float], version: str = "v2.0") -> QACounter:
        """A counter holding the sums of `state`."""
        counts = {k: int(state[k]) for k in ("count", "no_answer_count")}
        return cls(**counts, **{k: float(state[k]) for k in ("exact", "f1", "no_answer_f1", "no_answer_exact")},
                   version=version)

    def merge(self, other: QACounter) -> QACounter:
        """Add `other`'s sums to this counter; returns self."""
        for key, value in other.state().items():
            setattr(self, key, getattr(self, key) + value)
        return self

    def compute(self) -> dict[str, float]:
        """Mean exact match and F1 (0-1); with unanswerable questions, also both on answerable and unanswerable ones
        (the official v2.0 script's HasAns and NoAns figures)."""
        out = {"exact_match": _ratio(self.exact, self.count), "f1": _ratio(self.f1, self.count)}
        if self.no_answer_count:
            has = self.count - self.no_answer_count
            out["has_answer_exact"] = _ratio(self.exact - self.no_answer_exact, has)
            out["has_answer_f1"] = _ratio(self.f1 - self.no_answer_f1, has)
            out["no_answer_exact"] = self.no_answer_exact / self.no_answer_count
            out["no_answer_f1"] = self.no_answer_f1 / self.no_answer_count
        return out


def _ratio(num: float, den: float) -> float:
    """num / den, or 0.0 when den is 0."""
    return num / den if den else 0.0


def qa_scores(preds: Sequence[str], golds: Sequence[Sequence[str]], version: str = "v2.0") -> dict[str, float]:
    """SQuAD scores of predicted answers against their gold answer lists, in one call (see `QACounter.compute`)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold answer lists")
    counter = QACounter(version=version)
    for pred, gold in zip(preds, golds):
        counter.update(pred, gold)
    return counter.compute()
