"""Feature kinds: what a loss term can read from a model, keyed by (kind, layer).

A kind says which layers it has (hidden states start at the embedding output, layer 0; the others at the first
layer, 1), its width per model (hidden size or head count), its layout per row (`seq`: one vector per row,
`tok`: one per token, `att`: one matrix per head over token pairs; this is also how the teacher cache stores it
and the shape the plan shows), whether the model must run its eager attention kernel (SDPA returns no maps), and
where a forward pass gets it: the model's own outputs, or hooks on each layer's query/key/value projections
(`brewcli.models.hooks`). A new kind is one `FEATURE_KINDS.add`; the needs, the cache and the plan read it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from brewcli.registry import Registry


@dataclass(frozen=True)
class Kind:
    name: str
    first_layer: int  # 0: the embedding output counts as layer 0; 1: layers 1..N only
    layout: str  # seq | tok | att
    width: Callable  # Widths -> int: the last dim (tok) or the heads (att)
    source: str  # "outputs": the model returns it; "projections": hooks on the q/k/v projections
    eager: bool = False  # the model must run eager attention (SDPA computes no maps)

    def shape(self, width: int) -> str:
        return {"seq": f"(B, {width})", "tok": f"(B, L, {width})", "att": f"(B, {width}, L, L)"}[self.layout]


FEATURE_KINDS: Registry[Kind] = Registry("feature", "features")
FEATURE_KINDS.add("hidden", Kind("hidden", 0, "tok", lambda w: w.hidden, "outputs"),
                  "hidden states: layer 0 is the embedding output, k the output of layer k")
FEATURE_KINDS.add("attention", Kind("attention", 1, "att", lambda w: w.heads, "outputs", eager=True),
                  "attention probabilities after the softmax, per head (layers 1..N; eager attention)")
FEATURE_KINDS.add("scores", Kind("scores", 1, "att", lambda w: w.heads, "projections"),
                  "attention scores before the softmax, q k^T / sqrt(head dim) per head, no mask added (layers 1..N)")
def _kv_width(w) -> int:
    """Keys and values: one head's width per key/value head (fewer than the query heads under grouped-query
    attention, Llama-style)."""
    return (w.kv_heads or w.heads) * (w.hidden // w.heads)


for _name, _what in (("q", "query"), ("k", "key"), ("v", "value")):
    FEATURE_KINDS.add(_name, Kind(_name, 1, "tok", (lambda w: w.hidden) if _name == "q" else _kv_width, "projections"),
                      f"the {_what} projection's output, heads side by side (layers 1..N)")


@dataclass(frozen=True)
class Needs:
    """What the loss terms read from one model: its logits, some layers of some feature kinds, the head's loss."""

    logits: bool = False
    layers: dict[str, frozenset[int]] = field(default_factory=dict)  # kind -> layers
    loss: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", {k: frozenset(v) for k, v in self.layers.items() if v})

    @classmethod
    def of(cls, kind: str, layers) -> Needs:
        return cls(layers={kind: frozenset(layers)})

    def at(self, kind: str) -> frozenset[int]:
        return self.layers.get(kind, frozenset())

    @property
    def hidden(self) -> frozenset[int]:
        return self.at("hidden")

    @property
    def attention(self) -> frozenset[int]:
        return self.at("attention")

    def keys(self) -> list[tuple[str, int]]:
        """Every (kind, layer) asked for, in registry order then layer order."""
        return [(k, n) for k in FEATURE_KINDS.names() for n in sorted(self.at(k))]

    def __or__(self, other: Needs) -> Needs:
        kinds = set(self.layers) | set(other.layers)
        return Needs(self.logits or other.logits, {k: self.at(k) | other.at(k) for k in kinds},
                     self.loss or other.loss)

    def __hash__(self) -> int:
        return hash((self.logits, tuple(sorted((k, tuple(sorted(v))) for k, v in self.layers.items())), self.loss))


def feature_name(kind: str, layer: int) -> str:
    """The stored name of one feature (the teacher cache's file names): `hidden.3`, `attention.1`, `q.6`."""
    return f"{kind}.{layer}"


def parse_name(name: str) -> tuple[str, int]:
    kind, layer = name.split(".")
    return kind, int(layer)
