"""The BiGRU student (`student: {preset: BiGRU}` or `{arch: bigru, config: {...}}`): brew's side of it.

The model itself is a `transformers` model written in bigru_modeling.py (so the HF loading, saving, checkpoint
and export code serves it unchanged); this module registers it with the Auto classes, builds its config from
the tokenizer and the teacher, reads its widths (hidden states only: it has no attention), and fills its
embedding table from the teacher's word embeddings or from GloVe vectors.
"""

from __future__ import annotations

from pathlib import Path

from brewcli import glove
from brewcli.errors import RecipeError
from brewcli.models.arch import HFArch

MODEL_TYPE = "brew-bigru"
KEY = "student.embeddings"
CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "embedding_size", "hidden_dropout_prob")
_registered = False


def register() -> None:
    """Make the Auto classes (AutoConfig, AutoModelFor...) know brew-bigru, and make save_pretrained write the
    model's code beside its weights with an `auto_map`, so plain transformers loads it with trust_remote_code."""
    global _registered
    if _registered:
        return
    import transformers

    from brewcli.models import bigru_modeling as m

    transformers.AutoConfig.register(MODEL_TYPE, m.BrewBiGRUConfig, exist_ok=True)
    m.BrewBiGRUConfig.register_for_auto_class()
    for head, cls in m.HEADS.items():
        auto = HFArch.classes[head]
        getattr(transformers, auto).register(m.BrewBiGRUConfig, cls, exist_ok=True)
        cls.register_for_auto_class(auto)
    _registered = True


def is_bigru(config) -> bool:
    return getattr(config, "model_type", None) == MODEL_TYPE


def widths(config):
    from brewcli.models.families import Widths

    return Widths(layers=config.num_hidden_layers, hidden=config.hidden_size, ffn=config.hidden_size // 2, heads=0,
                  kv_heads=None, max_positions=None, vocab=config.vocab_size, embedding=config.embedding_size)


def bigru_config(tokenizer, teacher_config, overrides: dict, embeddings: str):
    """A BiGRU config for this tokenizer: as wide as the teacher's hidden states (half of it per direction), one
    layer, an embedding table as wide as its source (the teacher's, GloVe's), then student.config."""
    from brewcli.models.bigru_modeling import BrewBiGRUConfig
    from brewcli.models.students import _check_config_value

    from brewcli.models.families import loose_widths

    register()
    kind = source(embeddings)
    model = _model_config(embeddings) if kind == "model" else None
    reference = teacher_config if teacher_config is not None else model  # what the widths follow
    base = loose_widths(reference).hidden if reference is not None else 384
    emb = {"teacher": lambda: loose_widths(teacher_config).embedding, "random": lambda: base,
           "model": lambda: loose_widths(model).embedding, "glove": lambda: glove.width(embeddings, KEY)}[kind]()
    cfg = BrewBiGRUConfig(vocab_size=len(tokenizer), embedding_size=emb, hidden_size=base,
                          pad_token_id=tokenizer.pad_token_id)
    for key, value in overrides.items():
        where = f"student.config.{key}"
        if key not in CONFIG_KEYS:
            from brewcli.errors import did_you_mean

            raise RecipeError(where, f"not a field of the BiGRU config (fields: {', '.join(CONFIG_KEYS)})",
                              did_you_mean(key, CONFIG_KEYS))
        _check_config_value(where, key, value, getattr(cfg, key))
        if key == "embedding_size" and embeddings != "random" and value != emb:
            raise RecipeError(where, f"is {value}, but the embeddings come from {embeddings}, {emb} wide",
                              "drop it, or set student.embeddings: random")
        setattr(cfg, key, value)
    if cfg.hidden_size % 2:
        raise RecipeError("student.config.hidden_size", f"is {cfg.hidden_size}; it must be even: half of it runs "
                          "each direction", f"use {cfg.hidden_size + 1}")
    return cfg


def source(embeddings: str) -> str:
    """What student.embeddings names: teacher, random, model (a folder with config.json) or glove (a path)."""
    if embeddings in ("teacher", "random"):
        return embeddings
    if (Path(embeddings).expanduser() / "config.json").is_file():
        return "model"
    if not Path(embeddings).expanduser().exists():
        raise RecipeError(KEY, f"'{embeddings}' is neither teacher, random nor an existing model folder or GloVe "
                          "file", "use teacher (the teacher's word embeddings), random, a model folder or a GloVe path")
    glove.files(embeddings, KEY)  # a clear error when it is no GloVe either
    return "glove"


def _model_config(path: str):
    from brewcli.models.hf import load_config

    return load_config(path, "student.embeddings")


def fill_embeddings(student, embeddings: str, tokenizer, teacher=None) -> str:
    """Copy word vectors into the student's embedding table: the teacher's (or a model folder's) input embeddings,
    of the same tokenizer, or GloVe's for every vocabulary entry that is a GloVe word (a `##` piece as its word;
    the others stay random). Returns a line for the log."""
    import torch

    kind = source(embeddings)
    table = student.get_input_embeddings().weight
    with torch.no_grad():
        if kind in ("teacher", "model"):
            if kind == "model":
                from transformers import AutoModel

                teacher = AutoModel.from_pretrained(embeddings)
            theirs = teacher.get_input_embeddings().weight
            table.copy_(theirs[: table.size(0)].to(table.dtype))
            whose = "the teacher's" if kind == "teacher" else f"{embeddings}'s"
            return f"embeddings: {whose} word embeddings ({theirs.size(0)} x {theirs.size(1)})"
        vocab = tokenizer.get_vocab()
        words = {t: t.removeprefix("##").lower() for t in vocab}
        found = glove.vectors(embeddings, set(words.values()), KEY)
        hits = 0
        for token, i in vocab.items():
            v = found.get(words[token])
            if v is not None and i < table.size(0):
                table[i] = torch.as_tensor(v, dtype=table.dtype)
                hits += 1
    return f"embeddings: GloVe vectors for {hits:,} of {len(vocab):,} vocabulary entries (the rest random)"


class BiGRUArch(HFArch):
    """The BiGRU student: a transformers model of brew's own (bigru_modeling.py), so everything HF does for it
    holds; it offers hidden states only."""

    name = "bigru"

    def head_name(self, head: str) -> str:
        from brewcli.models.bigru_modeling import HEADS

        return HEADS[head].__name__.removeprefix("BrewBiGRU") if head in HEADS else f"no {head} head"

    def serves(self, config, head: str) -> bool:
        from brewcli.models.bigru_modeling import HEADS

        return head in HEADS

    def has_head(self, config, head: str) -> bool:
        register()
        return super().has_head(config, head)

    def widths(self, config):
        return widths(config)

    def export(self, model, path, inputs, head, opset) -> None:
        from brewcli.export import torch_to_onnx

        torch_to_onnx(model, path, inputs, self.outputs(head), opset, dynamo=False)  # ONNX's GRU op, dynamic length


def _add() -> None:
    from brewcli.models.arch import ARCHS

    ARCHS.add("bigru", BiGRUArch(), "a bidirectional GRU (preset BiGRU): embeddings from the teacher, GloVe or random; "
                                    "hidden states only; saved with its code, so transformers loads it with "
                                    "trust_remote_code")


_add()
