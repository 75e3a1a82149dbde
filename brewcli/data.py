"""Data: load a Hugging Face dataset or local files, pick the splits, and let the task check the rows and encode
the labels. Everything here runs at plan time (before any weights load), so a missing file, a missing column, a
malformed row or a label set that does not fit the teacher is reported first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from brewcli import datafiles, hub
from brewcli.datafiles import FORMATS, TEXT, FileRows, check_file, check_path, check_text, locate, sample_text
from brewcli.errors import RecipeError, did_you_mean
from brewcli.tasks.sequence import LABELS


@dataclass
class Splits:
    train: object  # datasets.Dataset with the labels encoded (column `labels`); a dry run's Sample of a large corpus
    eval: object | None
    test: object | None
    label_names: list[str] | None  # None where the task has no label set (regression, QA)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train", self.train), ("eval", self.eval), ("test", self.test)) if v is not None}


class Sample:
    """A dry run's stand-in for a split too large to read: its first documents as a Dataset (`ds`) and by how much
    to scale what is counted in them to the whole (its bytes over the bytes sampled). `len()` is the estimate;
    columns, rows and `select` are the sample's. Only a task that says it `estimates` is handed one: its encode()
    returns `sample.like(encoded)`, whose `len()` estimates the split's features (windows) the same way."""

    estimated = True

    def __init__(self, ds, scale: float, note: str):
        self.ds, self.scale, self.estimate_note = ds, scale, note

    def __len__(self) -> int:
        return max(len(self.ds), round(len(self.ds) * self.scale))

    def __getattr__(self, name: str):
        if name == "ds":
            raise AttributeError(name)
        return getattr(self.ds, name)

    def __getitem__(self, i):
        return self.ds[i]

    def like(self, ds) -> Sample:
        """Another dataset made from this sample (its encoding, a part of it), standing for as much more."""
        return Sample(ds, self.scale, self.estimate_note)


def _size(n: int) -> str:
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def _read_text(files: dict[str, list[str]], documents: str, dry_run: bool) -> tuple[dict, dict[str, list[FileRows]]]:
    """Plain text files through datasets' text builder (Arrow on disk, cached), a document per line or paragraph,
    each file checked first (not empty, UTF-8). A dry run reads only the first few MB of each split instead: a
    Dataset of those documents, wrapped in a Sample where the files go on."""
    import datasets

    raw, rows = {}, {}
    for split, paths in files.items():
        key = f"data.files.{split}"
        if dry_run:
            budget = max(datafiles.SAMPLE_BYTES // len(paths), 2**16)  # a split of many files: a share of each
            samples = [sample_text(p, key, documents, budget) for p in paths]
            ds = datasets.Dataset.from_dict({"text": [t for s in samples for t in s.texts]}, split=split)
            rows[split] = [FileRows(s.path, len(s.texts), ["text"]) for s in samples]
            read, size = sum(s.read for s in samples), sum(s.size for s in samples)
            raw[split] = ds if read >= size else Sample(ds, size / read, f"estimated from the first {_size(read)} "
                                                         f"of {_size(size)}")
            continue
        parts = []
        for p in paths:
            mode = check_text(p, key, documents)
            parts.append(datasets.load_dataset("text", data_files={split: [p]}, split=split, encoding="utf-8-sig",
                                               sample_by=mode.removesuffix("s")))  # line | paragraph
            rows.setdefault(split, []).append(FileRows(Path(p), len(parts[-1]), ["text"]))
        raw[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts, split=datasets.NamedSplit(split))
    return raw, rows


def _read_files(spec, task, documents: str = "auto", dry_run: bool = False) -> tuple[dict, dict[str, list[FileRows]]]:
    """Local files: the task's own formats (CoNLL text, SQuAD JSON) as records, plain text (for a task that reads it)
    and the rest through datasets."""
    import datasets

    custom, generic, text, rows, kinds = {}, {}, {}, {}, set()
    for split, paths in spec.files.items():
        paths = [paths] if isinstance(paths, str) else paths
        if not paths:
            raise RecipeError(f"data.files.{split}", "lists no files")
        key = f"data.files.{split}"
        for p in paths:
            check_path(p, key)
            suffix = Path(p).suffix.lower()
            if suffix in TEXT and suffix in task.file_formats:
                text.setdefault(split, []).append(p)
                kinds.add(TEXT[suffix])
                continue
            read = task.read_file(Path(p), key) if Path(p).suffix.lower() in task.file_formats else None
            if read is not None:
                if read[0].count == 0:
                    raise RecipeError(key, f"{p} has no rows ({task.file_formats[Path(p).suffix.lower()]})")
                rows.setdefault(split, []).append(read[0])
                custom.setdefault(split, []).extend(read[1])
                kinds.add(f"{task.file_formats[Path(p).suffix.lower()]}")
                continue
            if Path(p).suffix.lower() not in FORMATS:
                known = [*FORMATS, *task.file_formats]
                raise RecipeError(key, f"cannot read '{p}': task '{task.name}' reads {', '.join(dict.fromkeys(known))} "
                                  "files", "export it as CSV or JSON Lines")
            rows.setdefault(split, []).append(check_file(p, key))
            generic.setdefault(split, []).append(p)
            kinds.add(FORMATS[Path(p).suffix.lower()])
    if len(kinds) > 1:
        raise RecipeError("data.files", f"mixes {' and '.join(sorted(kinds))} files; use one format")
    if text:
        return _read_text(text, documents, dry_run)
    _same_columns([f for fs in rows.values() for f in fs])
    if custom:
        return {split: datasets.Dataset.from_list(records) for split, records in custom.items()}, rows
    kwargs = {"delimiter": "\t"} if any(str(p).endswith(".tsv") for ps in generic.values() for p in ps) else {}
    try:
        return dict(datasets.load_dataset(kinds.pop(), data_files=generic, **kwargs)), rows
    except Exception as e:  # pyarrow/pandas errors on values that passed the structural check
        raise RecipeError("data.files", f"datasets could not read {', '.join(map(str, generic.values()))}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                          "check that each column holds one type of value") from None


def _load_raw(spec, task, documents: str = "auto", dry_run: bool = False) -> tuple[dict, dict[str, list[FileRows]]]:
    """The splits as datasets, and for local files where each row sits in its file (for messages)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if spec.files:
        return _read_files(spec, task, documents, dry_run)
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


def _distinct_columns(spec, task) -> None:
    """Each column key of the task names a column of its own (the label column is not the text column)."""
    owner: dict = {}
    for column in task.columns:
        wanted = task.column(column.key)
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        if len(set(names)) < len(names):
            raise RecipeError(task.column_key(column.key), f"names the column '{names[0]}' twice", "a pair takes two columns")
        for col in names:
            first = owner.setdefault(col, column)
            if first is column:
                continue
            blame, other = (column, first) if getattr(spec, column.key) is not None else (first, column)
            said = "names" if getattr(spec, other.key) is not None else "reads by default"
            raise RecipeError(f"data.{blame.key}", f"names the column '{col}', which data.{other.key} {said} too; "
                              f"data.{blame.key} and data.{other.key} each need a column of their own",
                              f"set data.{blame.key} to the column that holds {blame.what}")


def _column_hint(col: str, columns: list[str]) -> str | None:
    if len(columns) == 1 and ("\t" in columns[0] or ";" in columns[0]):
        sep = "tab" if "\t" in columns[0] else "semicolon"
        return f"the file looks {sep}-separated; brew reads .csv as comma-separated and .tsv as tab-separated"
    return did_you_mean(col, columns)


def load_splits(task, teacher_config=None, names: list[str] | None = None, dry_run: bool = False) -> Splits:
    """The bound task's train/eval/test splits (its data block), rows checked and labels encoded; `names` fixes the
    label order (a trained model's).
    `dry_run`: for a task that `estimates`, a large split is a Sample of its first documents (nothing reads a whole
    text file), whose len() and encoding's len() are estimates."""
    spec = task.data
    estimates = dry_run and getattr(task, "estimates", False)
    _distinct_columns(spec, task)
    raw, rows = _load_raw(spec, task, getattr(task.options, "documents", "auto"), estimates)
    eval_name, test_name = spec.eval_split, spec.test_split  # local files keyed eval/test: named by DataSpec
    names_of = {"train": spec.train_split, "eval": eval_name, "test": test_name}
    found = {"train": _split(raw, spec.train_split, "data.train_split"),
             "eval": _split(raw, eval_name, "data.eval_split"), "test": _split(raw, test_name, "data.test_split")}
    wheres = {}
    for role, ds in found.items():
        if ds is None:
            continue
        split = names_of[role]
        where_file = ", ".join(f.path.name for f in rows.get(split, [])) or f"the {split} split"
        task.check_columns(ds, where_file)
        wheres[role] = lambda i, s=split: locate(rows.get(s), i, s)
        task.check_rows(ds, wheres[role])
    if names is None:
        names = task.label_names(found["train"], teacher_config, wheres.get("train"))
    if teacher_config is not None:
        task.check_teacher(teacher_config, names)
    train, evals, test = (None if found[r] is None else task.encode_labels(found[r], names, wheres[r])
                          for r in ("train", "eval", "test"))
    if spec.eval_fraction:
        if round(len(train) * spec.eval_fraction) < 1 or round(len(train) * (1 - spec.eval_fraction)) < 1:
            raise RecipeError("data.eval_fraction", f"{spec.eval_fraction} of {len(train)} training rows leaves "
                              "nothing to evaluate on or to train on", "give more rows, or an eval file")
        train, evals = _carve_eval(train, spec, names)
    if spec.skip_train_samples:
        train = _skip(train, spec.skip_train_samples)
    if spec.max_train_samples:
        train = _first(train, spec.max_train_samples)
    if spec.max_eval_samples:
        evals, test = (_first(x, spec.max_eval_samples) for x in (evals, test))
    if estimates:
        column = task.column("text")
        train, evals, test = (_sample_rows(x, column) for x in (train, evals, test))
    return Splits(train, evals, test, names)


def _first(ds, n: int):
    """The first `n` rows; of a Sample: exact where the sample holds them, else a Sample standing for `n`."""
    if ds is None or n >= len(ds):
        return ds
    if isinstance(ds, Sample) and n > len(ds.ds):
        return Sample(ds.ds, n / len(ds.ds), f"{ds.estimate_note}, for data.max_*_samples {n}")
    return (ds.ds if isinstance(ds, Sample) else ds).select(range(n))


def _skip(ds, n: int):
    """All but the first `n` rows (after any eval carve: the rows a run with max_train_samples n did not see)."""
    if n >= len(ds):
        raise RecipeError("data.skip_train_samples", f"{n} leaves none of the {len(ds)} training rows",
                          f"a number below {len(ds)}")
    if isinstance(ds, Sample):  # the sampled rows stand for the rest
        return Sample(ds.ds, ds.scale * (len(ds) - n) / len(ds), f"{ds.estimate_note}, less the {n} skipped")
    return ds.select(range(n, len(ds)))


def _sample_rows(ds, column: str):
    """A dry run of a large split read by datasets (CSV, JSON, Parquet, the Hub): its first documents up to
    SAMPLE_BYTES of text, as a Sample scaled by text bytes (counted on the Arrow column, at C speed)."""
    if ds is None or isinstance(ds, Sample):
        return ds
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.binary_length(ds.with_format("arrow")[column]), 0).to_numpy()
    ends = np.cumsum(lengths)
    n = max(1, int(np.searchsorted(ends, datafiles.SAMPLE_BYTES, side="right")))
    if n >= len(ds):
        return ds
    read, size = int(ends[n - 1]), int(ends[-1])
    return Sample(ds.select(range(n)), size / max(read, 1), f"estimated from the first {n} of {len(ds)} documents "
                  f"({_size(read)} of {_size(size)} of text)")


def _carve_eval(train, spec, names):
    """Split an eval set off the train split, stratified by class (single-label tasks) when every class can spare
    examples. A Sample is split as it is: both parts stand for as much more."""
    if isinstance(train, Sample):
        parts = train.ds.train_test_split(test_size=spec.eval_fraction, seed=spec.seed)
        return train.like(parts["train"]), train.like(_as_eval(parts["test"]))
    if names is not None and getattr(train.features.get(LABELS), "dtype", None) == "int64":
        from datasets import ClassLabel

        labelled = train.cast_column(LABELS, ClassLabel(names=names))
        try:
            parts = labelled.train_test_split(test_size=spec.eval_fraction, seed=spec.seed, stratify_by_column=LABELS)
            return parts["train"], _as_eval(parts["test"])
        except ValueError:  # a class too rare to stratify
            pass
    parts = train.train_test_split(test_size=spec.eval_fraction, seed=spec.seed)
    return parts["train"], _as_eval(parts["test"])


def _as_eval(ds):
    """The carved-off part under the split name `eval` (train_test_split keeps `train` on both halves), so that a
    task's checks and messages know it is held out."""
    from datasets import NamedSplit

    ds._split = NamedSplit("eval")  # datasets has no public setter; the name is all that changes
    return ds


ROW = "__row__"
GOLD = "gold"  # an encoded split's column where data.augment added rows: 1 for a row with a gold label, 0 for a variant


class _Indexed:
    """An encoded split whose rows carry their own index (so each Batch knows which rows it holds) and, for each
    teacher with its own tokenizer, that teacher's encoding of the same row."""

    def __init__(self, ds, teachers: dict):
        self.ds, self.teachers = ds, teachers

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, idx: list[int]) -> list[dict]:
        rows = [{ROW: i, "row": row} for i, row in zip(idx, self.ds.__getitems__(idx))]
        for name, (encoded, _) in self.teachers.items():
            for r, own in zip(rows, encoded.__getitems__(idx)):
                r[name] = own
        return rows

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]


def loader(ds, collate, batch_size: int, sampler=None, teachers: dict | None = None):
    """Batches of an encoded split through the task's collate; `batch.rows` holds the rows' indices. `teachers`:
    name -> (that teacher's encoding of the split, its collate), for teachers that read other tokens."""
    import torch
    from torch.utils.data import DataLoader

    teachers = teachers or {}

    def with_rows(rows: list[dict]):
        gold = [r["row"].pop(GOLD) for r in rows if GOLD in r["row"]]
        batch = collate([r["row"] for r in rows])
        batch.rows = torch.tensor([r[ROW] for r in rows])
        batch.gold = torch.tensor(gold, dtype=torch.bool) if gold else None
        batch.teachers = {name: own([r[name] for r in rows]) for name, (_, own) in teachers.items()}
        return batch

    # a private generator: a new iterator (each epoch, each eval, a resume) draws nothing from the global RNG
    return DataLoader(_Indexed(ds, teachers), batch_size=batch_size, sampler=sampler, collate_fn=with_rows,
                      generator=torch.Generator())
