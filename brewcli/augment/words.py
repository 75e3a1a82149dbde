"""Word-level augmentation: which words may change, what each may become, and the variants of one text.

A text is cut into pieces, alternately the text between words and a word (`pieces`); a pre-split row of words
(token classification) is its own list of pieces. A *slot* is a piece that may change, with its candidates:
TinyBERT's whole-word replacement takes alphabetic words that are not stop words, and asks a masked LM for a
word of one word piece (its top-m at the mask, reading `[CLS] masked sentence [SEP] sentence [SEP]`) and GloVe
for the rest (the m nearest words by cosine among the most frequent rows). Each try changes every slot with
probability p to one of its candidates; duplicates are dropped. `simple` (Tang et al. 2019, without POS tags)
masks a word or swaps it for a random word of the training text, and sometimes keeps only an n-gram.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

WORD = re.compile(r"(?<![\w'\u2019-])[A-Za-z]+(?![\w'\u2019-])")  # a whole alphabetic word, not part of don't

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves also may might must shall upon us
""".split())


def pieces(text: str) -> list[str]:
    """The text cut into [between, word, between, word, ..., between]: odd indices are words."""
    out, last = [], 0
    for m in WORD.finditer(text):
        out += [text[last:m.start()], m.group()]
        last = m.end()
    return out + [text[last:]]


def changeable(word: str) -> bool:
    return word.isalpha() and word.isascii() and len(word) > 1 and word.lower() not in STOP_WORDS


def cased_like(candidate: str, word: str) -> str:
    """The candidate in the word's casing (Title, UPPER, or as it is)."""
    if word.isupper() and len(word) > 1:
        return candidate.upper()
    return candidate.title() if word[:1].isupper() else candidate


@dataclass
class Slot:
    index: int  # the piece it replaces
    candidates: list[str]


def variants(parts: list[str], slots: list[Slot], n: int, p: float, rng: random.Random) -> list[list[str]]:
    """Up to n new piece lists: each try replaces every slot with probability p by a random candidate; a try equal
    to the original or to an earlier one is dropped (TinyBERT's rule)."""
    seen, out = {tuple(parts)}, []
    slots = [s for s in slots if s.candidates]
    if not slots:
        return out
    for _ in range(n):
        new = list(parts)
        for s in slots:
            choice = rng.choice(s.candidates)
            if rng.random() < p:
                new[s.index] = choice
        if tuple(new) not in seen:
            seen.add(tuple(new))
            out.append(new)
    return out


def simple_variants(parts: list[str], words: list[int], n: int, p: float, ngram: float, mask: str,
                    vocabulary: list[str], rng: random.Random, cut: bool = True) -> list[tuple[list[str], slice]]:
    """Up to n (pieces, kept) tries of `simple`: each changeable word is masked with probability p/2 or swapped for
    a random word of the training text with probability p/2; with probability `ngram` (and `cut`) only 1 to 5
    consecutive words are kept: `kept` is the slice of `parts` that the try keeps (the whole list otherwise)."""
    seen, out = {tuple(parts)}, []
    for _ in range(n):
        new = list(parts)
        for i in words:
            x = rng.random()
            if x < p / 2:
                new[i] = mask
            elif x < p and vocabulary:
                new[i] = cased_like(rng.choice(vocabulary), parts[i])
        kept = slice(0, len(new))
        if cut and len(words) > 1 and rng.random() < ngram:
            k = rng.randint(1, min(5, len(words)))
            first = rng.randrange(len(words) - k + 1)
            kept = slice(words[first], words[first + k - 1] + 1)
        key = tuple(new[kept])
        if key not in seen:
            seen.add(key)
            out.append((new, kept))
    return out


# ---------------------------------------------------------------------------------------------- candidates


class GloveNeighbours:
    """The m nearest GloVe words (cosine) of a word, among the first `rows` rows (the most frequent words)."""

    def __init__(self, path: str, rows: int, m: int, key: str):
        import numpy as np

        from brewcli import glove

        words, matrix = glove.table(path, rows, key)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.unit = matrix / np.maximum(norms, 1e-8)
        self.words, self.m = words, m
        self.index = {w: i for i, w in enumerate(words)}
        self.memo: dict[str, list[str]] = {}

    def prepare(self, words: set[str]) -> None:
        """Find the neighbours of many words at once (a matrix product per block)."""
        import numpy as np

        todo = sorted(w for w in words if w not in self.memo and w in self.index)
        for start in range(0, len(todo), 512):
            block = todo[start:start + 512]
            sims = self.unit[[self.index[w] for w in block]] @ self.unit.T
            top = np.argpartition(-sims, min(self.m + 1, sims.shape[1] - 1), axis=1)[:, : self.m + 1 + 8]
            for w, row, cand in zip(block, sims, top):
                ranked = sorted(cand, key=lambda j: -row[j])
                self.memo[w] = [self.words[j] for j in ranked if self.words[j] != w and self.words[j].isalpha()][: self.m]
        for w in words:
            self.memo.setdefault(w, [])

    def __call__(self, word: str) -> list[str]:
        low = word.lower()
        if low not in self.memo:
            self.prepare({low})
        return [cased_like(c, word) for c in self.memo[low]]


class MaskedLM:
    """A masked LM's top-m words at a masked word, reading `[CLS] masked sentence [SEP] sentence [SEP]`. Words the
    tokenizer keeps in one piece are its to answer (`single_piece`); the others go to GloVe."""

    def __init__(self, ref: str, m: int, key: str, batch_size: int = 32):
        import torch
        from transformers import AutoModelForMaskedLM

        from brewcli.models.hf import load_tokenizer

        self.tokenizer = load_tokenizer(ref, key)
        self.model = AutoModelForMaskedLM.from_pretrained(ref).eval()
        self.m, self.batch_size, self.torch = m, batch_size, torch
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        specials = set(self.tokenizer.all_special_ids)
        self.allowed = torch.tensor([i not in specials and t.isalpha() and t.isascii() for i, t in enumerate(vocab)])
        self.vocab = vocab

    def single_piece(self, word: str) -> bool:
        got = self.tokenizer.tokenize(word)
        return len(got) == 1 and got[0] != self.tokenizer.unk_token

    def candidates(self, queries: list[tuple[str, str, str]]) -> list[list[str]]:
        """For each (masked sentence, sentence, word): the top-m words at the mask, the word itself left out."""
        out = []
        tok, torch = self.tokenizer, self.torch
        for start in range(0, len(queries), self.batch_size):
            block = queries[start:start + self.batch_size]
            enc = tok([q[0] for q in block], [q[1] for q in block], truncation="only_second", max_length=256,
                      padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**enc).logits
            for i, (_, _, word) in enumerate(block):
                at = (enc["input_ids"][i] == tok.mask_token_id).nonzero()
                if len(at) == 0:
                    out.append([])
                    continue
                scores = logits[i, at[0, 0]].masked_fill(~self.allowed[: logits.size(-1)], float("-inf"))
                ranked = [self.vocab[j] for j in scores.topk(min(self.m + 1, int(self.allowed.sum()))).indices.tolist()]
                out.append([cased_like(w, word) for w in ranked if w.lower() != word.lower()][: self.m])
        return out
