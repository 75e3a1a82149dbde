"""General (task-agnostic) distillation: the student learns the teacher's layers on unlabelled text.

The data side: documents (lines or paragraphs of .txt files, or a text column) are tokenised and packed into
windows of `data.max_length` tokens, `[CLS] chunk [SEP]`, the documents of a map batch joined by the separator
token so that short documents fill windows; `task.stride` tokens overlap between consecutive windows. Windows
carry no labels and the model has no head: KD on logits does not apply, layer matches (`distill.matches`) do.
Encoding goes through `datasets.map` (cached by fingerprint, several processes for a large corpus); a dry run
encodes a sample and counts the windows of the whole from it (see data.Sample).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field

from brewcli.batch import Batch
from brewcli.errors import RecipeError
from brewcli.lazy import np, torch
from brewcli.schema import Strict, column
from brewcli.tasks import Column, Task, register
from brewcli.tasks.sequence import pad_inputs

MIN_TAIL = 8  # the last, partial window of a map batch is kept when it holds this many new tokens
PARALLEL_ABOVE = 20_000  # documents: a split larger than this is encoded by several processes
BATCH = 1000  # documents per map batch: windows never cross a batch's end
PACKING = 1  # the packing's version, in the cache key of encoded splits: raise it when pack() changes


class GeneralSpec(Strict):
    name: Literal["general"] = "general"
    stride: int = Field(0, ge=0, description="tokens of overlap between consecutive windows")
    documents: Literal["auto", "lines", "paragraphs"] = Field(
        "auto", description=".txt files: a document per line, or paragraphs split by empty lines; auto: paragraphs "
        "when the file has an empty line (in its first 4 MB), else lines")
    text: str | None = column("the text (CSV, JSON, Parquet or a Hugging Face dataset)", "text")


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the text of one sequence, as the tokenizer adds them: [CLS] and [SEP] for BERT,
    <s> and </s> for RoBERTa, nothing for GPT-2. Read from the tokenizer's own template (transformers 5's fast
    tokenizers have no build_inputs_with_special_tokens), else its cls/sep ids."""
    for probe in ("a", "the", "hello", "1", "x"):
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if plain and full[i:i + len(plain)] == plain:
                return full[:i], full[i + len(plain):]
    ids = lambda *xs: [x for x in xs if x is not None]  # noqa: E731
    return ids(tokenizer.cls_token_id), ids(tokenizer.sep_token_id)


def separator(tokenizer) -> list[int]:
    """The token between two documents in the stream: [SEP], else the end-of-text token, else none."""
    for token in (tokenizer.sep_token_id, tokenizer.eos_token_id):
        if token is not None:
            return [token]
    return []


def pack(docs: list[list[int]], room: int, stride: int, sep: list[int]) -> list[list[int]]:
    """Windows of at most `room` tokens over the documents joined by `sep`; each starts `room - stride` tokens after
    the previous one. The last, partial window is kept when it holds MIN_TAIL tokens its predecessor does not."""
    stream: list[int] = []
    for doc in docs:
        if doc:
            if stream:
                stream.extend(sep)
            stream.extend(doc)
    step, n = room - stride, len(stream)
    windows = [stream[s:s + room] for s in range(0, n - room + 1, step)]
    if not windows:
        return [stream] if n >= MIN_TAIL else []
    covered = (len(windows) - 1) * step + room  # the end of the last full window
    if n - covered >= MIN_TAIL:
        windows.append(stream[len(windows) * step:])  # where the next window starts
    return windows


class General(Task):
    name, spec = "general", GeneralSpec
    doc = ("task-agnostic distillation on unlabelled text (a .txt corpus or a text column), packed into windows of "
           "data.max_length; no head, layer matches only")
    head = "none"  # the saved student is a plain encoder
    columns = (Column("text", "text", "text"),)
    metrics = ("loss",)
    lower_is_better = frozenset({"loss"})
    kd_losses = ("mse",)
    label_unit = "rows"
    has_classes = False
    per_token = True  # what logits() returns: the last hidden state, per token
    cross_tokenizer = False  # windows are cut from one tokenizer's stream: another's do not line up row for row
    file_formats = {".txt": "plain text (a document per line, or paragraphs split by blank lines)"}
    estimates = True  # a dry run may hand encode() a data.Sample (the start of a large corpus) to count windows from
    feature_unit = "windows"

    # ---- plan time
    def check_rows(self, ds, where) -> None:
        """task.stride leaves the windows room to advance; a text column holds text (checked on the Arrow column,
        without reading the corpus into Python)."""
        n, stride = self.data.max_length, self.options.stride
        if stride >= n - 2:
            raise RecipeError("task.stride", f"is {stride}, but windows of data.max_length {n} hold {n - 2} tokens of "
                              f"text besides [CLS] and [SEP], so the stride must be less than {n - 2}",
                              f"set task.stride to about {n // 8} (or 0 for no overlap)")
        files = [f for fs in (self.data.files or {}).values() for f in ([fs] if isinstance(fs, str) else fs)]
        if self.options.documents != "auto" and not (files and all(f.lower().endswith(".txt") for f in files)):
            raise RecipeError("task.documents", f"is {self.options.documents}, but it splits .txt files and this data "
                              "is read by its column (data.text): a row is a document", "drop task.documents")
        import pyarrow.compute as pc

        ds = _rows(ds)
        col = self.column("text")
        feature = ds.features[col]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise RecipeError(self.column_key("text"), f"column '{col}' holds {_kind(feature)}, not text",
                              "name the column that holds the documents' text")
        values = ds.with_format("arrow")[col]
        if values.null_count:
            first = pc.index(pc.is_null(values), True).as_py()
            raise RecipeError(self.column_key("text"), f"{where(first)} has no text in column '{col}'", "fill in or drop the row")

    def sample_texts(self, ds, n: int = 200) -> list[str]:
        ds = _rows(ds)
        texts = ds.select(range(min(n, len(ds))))[self.column("text")]
        return [t for t in texts if t and t.strip()]

    def describe(self, names) -> tuple[str, str]:
        return "no head (a plain encoder)", "no logits: layer matches only"

    # ---- data
    def encode(self, ds, tokenizer, names):
        """Windows of the split: input_ids, attention_mask (and token_type_ids where the tokenizer makes them) and
        `example`, the window's index. A dry run's sample gives a sample of windows that counts as the whole."""
        enc = self._windows(_rows(ds), tokenizer)
        self._check_windows(enc, _rows(ds), tokenizer)
        return ds.like(enc) if getattr(ds, "estimated", False) else enc

    def _windows(self, ds, tokenizer):
        import datasets
        from datasets.fingerprint import Hasher

        col, n, stride = self.column("text"), self.data.max_length, self.options.stride
        before, after = special_tokens(tokenizer)
        room = n - len(before) - len(after)
        if stride >= room:
            raise RecipeError("task.stride", f"is {stride}, but a window of data.max_length {n} holds {room} tokens of "
                              "text", f"set task.stride to less than {room}")
        sep, types = separator(tokenizer), "token_type_ids" in tokenizer.model_input_names

        def fn(batch):
            texts = [t if isinstance(t, str) else "" for t in batch[col]]
            docs = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)["input_ids"]
            ids = [before + w + after for w in pack(docs, room, stride, sep)]
            out = {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
            if types:
                out["token_type_ids"] = [[0] * len(x) for x in ids]
            return out

        small = datasets.Value("int8")
        features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                      "attention_mask": datasets.Sequence(small),
                                      **({"token_type_ids": datasets.Sequence(small)} if types else {})})
        on_disk = bool(ds.cache_files)  # an in-memory split (a dry run's sample) is small: one process
        procs = min(4, _cpus()) if on_disk and len(ds) > PARALLEL_ABOVE else 1
        # the cache key: the documents, the tokenizer and every setting the windows depend on (not the code's
        # pickle, which names module functions such as `pack` without their contents). The processes are in it:
        # each packs its share of the documents, so a tail window or so differs between 1 and 4 of them
        key = Hasher.hash((ds._fingerprint, tokenizer, col, n, stride, before, after, sep, types, BATCH, MIN_TAIL,
                           PACKING, procs))
        with _quiet_fork(procs > 1):
            enc = ds.map(fn, batched=True, batch_size=BATCH, remove_columns=ds.column_names, features=features,
                         num_proc=procs if procs > 1 else None, new_fingerprint=key, desc="packing windows")
        return enc.add_column("example", np.arange(len(enc), dtype=np.int64))

    def _check_windows(self, enc, ds, tokenizer) -> None:
        """A training corpus fills at least one window; an eval split yields at least one."""
        if len(enc) > 1:
            return
        spec, n = self.data, self.data.max_length
        before, after = special_tokens(tokenizer)
        room = n - len(before) - len(after)
        col = self.column("text")
        texts = [t for t in ds[col] if isinstance(t, str)]
        tokens = sum(len(x) for x in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
        split = str(ds.split) if ds.split is not None else spec.train_split
        key, where = _source(spec, split)
        train = split == spec.train_split
        if train and tokens < room:
            specials = f" and {len(before) + len(after)} special tokens" if before or after else ""
            fit = (tokens + len(before) + len(after)) // 8 * 8
            raise RecipeError(key, f"{where} has {tokens} tokens of text, fewer than one window holds (data.max_length "
                              f"{n}: {room} tokens of text{specials})", f"lower data.max_length to {fit} or less, or "
                              "give more text" if fit >= 8 else "give more text")
        if not train and len(enc) == 0:
            raise RecipeError(key, f"{where} yields no window: it has {tokens} tokens of text, and a window needs at "
                              f"least {MIN_TAIL}", "give more held-out text, or leave out that split")

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            return Batch(pad_inputs(tokenizer, rows, multiple), {}, torch.tensor([r["example"] for r in rows]))

        return collate

    # ---- step time (the loss and evaluation side replaces these)
    def logits(self, output, mask=None):
        return output.last_hidden_state

    def logit_width(self, config) -> int:
        return config.hidden_size

    def metric(self, names, examples):
        raise NotImplementedError("task 'general' has no metric yet (the loss on held-out windows comes with the "
                                  "evaluation side)")


def _source(spec, split: str) -> tuple[str, str]:
    """(recipe key, what to call it) for a split in messages."""
    if spec.files and split in spec.files:
        files = spec.files[split]
        return f"data.files.{split}", ", ".join(Path(f).name for f in ([files] if isinstance(files, str) else files))
    return ("data.dataset", f"the {split} split of {spec.dataset}") if spec.dataset else ("data", f"the {split} split")


def _kind(feature) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{dtype} values" if dtype else f"{type(feature).__name__.lower()} values (lists or records)"


def _cpus() -> int:
    """The CPUs this process may run on (a container's or a job's share, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _rows(ds):
    """The documents of a split: a dry run's sample (data.Sample) stands for more than it holds."""
    return ds.ds if getattr(ds, "estimated", False) else ds


@contextmanager
def _quiet_fork(active: bool):
    """While several processes encode: a fast tokenizer already used in this process would print a warning at the
    fork and turn its threads off; turn them off for the map without the warning, and back on after."""
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    if active:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if active and saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        elif active:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


register(General())
