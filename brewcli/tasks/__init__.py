"""The task registry and the interface every task implements.

A task owns everything that depends on what is being predicted: its `task:` recipe block, the data columns it
reads, the plan-time checks of those columns and of the label set against the teacher, the model head, how a
row is encoded and a batch collated, what knowledge distillation compares (with padding and ignored
positions removed) and a streaming metric. The training loop, the objective and the report only call this
interface, so adding a task never edits them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from brewcli.errors import RecipeError
from brewcli.registry import Registry
from brewcli.schema import Strict


@dataclass(frozen=True)
class Column:
    """A data column a task reads: the `data:` key that names it and its default name."""

    key: str
    default: str | list[str]
    what: str  # for messages: "text", "a list of words", ...


class Metric:
    """A streaming metric: `update` per batch, `compute` at the end. `state`/`merge` combine processes."""

    def update(self, logits, batch) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def merge(self, state: dict) -> None:
        raise NotImplementedError


class Task:
    name: str
    doc: str
    spec: type[Strict]  # the recipe's `task:` block for this task
    head: str  # the head a model needs for it (models/arch.py HEADS): sequence, token, span or none
    columns: tuple[Column, ...]
    metrics: tuple[str, ...]  # reported metrics; the first is the main one
    lower_is_better: frozenset[str] = frozenset()
    kd_losses: tuple[str, ...]  # the first is the default (`kd_loss: auto`)
    label_unit: str = "rows"  # what the hard-label and KD losses average over: rows, or "labels" (labelled tokens)
    has_classes: bool = True  # a label set (probability shift, label checks) rather than numbers or spans
    needs_fast_tokenizer: bool = False
    per_token: bool = False  # logits per token (B, L, W) rather than per row (B, W)
    distribution_dim: int = -1  # the logits' dim that a softmax runs over (QA: the positions)
    cross_tokenizer: bool = True  # KD works with a teacher of another tokenizer (its own batch, `views` maps it)
    file_formats: dict[str, str] = {}
    text_keys: tuple[str, ...] = ("text",)  # the columns holding text the tokenizer reads
    augments: str | None = None  # what data.augment changes in a row (augment.py): text | words | qa; None: refused
    skips_rows: bool = False  # the head's loss can leave rows out (teacher-only rows: `drop_rows`)
    has_labels: bool = True  # gold labels for the hard-label loss (sentence embeddings: none)
    tempered: bool = True  # KD at a temperature (sentence vectors are no distribution: no temperature)
    projects_logits: bool = False  # KD through a learned projection when student and teacher widths differ
    generates: bool = False  # the student can write its own training text (distill.on_policy: Task.rollout)
    vocabulary_wide: bool = False  # KD reads a distribution over the vocabulary per token (causal-lm): too large to
    # cache whole; distill.top_k reduces it to the teacher's top k (brewcli/topk.py), which the cache can hold
    agreement_is: str = ""  # what Task.agreement measures, for the report

    @property
    def option_fields(self) -> dict:
        """The task block's own options (its fields but the name and the columns), for `brew ls` and `brew init`."""
        columns = {c.key for c in self.columns}
        return {k: f for k, f in self.spec.model_fields.items() if k != "name" and k not in columns}

    options = None  # the run's `task:` block (an instance of `spec`), once bound
    data = None  # the run's `data:` block: the columns this task reads, max_length, the files

    def bind(self, options, data) -> Task:
        """This task for one run (or one stage): a copy holding its own `task:` and `data:` blocks, which its
        methods read; the registered task stays unbound. No method reads the rest of the recipe."""
        bound = copy.copy(self)
        bound.options, bound.data = options, data
        return bound

    # ---- plan time (no weights)
    def resolve(self, ref: str | None) -> Task:
        """This task with any option that depends on the teacher (`ref`: the first teacher's folder or Hub id) made
        concrete, so the saved recipe holds what the run used (sentence embeddings: the pooling)."""
        return self

    def check_columns(self, ds, where_file: str) -> None:
        """The split has every column the task reads (`where_file` names it for messages)."""
        from brewcli.data import _column_hint

        for column in self.columns:
            wanted = self.column(column.key)
            for col in [wanted] if isinstance(wanted, str) else wanted:
                if col not in ds.column_names:
                    raise RecipeError(self.column_key(column.key), f"no column '{col}' ({column.what}) in {where_file} "
                                      f"(columns: {', '.join(ds.column_names)})", _column_hint(col, ds.column_names))

    def column(self, key: str):
        """The column named `key` reads: from the task's block (`task: {text: body}`), else from `data:` (the older
        spelling, still accepted), else the task's default."""
        for block in (self.options, self.data):
            value = getattr(block, key, None)
            if value is not None:
                return value
        return next(c.default for c in self.columns if c.key == key)

    def column_key(self, key: str) -> str:
        """The recipe key that names column `key`, for messages: where the recipe set it (`data.` when unset)."""
        return ("task." if getattr(self.options, key, None) is not None else "data.") + key

    def read_file(self, path, key: str):
        """(FileRows, records) for a file in one of `file_formats`, or None to let datasets read it."""
        return None

    def check_rows(self, ds, where) -> None:
        """Every row holds what the task needs; `where(i)` names row i (file and line for local files)."""

    def sample_texts(self, ds, n: int = 200) -> list[str]:
        """Some of the text the tokenizer will read (to check that it knows the words)."""
        rows, out = ds.select(range(min(n, len(ds)))), []
        for key in self.text_keys:
            wanted = self.column(key)
            for col in [wanted] if isinstance(wanted, str) else wanted:
                out += [" ".join(map(str, v)) if isinstance(v, list) else str(v) for v in rows[col] if v is not None]
        return out

    def label_names(self, train, teacher_config, where=None) -> list[str] | None:
        """The label set in id order; `where(i)` names train row i for messages."""
        return None

    def encode_labels(self, ds, names: list[str] | None, where):
        """The dataset with the labels in the form the model's head takes (column `labels`)."""
        return ds

    def configure(self, config, names: list[str] | None) -> None:
        """Set the head's size and label names on a model config."""

    def check_teacher(self, teacher_config, names: list[str] | None) -> None:
        """The teacher's head predicts what this task compares."""

    def describe(self, names: list[str] | None) -> tuple[str, str]:
        """(head and labels, what KD compares) for the plan."""
        raise NotImplementedError

    # ---- data
    def encode(self, ds, tokenizer, names: list[str] | None):
        """Tokenise a split: model inputs, labels, and an `example` column (the row each feature comes from)."""
        raise NotImplementedError

    def collate(self, tokenizer, multiple: int | None = None):
        """A function from a list of encoded rows to a Batch, padded to a multiple of `multiple` if given."""
        raise NotImplementedError

    # ---- step time
    def logits(self, output, mask=None):
        """The tensor KD and the metric read from a Hugging Face output: (B, C), (B, L, C) or (B, L, 2); `mask`: the
        inputs' attention mask (B, L), for a task that pools over tokens."""
        return output.logits

    def reduce(self, logits, batch):
        """What scoring keeps of a batch's logits, computed on their device before they go to the CPU for the metric
        (a causal LM: two numbers a token instead of the vocabulary)."""
        return logits

    def logit_width(self, config) -> int:
        """W in the logits' shape: the head's outputs per row (or per token)."""
        return config.num_labels

    def views(self, s_logits, t_logits, batch, teacher_batch=None):
        """What KD compares: (student rows, teacher rows), each (N, C), padding and ignored positions removed.
        `teacher_batch`: the teacher's own batch, where it reads other tokens than the student."""
        return s_logits, t_logits

    def view_labels(self, batch):
        """The gold class of every KD row (for probability shift)."""
        return batch.labels["labels"]

    def units(self, batch, keep=None) -> int:
        """How many items this batch's losses average over (rows, or labelled tokens); of rows `keep` (B,) only."""
        return batch.size if keep is None else int(keep.sum())

    def gold_labels(self, batch) -> dict | None:
        """The labels the head's loss reads: the batch's, with its teacher-only rows (augmented, `batch.gold`
        false) left out; None when no row of the batch has a gold label."""
        if batch.gold is None or bool(batch.gold.all()):
            return batch.labels
        return self.drop_rows(batch, ~batch.gold) if bool(batch.gold.any()) else None

    def drop_rows(self, batch, drop) -> dict:
        """The labels with rows `drop` (B,) bool marked for the head's loss to ignore (tasks that `skips_rows`)."""
        raise NotImplementedError

    def metric(self, names: list[str] | None, examples) -> Metric:
        raise NotImplementedError

    def main_of(self, scores: dict) -> str:
        """The metric a report compares on (a task whose splits hold different things picks from what was scored)."""
        return self.main_metric

    def agreement(self, s_logits, t_logits, batch) -> tuple[float, int] | None:
        """(sum, count) of how far the student agrees with the teacher on a batch, for `evaluate_models` in the
        report (a causal LM: the same top-1 next token; sentence vectors: their cosine); None: not measured."""
        return None

    def samples(self, models: dict, tokenizer, ds) -> list[dict]:
        """Examples of what the models produce, for `brew eval` to show (a causal LM: continuations of prompts)."""
        return []

    def publish(self, folder, config) -> None:
        """Write the task's own files beside the final student's (sentence embeddings: sentence-transformers')."""

    @property
    def headless(self) -> bool:
        """No head (task: general): scored by the loss terms on held-out rows (heldout.py), not by a metric."""
        return self.head == "none"

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: Registry[Task] = Registry("task", "tasks")


def task_of(recipe) -> Task:
    """The task a recipe (or one stage of it) runs, bound to its own `task:` and `data:` blocks."""
    return TASKS.get(recipe.task.name).bind(recipe.task, recipe.data)


def register(task: Task) -> None:
    """Add a task; `brew ls tasks` shows its doc, its columns and its options."""
    columns = ", ".join(f"data.{c.key} ({c.default if isinstance(c.default, str) else c.default[0]})"
                        for c in task.columns)
    options = ", ".join(task.option_fields)
    TASKS.add(task.name, task, f"{task.doc}. Columns: {columns}" + (f". Options: {options}" if options else ""))


def retained_pct(metric: str, student: float, teacher: float, lower_is_better=frozenset()) -> float | None:
    """Student as a percentage of the teacher on `metric` (inverted for metrics where lower is better)."""
    if not teacher or not student:
        return None
    return round(100 * (teacher / student if metric in lower_is_better else student / teacher), 2)


from brewcli.tasks import sequence, tokens, qa, general, embedding, causal  # noqa: E402,F401,I001  (each registers its tasks, in this order)
