"""Model families: where each Hugging Face config keeps its widths, and how its per-layer weights are named.

Student presets resize the teacher's config, and `teacher-layers` initialisation copies chosen teacher layers
into the student. Both need to know, per family, which config fields hold the layer count, hidden width, FFN
width and head count, and which state-dict keys belong to layer N. BERT says `num_hidden_layers` and
`encoder.layer.N.`; GPT-2 says `n_layer`, `n_inner` and `h.N.`; Llama says `layers.N.`. This module keeps that
map in one table (`FAMILIES`) and offers:

- `read_widths(config)`: the widths, read through the family's own field names;
- `resize(config, layers=..., hidden=..., ffn=..., heads=...)`: a resized deep copy, with the fields that depend on
  those widths (GPT-2's `n_inner`, Llama's `num_key_value_heads` / `head_dim`, Qwen's `layer_types`, ELECTRA's
  `embedding_size`, DeBERTa's `pooler_hidden_size`) kept consistent;
- `layer_key_pattern`, `map_layer_key`, `count_layer_tensors`: per-layer state-dict keys;
- `copy_layers(student, teacher, layers)`: the copy itself, with a `CopyReport` a caller checks (copied < expected
  means some student layer tensors kept their random initialisation).

`max_positions` is the number of token positions the model can take, which is not always the config's
`max_position_embeddings`: RoBERTa, XLM-R and CamemBERT number positions from `padding_idx + 1`, so they take
`max_position_embeddings - (pad_token_id + 1)` tokens (512 for roberta-base's 514). DeBERTa-v2/v3 with
`position_biased_input: false` has no absolute position table at all (relative attention only), so it has no
architectural limit: `max_positions` is None there (its `max_position_embeddings`, usually 512, is only the
length it was pretrained at). For Llama-style models (rotary positions) it is the config's
`max_position_embeddings`, the context length the model is declared for, not a table size.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass

from brewcli.errors import BrewError, did_you_mean


class FamilyError(BrewError):
    """A model family we cannot resize or copy layers for, or a layer copy that cannot work."""


@dataclass(frozen=True)
class Family:
    """Where one family's config keeps its widths, and the state-dict prefix of its layers."""

    name: str
    model_types: tuple[str, ...]
    layers: str  # config field: number of layers
    hidden: str  # config field: hidden width
    ffn: str  # config field: feed-forward (intermediate) width
    heads: str  # config field: attention heads
    positions: str  # config field: position embeddings (table size, or declared context for rotary models)
    layer_prefix: str  # state-dict prefix of layer N, without the ".N."
    kv_heads: str | None = None  # llama-style grouped-query attention
    embedding: str | None = None  # a separate embedding width (ELECTRA, ALBERT-style DeBERTa), if the config has it
    position_offset: bool = False  # RoBERTa-style: positions start at padding_idx + 1
    ffn_default_ratio: int | None = None  # GPT-2: n_inner None means ratio * hidden
    llama_style: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return _pattern(self.layer_prefix)


def _pattern(prefix: str) -> re.Pattern[str]:
    # The prefix must start the key or follow a '.', so `h.N.` does not match inside `...ch.N.` and base-model keys
    # (`layers.0.` with no wrapper prefix) match as well as wrapped ones (`model.layers.0.`).
    return re.compile(r"(?<![^.])" + re.escape(prefix) + r"\.(\d+)\.")


_BERT_LIKE = dict(layers="num_hidden_layers", hidden="hidden_size", ffn="intermediate_size",
                  heads="num_attention_heads", positions="max_position_embeddings", layer_prefix="encoder.layer")
_LLAMA_LIKE = dict(_BERT_LIKE, layer_prefix="layers", kv_heads="num_key_value_heads", llama_style=True)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", ("bert",), **_BERT_LIKE),
    Family("roberta", ("roberta",), position_offset=True, **_BERT_LIKE),
    Family("xlm-roberta", ("xlm-roberta",), position_offset=True, **_BERT_LIKE),
    Family("camembert", ("camembert",), position_offset=True, **_BERT_LIKE),
    Family("electra", ("electra",), embedding="embedding_size", **_BERT_LIKE),
    Family("deberta-v2", ("deberta-v2",), embedding="embedding_size", **_BERT_LIKE),
    Family("distilbert", ("distilbert",), layers="n_layers", hidden="dim", ffn="hidden_dim", heads="n_heads",
           positions="max_position_embeddings", layer_prefix="transformer.layer"),
    Family("gpt2", ("gpt2",), layers="n_layer", hidden="n_embd", ffn="n_inner", heads="n_head",
           positions="n_positions", layer_prefix="h", ffn_default_ratio=4),
    Family("llama", ("llama",), **_LLAMA_LIKE),
    Family("mistral", ("mistral",), **_LLAMA_LIKE),
    Family("qwen2", ("qwen2",), **_LLAMA_LIKE),
    Family("qwen3", ("qwen3",), **_LLAMA_LIKE),
)}
_BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}


def family(config_or_type) -> Family:
    """The family of a config, a model (its `.config`), or a `model_type` string; FamilyError if unknown."""
    config = getattr(config_or_type, "config", config_or_type)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    found = _BY_MODEL_TYPE.get(model_type)
    if found is None:
        known = sorted(_BY_MODEL_TYPE)
        hint = did_you_mean(str(model_type), known)
        raise FamilyError(f"model family '{model_type}' is not supported for student resizing and layer copying; "
                          f"known families: {', '.join(known)}" + (f"; {hint}" if hint else ""))
    return found


@dataclass(frozen=True)
class Widths:
    """A model's sizes, whatever its config calls them."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int | None  # llama-style key/value heads; None for families without grouped-query attention
    max_positions: int | None  # token positions the model takes; None: no absolute limit (see the module doc)
    vocab: int
    embedding: int  # width of the token embeddings: `hidden` except ELECTRA / DeBERTa with `embedding_size`


def read_widths(config) -> Widths:
    """The widths of a config (or a model's config), read through its family's field names."""
    config = getattr(config, "config", config)
    if getattr(config, "model_type", None) == "brew-bigru":
        from brewcli.models.bigru import widths

        return widths(config)
    fam = family(config)
    hidden = getattr(config, fam.hidden)
    ffn = getattr(config, fam.ffn)
    if ffn is None and fam.ffn_default_ratio:
        ffn = fam.ffn_default_ratio * hidden
    embedding = getattr(config, fam.embedding, None) if fam.embedding else None
    return Widths(
        layers=getattr(config, fam.layers),
        hidden=hidden,
        ffn=ffn,
        heads=getattr(config, fam.heads),
        kv_heads=(getattr(config, fam.kv_heads, None) or getattr(config, fam.heads)) if fam.kv_heads else None,
        max_positions=_max_positions(config, fam),
        vocab=config.vocab_size,
        embedding=embedding or hidden,
    )


def loose_widths(config) -> Widths:
    """The widths of a family brew knows; of another, read through the usual Hugging Face attribute names."""
    try:
        return read_widths(config)
    except FamilyError:
        return Widths(config.num_hidden_layers, config.hidden_size, getattr(config, "intermediate_size", 0),
                      config.num_attention_heads, None, None, config.vocab_size, config.hidden_size)


def _max_positions(config, fam: Family) -> int | None:
    if fam.name == "deberta-v2" and not getattr(config, "position_biased_input", True):
        return None  # no absolute position embeddings: relative attention only, any length fits
    n = getattr(config, fam.positions)
    if fam.position_offset:
        pad = config.pad_token_id if config.pad_token_id is not None else 1
        n -= pad + 1  # position ids start at padding_idx + 1
    return n


def resize(config, *, layers: int | None = None, hidden: int | None = None, ffn: int | None = None,
           heads: int | None = None, embedding: int | None = None):
    """A deep copy of `config` with the given widths (None keeps the teacher's), set through the family's names.

    Fields that follow from those widths are kept valid:
    - GPT-2: `n_inner` stays None when the teacher's was None and `ffn` is 4 x hidden, else it is set;
    - llama-style: `num_key_value_heads` follows `heads` when the teacher had one KV head per head, is kept when it
      still divides `heads` (grouped-query attention preserved), else becomes `heads`; `head_dim` (transformers 5
      Llama/Mistral/Qwen3 always store one) is kept when hidden and heads are unchanged, else recomputed as
      hidden // heads; `layer_types` / `mlp_layer_types` lists (Qwen2/3) keep their first `layers` entries
      (repeating the teacher's list from its start when the student is deeper);
    - ELECTRA / DeBERTa: `embedding_size` is set to `embedding` when given; else, when the config has one, it
      follows `hidden` if it equalled the teacher's hidden width, or is kept (ELECTRA-small style factorised
      embeddings); other families have no separate embedding width, so `embedding` must equal `hidden` there;
    - DeBERTa-v2: `pooler_hidden_size` follows `hidden` when it equalled the teacher's hidden width.
    """
    fam = family(config)
    old = read_widths(config)
    cfg = copy.deepcopy(config)
    new_layers = old.layers if layers is None else layers
    new_hidden = old.hidden if hidden is None else hidden
    new_heads = old.heads if heads is None else heads
    new_ffn = old.ffn if ffn is None else ffn
    for name, value in (("layers", new_layers), ("hidden", new_hidden), ("ffn", new_ffn), ("heads", new_heads)):
        if not isinstance(value, int) or value < 1:
            raise FamilyError(f"student {name} must be a positive whole number, got {value!r}")
    if new_hidden % new_heads:
        raise FamilyError(f"hidden width {new_hidden} is not divisible by {new_heads} attention heads; "
                          f"change one of them")

    setattr(cfg, fam.layers, new_layers)
    setattr(cfg, fam.hidden, new_hidden)
    setattr(cfg, fam.heads, new_heads)
    if fam.ffn_default_ratio and getattr(config, fam.ffn) is None and new_ffn == fam.ffn_default_ratio * new_hidden:
        setattr(cfg, fam.ffn, None)
    else:
        setattr(cfg, fam.ffn, new_ffn)

    if fam.embedding:
        if embedding is not None:
            setattr(cfg, fam.embedding, embedding)
        elif getattr(config, fam.embedding, None) == old.hidden:
            setattr(cfg, fam.embedding, new_hidden)
    elif embedding is not None and embedding != new_hidden:
        raise FamilyError(f"the {fam.name} family has no separate embedding width; embedding must equal hidden")
    if fam.name == "deberta-v2" and getattr(config, "pooler_hidden_size", old.hidden) == old.hidden:
        cfg.pooler_hidden_size = new_hidden

    if fam.llama_style:
        kv = old.kv_heads
        if kv == old.heads or new_heads % kv:
            kv = new_heads
        setattr(cfg, fam.kv_heads, kv)
        if getattr(config, "head_dim", None) is not None and (new_hidden, new_heads) != (old.hidden, old.heads):
            cfg.head_dim = new_hidden // new_heads
    for field in ("layer_types", "mlp_layer_types"):
        types = getattr(config, field, None)
        if isinstance(types, (list, tuple)) and types and len(types) != new_layers:
            setattr(cfg, field, [types[i % len(types)] for i in range(new_layers)])

    validate = getattr(cfg, "validate", None)  # transformers 5 @strict configs check their own architecture
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as e:
            raise FamilyError(f"the resized {fam.name} config is not valid: {e}") from e
    return cfg


def layer_key_pattern(config) -> re.Pattern[str]:
    """The regex matching the family's per-layer state-dict keys; group 1 is the layer index."""
    return family(config).pattern


def map_layer_key(key: str, config, layers: list[int]) -> str | None:
    """The teacher key for the student key `key` of layer i (student layer i <- teacher layer layers[i]).

    None when `key` is not a per-layer key (embeddings, final norm, pooler, head: same name in both models)."""
    m = layer_key_pattern(config).search(key)
    if m is None:
        return None
    i = int(m.group(1))
    if i >= len(layers):
        raise FamilyError(f"student key '{key}' is layer {i}, but only {len(layers)} teacher layers were given")
    return f"{key[:m.start(1)]}{layers[i]}{key[m.end(1):]}"


def count_layer_tensors(state_dict_keys: Iterable[str], config) -> int:
    """How many of these state-dict keys are per-layer tensors."""
    pattern = layer_key_pattern(config)
    return sum(1 for k in state_dict_keys if pattern.search(k))


@dataclass(frozen=True)
class CopyReport:
    """What `copy_layers` copied. `copied < expected` means some student layer tensors kept their random init."""

    copied: int  # per-layer tensors copied from the teacher
    expected: int  # per-layer tensors in the student
    missing_keys: tuple[str, ...]  # student per-layer keys not copied (absent in the teacher, or another shape)
    shared_copied: int = 0  # non-layer tensors copied (embeddings, final norm, pooler, head)
    shared_skipped: tuple[str, ...] = ()  # non-layer student keys not copied (e.g. a head with other labels)

    @property
    def complete(self) -> bool:
        return self.copied == self.expected


def plan_copy(target: dict, source: dict, config, layers: list[int]) -> tuple[dict[str, str], CopyReport]:
    """Which teacher tensor each student tensor comes from (where the shapes match), and the report. Works on
    state dicts of real or meta-device models, so the plan checks a copy before any weight is loaded."""
    picked: dict[str, str] = {}
    copied = expected = 0
    missing, skipped = [], []
    for key, value in target.items():
        src = map_layer_key(key, config, layers)
        per_layer = src is not None
        src = key if src is None else src
        ok = src in source and source[src].shape == value.shape
        if ok:
            picked[key] = src
        if per_layer:
            expected += 1
            copied += ok
            if not ok:
                missing.append(key)
        elif not ok:
            skipped.append(key)
    return picked, CopyReport(copied=copied, expected=expected, missing_keys=tuple(missing),
                              shared_copied=len(picked) - copied, shared_skipped=tuple(skipped))


def check_copy(student, teacher, layers: list[int]) -> None:
    s_fam, t_fam = family(student.config), family(teacher.config)
    if s_fam is not t_fam:
        raise FamilyError(f"cannot copy {t_fam.name} teacher layers into a {s_fam.name} student; "
                          f"layer copying needs one family")
    n_student, n_teacher = read_widths(student.config).layers, read_widths(teacher.config).layers
    if len(layers) != n_student:
        raise FamilyError(f"{len(layers)} teacher layers given, but the student has {n_student} layers")
    bad = [i for i in layers if not (isinstance(i, int) and 0 <= i < n_teacher)]
    if bad:
        raise FamilyError(f"teacher layer {bad[0]} is out of range; the teacher has layers 0..{n_teacher - 1}")


def copy_layers(student, teacher, layers: list[int]) -> CopyReport:
    """Copy embeddings, teacher layers `layers` (student layer i <- teacher layer layers[i]), final norms, pooler
    and head from `teacher` into `student`, wherever the shapes match. Both must be the same family."""
    layers = list(layers)
    check_copy(student, teacher, layers)
    source, target = teacher.state_dict(), student.state_dict()
    picked, report = plan_copy(target, source, student.config, layers)
    student.load_state_dict({k: source[v] for k, v in picked.items()}, strict=False)
    return report
