"""`brew init`: read the data file, propose the task and its columns, and write a commented recipe that
`brew distill` (or `brew train`) accepts unchanged."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import textwrap
from itertools import islice, takewhile
from pathlib import Path

from brewcli.errors import BrewError, nearest
from brewcli.tasks import TASKS

LOCAL = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".conll", ".txt")
LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "score", "stars", "sentiment", "topic")


def peek(path: str, rows: int = 50, text: bool | None = None, flag: str = "--data") -> tuple[str, dict[str, list], int]:
    """(kind, {column: its first values}, number of rows) of a local data file, read the way brew will read it.
    A .txt file is CoNLL or plain text (kind "text": documents, for task general): `text` says which (None: what it
    looks like, `looks_conll`); a plain text file's rows are its documents (counted from its first 8 MB)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".txt" and (text if text is not None else not looks_conll(p)):
        return read_text(p, rows, flag)
    if suffix in (".conll", ".txt"):
        from brewcli.tasks.tokens import read_conll

        _, records = read_conll(p, flag, "tokens", "ner_tags")
        return "conll", _columns(records[:rows]), len(records)
    if suffix == ".json":
        from brewcli.tasks.qa import read_squad

        found = read_squad(p, "--data", None, ("question", "context", "answers"))
        if found is not None:
            return "squad", _columns(found[1][:rows]), len(found[1])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        return "parquet", {k: v[:rows] for k, v in table.to_pydict().items()}, table.num_rows
    with open(p, encoding="utf-8-sig", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            first = list(islice(reader, rows))
            return "csv", _columns(first), len(first) + sum(1 for _ in reader)
        array = f.read(4096).lstrip().startswith("[")
        f.seek(0)
        try:
            if array:
                records = json.load(f)
                return "json", _columns([r for r in records[:rows] if isinstance(r, dict)]), len(records)
            records, count = [], 0
            for line in f:
                if line.strip():
                    count += 1
                    if len(records) < rows:
                        records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BrewError(f"brew init: --data {path} is not valid JSON ({e})") from None
    return "json", _columns([r for r in records if isinstance(r, dict)]), count


TAG = re.compile(r"^(O|[BIESLU]-\S+)$")  # an IOB/BIOES tag, as CoNLL files end their lines


def looks_conll(path: Path, budget: int = 1 << 16) -> bool:
    """Whether a .txt file is CoNLL (a token per line, its tag in the last column, tab- or space-separated) rather
    than plain text: its first non-blank lines (-DOCSTART- aside) all hold tabs, or nearly all hold the same small
    number of fields with tags in the last one (IOB tags, or far fewer kinds of last field than of first). A file
    without a line of text is left to the CoNLL reader, as before plain text was read."""
    with open(path, "rb") as f:
        raw = f.read(budget)
    cut = raw.splitlines()[:-1] if len(raw) == budget else raw.splitlines()  # the last line read may go on
    lines = [ln for ln in (b.decode("utf-8", errors="replace") for b in cut)
             if ln.strip() and not ln.startswith("-DOCSTART-")][:500]
    if not lines:
        return True
    if all("\t" in ln.strip() for ln in lines):
        return True
    fields = [ln.split() for ln in lines]
    n = statistics.mode(len(f) for f in fields)
    same = [f for f in fields if len(f) == n]
    if not 2 <= n <= 10 or len(same) < 0.9 * len(fields):
        return False
    firsts, lasts = {f[0] for f in same}, {f[-1] for f in same}
    return all(TAG.match(f[-1]) for f in same) or len(lasts) <= max(1, len(firsts) // 2)


def read_text(p: Path, rows: int, flag: str = "--data") -> tuple[str, dict[str, list], int]:
    """A plain text file as task general reads it (`documents: auto`): its first documents, and how many it holds
    (estimated from the first 8 MB of a larger file)."""
    from brewcli.datafiles import sample_text

    sample = sample_text(p, flag)
    count = len(sample.texts) if sample.read >= sample.size else round(len(sample.texts) * sample.size / sample.read)
    return "text", {"text": sample.texts[:rows]}, count


SPLIT_FILES = {"eval": ("eval", "validation", "dev"), "test": ("test",)}  # file names of each split beside train


def _format(path: Path) -> str:
    from brewcli.datafiles import FORMATS

    suffix = path.suffix.lower()
    return "conll" if suffix in (".conll", ".txt") else FORMATS.get(suffix, suffix)


def _path(text: str, flag: str) -> Path:
    try:
        path = Path(text).expanduser()
        path.exists()
        return path
    except (OSError, ValueError, RuntimeError) as e:  # ~nosuchuser, a name too long
        raise BrewError(f"brew init: {flag} {text}: not a usable path ({e})") from None


def train_file(data: str) -> Path | None:
    """The training file `--data` names: the file itself, or the train file in a folder; None for a Hub dataset."""
    p = _path(data, "--data")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in LOCAL)
        trains = [f for f in files if f.stem.lower() == "train"] or [f for f in files if "train" in f.stem.lower()]
        if not trains:
            raise BrewError(f"brew init: --data {data} is a folder without a train file (train.csv, train.jsonl, "
                            f"train.conll, ...); it holds {', '.join(f.name for f in files) or 'no data files'}; "
                            "name the training file itself with --data")
        if len(trains) > 1:
            raise BrewError(f"brew init: --data {data} holds several train files ({', '.join(f.name for f in trains)})"
                            f"; pass --data {Path(data) / trains[0].name} (or the other one)")
        return trains[0]
    if p.suffix.lower() not in LOCAL:
        return None
    if not p.is_file():
        raise BrewError(f"brew init: --data {data}: file not found")
    return p


def other_splits(train: Path, given: dict[str, str | None], columns: list[str],
                 text: bool | None = None) -> tuple[dict[str, Path], list[str]]:
    """The eval and test files: each one given (--eval, --test), else a file of the same format beside the train
    file named for the split (test.csv beside train.csv, or bbc_test.csv beside bbc_train.csv). A file found
    that lacks the chosen `columns` (a test set without labels) is left out. `text`: .txt files are plain text
    (True) or CoNLL (False), as the train file was read. Returns ({split: file}, notes)."""
    found, notes = {}, []
    for split, names in SPLIT_FILES.items():
        if given.get(split):
            f = _path(given[split], f"--{split}")
            if not f.is_file():
                raise BrewError(f"brew init: --{split} {given[split]}: file not found")
            if _format(f) != _format(train):
                raise BrewError(f"brew init: --{split} {given[split]} is a {f.suffix} file but the train file is "
                                f"{train.suffix}; a recipe reads one format, so convert one of them")
            missing = _missing(f, columns, text, f"--{split}")
            if missing:
                raise BrewError(f"brew init: --{split} {given[split]} has no column '{missing}' (the train file's "
                                f"{', '.join(columns)})")
            found[split] = f
            continue
        stems = [train.stem.replace("train", n) for n in names if "train" in train.stem] + list(names)
        f = next((c for c in (train.with_name(s + train.suffix) for s in dict.fromkeys(stems))
                  if c.is_file() and c != train and c not in found.values()), None)
        if f is None:
            continue
        missing = _missing(f, columns, text)
        if missing:
            notes.append(f"{f.name} beside {train.name} has no column '{missing}', so it is not used as the {split} "
                         f"split (--{split} names one)")
        else:
            found[split] = f
            notes.append(f"{f.name} beside {train.name} is the {split} split (--{split} names another)")
    return found, notes


def _missing(path: Path, columns: list[str], text: bool | None = None, flag: str = "--data") -> str | None:
    """The first of `columns` the file lacks (CoNLL, SQuAD and plain text files have fixed fields, read under the
    recipe's names)."""
    kind, have, _ = peek(str(path), rows=5, text=text, flag=flag)
    return None if kind in ("conll", "squad", "text") else next((c for c in columns if c not in have), None)


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
    if kind == "text" or (len(columns) == 1 and all(isinstance(v, str) for v in next(iter(columns.values())))):
        return "general"  # documents without labels: general distillation
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


def choose_columns(task, columns: dict[str, list], given: list[str], text: str | None, label: str | None,
                   data: str, ask=None) -> dict:
    """The data column of each key the task reads: given (--column KEY=NAME, --text, --label), else proposed, else
    `ask(what)` (None: no terminal, so say which --column to pass); the task's defaults for a Hub dataset."""
    bad = [item for item in given if "=" not in item]
    if bad:
        raise BrewError(f"brew init: --column {bad[0]}: write KEY=COLUMN, e.g. --column text=review")
    named = dict(item.split("=", 1) for item in given)
    named.update({k: v for k, v in (("text", text), ("label", label)) if v})
    chosen = propose_columns(task, columns) if columns else {}
    for col in task.columns:
        if col.key in named:
            parts = [c.strip() for c in named[col.key].split(",")]
            chosen[col.key] = parts[0] if len(parts) == 1 else parts
        elif chosen.get(col.key) is None and columns:
            if ask is None:
                raise BrewError(f"brew init: cannot tell which column of {data} holds {col.what} (columns: "
                                f"{', '.join(columns)}); pass --column {col.key}=NAME")
            chosen[col.key] = ask(col.what)
        elif chosen.get(col.key) is None:
            chosen[col.key] = col.default
    return chosen


def task_block(task, values: dict | None = None) -> str:
    options = task.option_fields
    values = values or {}
    if not options:
        return f"task: {task.name}                # `brew ls tasks`\n"
    lines = ["task:                            # `brew ls tasks`", f"  name: {task.name}"]
    for key, field in options.items():
        default = values.get(key, field.default)
        value = json.dumps(default) if not isinstance(default, str) else default
        line = f"  {key}: {value}".ljust(33) + f"# {field.description}"
        lines.append(line if len(line) <= WIDTH else _line(f"  {key}: {value}", field.description))
    return "\n".join(lines) + "\n"


def data_block(data: str, task, columns: dict, max_length: int, files: dict[str, str] | None = None,
               augment: bool = False) -> str:
    """The data section: local `files` by split (as the recipe writes them), else the Hub dataset `data`;
    `augment` (a distillation recipe): data.augment, commented out."""
    if files:
        lines = ["  files:", *(f"    {split}: {f}" for split, f in files.items())]
        lines.append("  eval_split: eval".ljust(33) + "# picks the best checkpoint" if "eval" in files else
                     "  eval_fraction: 0.1".ljust(33) + "# held out from train for evaluation")
        if "test" in files:
            lines.append("  test_split: test".ljust(33) + "# scored at the end and by `brew eval`")
    else:
        name, _, config = data.partition(":")
        lines = [f"  dataset: {name}", f"  config: {config}" if config else "  # config: null",
                 "  train_split: train", "  eval_split: validation"]
    for col in task.columns:
        value = columns[col.key]
        shown = value if isinstance(value, str) else f"[{', '.join(value)}]"
        lines.append(f"  {col.key}: {shown}".ljust(33) + f"# the column holding {col.what}")
    lines.append(f"  max_length: {max_length}".ljust(33) + "# tokens per example (longer texts are truncated)")
    if augment and task.augments:
        lines.append("  # augment: {method: glove}".ljust(33) + "# TinyBERT's: ~20 variants a row, labelled by the "
                     "teacher (brew ls augment)")
    return "\n".join(lines)


STUDENT = """\
student:
  preset: {student}                      # `brew ls students`: T6, T3, T3-small, T4-tiny, T12-nano, BiGRU
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
STAGES = """\
# Stages run one after the other, each into train.output_dir/NAME, each starting from the student the stage before
# saved (TinyBERT's task distillation: the intermediate layers first, then the predictions); the last stage's
# student ends up at the top of train.output_dir. A stage's sections merge key by key over the ones above (as
# key=value overrides do): mappings merge, lists and values replace.
stages:
  # General distillation (the student learns the teacher's layers on unlabelled text, before the task) would be a
  # first stage: `brew init --stages --general corpus.txt` writes this recipe with one (its own task and data)
  - name: intermediate
    distill:
      kd_weight: 0                # no logits yet: the student's layers learn the teacher's
      matches:                    # intermediate-layer losses (`brew ls matches`, `brew ls losses`)
        - preset: uniform         # student layer m <- teacher layer round(m*N/M), for any depths
          feature: hidden
          loss: hidden_mse        # a projection is added automatically when widths differ
  - name: predictions             # then the teacher's predictions, from the student the stage above saved
    distill:
      kd_weight: 1.0
      matches: []                 # a list replaces the one above: no layer matches in this stage
"""
STAGES_GENERAL = """\
# Stages run one after the other, each into train.output_dir/NAME, each starting from the student the stage before
# saved (TinyBERT's pipeline: general distillation on unlabelled text, then the task's intermediate layers, then
# its predictions); the last stage's student ends up at the top of train.output_dir. A stage's sections merge key
# by key over the ones above (as key=value overrides do): mappings merge, lists and values replace. The general
# stage reads the corpus and the task's stages the task's files, so each stage has a data: section of its own
# (one at the top would merge into both); `*task-data` repeats stage intermediate's (a YAML alias: edit it there).
stages:
{general}\
  - name: intermediate            # the task: the student's layers learn the teacher's on the task's data
    data: &task-data
{data}
    distill:
      kd_weight: 0                # no logits yet: the student's layers learn the teacher's
      matches:                    # intermediate-layer losses (`brew ls matches`, `brew ls losses`)
{matches}
  - name: predictions             # then the teacher's predictions, from the student the stage above saved
    data: *task-data              # the same data as stage intermediate
    distill:
      kd_weight: 1.0
      matches: []                 # a list replaces the one above: no layer matches in this stage
"""
TRAIN = """\
train:
  output_dir: {output_dir}
  # {epochs_why}
  epochs: {epochs}
  batch_size: 32
  # {lr_why}
  lr: {lr}
  warmup: 0.1                     # fraction of steps
  eval_every: epoch               # or a number of steps
  save_every: epoch
  keep_best: auto                 # the task's main metric ({metric})
  # {group_why}
  group_by_length: {group}
  device: auto                    # auto | cpu | cuda
  precision: fp32                 # fp32 | bf16 | fp16 (fp16 needs a GPU)
"""


def render(*, task: str, model: str, student: str | None, data: str, path: str, columns: dict,
           max_length: int = 128, files: dict[str, str] | None = None, training: dict | None = None,
           output_dir: str | None = None, stages: bool = False, general: dict | None = None) -> str:
    """The recipe text: a distillation recipe when `student` is a preset, else a `brew train` recipe for `model`.
    `model`, `files` and `output_dir` are written as given (relative to the recipe's folder: `recipe_path`);
    `training` holds the proposed epochs, lr and group_by_length with their reasons (`propose_training`).
    `stages`: a distillation in two stages, the intermediate layers and then the predictions (STAGES).
    `general` (files, column, max_length, layers: write_recipe's): three stages, general distillation on a corpus
    first (STAGES_GENERAL); each stage then has its own data section."""
    t = TASKS.get(task)
    name = Path(path).stem
    command = "distill" if student else "train"
    what = f"distill {model} into a {student} student" if student else f"fine-tune {model} (e.g. to make a teacher)"
    if general and student:
        what += (f" in three stages, task {task}:\n# general distillation on a corpus, then the task's intermediate "
                 "layers, then its predictions")
    else:
        what += (" in two stages" if stages and student else "") + f", task {task}"
    head = (f"# brew recipe: {what}.\n# Paths are relative to this file's folder.\n"
            f"# Run it:            brew {command} {path}\n"
            f"# Check it first:    brew {command} {path} --dry-run     (configs only, no weights)\n"
            f"# Override a value:  brew {command} {path} train.epochs=5\nname: {name}\n\n")
    if task == "question-answering":
        head += "# Long contexts are split into windows of data.max_length tokens that overlap by doc_stride.\n"
    body = task_block(t, {"doc_stride": max_length // 4} if task == "question-answering" else None) + "\n"
    if student:
        body += f"teacher: {model}".ljust(32) + "  # a Hugging Face id or a local folder (a `brew train` output works)\n\n"
        body += STUDENT.format(student=student) + "\n"
    else:
        body += "student:\n" + f"  model: {model}".ljust(32) + "  # the model being fine-tuned (no teacher: plain training)\n\n"
    if not (general and student):  # else each stage has its own (STAGES_GENERAL)
        body += "data:\n" + data_block(data, t, columns, max_length, files, augment=bool(student)) + "\n\n"
    if student:
        distill = DISTILL.format(kd_loss=t.kd_losses[0], task=task)
        if not t.tempered:  # sentence vectors: no temperature
            distill = "\n".join(line for line in distill.split("\n") if not line.startswith("  temperature:"))
        if t.vocabulary_wide:  # a next-token distribution: cached as the teacher's top k, or not at all
            k = min(64, _config_json(model).get("vocab_size") or 64)
            distill = distill.replace("  temperature: 8                  # softens the logits; TextBrewer's published "
                                      "runs use 8", "  temperature: 1                  # next-token distributions are "
                                      "distilled at 1-2 (DistillKit, TRL): higher flattens the whole vocabulary")
            distill = distill.replace("  teacher_cache: auto             # store what the losses read from the teacher "
                                      "once (~/.cache/brew); off to run it live",
                                      f"  top_k: {k:<24}# KD on the teacher's {k} likeliest next tokens + "
                                      "the rest's mass\n  teacher_cache: auto             # stores those (~/.cache/"
                                      "brew); without top_k the teacher runs live")
        if stages:  # the stages choose the matches
            distill = distill[: distill.index("  matches:")] + distill[distill.index("  teacher_cache:"):]
        body += distill + "\n"
    training = training or propose_training(t, {}, columns, None, max_length, model, bool(student))
    body += TRAIN.format(output_dir=output_dir or f"runs/{name}", metric=t.main_metric,
                         **{k: v for key, (value, why) in training.items() for k, v in ((key, value), (f"{key}_why", why))})
    if general and student:
        layers = general["layers"]
        body += "\n" + STAGES_GENERAL.format(
            general=general_stage(general, task),
            data="\n".join(_indented(data_block(data, t, columns, max_length, files), "    ")),
            matches=_line(f"        - preset: {layers['preset']}", layers["why"]))
    elif stages and student:
        body += "\n" + STAGES
    return head + body


# ---------------------------------------------------------------------------------------------- general distillation

GENERAL_EVAL_FRACTION = 0.02  # of a corpus's documents, held out when no held-out file is given
WIDTH = 116  # of a written line; a longer comment goes on the lines above its key


def _line(text: str, comment: str, at: int = 34) -> str:
    """`text` with `# comment` from column `at` (counted from 0, as the templates above write them; or two spaces
    after a longer text); a comment that would run past WIDTH is written above, wrapped."""
    line = f"{text.ljust(at)}# {comment}" if len(text) < at - 1 else f"{text}  # {comment}"
    if len(line) <= WIDTH:
        return line
    indent = text[: len(text) - len(text.lstrip())]
    return "\n".join([*textwrap.wrap(comment, WIDTH - len(indent) - 2, initial_indent=indent + "# ",
                                      subsequent_indent=indent + "# "), text])


def _indented(lines: str, by: str) -> list[str]:
    """Lines of a section moved right by `by`, their `# comments` kept in the templates' column."""
    out = []
    for line in lines.splitlines():
        code, sep, comment = line.partition("  # ")
        out.append(_line(by + code.rstrip(), comment) if sep else by + line)
    return out


def _teacher_widths(model: str):
    """The teacher's widths from its config.json (a local folder, or a Hub id in the local cache); None if unread."""
    from types import SimpleNamespace

    from brewcli.models.families import FamilyError, read_widths

    config = _config_json(model)
    try:
        return read_widths(SimpleNamespace(**config)) if config else None
    except (FamilyError, AttributeError, TypeError):
        return None


def layer_preset(model: str, student: str) -> tuple[str, str]:
    """(match preset, why) for learning the teacher's layers: TinyBERT's (hidden states and attention scores) when
    the head counts agree, else MiniLM v2's relations, which fit any head counts (attention scores do not)."""
    from brewcli.models.students import PRESETS

    widths = _teacher_widths(model)
    if widths is None:
        return "tinybert", "hidden states (one shared projection) + attention scores; equal head counts"
    heads = PRESETS.get(student).heads or widths.heads
    if heads == widths.heads:
        return "tinybert", f"hidden states (one shared projection) + attention scores ({heads} heads each)"
    return "minilm-v2", (f"tinybert compares attention scores head by head, but the teacher has {widths.heads} heads "
                         f"and {student} {heads}: Q-Q, K-K, V-V relations fit any head counts")


def _cache_why(model: str, student: str, preset: str, max_length: int) -> str:
    """Why a general run reads the teacher live: what the cache would store a window, for the preset's features."""
    from brewcli.matches import ckd_layers
    from brewcli.models.students import PRESETS
    from brewcli.ui import human

    widths, layers, n = _teacher_widths(model), PRESETS.get(student).layers, max_length
    live = "too much to store for a whole corpus: the teacher runs live"
    if widths is None:
        return f"the teacher's hidden states and attention maps come to MBs a window, {live}"
    if preset == "tinybert":
        what, size = f"{layers + 1} hidden states and {layers} score maps", (layers + 1) * n * widths.hidden + \
            layers * widths.heads * n * n
    elif preset == "minilm-v2":
        what, size = "the last layer's queries, keys and values", 3 * n * widths.hidden
    else:
        k = len(ckd_layers(widths.layers, layers))
        what, size = f"{k} hidden states", k * n * widths.hidden
    return f"{what}: ~{human(2 * size, 'B')} a window (fp16, {n} tokens), {live}"


def general_data(files: dict[str, str], column: str | None, max_length: int, indent: str = "  ") -> list[str]:
    """The data section's lines of task general: the corpus (and held-out text, or a fraction of the corpus)."""
    lines = [f"{indent}files:", *(f"{indent}  {split}: {f}" for split, f in files.items())]
    if "validation" in files:
        lines.append(_line(f"{indent}eval_split: validation", "the loss on its windows picks the best checkpoint"))
    else:
        lines.append(_line(f"{indent}eval_fraction: {GENERAL_EVAL_FRACTION}", "of the documents, held out: the loss "
                           "on their windows picks the best checkpoint"))
    if "test" in files:
        lines.append(_line(f"{indent}test_split: test", "scored (the loss) at the end"))
    if column:
        lines.append(_line(f"{indent}text: {column}", "the column holding the documents' text"))
    lines.append(_line(f"{indent}max_length: {max_length}", "tokens a window: documents are packed into windows "
                       "of this many"))
    return lines


def layer_plan(model: str, student: str, max_length: int) -> dict[str, str]:
    """{preset, why, cache}: the layer matches to write for `model` (read from its config: a local folder, or a Hub
    id in the local cache) and a `student` preset, and why a general run reads the teacher live."""
    preset, why = layer_preset(model, student)
    return {"preset": preset, "why": why, "cache": _cache_why(model, student, preset, max_length)}


LAYER_PRESETS = {"tinybert": "hidden states and attention scores, layer by layer; equal head counts",
                 "minilm-v2": "Q-Q, K-K, V-V relations of the last layer; any widths and head counts",
                 "ckd": "word and layer relations of hidden states; any widths"}


def general_matches(layers: dict[str, str], indent: str = "  ") -> list[str]:
    preset, why = layers["preset"], layers["why"]
    others = [f"{indent}  #   {name}: {what}" for name, what in LAYER_PRESETS.items() if name != preset]
    return [_line(f"{indent}matches:", "layer matches only: no logits to distil, no labels (`brew ls matches`)"),
            _line(f"{indent}  - preset: {preset}", why),
            f"{indent}  # or one of these (`brew ls matches`):", *others]


GENERAL_TRAIN = [("epochs: 3", "a corpus is seen a few times (recipes/general/T4-tiny.yaml: 5 epochs of ~4 MB)"),
                 ("batch_size: 32", "windows a step"),
                 ("lr: 5.0e-4", ("a randomly initialised student learns the teacher's layers fast (as "
                                 "recipes/general/T4-tiny.yaml)")),
                 ("warmup: 0.06", "fraction of steps"),
                 ("weight_decay: 1.0e-4", None)]


def render_general(*, model: str, student: str, path: str, files: dict[str, str], column: str | None,
                   max_length: int, output_dir: str, layers: dict[str, str]) -> str:
    """A recipe of task general: the student learns the teacher's layers on unlabelled text (`layers`:
    layer_plan's)."""
    name = Path(path).stem
    head = (f"# brew recipe: distill {model} into a {student} student, task general.\n"
            "# General (task-agnostic) distillation: the student's layers learn the teacher's on unlabelled text (no\n"
            "# labels, no head). The output is a plain encoder: a task recipe starts from it with\n"
            f"# `student: {{model: {output_dir}}}`, or `brew init --stages --general CORPUS` writes both in one "
            "recipe.\n"
            f"# Paths are relative to this file's folder.\n"
            f"# Run it:            brew distill {path}\n"
            f"# Check it first:    brew distill {path} --dry-run     (configs only, no weights)\n"
            f"# Override a value:  brew distill {path} train.epochs=5\nname: {name}\n\n")
    body = task_block(TASKS.get("general")) + "\n"
    body += _line(f"teacher: {model}", "a Hugging Face id or a local folder; a pretrained (not fine-tuned) "
                  "encoder will do") + "\n\n"
    body += STUDENT.format(student=student) + "\n"
    body += "data:\n" + "\n".join(general_data(files, column, max_length)) + "\n\n"
    body += "distill:\n" + "\n".join(general_matches(layers)) + "\n"
    body += _line("  teacher_cache: off", layers["cache"]) + "\n\n"
    body += "train:\n" + f"  output_dir: {output_dir}\n"
    body += "\n".join(_line(f"  {k}", why) if why else f"  {k}" for k, why in GENERAL_TRAIN) + "\n"
    body += ("  eval_every: epoch\n  save_every: epoch\n"
             + _line("  keep_best: auto", "the lowest loss on the held-out windows") + "\n"
             + _line("  device: auto", "auto | cpu | cuda") + "\n"
             + _line("  precision: fp32", "fp32 | bf16 | fp16 (fp16 needs a GPU)") + "\n")
    return head + body


def general_stage(general: dict, task: str) -> str:
    """The first stage of a staged recipe: general distillation on the corpus (`general`: files, column,
    max_length, layers), before the task's stages."""
    teacher = ("    # teacher: bert-base-uncased  # a stage may name its own teacher: TinyBERT's general stage "
               "learns from\n    #                              the pretrained model, the task stages from the "
               "fine-tuned one")
    lines = ["  - name: general".ljust(32) + "  # the student's layers learn the teacher's on unlabelled text",
             _line("    task: general", f"replaces task {task} in this stage: windows of the corpus, no head"),
             teacher,
             "    data:", *general_data(general["files"], general.get("column"), general["max_length"], "      "),
             "    distill:", _line("      kd_weight: 0", "no logits: layer matches only"),
             *general_matches(general["layers"], "      "),
             _line("      teacher_cache: off", general["layers"]["cache"]),
             "    train:", *(_line(f"      {k}", why) if why else f"      {k}" for k, why in GENERAL_TRAIN),
             _line("      group_by_length: false", "windows are packed to one length")]
    return "\n".join(lines) + "\n"


def write_recipe(out: Path, *, task: str, model: str, student: str | None, data: str, found: Path | None,
                 columns: dict[str, list], chosen: dict, rows: int | None, given: dict[str, str | None],
                 stages: bool = False, kind: str | None = None, general: dict | None = None) -> list[str]:
    """Write the recipe (paths relative to its folder; the run's output in ./runs/NAME of the current folder),
    check that it loads, and return what the user should be told (the splits found beside the train file).
    `kind`: how peek read the train file (a .txt file's eval and test files are read the same way). `general`
    ({train, validation (or None), column, notes}: a corpus, `general_corpus`): a first stage of general
    distillation."""
    from brewcli.recipe import load_stages

    if found is None and any(given.values()):
        flag = next(f"--{k}" for k, v in given.items() if v)
        raise BrewError(f"brew init: {flag} names a local file, but --data {data} is a Hugging Face dataset; name "
                        "its splits in the recipe (data.eval_split, data.test_split)")
    notes = [f"{found.name} in {data} is the train split"] if found and Path(data).is_dir() else []
    files = {}
    if found:
        other, found_notes = other_splits(found, given, [n for v in chosen.values()
                                                          for n in ([v] if isinstance(v, str) else v)],
                                          text=kind == "text" if found.suffix.lower() == ".txt" else None)
        files, notes = {"train": found, **other}, notes + found_notes
    here, t = out.parent, TASKS.get(task)
    if task == "general":  # held-out text is the validation split, as recipes/general/T4-tiny.yaml writes it
        files = {"validation" if split == "eval" else split: f for split, f in files.items()}
    max_length = model_max_length(model, 384 if task == "question-answering" else 128)
    written = recipe_path(model, here, local=True) if Path(model).expanduser().exists() else model
    output_dir = recipe_path(Path("runs") / out.stem, here)
    if task == "general":
        if not files:
            raise BrewError(f"brew init: task general reads local text files (a .txt corpus, or a text column of "
                            f"CSV, JSON or Parquet); --data {data} is a Hugging Face dataset, so write its data "
                            "section by hand (data.dataset, data.text)")
        body = render_general(model=written, student=student, path=str(out),
                              files={split: recipe_path(f, here) for split, f in files.items()},
                              column=None if kind == "text" else chosen.get("text"), max_length=max_length,
                              output_dir=output_dir, layers=layer_plan(model, student, max_length))
    else:
        if general:
            notes += general.get("notes", [])
            length = model_max_length(model, 128)
            general = {"files": {split: recipe_path(f, here) for split, f in general.items()
                                 if split in ("train", "validation") and f},
                       "column": general.get("column"), "max_length": length,
                       "layers": layer_plan(model, student, length)}
        body = render(task=task, model=written, student=student, data=data, path=str(out), columns=chosen,
                      max_length=max_length, files={split: recipe_path(f, here) for split, f in files.items()} or None,
                      training=propose_training(t, columns, chosen, rows, max_length, model, bool(student)),
                      output_dir=output_dir, stages=stages or bool(general), general=general)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body)
    load_stages(out)  # the schema accepts what we wrote
    return notes


def general_corpus(corpus: str, held_out: str | None) -> dict:
    """The corpus of a general stage (--general, --general-eval): {train, validation, column, notes}, checked:
    local files of one format, a .txt read as plain text, a table's text column found."""
    from brewcli.tasks import TASKS

    train = _path(corpus, "--general")
    if not train.is_file():
        raise BrewError(f"brew init: --general {corpus}: " + ("a folder; name the corpus file itself" if train.is_dir()
                                                            else "file not found"))
    if train.suffix.lower() not in LOCAL or train.suffix.lower() == ".conll":
        raise BrewError(f"brew init: --general {corpus}: the corpus is a .txt file (a document per line, or paragraphs "
                        "split by blank lines) or a CSV, JSON or Parquet file with a text column")
    kind, columns, _ = peek(str(train), rows=20, text=True, flag="--general")
    column = None
    if kind != "text":
        column = propose_columns(TASKS.get("general"), columns).get("text")
        if column is None:
            raise BrewError(f"brew init: --general {corpus}: no column of text found (columns: {', '.join(columns)}); "
                            "the corpus needs one, a document a row")
    validation = None
    if held_out:
        validation = _path(held_out, "--general-eval")
        if not validation.is_file():
            raise BrewError(f"brew init: --general-eval {held_out}: file not found")
        if _format(validation) != _format(train):
            raise BrewError(f"brew init: --general-eval {held_out} is a {validation.suffix} file but the corpus is "
                            f"{train.suffix}; a data section reads one format, so convert one of them")
        missing = _missing(validation, [column] if column else [], True, "--general-eval")
        if missing:
            raise BrewError(f"brew init: --general-eval {held_out} has no column '{missing}' (the corpus's text)")
    conll = train.suffix.lower() == ".txt" and looks_conll(train)
    notes = [(f"note: {train.name} looks like CoNLL (a token and its tag a line), but the general stage reads each "
              "line as a document of text")] if conll else []
    return {"train": train, "validation": validation, "column": column, "notes": notes}


# ---------------------------------------------------------------------------------------------- proposals

SEEN = 4000  # examples a run sees: the BBC recipes' 1,781 rows x 2 epochs, which fit their teacher and T3 student


def propose_training(task, columns: dict[str, list], chosen: dict, rows: int | None, max_length: int, model: str,
                     distill: bool) -> dict[str, tuple[str, str]]:
    """{epochs, lr, group: (value, the reason written above it)} for the data and model read."""
    return {"epochs": _epochs(rows, distill), "lr": _lr(model, distill),
            "group": _grouping(task, columns, chosen, max_length)}


def _epochs(rows: int | None, distill: bool) -> tuple[str, str]:
    if not rows:
        return "3", "the data's size is not known here: fewer epochs for larger sets (one epoch of 4,000 rows or more)"
    most = 6 if distill else 5
    n = max(1, min(most, round(SEEN / rows)))
    return str(n), (f"{n} epoch{'s' if n > 1 else ''} of {rows:,} rows: about {max(SEEN, rows):,} examples seen "
                    f"(one epoch from {SEEN:,} rows, up to {most} on small sets)")


def _lr(model: str, distill: bool) -> tuple[str, str]:
    if distill:
        return "1.0e-4", "as recipes/bbc/distill-T3.yaml; a randomly initialised student takes 2e-4 (T4-tiny)"
    hidden = _config_json(model).get("hidden_size")
    if not isinstance(hidden, int):
        return "5.0e-5", ("the model's width is not known here: 1e-4 suits small models (hidden 512 or less, as "
                          "recipes/bbc/teacher.yaml), 2e-5 to 5e-5 BERT-base and wider")
    if hidden <= 512:
        return "1.0e-4", f"a small model (hidden {hidden}) fine-tunes well at 1e-4, as recipes/bbc/teacher.yaml"
    return "5.0e-5", f"hidden {hidden}: BERT-base and wider models fine-tune at 2e-5 to 5e-5"


def _grouping(task, columns: dict[str, list], chosen: dict, max_length: int) -> tuple[str, str]:
    """true when random batches would be mostly padding: short texts of varying lengths (padding is per batch)."""
    names = [n for key in ("text", "tokens", "question", "context") if key in chosen
             for n in ([chosen[key]] if isinstance(chosen[key], str) else chosen[key])]
    values = [columns[n] for n in names if n in columns]
    if not values:
        return "false", "true: batches of similar lengths, less padding (faster when lengths vary)"
    words = [sum(_words(v[i]) for v in values) for i in range(min(map(len, values)))]
    tokens = [min(max_length, round(1.3 * w) + 2) for w in words]  # ~1.3 word pieces a word, plus [CLS] and [SEP]
    padding = 1 - statistics.mean(tokens) / max(tokens)
    spread = (f"{min(words)} to {max(words)} words a row (median {statistics.median(words):g})"
              if min(words) < max(words) else f"{min(words)} words a row")
    seen = f"{spread} in the first {len(words)} rows"
    if padding >= 0.25:
        return "true", f"{seen}: random batches would be ~{padding:.0%} padding; batches of similar lengths skip it"
    return "false", f"{seen}: little padding to save (true: batches of similar lengths)"


def _words(value) -> int:
    return len(value.split()) if isinstance(value, str) else len(value) if isinstance(value, list) else 0


# ---------------------------------------------------------------------------------------------- models and paths


def _config_json(ref: str) -> dict:
    """A model's config.json as a dict: a local folder's, or a Hub id's in the local Hugging Face cache ({} if
    neither). Read as it is (importing transformers would take seconds)."""
    path = Path(ref).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json")
        except (ValueError, OSError):  # not a valid Hub id
            cached = None
        path = Path(cached) if isinstance(cached, str) else path
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def model_max_length(ref: str, default: int) -> int:
    """`default`, capped at what the model's position embeddings allow (a config this cannot read is left to the
    plan, which reports it properly)."""
    from types import SimpleNamespace

    from brewcli.models.hf import max_positions

    try:
        limit = max_positions(SimpleNamespace(**_config_json(ref)))
    except (TypeError, AttributeError):
        return default
    return min(default, limit) if limit else default


def check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise BrewError(f"brew init: --out {out} is a folder; give the recipe file's name, e.g. {out / 'recipe.yaml'}")
    if out.exists() and not force:
        raise BrewError(f"brew init: {out} exists; pass --force to overwrite it or choose another --out")


def check_model(ref: str, flag: str) -> None:
    problem = model_problem(ref) if _path(ref, flag) else None
    if problem:
        raise BrewError(f"brew init: {flag} {problem}")


def model_problem(ref: str) -> str | None:
    """Why `ref` cannot name the model, or None. A Hub id (bert-base-uncased, org/name) is left to the plan; a
    local-looking path (./ ../ / ~, or under a folder that exists) must be a model folder."""
    p = Path(ref).expanduser()
    if not (ref.startswith(("./", "../", "/", "~")) or p.exists() or (len(p.parts) > 1 and p.parent.is_dir())):
        return None
    if p.is_dir():
        return None if (p / "config.json").is_file() else f"{ref} is a folder but not a model folder (no config.json)"
    if p.exists():
        return f"{ref} is a file; give the model's folder"
    base = next(a for a in p.parents if a.is_dir())
    wanted = p.relative_to(base).parts[0]
    near = nearest(wanted, [d.name for d in base.iterdir() if d.is_dir()])
    return f"{ref}: no such folder" + (f"; did you mean '{base / near}'?" if near else
                                        f" ({base} holds no folder named like '{wanted}')")


def recipe_path(target: str | Path, recipe_dir: Path, local: bool = False) -> str:
    """`target` as a recipe in `recipe_dir` writes it: relative to that folder (absolute when it lies more than two
    folders up); `local` marks it ./ so that it cannot be read as a Hub id."""
    full = os.path.abspath(Path(target).expanduser())
    rel = os.path.relpath(full, os.path.abspath(recipe_dir))
    ups = len(list(takewhile(lambda part: part == "..", Path(rel).parts)))
    if ups > 2:
        return full
    return "./" + rel if local and not ups and rel != "." else rel
