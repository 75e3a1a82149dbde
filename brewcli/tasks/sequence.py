"""Sequence-level tasks: one prediction per text (or text pair). Classification picks one class, multi-label
any number of classes, regression predicts a number."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator

from brewcli.batch import Batch
from brewcli.errors import RecipeError, did_you_mean
from brewcli.lazy import np, torch
from brewcli.schema import Strict, column, one_or_a_pair
from brewcli.tasks import Column, Metric, Task, register

LABELS = "labels"  # the column name Hugging Face heads read
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def pad_inputs(tokenizer, rows: list[dict], multiple: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to the batch's longest row (dynamic padding), rounded up to `multiple` (tensor cores under fp16/bf16)."""
    keys = [k for k in INPUT_KEYS if k in rows[0]]
    return dict(tokenizer.pad({k: [r[k] for r in rows] for k in keys}, pad_to_multiple_of=multiple, return_tensors="pt"))


def _is_generic(names: list[str]) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", n) for n in names)


def teacher_label_names(config) -> list[str] | None:
    return None if config is None else [config.id2label[i] for i in range(config.num_labels)]


def same_count_as_teacher(teacher_config, names: list[str], what: str = "labels") -> None:
    if teacher_config is not None and teacher_config.num_labels != len(names):
        raise RecipeError("teacher", f"the teacher predicts {teacher_config.num_labels} {what} but the data has "
                          f"{len(names)}: {names[:10]}",
                          f"fine-tune the teacher on this {what[:-1]} set first (brew train)")


def first_at(values, match, where) -> str:
    """' (first at FILE line N)' for the first of `values` that `match`es, for a message; '' without `where`."""
    i = next((i for i, v in enumerate(values) if match(v)), None) if where is not None else None
    return "" if i is None else f" (first at {where(i)})"


def name_labels(config, names: list[str], problem_type: str | None = None) -> None:
    """Size a config's head for `names` and name its outputs."""
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    if problem_type:
        config.problem_type = problem_type


class SequenceTask(Task):
    head = "sequence"
    augments = "text"
    columns = (Column("text", "text", "text (a pair: a list of two columns)"), Column("label", "label", "a label"))

    def text_columns(self) -> list[str]:
        text = self.column("text")
        return [text] if isinstance(text, str) else list(text)

    def check_rows(self, ds, where) -> None:
        for col in self.text_columns():
            for i, v in enumerate(ds[col]):
                if v is None or isinstance(v, (list, dict)):
                    what = "no text" if v is None else f"a {type(v).__name__}, not text,"
                    raise RecipeError(self.column_key("text"), f"{where(i)} has {what} in column '{col}'", "fill in or drop the row")
        label = self.column("label")
        for i, v in enumerate(ds[label]):
            self.check_label(v, label, lambda: where(i))

    def check_label(self, v, column: str, where) -> None:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise RecipeError(self.column_key("label"), f"{where()} has no label in column '{column}'", "fill in or drop the row")
        if isinstance(v, (list, dict)):
            raise RecipeError(self.column_key("label"), f"{where()} holds a {type(v).__name__} in column '{column}'; task "
                              f"'{self.name}' takes one label per row", "use task: multi-label for several labels")

    def encode(self, ds, tokenizer, names):
        cols, max_length = self.text_columns(), self.data.max_length

        def fn(batch, idx):
            texts = [[str(t) for t in batch[c]] for c in cols]
            enc = tokenizer(*texts, truncation=True, max_length=max_length)
            return {**enc, "example": idx}

        keep = [c for c in ds.column_names if c == LABELS]
        return ds.map(fn, batched=True, with_indices=True, remove_columns=[c for c in ds.column_names if c not in keep])

    def label_tensor(self, values: list):
        return torch.tensor(values)

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            labels = {LABELS: self.label_tensor([r[LABELS] for r in rows])} if LABELS in rows[0] else {}
            return Batch(pad_inputs(tokenizer, rows, multiple), labels, torch.tensor([r["example"] for r in rows]))

        return collate


# ---------------------------------------------------------------------------------------------- classification


class ClassificationSpec(Strict):
    name: Literal["classification"] = "classification"
    num_labels: int | None = Field(None, ge=1, description="number of classes; null: read from the data")
    text: str | list[str] | None = column("the text (a pair: a list of two columns)", "text")
    label: str | None = column("the labels", "label")
    _pair = field_validator("text")(one_or_a_pair)


class ConfusionMetric(Metric):
    """Accuracy and macro-F1 from a confusion matrix (mergeable across processes)."""

    def __init__(self, n: int):
        self.matrix = np.zeros((n, n), dtype=np.int64)

    def update(self, logits, batch) -> None:
        np.add.at(self.matrix, (batch.labels[LABELS].numpy(), logits.argmax(-1).numpy()), 1)

    def compute(self) -> dict[str, float]:
        m = self.matrix
        tp, gold, pred = np.diag(m), m.sum(1), m.sum(0)
        present = (gold + pred) > 0
        f1 = np.where(present, 2 * tp / np.maximum(gold + pred, 1), 0.0)
        return {"accuracy": float(tp.sum() / max(m.sum(), 1)), "macro_f1": float(f1[present].mean()) if present.any()
                else 0.0}

    def state(self) -> dict:
        return {"matrix": self.matrix.tolist()}

    def merge(self, state: dict) -> None:
        self.matrix += np.asarray(state["matrix"], dtype=np.int64)


class Classification(SequenceTask):
    name, spec = "classification", ClassificationSpec
    doc = "label one text or a text pair (sentiment, topic, NLI, paraphrase); accuracy and macro-F1"
    metrics = ("accuracy", "macro_f1")
    kd_losses = ("ce", "kl", "mse")
    skips_rows = True  # cross-entropy ignores label -100

    def drop_rows(self, batch, drop) -> dict:
        return {LABELS: batch.labels[LABELS].masked_fill(drop, -100)}

    def label_names(self, train, teacher_config, where=None) -> list[str]:
        """Label names in id order, checked against task.num_labels and the teacher's labels."""
        column, num_labels = self.column("label"), self.options.num_labels
        feature = train.features[column]
        values = sorted(set(train[column]), key=str)
        ints = all(isinstance(v, int) for v in values)
        floats = [v for v in values if isinstance(v, float)]
        fraction = next((v for v in floats if not v.is_integer()), None)
        if fraction is not None:
            raise RecipeError(self.column_key("label"), f"label {fraction} is a fraction, so the labels look like a scale rather "
                              "than classes", "use task: regression to predict a number")
        teacher_names = teacher_label_names(teacher_config)
        if hasattr(feature, "names"):  # a datasets ClassLabel
            names = list(feature.names)
        elif teacher_names and not _is_generic(teacher_names) and not ints:
            missing = [v for v in values if v not in teacher_names]
            if missing:
                raise RecipeError(self.column_key("label"), f"labels {missing[:5]} are not among the teacher's labels "
                                  f"{teacher_names}" + first_at(train[column], lambda v: v == missing[0], where),
                                  did_you_mean(str(missing[0]), teacher_names))
            names = teacher_names
        elif ints:
            n = num_labels or (teacher_config.num_labels if teacher_names else max(values) + 1)
            if min(values) < 0 or max(values) >= n:
                raise RecipeError(self.column_key("label"), f"integer labels must run 0..{n - 1}; found {min(values)}..{max(values)}"
                                  + first_at(train[column], lambda v: not 0 <= v < n, where))
            names = teacher_names if teacher_names and not _is_generic(teacher_names) else [str(i) for i in range(n)]
        else:
            names = [str(v) for v in values]
        if num_labels is not None and len(names) != num_labels:
            raise RecipeError("task.num_labels", f"is {num_labels} but the data has {len(names)} labels: {names[:10]}",
                              f"set task.num_labels: {len(names)} or drop it")
        same_count_as_teacher(teacher_config, names)
        return names

    def encode_labels(self, ds, names, where):
        column = self.column("label")
        if hasattr(ds.features[column], "names"):
            if any(v < 0 for v in ds.unique(column)):
                raise RecipeError("data", f"{where(ds[column].index(-1))} is unlabelled (label -1, as in GLUE's test "
                                  "splits)", "score on a labelled split, such as validation")
            return ds.map(lambda b: {LABELS: b[column]}, batched=True)
        index = {n: i for i, n in enumerate(names)}

        def to_id(v):
            if str(v) in index:
                return index[str(v)]
            if isinstance(v, float) and v.is_integer() and str(int(v)) in index:
                return index[str(int(v))]
            if isinstance(v, int) and 0 <= v < len(names):
                return v
            return None

        values = ds[column]
        unknown = next((i for i, v in enumerate(values) if to_id(v) is None), None)
        if unknown is not None:
            v = values[unknown]
            if isinstance(v, int) and v < 0:
                raise RecipeError("data", f"{where(unknown)} is unlabelled (label {v}, as in GLUE's test splits)",
                                  "score on a labelled split, such as validation")
            raise RecipeError(self.column_key("label"), f"{where(unknown)}: label {v!r} is not one of the labels {names[:20]}",
                              did_you_mean(str(v), names))
        return ds.map(lambda b: {LABELS: [to_id(v) for v in b[column]]}, batched=True)

    def configure(self, config, names) -> None:
        name_labels(config, names, "single_label_classification")

    def describe(self, names) -> tuple[str, str]:
        return (f"one of {len(names)} labels: {', '.join(names[:8])}" + (", ..." if len(names) > 8 else ""),
                f"logits per row (B, {len(names)})")

    def metric(self, names, examples) -> Metric:
        return ConfusionMetric(len(names))


# ---------------------------------------------------------------------------------------------- regression


class RegressionSpec(Strict):
    name: Literal["regression"] = "regression"
    text: str | list[str] | None = column("the text (a pair: a list of two columns)", "text")
    label: str | None = column("the labels", "label")
    _pair = field_validator("text")(one_or_a_pair)


class RegressionMetric(Metric):
    def __init__(self):
        self.preds: list[float] = []
        self.golds: list[float] = []

    def update(self, logits, batch) -> None:
        self.preds += logits.reshape(-1).tolist()
        self.golds += batch.labels[LABELS].reshape(-1).tolist()

    def compute(self) -> dict[str, float]:
        p, g = np.asarray(self.preds, dtype=np.float64), np.asarray(self.golds, dtype=np.float64)
        return {"pearson": _pearson(p, g), "spearman": _pearson(_ranks(p), _ranks(g)),
                "mse": float(np.mean((p - g) ** 2)) if len(p) else 0.0}

    def state(self) -> dict:
        return {"preds": self.preds, "golds": self.golds}

    def merge(self, state: dict) -> None:
        self.preds += state["preds"]
        self.golds += state["golds"]


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


class Regression(SequenceTask):
    name, spec = "regression", RegressionSpec
    doc = "predict a number for one text or a text pair (STS-B similarity); Pearson, Spearman, MSE"
    metrics = ("pearson", "spearman", "mse")
    lower_is_better = frozenset({"mse"})
    kd_losses = ("mse",)
    has_classes = False

    def check_label(self, v, column: str, where) -> None:
        try:
            x = float(v) if not isinstance(v, (bool, list, dict)) and v is not None else None
        except (TypeError, ValueError):
            x = None
        if x is None or not math.isfinite(x):
            raise RecipeError(self.column_key("label"), f"{where()}: label {v!r} is not a finite number, and task 'regression' "
                              "predicts numbers", "use task: classification for named classes")

    def check_teacher(self, teacher_config, names) -> None:
        if teacher_config.num_labels != 1:
            raise RecipeError("teacher", f"the teacher predicts {teacher_config.num_labels} labels, but task "
                              "'regression' compares one number per row", "use a regression teacher (num_labels 1)")

    def encode_labels(self, ds, names, where):
        column = self.column("label")
        return ds.map(lambda b: {LABELS: [float(v) for v in b[column]]}, batched=True)

    def label_tensor(self, values: list):
        return torch.tensor(values, dtype=torch.float32)

    def configure(self, config, names) -> None:
        config.num_labels, config.problem_type = 1, "regression"

    def describe(self, names) -> tuple[str, str]:
        return "one number per row", "the predicted number per row (B, 1)"

    def metric(self, names, examples) -> Metric:
        return RegressionMetric()


# ---------------------------------------------------------------------------------------------- multi-label


class MultiLabelSpec(Strict):
    name: Literal["multi-label"] = "multi-label"
    num_labels: int | None = Field(None, ge=1, description="number of labels; null: read from the data")
    threshold: float = Field(0.5, gt=0, lt=1, description="a label is predicted when its probability reaches this")
    text: str | list[str] | None = column("the text (a pair: a list of two columns)", "text")
    label: str | None = column("the labels", "label")
    _pair = field_validator("text")(one_or_a_pair)


class MultiLabelMetric(Metric):
    """Micro-F1, macro-F1 and exact-match ratio from per-class counts (mergeable across processes)."""

    def __init__(self, n: int, threshold: float):
        self.tp, self.fp, self.fn = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self.exact, self.rows = 0, 0
        self.logit_threshold = math.log(threshold / (1 - threshold))  # sigmoid(z) >= t  <=>  z >= logit(t)

    def update(self, logits, batch) -> None:
        pred = (logits >= self.logit_threshold).numpy()
        gold = batch.labels[LABELS].numpy() > 0.5
        self.tp += (pred & gold).sum(0)
        self.fp += (pred & ~gold).sum(0)
        self.fn += (~pred & gold).sum(0)
        self.exact += int((pred == gold).all(1).sum())
        self.rows += len(gold)

    def compute(self) -> dict[str, float]:
        tp, fp, fn = self.tp, self.fp, self.fn
        micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
        present = (tp + fp + fn) > 0
        per_class = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        return {"micro_f1": float(micro), "macro_f1": float(per_class[present].mean()) if present.any() else 0.0,
                "exact_match": self.exact / max(self.rows, 1)}

    def state(self) -> dict:
        return {"tp": self.tp.tolist(), "fp": self.fp.tolist(), "fn": self.fn.tolist(), "exact": self.exact,
                "rows": self.rows}

    def merge(self, state: dict) -> None:
        for k in ("tp", "fp", "fn"):
            getattr(self, k).__iadd__(np.asarray(state[k], dtype=np.int64))
        self.exact += state["exact"]
        self.rows += state["rows"]


class MultiLabel(SequenceTask):
    name, spec = "multi-label", MultiLabelSpec
    doc = "any number of labels per text (topics, tags, toxicity flags); micro-F1, macro-F1, exact match"
    columns = (Column("text", "text", "text (a pair: a list of two columns)"),
               Column("label", "labels", "a list of labels"))
    metrics = ("micro_f1", "macro_f1", "exact_match")
    kd_losses = ("bce", "mse")

    def check_label(self, v, column: str, where) -> None:
        if not isinstance(v, list) or any(x is None or isinstance(x, (list, dict, float)) for x in v):
            raise RecipeError(self.column_key("label"), f"{where()}: column '{column}' holds {v!r}; task 'multi-label' takes a "
                              "list of label names (or ids) per row, e.g. [sport, politics]", None)

    def label_names(self, train, teacher_config, where=None) -> list[str]:
        column = self.column("label")
        feature = train.features[column]
        inner = getattr(feature, "feature", None)
        if hasattr(inner, "names"):
            names = list(inner.names)
        else:
            seen = sorted({str(x) for row in train[column] for x in row})
            teacher_names = teacher_label_names(teacher_config)
            if teacher_names and not _is_generic(teacher_names):
                unknown = [x for x in seen if x not in teacher_names]
                if unknown:
                    raise RecipeError(self.column_key("label"), f"labels {unknown[:5]} are not among the teacher's labels "
                                      f"{teacher_names}" + first_at(train[column], lambda row: unknown[0] in
                                                                    map(str, row), where),
                                      did_you_mean(unknown[0], teacher_names))
                names = teacher_names
            elif all(x.isdecimal() for x in seen):
                n = self.options.num_labels or (teacher_config.num_labels if teacher_config else max(map(int, seen)) + 1)
                names = [str(i) for i in range(n)]
            else:
                names = seen
        if self.options.num_labels is not None and len(names) != self.options.num_labels:
            raise RecipeError("task.num_labels", f"is {self.options.num_labels} but the data has {len(names)} labels",
                              f"set task.num_labels: {len(names)} or drop it")
        same_count_as_teacher(teacher_config, names)
        return names

    def encode_labels(self, ds, names, where):
        column = self.column("label")
        index = {n: i for i, n in enumerate(names)}
        for i, row in enumerate(ds[column]):
            bad = next((x for x in row if str(x) not in index), None)
            if bad is not None:
                raise RecipeError(self.column_key("label"), f"{where(i)}: label {bad!r} is not one of the labels {names[:20]}",
                                  did_you_mean(str(bad), names))

        def hot(row):
            v = [0.0] * len(names)
            for x in row:
                v[index[str(x)]] = 1.0
            return v

        return ds.map(lambda b: {LABELS: [hot(r) for r in b[column]]}, batched=True)

    def label_tensor(self, values: list):
        return torch.tensor(values, dtype=torch.float32)

    def configure(self, config, names) -> None:
        name_labels(config, names, "multi_label_classification")

    def describe(self, names) -> tuple[str, str]:
        return (f"any of {len(names)} labels (sigmoid): {', '.join(names[:8])}" + (", ..." if len(names) > 8 else ""),
                f"per-label logits per row (B, {len(names)})")

    def metric(self, names, examples) -> Metric:
        return MultiLabelMetric(len(names), self.options.threshold)


for _task in (Classification(), Regression(), MultiLabel()):
    register(_task)
