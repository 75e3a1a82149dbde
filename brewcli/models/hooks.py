"""Query, key and value features from the projections, by forward hooks: no attention code is copied.

Hugging Face models return hidden states and attention probabilities, not Q, K, V or the scores before the
softmax. A hook on layer k's query/key/value projection keeps its output for the kinds `q`, `k` and `v`; `scores`
(per head q k^T / sqrt(head dim)) is computed from the kept q and k. That equals what the model's own attention
computes before its mask is added for the families whose attention is a plain scaled dot product of the
projections (BERT-like and DistilBERT). Rotary (Llama-style) and relative (DeBERTa) attention change q and k
after the projection, so those families offer q, k and v but not scores; GPT-2's fused projection is not hooked.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

from brewcli.models.families import FamilyError, family, read_widths

_BERT = ("attention.self.query", "attention.self.key", "attention.self.value")
PROJECTIONS = {  # family -> the q, k, v projection modules, relative to one layer's module
    **{f: _BERT for f in ("bert", "roberta", "xlm-roberta", "camembert", "electra")},
    "deberta-v2": ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
    **{f: ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") for f in ("llama", "mistral", "qwen2", "qwen3")},
}
SCORES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"})
HOOKED = ("q", "k", "v", "scores")


def hook_problem(config, kind: str) -> str | None:
    """Why `kind` cannot be read from a model of this config (None: it can). Plan time, no weights."""
    try:
        name = family(config).name
    except FamilyError:
        name = getattr(config, "model_type", "?")
    if name not in PROJECTIONS:
        return f"brew cannot hook the query/key/value projections of a {name} model (known: " \
               f"{', '.join(sorted(PROJECTIONS))})"
    if kind == "scores" and name not in SCORES:
        return f"a {name} model changes q and k after the projections (rotary or relative positions), so its " \
               "scores are not q k^T of the projections"
    return None


def _layers(model) -> list:
    """The model's layer modules in order (layer 1 first), found by the family's layer prefix."""
    fam = family(model.config)
    pattern = re.compile(r"(?<![^.])" + re.escape(fam.layer_prefix) + r"\.(\d+)$")
    found = {int(m.group(1)): mod for name, mod in model.named_modules() if (m := pattern.search(name))}
    return [found[i] for i in sorted(found)]


@contextmanager
def projections(model, needs):
    """While the block runs, keep the q/k/v/scores features `needs` asks for: yields {(kind, layer): tensor}, filled
    once the forward pass has run. A no-op when nothing hooked is asked for."""
    wanted = {kind: needs.at(kind) for kind in HOOKED if needs.at(kind)}
    out: dict = {}
    if not wanted:
        yield out
        return
    model = getattr(model, "module", model)  # DDP
    layers, names = _layers(model), PROJECTIONS[family(model.config).name]
    keep: dict = {}
    handles = []
    for kind in ("q", "k", "v"):
        for layer in wanted.get(kind, set()) | (wanted.get("scores", set()) if kind in "qk" else set()):
            module = layers[layer - 1].get_submodule(names["qkv".index(kind)])
            handles.append(module.register_forward_hook(
                lambda _m, _i, y, key=(kind, layer): keep.__setitem__(key, y)))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
    heads = read_widths(model.config).heads
    for layer in wanted.get("scores", ()):
        out[("scores", layer)] = scores(keep[("q", layer)], keep[("k", layer)], heads)
    for kind in ("q", "k", "v"):
        for layer in wanted.get(kind, ()):
            out[(kind, layer)] = keep[(kind, layer)]


def split_heads(x, heads: int):
    """(B, L, H*d) -> (B, H, L, d)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def scores(q, k, heads: int):
    """Per-head attention scores before the softmax and before any mask: (B, H, L, L)."""
    qh, kh = split_heads(q, heads), split_heads(k, heads)
    return qh @ kh.transpose(-1, -2) / math.sqrt(qh.size(-1))
