"""What one step consumes (`Batch`) and what a model gives back (`Features`).

Loss terms and metrics read Features, never a Hugging Face `ModelOutput`: a live teacher, a cached teacher and
a student all produce the same view, holding only what someone asked for (`Needs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from brewcli.models.features import Needs

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class Batch:
    inputs: dict[str, Tensor]  # the student's model inputs, attention_mask included
    labels: dict[str, Tensor]  # the head's label arguments: {"labels": ...} or start/end positions; may be empty
    ids: Tensor  # (B,) the example each row comes from: stable across epochs, processes and runs
    teachers: dict[str, Batch] = field(default_factory=dict)  # a teacher's own batch, where its tokenizer differs
    aux: dict[str, Tensor] = field(default_factory=dict)  # task tensors the views need (e.g. QA's context mask)
    meta: dict[str, list] = field(default_factory=dict)  # kept on the CPU for metrics (e.g. QA's offsets)
    rows: Tensor | None = None  # (B,) each row's index in its encoded split (what the teacher cache is keyed by)
    gold: Tensor | None = None  # (B,) bool: the row has a gold label (False: augmented, the teacher's only); None: all

    @property
    def size(self) -> int:
        return self.ids.size(0)

    @property
    def mask(self) -> Tensor:
        return self.inputs["attention_mask"]

    def for_teacher(self, name: str | None = None) -> dict[str, Tensor]:
        """The inputs teacher `name` reads: its own batch's (another tokenizer), else the student's."""
        return self.teachers[name].inputs if name in self.teachers else self.inputs

    def to(self, device) -> Batch:
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        return Batch(move(self.inputs), move(self.labels), self.ids, {k: b.to(device) for k, b in self.teachers.items()},
                     move(self.aux), self.meta, self.rows, None if self.gold is None else self.gold.to(device))


@dataclass
class Features:
    """One model's features for a batch: its mask, logits, head loss and `layers[kind][layer]` (see features.py)."""

    mask: Tensor  # (B, L) that model's attention mask
    logits: Tensor | None = None
    layers: dict[str, dict[int, Tensor]] = field(default_factory=dict)
    loss: Tensor | None = None

    def at(self, kind: str, layer: int) -> Tensor:
        return self.layers[kind][layer]

    def put(self, kind: str, layer: int, value: Tensor) -> None:
        self.layers.setdefault(kind, {})[layer] = value

    @property
    def hidden(self) -> dict[int, Tensor]:  # layer -> (B, L, D); 0 is the embeddings
        return self.layers.get("hidden", {})

    @property
    def attention(self) -> dict[int, Tensor]:  # layer (1..N) -> (B, H, L, L) probabilities
        return self.layers.get("attention", {})


def run_model(model, inputs: dict[str, Tensor], needs: Needs, task, labels: dict[str, Tensor] | None = None) -> Features:
    """One forward pass that computes only what `needs` asks for, as Features."""
    from brewcli.models.hooks import projections

    with projections(model, needs) as hooked:
        out = model(**inputs, **(labels if needs.loss and labels else {}), output_hidden_states=bool(needs.hidden),
                    output_attentions=bool(needs.attention))
    mask = inputs["attention_mask"]
    f = Features(mask=mask, logits=task.logits(out, mask) if needs.logits else None,
                 loss=out.loss if needs.loss else None)
    for i in needs.hidden:
        f.put("hidden", i, out.hidden_states[i])
    for i in needs.attention:
        f.put("attention", i, out.attentions[i - 1])
    for (kind, i), x in hooked.items():
        f.put(kind, i, x)
    return f
