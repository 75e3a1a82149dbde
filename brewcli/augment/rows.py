"""The augmented variants of one training row, by what the task reads (`Task.augments`):

- `text` (classification, regression, multi-label): each text column on its own; a pair's variants change one
  side and keep the other, as TinyBERT's do.
- `words` (token classification): whole words of the row's word list change one for one, so every tag stays on
  its word; `simple`'s n-gram cut keeps the tags of the words it keeps.
- `qa`: the question and the context on their own; no word of an answer changes, and every `answer_start`
  moves by what the words before it gained or lost.

Every variant is a copy of the row with those columns changed; the labels it copies are never read (the hard-label
term skips augmented rows).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from brewcli.augment.words import Slot, changeable, pieces, simple_variants, variants
from brewcli.errors import RecipeError


@dataclass
class Words:
    """Where candidates come from, for one split: GloVe neighbours, an MLM's answers (asked per occurrence, so
    gathered for the whole split first: `ask`), or nothing (`simple`)."""

    method: str
    glove: object | None = None  # words.GloveNeighbours
    mlm: object | None = None  # words.MaskedLM
    asked: dict = field(default_factory=dict)  # (text, piece index) -> the MLM's candidates

    def ask(self, jobs: list[tuple[list[str], list[int]]]) -> None:
        """Gather what the MLM says about every single-piece word of these (pieces, slot indices); GloVe's
        neighbours of the other words are found in one pass too."""
        queries, where, others = [], [], set()
        for parts, indices in jobs:
            sentence = "".join(parts)
            for i in indices:
                if self.mlm is not None and self.mlm.single_piece(parts[i]):
                    masked = "".join(self.mlm.tokenizer.mask_token if j == i else x for j, x in enumerate(parts))
                    queries.append((masked, sentence, parts[i]))
                    where.append((sentence, i))
                else:
                    others.add(parts[i].lower())
        if self.glove is not None:
            self.glove.prepare(others)
        if queries:
            self.asked.update(zip(where, self.mlm.candidates(queries)))

    def slots(self, parts: list[str], indices: list[int]) -> list[Slot]:
        sentence = "".join(parts)
        out = []
        for i in indices:
            said = self.asked.get((sentence, i))
            out.append(Slot(i, said if said is not None else self.glove(parts[i]) if self.glove is not None else []))
        return out


@dataclass
class Options:
    n: int
    p: float
    ngram: float
    mask: str  # the student tokenizer's mask (or unknown) token, for `simple`
    vocabulary: list[str]  # the training text's words, for `simple`'s swaps


def word_slots(parts: list[str], frozen=lambda i: False, every: bool = False) -> list[int]:
    """The pieces that may change: words (odd pieces of a text; `every` piece of a word list) that are alphabetic,
    not stop words, and not `frozen`."""
    return [i for i in range(0 if every else 1, len(parts), 1 if every else 2) if changeable(parts[i]) and not frozen(i)]


def _tries(parts, indices, words: Words, o: Options, rng, cut: bool = True) -> list[tuple[list[str], slice]]:
    if words.method == "simple":
        return simple_variants(parts, indices, o.n, o.p, o.ngram, o.mask, o.vocabulary, rng, cut)
    whole = slice(0, len(parts))
    return [(v, whole) for v in variants(parts, words.slots(parts, indices), o.n, o.p, rng)]


def text_variants(row: dict, columns: list[str], words: Words, o: Options, rng: random.Random) -> list[dict]:
    out = []
    for col in columns:
        parts = pieces(str(row[col]))
        for new, kept in _tries(parts, word_slots(parts), words, o, rng):
            out.append({**row, col: "".join(new[kept]).strip()})
    return out


def word_variants(row: dict, tokens: str, words: Words, o: Options, rng: random.Random) -> list[dict]:
    parts = [str(w) for w in row[tokens]]
    out = []
    for new, kept in _tries(parts, word_slots(parts, every=True), words, o, rng):
        cut = {k: v[kept] for k, v in row.items() if isinstance(v, list) and len(v) == len(parts)}  # tags, ids
        out.append({**row, **cut, tokens: new[kept]})
    return out


def _qa_parts(row: dict, cols: tuple[str, str, str]):
    """(question pieces, their slots), (context pieces, their slots: no word of an answer), each context piece's
    start offset."""
    q, c, a = cols
    question, context = pieces(row[q]), pieces(row[c])
    starts = [sum(map(len, context[:i])) for i in range(len(context))]
    spans = [(s, s + len(t)) for t, s in zip(row[a]["text"], row[a]["answer_start"])]
    frozen = lambda i: any(starts[i] < e and s < starts[i] + len(context[i]) for s, e in spans)  # noqa: E731
    return (question, word_slots(question)), (context, word_slots(context, frozen)), starts


def qa_variants(row: dict, cols: tuple[str, str, str], words: Words, o: Options, rng: random.Random,
                where) -> list[dict]:
    """Question and context on their own; the answers' words frozen, their starts moved."""
    q, c, a = cols
    (question, q_slots), (context, c_slots), starts = _qa_parts(row, cols)
    out = [{**row, q: "".join(new)} for new, _ in _tries(question, q_slots, words, o, rng, cut=False)]
    answers = row[a]
    for new, _ in _tries(context, c_slots, words, o, rng, cut=False):
        text, moved = "".join(new), []
        for t, s in zip(answers["text"], answers["answer_start"]):
            k = max(i for i in range(len(context)) if starts[i] <= s)  # the piece the answer starts in (unchanged)
            at = sum(map(len, new[:k])) + s - starts[k]
            if text[at:at + len(t)] != t:
                raise RecipeError("data.augment", f"{where()}: after augmentation the answer {t!r} no longer sits at "
                                  f"answer_start {at} (the context there reads {text[at:at + len(t)]!r})",
                                  "check that answer_start points at the answer in the original row")
            moved.append(at)
        out.append({**row, c: text, a: {**answers, "answer_start": moved}})
    return out


def row_jobs(kind: str, row: dict, columns) -> list[tuple[list[str], list[int]]]:
    """The (pieces, slot indices) an MLM is asked about for one row (the same slots the variants use)."""
    if kind == "text":
        return [(p, word_slots(p)) for p in (pieces(str(row[col])) for col in columns)]
    if kind == "words":
        parts = [str(w) for w in row[columns]]
        return [(parts, word_slots(parts, every=True))]
    return list(_qa_parts(row, columns)[:2])


def row_variants(kind: str, row: dict, columns, words: Words, o: Options, rng: random.Random, where) -> list[dict]:
    if kind == "text":
        return text_variants(row, columns, words, o, rng)
    if kind == "words":
        return word_variants(row, columns, words, o, rng)
    return qa_variants(row, columns, words, o, rng, where)
