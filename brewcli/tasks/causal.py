"""Causal language modelling: a decoder student learns the teacher's next-token distributions.

Text is packed into windows of `data.max_length` as for general distillation (task: general), every token a
target; or each row is a `prompt` and a `completion`, and only the completion's tokens are targets. KD compares
the student's and the teacher's distributions at every target position (the logits shifted by one, padding and
prompt left out), with the divergences of `distill.kd_loss` (forward or reverse KL, a generalized JSD, total
variation, skew KL); the hard-label term is next-token cross-entropy. Each averages over the target tokens of the
accumulation window. Scoring reduces on the model's device: per-token negative log-likelihood and top-1 hits
leave it, never the vocabulary-wide logits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from brewcli.batch import Batch
from brewcli.errors import RecipeError, did_you_mean
from brewcli.lazy import np, torch
from brewcli.schema import column
from brewcli.tasks import Metric, register
from brewcli.tasks.general import General, GeneralSpec, special_tokens
from brewcli.tasks.sequence import LABELS, pad_inputs

IGNORE = -100


class CausalSpec(GeneralSpec):
    name: Literal["causal-lm"] = "causal-lm"
    text: str | None = column("the text packed into windows (CSV, JSON, Parquet, .txt or a Hugging Face dataset)",
                              "text")
    prompt: str | None = Field(None, description="a column of prompts: each row is its prompt then its completion, "
                               "and only the completion's tokens are targets (name task.completion too)")
    completion: str | None = Field(None, description="the column of completions that go with task.prompt")


class LMMetric(Metric):
    """Perplexity, mean negative log-likelihood and next-token accuracy over the target tokens."""

    def __init__(self):
        self.nll, self.hits, self.tokens = 0.0, 0, 0

    def update(self, logits, batch) -> None:  # logits: task.reduce's (B, L-1, 2) of nll and top-1 hit
        keep = batch.labels[LABELS][:, 1:] != IGNORE
        self.nll += float(logits[..., 0][keep].double().sum())
        self.hits += int(logits[..., 1][keep].sum())
        self.tokens += int(keep.sum())

    def compute(self) -> dict[str, float]:
        nll = self.nll / max(self.tokens, 1)
        return {"perplexity": float(np.exp(min(nll, 50.0))), "nll": nll, "accuracy": self.hits / max(self.tokens, 1)}

    def state(self) -> dict:
        return {"nll": self.nll, "hits": self.hits, "tokens": self.tokens}

    def merge(self, state: dict) -> None:
        self.nll += state["nll"]
        self.hits += state["hits"]
        self.tokens += state["tokens"]


class CausalLM(General):
    name, spec = "causal-lm", CausalSpec
    doc = ("next-token prediction with a decoder (GPT-2, Llama, Mistral, Qwen): text packed into windows, or prompt and "
           "completion columns with the loss on the completion; perplexity, NLL, next-token accuracy")
    head = "lm"
    headless = False
    metrics = ("perplexity", "nll", "accuracy")
    lower_is_better = frozenset({"perplexity", "nll"})
    kd_losses = ("kl", "reverse_kl", "jsd", "tvd", "skew_kl", "ce")
    label_unit = "labels"  # target tokens
    skips_rows = True
    cross_tokenizer = False
    vocabulary_wide = True  # cached only as the teacher's top k (distill.top_k)
    generates = True
    agreement_is = "the share of target tokens where the student's top-1 next token is the teacher's"
    feature_unit = "windows"

    @property
    def estimates(self) -> bool:  # a dry run samples a large text corpus; prompt rows are read whole
        return self.options is None or self.options.prompt is None

    @property
    def paired(self) -> bool:
        return self.options.prompt is not None or self.options.completion is not None

    # ---- plan time
    def check_columns(self, ds, where_file: str) -> None:
        o = self.options
        if not self.paired:
            return super().check_columns(ds, where_file)
        for key in ("prompt", "completion"):
            col = getattr(o, key)
            if col is None:
                other = "prompt" if key == "completion" else "completion"
                raise RecipeError(f"task.{key}", f"is not set, but task.{other} is: a row is a prompt and its completion",
                                  f"name the {key} column in task.{key}")
            if col not in ds.column_names:
                raise RecipeError(f"task.{key}", f"no column '{col}' in {where_file} (columns: "
                                  f"{', '.join(ds.column_names)})", did_you_mean(col, ds.column_names))

    def check_rows(self, ds, where) -> None:
        if not self.paired:
            return super().check_rows(ds, where)
        for key in ("prompt", "completion"):
            col = getattr(self.options, key)
            for i, v in enumerate(ds[col]):
                if not isinstance(v, str) or (key == "completion" and not v.strip()):
                    raise RecipeError(f"task.{key}", f"{where(i)} has no text in column '{col}'", "fill in or drop the row")

    def sample_texts(self, ds, n: int = 200) -> list[str]:
        if not self.paired:
            return super().sample_texts(ds, n)
        rows = ds.select(range(min(n, len(ds))))
        return [str(t) for key in ("prompt", "completion") for t in rows[getattr(self.options, key)]]

    def describe(self, names) -> tuple[str, str]:
        what = "completions after their prompts" if self.paired else "every token of the windows"
        return f"language-model head: next token, targets {what}", "next-token distributions per target token (N, vocab)"

    def logit_width(self, config) -> int:
        return config.vocab_size

    # ---- data
    def encode(self, ds, tokenizer, names):
        if not self.paired:
            return super().encode(ds, tokenizer, names)
        o, n = self.options, self.data.max_length
        before, _ = special_tokens(tokenizer)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

        def fn(batch, idx):
            prompts = tokenizer([str(p) for p in batch[o.prompt]], add_special_tokens=False)["input_ids"]
            answers = tokenizer([str(c) for c in batch[o.completion]], add_special_tokens=False)["input_ids"]
            ids, labels = [], []
            for p, c in zip(prompts, answers):
                p = before + p
                row = (p + c + eos)[:n]
                ids.append(row)
                labels.append(([IGNORE] * len(p) + c + eos)[:n])
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], LABELS: labels, "example": idx}

        return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names)

    def collate(self, tokenizer, multiple: int | None = None):
        def collate(rows: list[dict]) -> Batch:
            inputs = pad_inputs(tokenizer, rows, multiple)
            inputs.pop("token_type_ids", None)
            length = inputs["input_ids"].size(1)
            labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
            for i, r in enumerate(rows):
                target = r[LABELS] if LABELS in r else r["input_ids"]  # windows: every token is a target
                seq = torch.tensor(target, dtype=torch.long)
                if tokenizer.padding_side == "right":
                    labels[i, :len(seq)] = seq
                else:
                    labels[i, length - len(seq):] = seq
            return Batch(inputs, {LABELS: labels}, torch.tensor([r["example"] for r in rows]))

        return collate

    # ---- step time
    def logits(self, output, mask=None):
        return output.logits

    def _targets(self, batch):
        return batch.labels[LABELS][:, 1:] != IGNORE  # position t predicts token t+1

    def views(self, s_logits, t_logits, batch, teacher_batch=None):
        keep = self._targets(batch)
        return s_logits[:, :-1][keep], t_logits[:, :-1][keep]

    def view_labels(self, batch):
        labels = batch.labels[LABELS][:, 1:]
        return labels[labels != IGNORE]

    def units(self, batch, keep=None) -> int:
        targets = self._targets(batch)
        return int((targets if keep is None else targets & keep.unsqueeze(-1)).sum())

    def drop_rows(self, batch, drop) -> dict:
        return {LABELS: batch.labels[LABELS].masked_fill(drop.unsqueeze(-1), IGNORE)}

    def agreement(self, s_logits, t_logits, batch) -> tuple[float, int]:
        zs, zt = self.views(s_logits, t_logits, batch)
        return float((zs.argmax(-1) == zt.argmax(-1)).sum()), zs.size(0)

    def reduce(self, logits, batch):
        """(B, L-1, 2): each position's negative log-likelihood of the next token and whether it is the top-1, on
        the logits' device (what leaves it is two numbers a token, not the vocabulary)."""
        labels = batch.labels[LABELS][:, 1:]
        z = logits[:, :-1].float()
        nll = -z.log_softmax(-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return torch.stack([nll, (z.argmax(-1) == labels).float()], dim=-1)

    def metric(self, names, examples) -> Metric:
        return LMMetric()

    def rollout(self, batch, model, tokenizer, multiple: int | None = None):
        """The batch with each row's continuation sampled from `model` (distill.on_policy, brewcli/onpolicy.py): a
        prompt row keeps its prompt, a window its first half; the sample is as long as the text it replaces (or ends
        at EOS) and is the row's only target. The rows become teacher-only: the student wrote them, no gold label."""
        prompts, lengths = [], []
        for ids, keep, labels in zip(batch.inputs["input_ids"], batch.mask.bool(), batch.labels[LABELS]):
            seq, targets = ids[keep], (labels[keep] != IGNORE).nonzero().squeeze(-1)
            first = int(targets[0]) if len(targets) else len(seq)
            cut = first if first > 0 else max(1, len(seq) // 2)  # windows: every token is a target
            prompts.append(seq[:cut])
            lengths.append(len(seq) - cut)
        if max(lengths) == 0:
            return batch
        pad, eos, width = tokenizer.pad_token_id, tokenizer.eos_token_id, max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=batch.mask.device)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every row continues from its last column
            ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                             max_new_tokens=max(lengths), pad_token_id=pad)[:, width:].tolist()
        rows = []
        for i, (p, n) in enumerate(zip(prompts, lengths)):
            sample = out[i][:n]
            sample = sample[:sample.index(eos) + 1] if eos in sample else sample
            seq = p.tolist() + sample
            rows.append({"input_ids": seq, "attention_mask": [1] * len(seq), LABELS: [IGNORE] * len(p) + sample,
                         "example": int(batch.ids[i])})
        new = self.collate(tokenizer, multiple)(rows).to(batch.mask.device)
        new.rows, new.gold = batch.rows, torch.zeros(len(rows), dtype=torch.bool, device=batch.mask.device)
        return new

    def samples(self, models: dict, tokenizer, ds, n: int = 3, words: int = 12, tokens: int = 24) -> list[dict]:
        """Greedy continuations, by each model, of the first `words` words of the split's first `n` texts (or its
        prompts)."""
        col = self.options.prompt or self.column("text")
        prompts = [" ".join(str(t).split()[:words]) for t in ds.select(range(min(n, len(ds))))[col]]
        out = []
        for prompt in prompts:
            row = {"prompt": prompt}
            inputs = tokenizer(prompt, return_tensors="pt")
            inputs.pop("token_type_ids", None)
            for name, model in models.items():
                device = next(model.parameters()).device
                with torch.no_grad():
                    ids = model.generate(**{k: v.to(device) for k, v in inputs.items()}, max_new_tokens=tokens,
                                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
                row[name] = tokenizer.decode(ids[0, inputs["input_ids"].size(1):], skip_special_tokens=True)
            out.append(row)
        return out


register(CausalLM())
