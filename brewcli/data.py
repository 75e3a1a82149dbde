"""Data: load a Hugging Face dataset or local files, check the columns, encode labels, tokenise, batch.

Everything up to tokenisation runs at plan time (before any weights load), so a missing file, a missing
column or a label set that does not fit the model is reported first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from brewcli import hub
from brewcli.datafiles import FORMATS, FileRows, check_file, locate
from brewcli.errors import RecipeError, did_you_mean

LABELS = "labels"  # the column name Hugging Face models read


@dataclass
class Splits:
    train: object  # datasets.Dataset, labels encoded into LABELS
    eval: object | None
    test: object | None
    label_names: list[str] | None  # None for regression

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train", self.train), ("eval", self.eval), ("test", self.test)) if v is not None}


def _load_raw(spec) -> tuple[dict, dict[str, list[FileRows]]]:
    """The splits as datasets, and for local files where each row sits in its file (for messages)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if spec.files:
        files, rows, fmt = {}, {}, None
        for split, paths in spec.files.items():
            paths = [paths] if isinstance(paths, str) else paths
            if not paths:
                raise RecipeError(f"data.files.{split}", "lists no files")
            rows[split] = [check_file(p, f"data.files.{split}") for p in paths]
            kinds = {FORMATS[Path(p).suffix.lower()] for p in paths} | ({fmt} if fmt else set())
            if len(kinds) > 1:
                raise RecipeError(f"data.files.{split}", f"mixes {' and '.join(sorted(kinds))} files; use one format")
            fmt = kinds.pop()
            files[split] = paths
        _same_columns([f for fs in rows.values() for f in fs])
        kwargs = {"delimiter": "\t"} if any(str(p).endswith(".tsv") for ps in files.values() for p in ps) else {}
        try:
            return dict(datasets.load_dataset(fmt, data_files=files, **kwargs)), rows
        except Exception as e:  # pyarrow/pandas errors on values that passed the structural check
            raise RecipeError("data.files", f"datasets could not read {', '.join(map(str, files.values()))}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                              "check that each column holds one type of value") from None
    offline = hub.unreachable()  # offline: fail now instead of after half a minute of retries
    try:
        return dict(datasets.load_dataset(spec.dataset, spec.config)), {}
    except Exception as e:  # datasets raises many types for a name, config or connection problem
        name = f"'{spec.dataset}'" + (f" (config {spec.config})" if spec.config else "")
        why = (f"it is not a local folder and not in the local datasets cache, and the Hub cannot be used: {offline}"
               if offline else str(e).splitlines()[0])
        raise RecipeError("data.dataset", f"could not load {name}: {why}") from None


def _same_columns(files: list[FileRows]) -> None:
    """datasets reads all splits with the first file's columns: a file with other columns is refused here."""
    first = files[0]
    for f in files[1:]:
        if set(f.columns) != set(first.columns):
            raise RecipeError("data.files", f"{f.path.name} has the columns {', '.join(f.columns)}, but "
                              f"{first.path.name} has {', '.join(first.columns)}; every file needs the same columns",
                              f"add or rename columns in {f.path.name}")


def _split(raw: dict, name: str | None, key: str):
    if name is None:
        return None
    if name not in raw:
        raise RecipeError(key, f"no split '{name}'; the data has {', '.join(raw)}", did_you_mean(name, raw))
    return raw[name]


def _is_generic(names: list[str]) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", n) for n in names)


def label_names(train, spec, task, num_labels: int | None, teacher_config) -> list[str] | None:
    """Label names in id order, checked against task.num_labels and the teacher's labels."""
    if task.regression:
        if teacher_config is not None and teacher_config.num_labels != 1:
            raise RecipeError("teacher", f"the teacher predicts {teacher_config.num_labels} labels, but task "
                              "'regression' compares one number per row", "use a regression teacher (num_labels 1)")
        return None
    feature = train.features[spec.label]
    values = sorted(set(train[spec.label]), key=str)
    if any(v is None for v in values):
        raise RecipeError("data.label", f"column '{spec.label}' has empty values")
    ints = all(isinstance(v, int) for v in values)
    teacher_names = None
    if teacher_config is not None:
        teacher_names = [teacher_config.id2label[i] for i in range(teacher_config.num_labels)]
    if hasattr(feature, "names"):  # a datasets ClassLabel
        names = list(feature.names)
    elif teacher_names and not _is_generic(teacher_names) and not ints:
        missing = [v for v in values if v not in teacher_names]
        if missing:
            raise RecipeError("data.label", f"labels {missing[:5]} are not among the teacher's labels {teacher_names}")
        names = teacher_names
    elif ints:
        n = num_labels or (teacher_config.num_labels if teacher_names else max(values) + 1)
        if min(values) < 0 or max(values) >= n:
            raise RecipeError("data.label", f"integer labels must run 0..{n - 1}; found {min(values)}..{max(values)}")
        names = teacher_names if teacher_names and not _is_generic(teacher_names) else [str(i) for i in range(n)]
    else:
        names = [str(v) for v in values]
    if num_labels is not None and len(names) != num_labels:
        raise RecipeError("task.num_labels", f"is {num_labels} but the data has {len(names)} labels: {names[:10]}",
                          f"set task.num_labels: {len(names)} or drop it")
    if teacher_names is not None and len(names) != len(teacher_names):
        raise RecipeError("teacher", f"the teacher predicts {len(teacher_names)} labels but the data has "
                          f"{len(names)}: {names[:10]}", "fine-tune the teacher on this label set first (brew train)")
    return names


def load_splits(recipe, task, teacher_config=None, names: list[str] | None = None) -> Splits:
    """Train/eval/test splits with labels encoded; `names` fixes the label order (e.g. a trained model's)."""
    spec = recipe.data
    raw, rows = _load_raw(spec)
    eval_name, test_name = spec.eval_split, spec.test_split
    if spec.files:  # local files: a split keyed eval/validation/dev or test is used without being named twice
        if eval_name is None and not spec.eval_fraction:
            eval_name = next((k for k in ("eval", "validation", "dev") if k in raw and k != spec.train_split), None)
        if test_name is None and "test" in raw and spec.train_split != "test":
            test_name = "test"
    train = _split(raw, spec.train_split, "data.train_split")
    evals = _split(raw, eval_name, "data.eval_split")
    test = _split(raw, test_name, "data.test_split")
    split_names = {"train": spec.train_split, "eval": eval_name, "test": test_name}
    for split_name, ds in (("train", train), ("eval", evals), ("test", test)):
        if ds is None:
            continue
        where = ", ".join(f.path.name for f in rows.get(split_names[split_name], [])) or f"the {split_name} split"
        for key, col in [("data.text", c) for c in spec.text_columns] + [("data.label", spec.label)]:
            if col not in ds.column_names:
                raise RecipeError(key, f"no column '{col}' in {where} (columns: {', '.join(ds.column_names)})",
                                  _column_hint(col, ds.column_names))
    for split_name, ds in (("train", train), ("eval", evals), ("test", test)):
        if ds is not None:
            _check_rows(ds, spec, task, lambda i, s=split_names[split_name]: locate(rows.get(s), i, s))
    if names is None:
        names = label_names(train, spec, task, recipe.task.num_labels, teacher_config)

    def encode(ds, split_name):
        if ds is None:
            return None
        if not task.regression and any(v is not None and isinstance(v, int) and v < 0 for v in ds.unique(spec.label)):
            raise RecipeError(f"data.{split_name}_split", f"the {split_name} split has unlabelled rows (label -1, "
                              "as in GLUE's test splits)", "score on a labelled split, such as validation")
        if task.regression:
            return ds.map(lambda b: {LABELS: [float(v) for v in b[spec.label]]}, batched=True)
        if hasattr(ds.features[spec.label], "names"):
            return ds.map(lambda b: {LABELS: b[spec.label]}, batched=True)
        index = {n: i for i, n in enumerate(names)}

        def to_id(v):
            if str(v) in index:
                return index[str(v)]
            if isinstance(v, int) and 0 <= v < len(names):
                return v
            return None

        split = split_names[split_name]
        unknown = next((i for i, v in enumerate(ds[spec.label]) if to_id(v) is None), None)
        if unknown is not None:
            raise RecipeError("data.label", f"{locate(rows.get(split), unknown, split)}: label "
                              f"{ds[unknown][spec.label]!r} is not one of the labels {names[:20]}",
                              did_you_mean(str(ds[unknown][spec.label]), names))
        return ds.map(lambda b: {LABELS: [to_id(v) for v in b[spec.label]]}, batched=True)

    train, evals, test = encode(train, "train"), encode(evals, "eval"), encode(test, "test")
    if spec.eval_fraction:
        if round(len(train) * spec.eval_fraction) < 1 or round(len(train) * (1 - spec.eval_fraction)) < 1:
            raise RecipeError("data.eval_fraction", f"{spec.eval_fraction} of {len(train)} training rows leaves "
                              "nothing to evaluate on or to train on", "give more rows, or an eval file")
        train, evals = _carve_eval(train, spec, names)
    if spec.max_train_samples:
        train = train.select(range(min(spec.max_train_samples, len(train))))
    if spec.max_eval_samples:
        evals = evals.select(range(min(spec.max_eval_samples, len(evals)))) if evals is not None else None
        test = test.select(range(min(spec.max_eval_samples, len(test)))) if test is not None else None
    if len(train) == 0:
        raise RecipeError("data", "the train split is empty")
    return Splits(train, evals, test, names)


def _column_hint(col: str, columns: list[str]) -> str | None:
    if len(columns) == 1 and ("\t" in columns[0] or ";" in columns[0]):
        sep = "tab" if "\t" in columns[0] else "semicolon"
        return f"the file looks {sep}-separated; brew reads .csv as comma-separated and .tsv as tab-separated"
    return did_you_mean(col, columns)


def _check_rows(ds, spec, task, where) -> None:
    """Every row has text and a label of the task's kind; `where(i)` names row i (file and line when local)."""
    for col in spec.text_columns:
        for i, v in enumerate(ds[col]):
            if v is None or isinstance(v, (list, dict)):
                what = "no text" if v is None else f"a {type(v).__name__}, not text,"
                raise RecipeError("data.text", f"{where(i)} has {what} in column '{col}'", "fill in or drop the row")
    numbers = []
    for i, v in enumerate(ds[spec.label]):
        if v is None or (isinstance(v, float) and not math.isfinite(v) and not task.regression):
            raise RecipeError("data.label", f"{where(i)} has no label in column '{spec.label}'", "fill in or drop the row")
        if isinstance(v, (list, dict)):
            raise RecipeError("data.label", f"{where(i)} holds a {type(v).__name__} in column '{spec.label}'; "
                              f"task '{task.name}' takes one label per row")
        if task.regression:
            try:
                x = float(v) if not isinstance(v, bool) else None
            except (TypeError, ValueError):
                x = None
            if x is None or not math.isfinite(x):
                raise RecipeError("data.label", f"{where(i)}: label {v!r} is not a finite number, and task "
                                  "'regression' predicts numbers", "use task: classification for named classes")
        elif isinstance(v, float):
            numbers.append((i, v))
    fractional = next(((i, v) for i, v in numbers if not v.is_integer()), None)
    if fractional:
        raise RecipeError("data.label", f"{where(fractional[0])}: label {fractional[1]} is a fraction, so the labels "
                          "look like a scale rather than classes", "use task: regression to predict a number")


def _carve_eval(train, spec, names):
    """Split an eval set off the train split, stratified by label when every class can spare examples."""
    if names is not None:
        from datasets import ClassLabel

        train = train.cast_column(LABELS, ClassLabel(names=names))
        try:
            parts = train.train_test_split(test_size=spec.eval_fraction, seed=spec.seed, stratify_by_column=LABELS)
            return parts["train"], parts["test"]
        except ValueError:  # a class too rare to stratify
            pass
    parts = train.train_test_split(test_size=spec.eval_fraction, seed=spec.seed)
    return parts["train"], parts["test"]


def tokenize(ds, tokenizer, spec):
    """Tokenise with `datasets.map` (cached on disk for file-backed data); keeps only model inputs + labels."""
    if ds is None:
        return None
    cols = spec.text_columns

    def fn(batch):
        texts = [[("" if t is None else str(t)) for t in batch[c]] for c in cols]
        return tokenizer(*texts, truncation=True, max_length=spec.max_length)

    keep = {LABELS}
    out = ds.map(fn, batched=True, remove_columns=[c for c in ds.column_names if c not in keep])
    return out


def loader(ds, tokenizer, batch_size: int, sampler=None):
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    if ds is None:
        return None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=DataCollatorWithPadding(tokenizer))

