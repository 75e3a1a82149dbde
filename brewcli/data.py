"""Data: load a Hugging Face dataset or local files, check the columns, encode labels, tokenise, batch.

Everything up to tokenisation runs at plan time (before any weights load), so a missing file, a missing
column or a label set that does not fit the model is reported first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from brewcli.errors import RecipeError, did_you_mean

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
LABELS = "labels"  # the column name Hugging Face models read


@dataclass
class Splits:
    train: object  # datasets.Dataset, labels encoded into LABELS
    eval: object | None
    test: object | None
    label_names: list[str] | None  # None for regression

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train", self.train), ("eval", self.eval), ("test", self.test)) if v is not None}


def _load_raw(spec) -> dict:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if spec.files:
        files, fmt = {}, None
        for split, paths in spec.files.items():
            paths = [paths] if isinstance(paths, str) else paths
            for p in paths:
                if not Path(p).is_file():
                    raise RecipeError(f"data.files.{split}", f"file not found: {p}")
                kind = FORMATS.get(Path(p).suffix.lower())
                if kind is None:
                    raise RecipeError(f"data.files.{split}", f"cannot read '{p}'",
                                      f"use one of {', '.join(FORMATS)} files")
                if fmt and kind != fmt:
                    raise RecipeError(f"data.files.{split}", f"mixes {fmt} and {kind} files; use one format")
                fmt = kind
            files[split] = paths
        kwargs = {"delimiter": "\t"} if any(str(p).endswith(".tsv") for ps in files.values() for p in ps) else {}
        return dict(datasets.load_dataset(fmt, data_files=files, **kwargs))
    try:
        return dict(datasets.load_dataset(spec.dataset, spec.config))
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise RecipeError("data.dataset", f"could not load '{spec.dataset}'"
                          + (f" (config {spec.config})" if spec.config else "") + f": {str(e).splitlines()[0]}") from None


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
    raw = _load_raw(spec)
    eval_name, test_name = spec.eval_split, spec.test_split
    if spec.files:  # local files: a split keyed eval/validation/dev or test is used without being named twice
        if eval_name is None and not spec.eval_fraction:
            eval_name = next((k for k in ("eval", "validation", "dev") if k in raw and k != spec.train_split), None)
        if test_name is None and "test" in raw and spec.train_split != "test":
            test_name = "test"
    train = _split(raw, spec.train_split, "data.train_split")
    evals = _split(raw, eval_name, "data.eval_split")
    test = _split(raw, test_name, "data.test_split")
    for split_name, ds in (("train", train), ("eval", evals), ("test", test)):
        if ds is None:
            continue
        for key, col in [("data.text", c) for c in spec.text_columns] + [("data.label", spec.label)]:
            if col not in ds.column_names:
                raise RecipeError(key, f"no column '{col}' in the {split_name} split (columns: "
                                  f"{', '.join(ds.column_names)})", did_you_mean(col, ds.column_names))
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
            raise RecipeError("data.label", f"label {v!r} in an eval or test split never occurs in train "
                              f"(train labels: {names})")

        return ds.map(lambda b: {LABELS: [to_id(v) for v in b[spec.label]]}, batched=True)

    train, evals, test = encode(train, "train"), encode(evals, "eval"), encode(test, "test")
    if spec.eval_fraction:
        train, evals = _carve_eval(train, spec, names)
    if spec.max_train_samples:
        train = train.select(range(min(spec.max_train_samples, len(train))))
    if spec.max_eval_samples:
        evals = evals.select(range(min(spec.max_eval_samples, len(evals)))) if evals is not None else None
        test = test.select(range(min(spec.max_eval_samples, len(test)))) if test is not None else None
    if len(train) == 0:
        raise RecipeError("data", "the train split is empty")
    return Splits(train, evals, test, names)


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

