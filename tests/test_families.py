"""brewcli.models.families: per-family widths, resizing and layer copying, on tiny random models of each family."""

from __future__ import annotations

import re

import pytest
import torch
import transformers as tf
from transformers import AutoModel, AutoModelForSequenceClassification

from brewcli.models.families import (
    FAMILIES,
    CopyReport,
    FamilyError,
    Widths,
    copy_layers,
    count_layer_tensors,
    family,
    layer_key_pattern,
    map_layer_key,
    read_widths,
    resize,
)

V, H, HEADS, FFN, POS = 100, 32, 4, 37, 64
TOKENS = dict(vocab_size=V, pad_token_id=0)
BERTISH = dict(hidden_size=H, num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=POS, **TOKENS)
LLAMAISH = dict(hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=FFN,
                max_position_embeddings=POS, **TOKENS)
ROBERTA_TOKENS = dict(vocab_size=V, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def _cfg(family_name: str, layers: int = 4):
    """A tiny config of the family, built with transformers' own config class."""
    if family_name == "bert":
        return tf.BertConfig(num_hidden_layers=layers, **BERTISH)
    if family_name in ("roberta", "xlm-roberta", "camembert"):
        cls = {"roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig, "camembert": tf.CamembertConfig}
        return cls[family_name](num_hidden_layers=layers, **dict(BERTISH, **ROBERTA_TOKENS))
    if family_name == "electra":
        return tf.ElectraConfig(num_hidden_layers=layers, embedding_size=16, **BERTISH)
    if family_name == "deberta-v2":  # DeBERTa-v3 style: relative attention, no absolute positions
        return tf.DebertaV2Config(num_hidden_layers=layers, relative_attention=True, position_biased_input=False,
                                  pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=8,
                                  norm_rel_ebd="layer_norm", **BERTISH)
    if family_name == "distilbert":
        return tf.DistilBertConfig(n_layers=layers, dim=H, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=POS,
                                   **TOKENS)
    if family_name == "gpt2":
        return tf.GPT2Config(n_layer=layers, n_embd=H, n_head=HEADS, n_inner=FFN, n_positions=POS, bos_token_id=1,
                             eos_token_id=2, **TOKENS)
    if family_name == "llama":
        return tf.LlamaConfig(num_hidden_layers=layers, **LLAMAISH)
    if family_name == "mistral":
        return tf.MistralConfig(num_hidden_layers=layers, **LLAMAISH)
    if family_name == "qwen2":
        return tf.Qwen2Config(num_hidden_layers=layers, **LLAMAISH)
    if family_name == "qwen3":
        return tf.Qwen3Config(num_hidden_layers=layers, head_dim=8, **LLAMAISH)
    raise AssertionError(family_name)


# Per family: a per-layer FFN weight (key inside a layer, which dim is the FFN width) and its max_positions.
FFN_WEIGHT = {
    "bert": ("intermediate.dense.weight", 0), "roberta": ("intermediate.dense.weight", 0),
    "xlm-roberta": ("intermediate.dense.weight", 0), "camembert": ("intermediate.dense.weight", 0),
    "electra": ("intermediate.dense.weight", 0), "deberta-v2": ("intermediate.dense.weight", 0),
    "distilbert": ("ffn.lin1.weight", 0), "gpt2": ("mlp.c_fc.weight", 1),  # GPT-2's Conv1D is (in, out)
    "llama": ("mlp.up_proj.weight", 0), "mistral": ("mlp.up_proj.weight", 0), "qwen2": ("mlp.up_proj.weight", 0),
    "qwen3": ("mlp.up_proj.weight", 0),
}
MAX_POSITIONS = {"roberta": POS - 2, "xlm-roberta": POS - 2, "camembert": POS - 2, "deberta-v2": None}
LAYER_PREFIX = {"distilbert": "transformer.layer", "gpt2": "h", "llama": "layers", "mistral": "layers",
                "qwen2": "layers", "qwen3": "layers"}
NAMES = sorted(FAMILIES)


def _layer_key(model, family_name: str, layer: int, suffix: str) -> str:
    prefix = re.escape(LAYER_PREFIX.get(family_name, "encoder.layer"))
    pat = re.compile(rf"(^|\.){prefix}\.{layer}\.{re.escape(suffix)}$")
    keys = [k for k in model.state_dict() if pat.search(k)]
    assert len(keys) == 1, (family_name, layer, suffix, keys)
    return keys[0]


def _layer_indices(model, config) -> set[int]:
    pattern = layer_key_pattern(config)
    return {int(m.group(1)) for k in model.state_dict() if (m := pattern.search(k))}


def test_every_family_is_tested():
    assert set(NAMES) == set(FFN_WEIGHT)


@pytest.mark.parametrize("name", NAMES)
def test_read_widths(name):
    cfg = _cfg(name)
    assert family(cfg).name == name
    w = read_widths(cfg)
    assert isinstance(w, Widths)
    llama = FAMILIES[name].llama_style
    assert (w.layers, w.hidden, w.ffn, w.heads, w.vocab) == (4, H, FFN, HEADS, V)
    assert w.kv_heads == (2 if llama else None)
    assert w.max_positions == MAX_POSITIONS.get(name, POS)
    assert w.embedding == (16 if name == "electra" else H)
    assert read_widths(AutoModel.from_config(cfg)) == w  # a model is read through its config


@pytest.mark.parametrize("name", NAMES)
def test_resize_builds_a_model_of_the_asked_widths(name):
    teacher = _cfg(name)
    cfg = resize(teacher, layers=2, hidden=16, ffn=24, heads=2)
    assert read_widths(teacher).layers == 4  # the teacher's config is untouched
    w = read_widths(cfg)
    assert (w.layers, w.hidden, w.ffn, w.heads, w.vocab) == (2, 16, 24, 2, V)
    model = AutoModel.from_config(cfg)
    assert _layer_indices(model, cfg) == {0, 1}
    key, dim = FFN_WEIGHT[name]
    weight = model.state_dict()[_layer_key(model, name, 1, key)]
    assert weight.shape[dim] == 24 and weight.shape[1 - dim] == 16
    emb = model.get_input_embeddings().weight
    assert emb.shape == (V, w.embedding)
    if FAMILIES[name].llama_style:
        assert w.kv_heads == 2  # 2 KV heads still divide 2 heads: kept
        q = model.state_dict()[_layer_key(model, name, 0, "self_attn.q_proj.weight")]
        assert q.shape == (16, 16)  # head_dim recomputed: 2 heads x 8


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("auto", [AutoModel, AutoModelForSequenceClassification], ids=["base", "head"])
def test_copy_layers_takes_the_chosen_teacher_layers(name, auto):
    torch.manual_seed(0)
    t_cfg = _cfg(name)
    kwargs = {"num_labels": 3} if auto is AutoModelForSequenceClassification else {}
    teacher = auto.from_config(_with(t_cfg, **kwargs))
    student = auto.from_config(_with(resize(t_cfg, layers=2), **kwargs))
    report = copy_layers(student, teacher, [1, 3])

    s_keys = list(student.state_dict())
    assert isinstance(report, CopyReport)
    assert report.expected == count_layer_tensors(s_keys, student.config) > 0
    assert report.copied == report.expected and report.missing_keys == () and report.complete
    assert report.shared_skipped == ()
    assert report.copied + report.shared_copied == len(s_keys)

    key, _ = FFN_WEIGHT[name]
    s, t = student.state_dict(), teacher.state_dict()
    for s_layer, t_layer in ((0, 1), (1, 3)):
        got = s[_layer_key(student, name, s_layer, key)]
        assert torch.equal(got, t[_layer_key(teacher, name, t_layer, key)])
    assert not torch.equal(s[_layer_key(student, name, 0, key)], t[_layer_key(teacher, name, 0, key)])
    for k in s_keys:  # every tensor equals its mapped teacher tensor
        src = map_layer_key(k, student.config, [1, 3]) or k
        assert torch.equal(s[k], t[src]), k
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)


def _with(cfg, **fields):
    cfg = resize(cfg)  # a copy
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg


def test_gpt2_layer_keys_are_mapped_where_the_old_regex_missed_them():
    cfg = _cfg("gpt2")
    old = re.compile(r"(?<=\.)(layers?)\.(\d+)\.")
    key = "transformer.h.0.mlp.c_fc.weight"
    assert not old.search(key)
    assert map_layer_key(key, cfg, [1, 3]) == "transformer.h.1.mlp.c_fc.weight"
    assert map_layer_key("h.1.attn.c_attn.weight", cfg, [1, 3]) == "h.3.attn.c_attn.weight"
    assert map_layer_key("transformer.wte.weight", cfg, [1, 3]) is None
    assert map_layer_key("transformer.ch.0.x", cfg, [1, 3]) is None  # 'h.' must start a key part
    assert count_layer_tensors(["h.0.a", "transformer.h.1.b", "wte.weight", "ln_f.bias"], cfg) == 2
    llama = _cfg("llama")  # base-model llama keys start with 'layers.', which the old regex missed too
    assert map_layer_key("layers.1.mlp.up_proj.weight", llama, [0, 2]) == "layers.2.mlp.up_proj.weight"
    assert map_layer_key("model.layers.0.input_layernorm.weight", llama, [3]) == "model.layers.3.input_layernorm.weight"
    dist = _cfg("distilbert")
    assert map_layer_key("distilbert.transformer.layer.1.ffn.lin1.weight", dist, [0, 3]) == \
        "distilbert.transformer.layer.3.ffn.lin1.weight"
    with pytest.raises(FamilyError, match="layer 2"):
        map_layer_key("h.2.attn.c_attn.weight", cfg, [1, 3])


def test_unknown_family_names_the_known_ones():
    cfg = tf.T5Config(vocab_size=V, d_model=H, num_layers=2, num_heads=HEADS)
    with pytest.raises(FamilyError) as e:
        read_widths(cfg)
    assert "'t5'" in str(e.value) and "gpt2" in str(e.value) and "distilbert" in str(e.value)
    with pytest.raises(FamilyError, match="did you mean 'llama'"):
        family("lama")
    for fn in (lambda: resize(cfg, layers=1), lambda: layer_key_pattern(cfg)):
        with pytest.raises(FamilyError, match="known families"):
            fn()


def test_gpt2_default_ffn():
    cfg = tf.GPT2Config(n_layer=2, n_embd=H, n_head=HEADS, n_positions=POS, vocab_size=V, bos_token_id=1,
                        eos_token_id=2)
    assert cfg.n_inner is None and read_widths(cfg).ffn == 4 * H
    assert resize(cfg, layers=1).n_inner is None  # 4 x hidden stays implied
    assert resize(cfg, hidden=16, ffn=64).n_inner is None
    assert resize(cfg, hidden=16).n_inner == 4 * H  # an unset ffn keeps the teacher's width, not its ratio
    assert resize(cfg, hidden=16, ffn=48).n_inner == 48
    assert read_widths(resize(cfg, hidden=16, ffn=48)).ffn == 48


def test_llama_kv_heads_and_head_dim():
    cfg = _cfg("llama")  # 4 heads, 2 KV heads, head_dim 8
    assert cfg.head_dim == 8
    three = resize(cfg, hidden=24, heads=3)  # 2 no longer divides 3
    assert (three.num_key_value_heads, three.head_dim) == (3, 8)
    eight = resize(cfg, hidden=32, heads=8)  # 2 still divides 8: grouped-query attention kept
    assert (eight.num_key_value_heads, eight.head_dim) == (2, 4)
    mha = resize(tf.LlamaConfig(num_hidden_layers=2, **dict(LLAMAISH, num_key_value_heads=4)), heads=2)
    assert (mha.num_key_value_heads, mha.head_dim) == (2, 16)  # one KV head per head stays so
    model = AutoModel.from_config(three)
    assert model.layers[0].self_attn.k_proj.weight.shape == (24, 24)
    q3 = resize(_cfg("qwen3"), layers=2)  # widths unchanged: Qwen3's explicit head_dim is kept
    assert q3.head_dim == 8
    with pytest.raises(FamilyError, match="not divisible"):
        resize(cfg, hidden=30, heads=4)


def test_qwen2_layer_types_follow_the_layer_count():
    cfg = tf.Qwen2Config(num_hidden_layers=4, use_sliding_window=True, sliding_window=16, max_window_layers=2,
                         **LLAMAISH)
    assert cfg.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    small = resize(cfg, layers=2)
    assert small.layer_types == ["full_attention"] * 2
    assert resize(cfg, layers=6).layer_types == cfg.layer_types + cfg.layer_types[:2]  # a wider student repeats
    AutoModel.from_config(small)


def test_factorised_embeddings_and_deberta_positions():
    electra = _cfg("electra")  # embedding 16, hidden 32
    assert read_widths(resize(electra, hidden=64, heads=4)).embedding == 16  # kept
    assert read_widths(resize(electra, hidden=64, heads=4, embedding=32)).embedding == 32
    same = tf.ElectraConfig(num_hidden_layers=2, embedding_size=H, **BERTISH)
    assert read_widths(resize(same, hidden=16, heads=2)).embedding == 16  # followed the hidden width
    with pytest.raises(FamilyError, match="no separate embedding"):
        resize(_cfg("bert"), embedding=16)

    absolute = tf.DebertaV2Config(num_hidden_layers=2, **BERTISH)  # position_biased_input defaults to True
    assert read_widths(absolute).max_positions == POS
    deb = resize(_cfg("deberta-v2"), hidden=16, heads=2)
    assert deb.pooler_hidden_size == 16
    AutoModelForSequenceClassification.from_config(deb)  # the pooler takes the new width


def test_copy_layers_reports_what_it_could_not_copy():
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(_with(_cfg("bert"), num_labels=3))
    narrow = AutoModelForSequenceClassification.from_config(_with(resize(teacher.config, layers=2, hidden=16,
                                                                         heads=2), num_labels=3))
    report = copy_layers(narrow, teacher, [1, 3])
    assert report.copied < report.expected and not report.complete
    assert len(report.missing_keys) == report.expected - report.copied
    assert "bert.encoder.layer.0.intermediate.dense.weight" in report.missing_keys
    assert "classifier.weight" in report.shared_skipped

    two_labels = AutoModelForSequenceClassification.from_config(_with(resize(teacher.config, layers=2),
                                                                      num_labels=2))
    report = copy_layers(two_labels, teacher, [0, 3])
    assert report.complete and set(report.shared_skipped) == {"classifier.weight", "classifier.bias"}


def test_copy_layers_rejects_bad_layer_lists_and_mixed_families():
    teacher = AutoModel.from_config(_cfg("bert"))
    student = AutoModel.from_config(resize(teacher.config, layers=2))
    with pytest.raises(FamilyError, match="student has 2 layers"):
        copy_layers(student, teacher, [1])
    with pytest.raises(FamilyError, match="out of range"):
        copy_layers(student, teacher, [1, 4])
    with pytest.raises(FamilyError, match="one family"):
        copy_layers(AutoModel.from_config(_cfg("roberta", layers=2)), teacher, [1, 3])
