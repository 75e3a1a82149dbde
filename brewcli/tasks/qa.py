"""Extractive question answering (SQuAD 1.1 and 2.0): find the answer span in a context.

A long context is split into overlapping windows (`doc_stride`); each window is one training feature whose
labels are the answer's first and last token (or [CLS] when the answer is not in that window). KD compares the
start and end distributions over the context tokens and [CLS]. Evaluation combines an example's windows,
keeps the best span (n-best, maximum answer length), maps it back to the context text and scores exact match
and F1 as the official scripts do: evaluate-v2.0.py's rules when questions may have no answer, else evaluate-v1.1.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from brewcli.batch import Batch
from brewcli.datafiles import FileRows
from brewcli.errors import RecipeError
from brewcli.lazy import torch
from brewcli.schema import Strict, column
from brewcli.tasks import Column, Metric, Task, register
from brewcli.tasks.sequence import pad_inputs
from brewcli.tasks.squad import QACounter, predict_answer

MASKED = -1e4  # logit for positions outside the context: softmax gives them no mass, and no NaN appears


class QASpec(Strict):
    name: Literal["question-answering"] = "question-answering"
    doc_stride: int = Field(128, ge=1, description="tokens shared by consecutive windows of a long context")
    n_best: int = Field(20, ge=1, description="start and end candidates tried per window")
    max_answer_length: int = Field(30, ge=1, description="longest answer, in tokens")
    unanswerable: Literal["auto"] | bool = Field("auto", description="SQuAD 2.0: questions may have no answer; auto: "
                                                 "when the data has such questions")
    null_threshold: float = Field(0.0, description="answer nothing when [CLS] beats the best span by more than this")
    question: str | None = column("the question", "question")
    context: str | None = column("the context", "context")
    answers: str | None = column("the answers (SQuAD's {text: [...], answer_start: [...]})", "answers")


def read_squad(path: Path, key: str, data_spec, columns) -> tuple[FileRows, list[dict]] | None:
    """SQuAD's own nested JSON (data -> paragraphs -> qas), flattened to one record per question. Every field is
    checked for its type; a wrong one is named by its place in the file (data[0].paragraphs[3].qas[1].question)."""
    with open(path, "rb") as f:
        head = f.read(256).lstrip(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"{"):
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # not one JSON document: JSON Lines, read (and checked) as such
    if not (isinstance(doc, dict) and "data" in doc):
        return None  # one JSON Lines record
    q, c, a = columns
    records = []

    def be(value, kind, where: str, what: str):
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
        got = "is missing" if value is _MISSING else "is null" if value is None else \
            f"is {_kind(value)} ({json.dumps(value)[:40]})"
        raise RecipeError(key, f"{path.name} {where} (question {len(records) + 1}) {got}, expected {what}",
                          "SQuAD JSON is {data: [{title, paragraphs: [{context, qas: [{id, question, answers: "
                          "[{text, answer_start}]}]}]}]}")

    def need(obj: dict, field: str, kind, where: str, what: str):
        return be(obj.get(field, _MISSING), kind, f"{where}.{field}" if where else field, what)

    for i, article in enumerate(need(doc, "data", list, "", "a list of articles")):
        be(article, dict, f"data[{i}]", "an article {title, paragraphs}")
        for j, paragraph in enumerate(need(article, "paragraphs", list, f"data[{i}]", "a list of paragraphs")):
            at = f"data[{i}].paragraphs[{j}]"
            be(paragraph, dict, at, "a paragraph {context, qas}")
            context = need(paragraph, "context", str, at, "the context text")
            for k, qa in enumerate(need(paragraph, "qas", list, at, "a list of questions")):
                at_q = f"{at}.qas[{k}]"
                be(qa, dict, at_q, "a question {id, question, answers}")
                question = need(qa, "question", str, at_q, "the question text")
                # SQuAD 2.0: [] (or no answers at all) for an unanswerable question
                answers = [] if qa.get("answers") is None else need(qa, "answers", list, at_q,
                                                                     "a list of answers [{text, answer_start}]")
                for m, x in enumerate(answers):
                    be(x, dict, f"{at_q}.answers[{m}]", "an answer {text, answer_start}")
                    need(x, "text", str, f"{at_q}.answers[{m}]", "the answer text")
                    need(x, "answer_start", int, f"{at_q}.answers[{m}]",
                         "a whole number (where the answer starts in the context)")
                records.append({"id": str(qa.get("id", len(records))), "title": str(article.get("title", "")),
                                q: question, c: context,
                                a: {"text": [x["text"] for x in answers],
                                    "answer_start": [x["answer_start"] for x in answers]}})
    return FileRows(path, len(records), ["id", "title", q, c, a]), records


_MISSING = object()


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def _answers(value) -> dict | None:
    """{text: [...], answer_start: [...]} from that form or a list of {text, answer_start}; None if neither."""
    if isinstance(value, list) and all(isinstance(x, dict) for x in value):
        value = {"text": [x.get("text") for x in value], "answer_start": [x.get("answer_start") for x in value]}
    if not isinstance(value, dict) or not isinstance(value.get("text"), list) \
            or not isinstance(value.get("answer_start"), list) or len(value["text"]) != len(value["answer_start"]):
        return None
    return value


class QAMetric(Metric):
    """Exact match and F1 per question; windows of one question arrive together and are combined."""

    def __init__(self, spec, contexts: list[str], golds: list[list[str]]):
        self.spec, self.contexts, self.golds = spec, contexts, golds
        with_null = spec.unanswerable is True or (spec.unanswerable == "auto" and any(not g for g in golds))
        self.null_threshold = spec.null_threshold if with_null else None
        self.version = "v2.0" if with_null else "v1.1"  # the official script for data of that kind
        self.pending: dict[int, list[dict]] = {}
        self.counter = QACounter(version=self.version)

    def update(self, logits, batch) -> None:
        for row, example in enumerate(batch.ids.tolist()):
            if self.pending and example not in self.pending:
                self._flush()
            n = len(batch.meta["offsets"][row])
            self.pending.setdefault(example, []).append({
                "start_logits": logits[row, :n, 0].tolist(), "end_logits": logits[row, :n, 1].tolist(),
                "offsets": batch.meta["offsets"][row], "context_mask": batch.aux["context_mask"][row, :n].tolist()})

    def _flush(self) -> None:
        for example, feats in self.pending.items():
            answer = predict_answer(self.contexts[example], feats, self.spec.n_best, self.spec.max_answer_length,
                                    self.null_threshold)
            self.counter.update(answer, self.golds[example])
        self.pending = {}

    def compute(self) -> dict[str, float]:
        self._flush()
        return self.counter.compute()

    def state(self) -> dict:
        self._flush()
        return self.counter.state()

    def merge(self, state: dict) -> None:
        self.counter.merge(QACounter.from_state(state, self.version))


class QuestionAnswering(Task):
    name, spec = "question-answering", QASpec
    doc = "extractive QA: the answer span in a context (SQuAD 1.1/2.0); F1 and exact match with SQuAD's normalisation"
    head = "span"
    columns = (Column("question", "question", "the question"), Column("context", "context", "the context text"),
               Column("answers", "answers", "answers {text: [...], answer_start: [...]}"))
    metrics = ("f1", "exact_match")
    kd_losses = ("ce", "kl", "mse")
    has_classes = False
    needs_fast_tokenizer = True
    per_token = True
    distribution_dim = 1
    cross_tokenizer = False
    text_keys = ("question", "context")
    augments, skips_rows = "qa", True
    file_formats = {".json": "SQuAD's nested JSON (data/paragraphs/qas)"}

    def _cols(self) -> tuple[str, str, str]:
        return tuple(self.column(k) for k in ("question", "context", "answers"))

    def read_file(self, path, key):
        return read_squad(path, key, self.data, self._cols()) if path.suffix.lower() == ".json" else None

    def check_rows(self, ds, where) -> None:
        if self.options.doc_stride >= self.data.max_length:
            raise RecipeError("task.doc_stride", f"is {self.options.doc_stride}, not less than data.max_length "
                              f"({self.data.max_length}), so windows would not advance",
                              f"set task.doc_stride to about {self.data.max_length // 4}")
        q, c, a = self._cols()
        for i, (question, context, answers) in enumerate(zip(ds[q], ds[c], ds[a])):
            for key, col, value in ((self.column_key("question"), q, question), (self.column_key("context"), c, context)):
                if not isinstance(value, str) or not value.strip():
                    what = "no text" if value is None or isinstance(value, str) else f"{_kind(value)}, not text,"
                    raise RecipeError(key, f"{where(i)} has {what} in column '{col}'", "fill in or drop the row")
            found = _answers(answers)
            if found is None:
                raise RecipeError(self.column_key("answers"), f"{where(i)}: column '{a}' holds {str(answers)[:80]!r}; expected "
                                  "{text: [...], answer_start: [...]} with one start per answer",
                                  "e.g. {text: [Denver Broncos], answer_start: [177]}")
            for text, start in zip(found["text"], found["answer_start"]):
                if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool) or start < 0:
                    field, value, want = ("text", text, "the answer text") if not isinstance(text, str) else \
                        ("answer_start", start, "a whole number, 0 or more (where the answer starts in the context)")
                    raise RecipeError(self.column_key("answers"), f"{where(i)}: column '{a}' has {field} {value!r}, "
                                      f"{_kind(value)}; expected {want}", "e.g. {text: [Denver Broncos], "
                                      "answer_start: [177]}")
                if not isinstance(start, int) or context[start:start + len(str(text))] != text:
                    at = context.find(str(text))
                    hint = f"the text occurs at {at}" if at >= 0 else "the text does not occur in the context"
                    raise RecipeError(self.column_key("answers"), f"{where(i)}: answer_start {start} does not point at the answer "
                                      f"{text!r} (the context there reads "
                                      f"{context[start:start + len(str(text))] if isinstance(start, int) else ''!r})",
                                      hint)

    def encode_labels(self, ds, names, where):
        a = self.column("answers")
        if isinstance(ds[0][a], list):  # a list of {text, answer_start}: to the columnar form
            return ds.map(lambda b: {a: [_answers(x) for x in b[a]]}, batched=True)
        return ds

    def configure(self, config, names) -> None:
        config.num_labels = 2  # the QA head's start and end scores

    def describe(self, names) -> tuple[str, str]:
        return ("start and end of the answer span (windows of the context)",
                "start and end logits over context tokens and [CLS] (2 rows per window)")

    def encode(self, ds, tokenizer, names):
        q, c, a = self._cols()
        spec, max_length = self.options, self.data.max_length
        right = tokenizer.padding_side == "right"  # question first unless the tokenizer pads on the left
        side = 1 if right else 0

        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - spec.doc_stride

        def fn(batch, idx):
            questions = [x.lstrip() for x in batch[q]]
            lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
            longest = max(range(len(lengths)), key=lengths.__getitem__)
            if lengths[longest] >= room:  # the tokenizer cannot slide a window with no room for context
                raise RecipeError("task.doc_stride", f"question {idx[longest] + 1} has {lengths[longest]} tokens, so "
                                  f"a window of data.max_length {max_length} leaves no more than doc_stride "
                                  f"({spec.doc_stride}) tokens of context", "raise data.max_length or lower "
                                  "task.doc_stride")
            first, second = (questions, batch[c]) if right else (batch[c], questions)
            enc = tokenizer(first, second, truncation="only_second" if right else "only_first", max_length=max_length,
                            stride=spec.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
            samples = enc.pop("overflow_to_sample_mapping")
            offsets = enc.pop("offset_mapping")
            out = {"start_positions": [], "end_positions": [], "example": [], "context_mask": [], "offsets": []}
            for i, off in enumerate(offsets):
                seq = enc.sequence_ids(i)
                ctx = [int(s == side) for s in seq]
                ids = enc["input_ids"][i]
                cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
                start, end = _span(batch[a][samples[i]], off, ctx, cls)
                out["start_positions"].append(start)
                out["end_positions"].append(end)
                out["example"].append(idx[samples[i]])
                out["context_mask"].append(ctx)
                out["offsets"].append([list(o) if m else [0, 0] for o, m in zip(off, ctx)])
            return {**enc, **out}

        return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names)

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            inputs = pad_inputs(tokenizer, rows, multiple)
            length = inputs["input_ids"].size(1)
            ctx = torch.zeros(len(rows), length, dtype=torch.bool)
            for i, r in enumerate(rows):
                ctx[i, : len(r["context_mask"])] = torch.tensor(r["context_mask"], dtype=torch.bool)
            labels = {k: torch.tensor([r[k] for r in rows]) for k in ("start_positions", "end_positions")}
            return Batch(inputs, labels, torch.tensor([r["example"] for r in rows]), aux={"context_mask": ctx},
                         meta={"offsets": [r["offsets"] for r in rows]})

        return collate

    def drop_rows(self, batch, drop) -> dict:
        ignored = batch.inputs["input_ids"].size(1)  # the QA loss ignores a position past the window
        return {k: v.masked_fill(drop, ignored) for k, v in batch.labels.items()}

    def logit_width(self, config) -> int:
        return 2  # start and end

    def logits(self, output, mask=None):
        return torch.stack([output.start_logits, output.end_logits], dim=-1)  # (B, L, 2)

    def views(self, s_logits, t_logits, batch, teacher_batch=None):
        keep = batch.aux["context_mask"].clone()
        keep[:, 0] = True  # [CLS]: where "no answer in this window" points
        keep &= batch.mask.bool()

        def rows(z):  # (B, L, 2) -> (2B, L): a start and an end distribution per window
            return z.masked_fill(~keep.unsqueeze(-1), MASKED).permute(0, 2, 1).reshape(-1, z.size(1))

        return rows(s_logits), rows(t_logits)

    def metric(self, names, examples) -> Metric:
        _, c, a = self._cols()
        return QAMetric(self.options, list(examples[c]), [list(x["text"]) for x in examples[a]])


def _span(answers: dict, offsets, ctx: list[int], cls: int) -> tuple[int, int]:
    """Token positions of the first answer in this window, or (cls, cls) when it is not (fully) inside."""
    if not answers["text"]:
        return cls, cls
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    tokens = [i for i, m in enumerate(ctx) if m]
    if not tokens:  # the question filled the window
        return cls, cls
    first, last = tokens[0], tokens[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls, cls
    start = next(i for i in tokens if offsets[i][1] > start_char)
    end = next(i for i in reversed(tokens) if offsets[i][0] < end_char)
    return start, end


register(QuestionAnswering())
