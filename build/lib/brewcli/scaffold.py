"""`brew init`: read the data file, propose the task and its columns, and write a commented recipe that
`brew distill` (or `brew train`) accepts unchanged."""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path

from brewcli.errors import BrewError
from brewcli.tasks import TASKS

LOCAL = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".conll", ".txt")
LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "score", "stars", "sentiment", "topic")


def peek(path: str, rows: int = 50) -> tuple[str, dict[str, list]]:
    """(kind, {column: its first values}) of a local data file, read the way brew will read it."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".conll", ".txt"):
        from brewcli.tasks.tokens import read_conll

        _, records = read_conll(p, "--data", "tokens", "ner_tags")
        return "conll", _columns(records[:rows])
    if suffix == ".json":
        from brewcli.tasks.qa import read_squad

        found = read_squad(p, "--data", None, ("question", "context", "answers"))
        if found is not None:
            return "squad", _columns(found[1][:rows])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return "parquet", {k: v[:rows] for k, v in pq.read_table(p).to_pydict().items()}
    with open(p, encoding="utf-8-sig", newline="") as f:
        if suffix in (".csv", ".tsv"):
            return "csv", _columns(list(islice(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","), rows)))
        text = f.read(1_000_000)
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines()[:rows] if line.strip()]
    except json.JSONDecodeError as e:
        raise BrewError(f"brew init: --data {path} is not valid JSON ({e})") from None
    return "json", _columns([r for r in records[:rows] if isinstance(r, dict)])


def _columns(records: list[dict]) -> dict[str, list]:
    columns: dict[str, list] = {}
    for r in records:
        for k, v in r.items():
            columns.setdefault(k, []).append(v)
    return columns


def _is_words(values) -> bool:
    return bool(values) and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in values)


def propose_task(kind: str, columns: dict[str, list]) -> str:
    """The task the data looks like; the user confirms or overrides it."""
    if kind == "conll":
        return "token-classification"
    if kind == "squad" or {"question", "context", "answers"} <= set(columns):
        return "question-answering"
    lists = [c for c, v in columns.items() if _is_words(v)]
    if len(lists) >= 2 and all(len(a) == len(b) for a, b in zip(columns[lists[0]], columns[lists[1]])):
        return "token-classification"
    label = next((c for c in columns if c.lower() in LABEL_NAMES), None)
    if label and all(isinstance(v, list) for v in columns[label]):
        return "multi-label"
    if label and all(isinstance(v, float) for v in columns[label]) and any(not v.is_integer() for v in columns[label]):
        return "regression"
    return "classification"


def propose_columns(task, columns: dict[str, list]) -> dict[str, str | list[str] | None]:
    """For each column the task reads, the data column that holds it (None: brew cannot tell)."""
    names = list(columns)
    out: dict[str, str | list[str] | None] = {}
    for col in task.columns:
        default = col.default if isinstance(col.default, str) else col.default[0]
        if default in columns:
            out[col.key] = default
            continue
        taken = {v for v in out.values() if isinstance(v, str)}
        free = [n for n in names if n not in taken]
        if col.key == "label":
            pick = next((n for n in free if n.lower() in LABEL_NAMES), None)
        elif col.key == "text":
            texts = [n for n in free if all(isinstance(v, str) for v in columns[n]) and n.lower() not in LABEL_NAMES]
            pick = max(texts, key=lambda n: sum(len(v) for v in columns[n]), default=None)
        elif col.key in ("tokens", "tags"):
            lists = [n for n in free if _is_words(columns[n])]
            pick = next((n for n in lists if ("tag" in n.lower()) == (col.key == "tags")), lists[0] if lists else None)
        else:
            pick = next((n for n in free if col.key in n.lower()), None)
        out[col.key] = pick
    return out


def task_block(task, values: dict | None = None) -> str:
    options = {k: f for k, f in task.spec.model_fields.items() if k != "name"}
    values = values or {}
    if not options:
        return f"task: {task.name}                # `brew ls tasks`\n"
    lines = ["task:                            # `brew ls tasks`", f"  name: {task.name}"]
    for key, field in options.items():
        default = values.get(key, field.default)
        value = json.dumps(default) if not isinstance(default, str) else default
        lines.append(f"  {key}: {value}".ljust(33) + f"# {field.description}")
    return "\n".join(lines) + "\n"


def data_block(data: str, task, columns: dict, max_length: int) -> str:
    if Path(data).suffix.lower() in LOCAL:
        lines = ["  files:", f"    train: {data}", "  eval_fraction: 0.1             # held out from train for evaluation"]
    else:
        name, _, config = data.partition(":")
        lines = [f"  dataset: {name}", f"  config: {config}" if config else "  # config: null",
                 "  train_split: train", "  eval_split: validation"]
    for col in task.columns:
        value = columns[col.key]
        shown = value if isinstance(value, str) else f"[{', '.join(value)}]"
        lines.append(f"  {col.key}: {shown}".ljust(33) + f"# the column holding {col.what}")
    lines.append(f"  max_length: {max_length}".ljust(33) + "# tokens per example (longer texts are truncated)")
    return "\n".join(lines)


STUDENT = """\
student:
  preset: {student}                      # `brew ls students`: T6, T3, T3-small, T4-tiny, T12-nano
  init: auto                      # auto | teacher-layers | random | pretrained; auto copies teacher layers when widths match
  teacher_layers: uniform         # which teacher layers to copy: uniform | first | last | a list like [0, 2, 4]
"""
DISTILL = """\
distill:
  temperature: 8                  # softens the logits; TextBrewer's published runs use 8
  kd_loss: auto                   # auto: {kd_loss} for {task} (`brew ls losses`)
  kd_weight: 1.0
  hard_label_weight: 0.0          # weight of the loss on gold labels
  matches:                        # intermediate-layer losses (`brew ls matches`, `brew ls losses`)
    - preset: uniform             # student layer m <- teacher layer round(m*N/M), for any depths
      feature: hidden
      loss: hidden_mse            # a projection is added automatically when widths differ
  teacher_cache: auto             # store what the losses read from the teacher once (~/.cache/brew); off to run it live
"""
TRAIN = """\
train:
  output_dir: {output_dir}
  epochs: 3
  batch_size: 32
  lr: {lr}
  warmup: 0.1                     # fraction of steps
  eval_every: epoch               # or a number of steps
  save_every: epoch
  keep_best: auto                 # the task's main metric ({metric})
  group_by_length: false          # true: batches of similar lengths, less padding (faster on short texts)
  device: auto                    # auto | cpu | cuda
  precision: fp32                 # fp32 | bf16 | fp16 (fp16 needs a GPU)
"""


def render(*, task: str, model: str, student: str | None, data: str, path: str, columns: dict,
           max_length: int = 128) -> str:
    """The recipe text: a distillation recipe when `student` is a preset, else a `brew train` recipe for `model`."""
    t = TASKS.get(task)
    name = Path(path).stem
    command = "distill" if student else "train"
    what = f"distill {model} into a {student} student" if student else f"fine-tune {model} (e.g. to make a teacher)"
    head = (f"# brew recipe: {what}, task {task}.\n# Run it:            brew {command} {path}\n"
            f"# Check it first:    brew {command} {path} --dry-run     (configs only, no weights)\n"
            f"# Override a value:  brew {command} {path} train.epochs=5\nname: {name}\n\n")
    if task == "question-answering":
        head += "# Long contexts are split into windows of data.max_length tokens that overlap by doc_stride.\n"
    body = task_block(t, {"doc_stride": max_length // 4} if task == "question-answering" else None) + "\n"
    if student:
        body += f"teacher: {model}                # a Hugging Face id or a local folder (a `brew train` output works)\n\n"
        body += STUDENT.format(student=student) + "\n"
    else:
        body += f"student:\n  model: {model}                # the model being fine-tuned (no teacher: plain training)\n\n"
    body += "data:\n" + data_block(data, t, columns, max_length) + "\n\n"
    if student:
        body += DISTILL.format(kd_loss=t.kd_losses[0], task=task) + "\n"
    body += TRAIN.format(output_dir=f"runs/{name}", lr="1.0e-4" if student else "5.0e-5", metric=t.main_metric)
    return head + body


def model_max_length(ref: str, default: int) -> int:
    """`default`, capped at what a local model's position embeddings allow. Reads config.json as it is (importing
    transformers would take seconds); a config this cannot read is left to the plan, which reports it properly."""
    from types import SimpleNamespace

    from brewcli.models import max_positions

    config = Path(ref).expanduser() / "config.json"
    try:
        limit = max_positions(SimpleNamespace(**json.loads(config.read_text())))
    except (OSError, ValueError, TypeError, AttributeError):
        return default
    return min(default, limit) if limit else default
