"""Sentence embeddings: the student learns the teacher's pooled sentence vectors.

Each text is one row: pooled over its tokens (mean, [CLS] or max, as the teacher's sentence-transformers folder
says, or as `task.pooling` says) and optionally normalised; KD compares the student's vector with the teacher's
(`cosine` or `mse`). When the student is narrower, either a learned projection maps its vectors to the teacher's
width (trained with it, kept beside it, not part of the deployed model), or (`task.projection: pca`) the teacher's
vectors are reduced to the student's width by PCA fitted on the training texts. What is scored depends on what a split holds:
- `sentence1`, `sentence2` and `score` (STS format; `task.pairs` may name the two text columns): Spearman and
  Pearson of the cosine similarities against the scores;
- the two columns of `task.pairs` (e.g. a headline and its article): retrieval, each first text's own second text
  ranked among all of the split's second texts by cosine (recall@1, recall@10, MRR).
The output folder is also a sentence-transformers folder (modules.json, the pooling config), so
`SentenceTransformer(folder)` gives the same vectors brew scored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from brewcli.batch import Batch
from brewcli.errors import RecipeError, did_you_mean
from brewcli.lazy import np, torch
from brewcli.schema import Strict, column
from brewcli.tasks import Column, Metric, Task, register
from brewcli.tasks.sequence import _pearson, _ranks, pad_inputs

STS = ("sentence1", "sentence2")  # the standard column names of a scored pair file
POOLINGS = ("mean", "cls", "max")
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
ST_NORMALIZE = "sentence_transformers.models.Normalize"


class EmbeddingSpec(Strict):
    name: Literal["sentence-embedding"] = "sentence-embedding"
    pooling: Literal["auto", "mean", "cls", "max"] = Field(
        "auto", description="how token vectors become one sentence vector; auto: the teacher's sentence-transformers "
        "pooling (1_Pooling/config.json), else mean")
    normalize: bool | None = Field(None, description="scale each sentence vector to length 1; null: as the teacher's "
                                   "sentence-transformers folder (a Normalize module), else false")
    text: str | list[str] | None = column("the text to embed (a list: one row gives a text per column)", "text")
    pairs: list[str] | None = Field(None, description="two columns whose texts belong together (e.g. [title, text]): "
                                    "eval and test splits are scored by retrieval between them (or by Spearman with "
                                    "a score column); null: sentence1, sentence2")
    score: str = Field("score", description="the column of a pair's similarity score (STS format)")
    projection: Literal["learned", "pca"] = Field(
        "learned", description="a student narrower than the teacher: learn a map of its vectors to the teacher's width "
        "(learned: kept beside the model, the student's own vectors are its output), or map the teacher's vectors onto "
        "their principal components at the student's width, fitted on training texts (pca: sentence-transformers' "
        "recipe; the student then reproduces the reduced space)")

    @field_validator("pairs")
    @classmethod
    def _two(cls, v):
        if v is not None and (len(v) != 2 or v[0] == v[1]):
            raise ValueError(f"names {len(v)} column(s); give two different columns, e.g. [title, text]")
        return v


def sentence_config(ref: str | None) -> dict | None:
    """A sentence-transformers folder's pooling and normalisation ({pooling, normalize, max_seq_length}), read from its
    modules.json and pooling config; None when `ref` is no such folder (or a Hub id that cannot be reached)."""
    if ref is None:
        return None
    folder = Path(ref).expanduser()

    def read(name: str):
        path = folder / name
        if folder.is_dir():
            return json.loads(path.read_text()) if path.is_file() else None
        try:  # a Hub id: the files sentence-transformers itself reads
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(ref, name)).read_text())
        except Exception:  # not on the Hub, offline, or no such file
            return None

    try:
        modules = read("modules.json")
        if not isinstance(modules, list):
            return None
        pool = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
        config = read(f"{pool['path']}/config.json") if pool else None
        bert = read("sentence_bert_config.json") or {}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    mode = next((p for p, key in ST_POOLING.items() if (config or {}).get(key)), None)
    return {"pooling": mode or "mean", "normalize": any(m.get("type") == ST_NORMALIZE for m in modules),
            "max_seq_length": bert.get("max_seq_length")}


def pool(hidden, mask, how: str, normalize: bool):
    """(B, L, D) token vectors and (B, L) mask -> (B, D) sentence vectors, as sentence-transformers pools them."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if how == "cls":
        out = hidden[:, 0]
    elif how == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:
        out = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


class EmbeddingMetric(Metric):
    """Collects each row's unit vector by (example, column); scores STS pairs or retrieval at the end."""

    def __init__(self, scored: bool, pairs: bool):
        self.scored, self.pairs = scored, pairs
        self.vectors: dict[tuple[int, int], list[float]] = {}
        self.scores: dict[int, float] = {}

    def update(self, logits, batch) -> None:
        unit = torch.nn.functional.normalize(logits.float(), dim=-1).tolist()
        for e, c, s, v in zip(batch.ids.tolist(), batch.meta["column"], batch.meta["score"], unit):
            self.vectors[(e, c)] = v
            if s is not None:
                self.scores[e] = s

    def _sides(self):
        both = sorted(e for (e, c) in self.vectors if c == 0 and (e, 1) in self.vectors)
        a = np.asarray([self.vectors[(e, 0)] for e in both], dtype=np.float64).reshape(len(both), -1)
        b = np.asarray([self.vectors[(e, 1)] for e in both], dtype=np.float64).reshape(len(both), -1)
        return both, a, b

    def compute(self) -> dict[str, float]:
        examples, a, b = self._sides()
        if not examples:
            return {}
        if self.scored:
            cos, gold = (a * b).sum(1), np.asarray([self.scores[e] for e in examples], dtype=np.float64)
            return {"spearman": _pearson(_ranks(cos), _ranks(gold)), "pearson": _pearson(cos, gold)}
        sims = a @ b.T  # query i against every document; its own is column i
        rank = (sims > np.diag(sims)[:, None]).sum(1)  # documents scored above its own (ties count for it)
        return {"recall@1": float((rank < 1).mean()), "recall@10": float((rank < 10).mean()),
                "mrr": float((1.0 / (rank + 1)).mean())}

    def state(self) -> dict:
        return {"vectors": [[e, c, v] for (e, c), v in self.vectors.items()], "scores": list(self.scores.items())}

    def merge(self, state: dict) -> None:
        self.vectors.update({(e, c): v for e, c, v in state["vectors"]})
        self.scores.update(dict(state["scores"]))


class SentenceEmbedding(Task):
    name, spec = "sentence-embedding", EmbeddingSpec
    doc = ("one vector per text, pooled like the teacher's (sentence-transformers folders are read and written); "
           "Spearman on scored pairs, retrieval recall@k on text pairs")
    head = "none"  # a plain encoder: the pooling is the task's, not a trained head
    headless = False  # but scored by a metric, not by the loss terms
    columns = (Column("text", "text", "text (a list: a text per column)"),)
    metrics = ("spearman", "pearson", "recall@1", "recall@10", "mrr")
    kd_losses = ("cosine", "mse")
    has_classes = False
    has_labels = False  # nothing for a hard-label loss: the teacher's vectors are the only target
    tempered = False  # the vectors are no distribution: no temperature
    projects_logits = True  # a narrower student's vector is projected to the teacher's width for KD
    agreement_is = "the mean cosine of the student's vector to the teacher's, same width only"

    def main_of(self, scores: dict) -> str:
        return next((m for m in self.metrics if m in scores), self.metrics[0])

    # ---- plan time
    def resolve(self, ref: str | None) -> Task:
        """`pooling: auto` and `normalize: null` from the teacher's sentence-transformers folder (`ref`)."""
        o = self.options
        if o.pooling != "auto" and o.normalize is not None:
            return self
        found = sentence_config(ref) or {"pooling": "mean", "normalize": False}
        options = o.model_copy(update={"pooling": found["pooling"] if o.pooling == "auto" else o.pooling,
                                       "normalize": found["normalize"] if o.normalize is None else o.normalize})
        return self.bind(options, self.data)

    def _texts(self) -> list[str]:
        text = self.column("text")
        return [text] if isinstance(text, str) else list(text)

    def _pairs(self, columns) -> list[str] | None:
        """The pair columns a split holds: task.pairs, else sentence1/sentence2; None where it has neither."""
        for pair in (self.options.pairs, list(STS)):
            if pair and all(c in columns for c in pair):
                return pair
        return None

    def _scored(self, columns) -> bool:
        return self._pairs(columns) is not None and self.options.score in columns

    def embedded(self, columns) -> list[str]:
        """The columns whose texts a split's rows give, in order: the pair first (scored on), then task.text."""
        pair = self._pairs(columns) or []
        return list(dict.fromkeys([*pair, *(c for c in self._texts() if c in columns)]))

    def check_columns(self, ds, where_file: str) -> None:
        """Every column task.text names, unless the split is a scored pair file (STS: read by its pairs); without
        task.text, the `text` column or a pair."""
        cols = ds.column_names
        missing = [c for c in self._texts() if c not in cols]
        if self.options.text is not None and missing and not self._scored(cols):
            raise RecipeError("task.text", f"no column '{missing[0]}' in {where_file} (columns: {', '.join(cols)})",
                              did_you_mean(missing[0], cols))
        if not self.embedded(cols):
            wanted = self._texts() + (self.options.pairs or list(STS))
            key = "task.text" if ds.split is None or str(ds.split) == self.data.train_split else "task.pairs"
            raise RecipeError(key, f"{where_file} has none of the columns {', '.join(dict.fromkeys(wanted))} (columns: "
                              f"{', '.join(cols)})", did_you_mean(wanted[0], cols))
        if self.options.pairs and not self._pairs(cols) and any(c in cols for c in self.options.pairs):
            missing = next(c for c in self.options.pairs if c not in cols)
            raise RecipeError("task.pairs", f"no column '{missing}' in {where_file} (columns: {', '.join(cols)})",
                              did_you_mean(missing, cols))

    def sample_texts(self, ds, n: int = 200) -> list[str]:
        rows = ds.select(range(min(n, len(ds))))
        return [str(t) for c in self.embedded(ds.column_names) for t in rows[c] if t is not None]

    def check_rows(self, ds, where) -> None:
        for col in self.embedded(ds.column_names):
            for i, v in enumerate(ds[col]):
                if not isinstance(v, str):
                    what = "no text" if v is None else f"a {type(v).__name__}, not text,"
                    raise RecipeError(self.column_key("text"), f"{where(i)} has {what} in column '{col}'",
                                      "fill in or drop the row")
        if self._scored(ds.column_names):
            for i, v in enumerate(ds[self.options.score]):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                if not ok:
                    raise RecipeError("task.score", f"{where(i)}: score {v!r} in column '{self.options.score}' is not "
                                      "a number", "give each pair a numeric similarity (e.g. 0 to 5)")

    def describe(self, names) -> tuple[str, str]:
        o = self.options
        how = f"{o.pooling} pooling" + (", normalised" if o.normalize else "")
        return f"no head: {how}", "pooled sentence vectors per row (B, D)"

    # ---- data
    def encode(self, ds, tokenizer, names):
        cols, max_length = self.embedded(ds.column_names), self.data.max_length
        score = self.options.score if self._scored(ds.column_names) else None

        def fn(batch, idx):
            texts = [[str(t) for t in batch[c]] for c in cols]
            encs = [tokenizer(t, truncation=True, max_length=max_length) for t in texts]
            out: dict[str, list] = {k: [] for k in encs[0]}
            out.update(example=[], column=[], score=[])
            for i, e in enumerate(idx):  # a row's texts side by side, so a pair stays together
                for j, enc in enumerate(encs):
                    for k in enc:
                        out[k].append(enc[k][i])
                    out["example"].append(e)
                    out["column"].append(j)
                    out["score"].append(float(batch[score][i]) if score else None)
            return out

        return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names)

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            return Batch(pad_inputs(tokenizer, rows, multiple), {}, torch.tensor([r["example"] for r in rows]),
                         meta={"column": [r["column"] for r in rows], "score": [r["score"] for r in rows]})

        return collate

    # ---- step time
    def logits(self, output, mask=None):
        if getattr(output, "last_hidden_state", None) is None:  # several teachers' ensemble: pooled already
            return output.logits
        return pool(output.last_hidden_state, mask, self.options.pooling, bool(self.options.normalize))

    def logit_width(self, config) -> int:
        from brewcli.models.families import read_widths

        return read_widths(config).hidden

    def agreement(self, s_logits, t_logits, batch) -> tuple[float, int] | None:
        if s_logits.size(-1) != t_logits.size(-1):  # a narrower student: its own space, not the teacher's
            return None
        return float(torch.nn.functional.cosine_similarity(s_logits, t_logits, dim=-1).sum()), s_logits.size(0)

    def metric(self, names, examples) -> Metric:
        cols = examples.column_names
        return EmbeddingMetric(self._scored(cols), self._pairs(cols) is not None)

    # ---- output
    def publish(self, folder: Path, config) -> None:
        """Write the sentence-transformers files beside the Hugging Face ones."""
        o = self.options
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if o.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
            (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": self.logit_width(config),
                   **{key: mode == o.pooling for mode, key in ST_POOLING.items()},
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                   "pooling_mode_lasttoken": False, "include_prompt": True}
        files = {"modules.json": modules, "1_Pooling/config.json": pooling,
                 "sentence_bert_config.json": {"max_seq_length": self.data.max_length, "do_lower_case": False},
                 "config_sentence_transformers.json": {"prompts": {}, "default_prompt_name": None,
                                                       "similarity_fn_name": "cosine"}}
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content, indent=2))


register(SentenceEmbedding())
