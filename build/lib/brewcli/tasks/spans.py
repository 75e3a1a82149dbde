"""Entity-level scoring for token classification (NER), compatible with seqeval.

Tags are strings such as ``"B-PER"``. Each is read as a prefix and an entity type:

* ``"O"`` (or anything starting with ``"O-"``) is outside any entity;
* ``"<P>-<TYPE>"`` with ``<P>`` one of B, I, E, S, L, U has that prefix; BILOU's L and U are read as E and S;
  a bare prefix (``"B"``, ``"I-"``) has the type ``"_"``, as in seqeval;
* any other tag (``"PER"``) has no prefix and counts as ``"I-PER"``. (seqeval would split such a tag after
  its first character; this is the one place the two knowingly differ.)

Schemes (the ``scheme`` argument, case-insensitive):

* ``"iob2"`` (alias ``"bio"``) and ``"iob1"``: seqeval's default, lenient mode (``mode=None``), which has one
  set of rules for both. An entity starts at a B- or S- tag, at an I- or E- tag that follows O, E- or S-, and at
  any non-O tag whose type differs from the previous tag's. It ends before O, B- or S-, after E- or S-, and before a
  change of type. So ``I-PER I-PER O`` is one PER entity and ``B-PER I-LOC`` is two. Because an I- after O or
  after another type opens an entity, IOB1 data (where B- only separates two adjacent entities of one type)
  scores correctly with these rules too.
* ``"bioes"`` (aliases ``"iobes"``, ``"bilou"``): seqeval's strict mode with its IOBES scheme. An entity is
  exactly one S-X, or B-X followed by zero or more I-X and then E-X, all of one type. Anything else is
  ill-formed and dropped: ``B-PER I-PER O`` and a lone ``E-PER`` give no entity.
* ``"auto"``: ``"bioes"`` if any tag has an E, S, L or U prefix, else ``"iob2"``. ``entities`` decides per
  sentence, ``span_scores`` over the whole corpus (gold and predicted tags together) and ``SpanCounter`` per
  sentence pair. Where the label set is known, pass ``detect_scheme(label_names)`` instead, so that every
  sentence is read the same way.

Spans are ``(type, start, end)`` with ``end`` exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Span = tuple[str, int, int]
_SCHEMES = {"auto": "auto", "iob1": "iob2", "iob2": "iob2", "bio": "iob2",
            "bioes": "bioes", "iobes": "bioes", "bilou": "bioes"}
_PREFIX = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}


def parse_tag(tag: str) -> tuple[str, str]:
    """Split one tag into (prefix, type); prefix is one of O, B, I, E, S (L and U are read as E and S)."""
    if tag == "O" or tag.startswith("O-"):
        return "O", "_"
    if tag[:1] in _PREFIX and (len(tag) == 1 or tag[1] == "-"):
        return _PREFIX[tag[0]], tag[2:] or "_"
    return "I", tag


def detect_scheme(tags: Iterable[str]) -> str:
    """``"bioes"`` if any tag has an E, S, L or U prefix, else ``"iob2"``. Works on a label list or on tags."""
    return "bioes" if any(parse_tag(t)[0] in "ES" for t in tags) else "iob2"


def _resolve(scheme: str, tags: Iterable[str]) -> str:
    """The concrete scheme (``"iob2"`` or ``"bioes"``) for `scheme`, detecting it from `tags` if it is auto."""
    name = _SCHEMES.get(scheme.lower())
    if name is None:
        raise ValueError(f"unknown tagging scheme {scheme!r}; choose one of {', '.join(_SCHEMES)}")
    return detect_scheme(tags) if name == "auto" else name


def _chunk_ends(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    """seqeval's `end_of_chunk`: does an entity end between `prev` and `cur`?"""
    (p, pt), (c, ct) = prev, cur
    return p in "ES" or (p in "BI" and c in "BSO") or (p != "O" and pt != ct)


def _chunk_starts(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    """seqeval's `start_of_chunk`: does an entity start at `cur`?"""
    (p, pt), (c, ct) = prev, cur
    return c in "BS" or (p in "ESO" and c in "EI") or (c != "O" and pt != ct)


def _lenient_entities(parsed: list[tuple[str, str]]) -> set[Span]:
    """Entities under seqeval's default (non-strict) rules, used for IOB1 and IOB2."""
    spans, begin, prev = set(), 0, ("O", "_")
    for i, cur in enumerate([*parsed, ("O", "_")]):
        if _chunk_ends(prev, cur):
            spans.add((prev[1], begin, i))
        if _chunk_starts(prev, cur):
            begin = i
        prev = cur
    return spans


def _strict_bioes_entities(parsed: list[tuple[str, str]]) -> set[Span]:
    """Entities under seqeval's strict IOBES rules: S-X, or B-X (I-X)* E-X; ill-formed runs are dropped."""
    spans, i, n = set(), 0, len(parsed)
    while i < n:
        prefix, kind = parsed[i]
        if prefix == "S":
            spans.add((kind, i, i + 1))
        if prefix != "B":
            i += 1
            continue
        j = i + 1
        while j < n and parsed[j] == ("I", kind):
            j += 1
        if j < n and parsed[j] == ("E", kind):
            spans.add((kind, i, j + 1))
            j += 1
        i = j  # after a dropped run, the tag that broke it may itself start an entity
    return spans


def entities(tags: list[str], scheme: str = "auto") -> set[Span]:
    """The (type, start, end-exclusive) entities in one sentence's tags; see the module docstring for the rules."""
    parsed = [parse_tag(t) for t in tags]
    if _resolve(scheme, tags) == "bioes":
        return _strict_bioes_entities(parsed)
    return _lenient_entities(parsed)


def _ratio(num: int, den: int) -> float:
    """num / den, or 0.0 when den is 0."""
    return num / den if den else 0.0


@dataclass
class SpanCounter:
    """Running entity and token counts over sentences; `merge` or `state`/`from_state` sum them across processes."""

    scheme: str = "auto"
    tp: int = 0  # predicted entities that are also gold entities
    pred: int = 0  # predicted entities
    gold: int = 0  # gold entities
    correct: int = 0  # tokens whose predicted tag equals the gold tag
    tokens: int = 0

    def update(self, true_tags: list[str], pred_tags: list[str]) -> None:
        """Add one sentence: its gold and predicted tags, of equal length."""
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sentence has {len(true_tags)} gold tags but {len(pred_tags)} predicted tags")
        scheme = _resolve(self.scheme, [*true_tags, *pred_tags])
        gold, pred = entities(true_tags, scheme), entities(pred_tags, scheme)
        self.tp += len(gold & pred)
        self.pred += len(pred)
        self.gold += len(gold)
        self.correct += sum(t == p for t, p in zip(true_tags, pred_tags))
        self.tokens += len(true_tags)

    def state(self) -> dict[str, int]:
        """The counts, as plain ints."""
        return {"tp": self.tp, "pred": self.pred, "gold": self.gold, "correct": self.correct, "tokens": self.tokens}

    @classmethod
    def from_state(cls, state: dict[str, int], scheme: str = "auto") -> SpanCounter:
        """A counter holding the counts of `state`."""
        return cls(scheme, **{k: int(v) for k, v in state.items()})

    def merge(self, other: SpanCounter) -> SpanCounter:
        """Add `other`'s counts to this counter; returns self."""
        for key, value in other.state().items():
            setattr(self, key, getattr(self, key) + value)
        return self

    def compute(self) -> dict[str, float]:
        """Micro precision, recall and F1 over entities, and token accuracy; 0.0 where a denominator is 0."""
        return {
            "precision": _ratio(self.tp, self.pred),
            "recall": _ratio(self.tp, self.gold),
            "f1": _ratio(2 * self.tp, self.pred + self.gold),
            "accuracy": _ratio(self.correct, self.tokens),
        }


def span_scores(true: list[list[str]], pred: list[list[str]], scheme: str = "auto") -> dict[str, float]:
    """Micro entity precision/recall/F1 and token accuracy over sentences; `auto` is decided on the whole corpus."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} gold sentences but {len(pred)} predicted sentences")
    counter = SpanCounter(_resolve(scheme, (t for sent in [*true, *pred] for t in sent)))
    for gold_tags, pred_tags in zip(true, pred):
        counter.update(gold_tags, pred_tags)
    return counter.compute()
