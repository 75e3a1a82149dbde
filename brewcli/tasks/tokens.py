"""Token classification (NER, POS, chunking): one tag per word.

Words are split into sub-words by the tokenizer; the word's tag goes on its first sub-word (or on every
sub-word with `label_all_tokens`), the rest are ignored (-100). KD compares the logits at labelled positions
only, and the metric scores entities (seqeval-style) on the first sub-word of every word.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Literal

from pydantic import Field

from brewcli.batch import Batch
from brewcli.datafiles import FileRows
from brewcli.errors import RecipeError, did_you_mean
from brewcli.lazy import torch
from brewcli.schema import Strict, column
from brewcli.tasks import Column, Metric, Task, register
from brewcli.tasks.sequence import LABELS, first_at, name_labels, pad_inputs, same_count_as_teacher, teacher_label_names
from brewcli.tasks.spans import SpanCounter, detect_scheme, parse_tag

IGNORE = -100


class TokenSpec(Strict):
    name: Literal["token-classification"] = "token-classification"
    label_all_tokens: bool = Field(False, description="train on every sub-word of a word, not only the first")
    scheme: Literal["auto", "iob1", "iob2", "bioes"] = Field("auto", description="how tags form entities; auto "
                                                             "reads the tag set")
    tokens: str | None = column("a list of words per row", "tokens")
    tags: str | None = column("a list of tags per row, one per word", "tags")


def read_conll(path: Path, key: str, tokens: str, tags: str) -> tuple[FileRows, list[dict]]:
    """CoNLL-2003-style text: one token per line with its tag in the last column, a blank line between
    sentences, -DOCSTART- lines skipped."""
    from brewcli.datafiles import _lines

    records, lines, words, labels, start = [], array("l"), [], [], 0
    for n, line in enumerate([*_lines(path, key), ""], 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                records.append({tokens: words, tags: labels})
                lines.append(start)
            words, labels = [], []
            continue
        if len(fields) < 2:
            raise RecipeError(key, f"{path.name} line {n} has one column ('{fields[0]}'); a CoNLL line holds a token "
                              "and its tag in the last column", "separate them with a space or a tab")
        if not words:
            start = n
        words.append(fields[0])
        labels.append(fields[-1])
    return FileRows(path, len(records), [tokens, tags], lines), records


class TagMetric(Metric):
    """Entity precision/recall/F1 and token accuracy on the first sub-word of every word."""

    def __init__(self, names: list[str], scheme: str):
        self.names = names
        self.counter = SpanCounter(detect_scheme(names) if scheme == "auto" else scheme)

    def update(self, logits, batch) -> None:
        preds = logits.argmax(-1)
        labels, starts = batch.labels[LABELS], batch.aux["word_starts"].bool()
        for row in range(labels.size(0)):
            keep = starts[row] & (labels[row] != IGNORE)
            gold = [self.names[i] for i in labels[row][keep].tolist()]
            pred = [self.names[i] for i in preds[row][keep].tolist()]
            self.counter.update(gold, pred)

    def compute(self) -> dict[str, float]:
        scores = self.counter.compute()
        return {k: scores[k] for k in ("f1", "precision", "recall", "accuracy")}

    def state(self) -> dict:
        return self.counter.state()

    def merge(self, state: dict) -> None:
        self.counter.merge(SpanCounter.from_state(state, self.counter.scheme))


def _order(tag: str) -> tuple:
    prefix, kind = parse_tag(tag)
    return (tag != "O", kind, "BIESLU".find(prefix[:1]) if prefix else 9, tag)


class TokenClassification(Task):
    name, spec = "token-classification", TokenSpec
    doc = "one tag per word (NER, POS, chunking); entity-level F1 (seqeval-style), precision, recall, accuracy"
    head = "token"
    columns = (Column("tokens", "tokens", "a list of words"), Column("tags", "ner_tags", "a list of tags"))
    metrics = ("f1", "precision", "recall", "accuracy")
    kd_losses = ("ce", "kl", "mse")
    label_unit = "labels"
    needs_fast_tokenizer = True
    per_token = True
    text_keys = ("tokens",)
    augments, skips_rows = "words", True
    file_formats = {".conll": "CoNLL-2003 text", ".txt": "CoNLL-2003 text"}

    def read_file(self, path, key):
        if path.suffix.lower() in self.file_formats:
            return read_conll(path, key, self.column("tokens"), self.column("tags"))
        return None

    def check_rows(self, ds, where) -> None:
        tok_col, tag_col = self.column("tokens"), self.column("tags")
        for i, (words, tags) in enumerate(zip(ds[tok_col], ds[tag_col])):
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise RecipeError(self.column_key("tokens"), f"{where(i)}: column '{tok_col}' holds {str(words)[:60]!r}; task "
                                  "'token-classification' takes a list of words per row", "e.g. [EU, rejects, German]")
            if not isinstance(tags, list) or any(t is None or isinstance(t, (list, dict, float)) for t in tags):
                raise RecipeError(self.column_key("tags"), f"{where(i)}: column '{tag_col}' holds {str(tags)[:60]!r}; expected a "
                                  "list of tags, one per word", "e.g. [B-ORG, O, B-MISC]")
            if len(words) != len(tags):
                raise RecipeError(self.column_key("tags"), f"{where(i)} has {len(words)} words but {len(tags)} tags",
                                  "give one tag per word")

    def label_names(self, train, teacher_config, where=None) -> list[str]:
        tag_col = self.column("tags")
        inner = getattr(train.features[tag_col], "feature", None)
        teacher_names = teacher_label_names(teacher_config)
        if hasattr(inner, "names"):  # Hugging Face conll2003: Sequence(ClassLabel)
            names = list(inner.names)
        else:
            seen = {t for row in train[tag_col] for t in row}
            if all(isinstance(t, int) for t in seen):
                if not teacher_names:
                    raise RecipeError(self.column_key("tags"), f"column '{tag_col}' holds tag ids without tag names",
                                      "write the tags as names (B-PER, O, ...) or use a teacher whose config names them")
                names = teacher_names
            elif teacher_names:
                unknown = sorted(str(t) for t in seen if t not in teacher_names)
                if unknown:
                    raise RecipeError(self.column_key("tags"), f"tags {unknown[:5]} are not among the teacher's tags "
                                      f"{teacher_names}" + first_at(train[tag_col], lambda row: unknown[0] in
                                                                    map(str, row), where),
                                      did_you_mean(unknown[0], teacher_names))
                names = teacher_names
            else:
                names = sorted((str(t) for t in seen), key=_order)
        same_count_as_teacher(teacher_config, names, "tags")
        return names

    def encode_labels(self, ds, names, where):
        tag_col = self.column("tags")
        index = {n: i for i, n in enumerate(names)}
        for i, row in enumerate(ds[tag_col]):
            bad = next((t for t in row if (not 0 <= t < len(names) if isinstance(t, int) else t not in index)),
                       None)
            if bad is not None:
                raise RecipeError(self.column_key("tags"), f"{where(i)}: tag {bad!r} is not one of the tags {names[:20]}",
                                  did_you_mean(str(bad), names))
        return ds.map(lambda b: {LABELS: [[t if isinstance(t, int) else index[t] for t in row] for row in b[tag_col]]},
                      batched=True)

    def configure(self, config, names) -> None:
        name_labels(config, names)

    def describe(self, names) -> tuple[str, str]:
        return (f"one of {len(names)} tags per word: {', '.join(names[:9])}" + (", ..." if len(names) > 9 else ""),
                f"logits at labelled sub-words only (N tokens, {len(names)})")

    def encode(self, ds, tokenizer, names):
        tok_col, max_length = self.column("tokens"), self.data.max_length
        label_all = self.options.label_all_tokens
        inside = {i: names.index("I-" + n[2:]) for i, n in enumerate(names) if n.startswith("B-") and "I-" + n[2:] in names}

        def fn(batch, idx):
            enc = tokenizer(batch[tok_col], is_split_into_words=True, truncation=True, max_length=max_length)
            labels, starts = [], []
            for i, tags in enumerate(batch[LABELS]):
                row, first, prev = [], [], None
                for w in enc.word_ids(i):
                    start = w is not None and w != prev
                    first.append(int(start))
                    row.append(IGNORE if w is None else tags[w] if start else
                               inside.get(tags[w], tags[w]) if label_all else IGNORE)
                    prev = w
                labels.append(row)
                starts.append(first)
            return {**enc, LABELS: labels, "word_starts": starts, "example": idx}

        return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names)

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            inputs = pad_inputs(tokenizer, rows, multiple)
            length = inputs["input_ids"].size(1)
            right = tokenizer.padding_side == "right"

            def pad(key, value):
                out = torch.full((len(rows), length), value, dtype=torch.long)
                for i, r in enumerate(rows):
                    seq = torch.tensor(r[key], dtype=torch.long)
                    if right:
                        out[i, : len(seq)] = seq
                    else:
                        out[i, length - len(seq):] = seq
                return out

            labels = {LABELS: pad(LABELS, IGNORE)} if LABELS in rows[0] else {}
            return Batch(inputs, labels, torch.tensor([r["example"] for r in rows]),
                         aux={"word_starts": pad("word_starts", 0)})

        return collate

    def views(self, s_logits, t_logits, batch, teacher_batch=None):
        keep = batch.labels[LABELS] != IGNORE
        if teacher_batch is None:
            return s_logits[keep], t_logits[keep]
        # another tokenizer: the first sub-word of each labelled word on each side, word by word
        first = lambda b: (b.labels[LABELS] != IGNORE) & b.aux["word_starts"].bool()  # noqa: E731
        s_keep, t_keep = first(batch), first(teacher_batch)
        rows_s, rows_t = [], []
        for i in range(s_keep.size(0)):
            s_idx, t_idx = s_keep[i].nonzero().squeeze(-1), t_keep[i].nonzero().squeeze(-1)
            n = min(len(s_idx), len(t_idx))  # max_length may cut the two tokenizations at different words
            rows_s.append(s_logits[i, s_idx[:n]])
            rows_t.append(t_logits[i, t_idx[:n]])
        return torch.cat(rows_s), torch.cat(rows_t)

    def view_labels(self, batch):
        labels = batch.labels[LABELS]
        return labels[labels != IGNORE]

    def units(self, batch, keep=None) -> int:
        labelled = batch.labels[LABELS] != IGNORE
        return int((labelled if keep is None else labelled & keep.unsqueeze(-1)).sum())

    def drop_rows(self, batch, drop) -> dict:
        return {LABELS: batch.labels[LABELS].masked_fill(drop.unsqueeze(-1), IGNORE)}

    def metric(self, names, examples) -> Metric:
        return TagMetric(names, self.options.scheme)


register(TokenClassification())
