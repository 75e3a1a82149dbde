"""The feature-kind seam: every registered kind, read from real (tiny) Hugging Face models, has the layers, widths and
layout its registry entry says, comes out of the teacher cache as it went in, and the hooked kinds (q, k, v,
scores) equal what the model's own attention computes."""

from __future__ import annotations

import pytest
import torch

from brewcli.batch import run_model
from brewcli.models.families import read_widths
from brewcli.models.features import FEATURE_KINDS, Needs
from brewcli.models.hooks import hook_problem


class _NoLogits:
    def logits(self, out):
        return None


def _bert(layers=3, hidden=24, heads=4):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=31, max_position_embeddings=32, attention_probs_dropout_prob=0.0,
                     hidden_dropout_prob=0.0, attn_implementation="eager")
    return BertModel(cfg).eval()


def _distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=40, dim=24, n_layers=2, n_heads=4, hidden_dim=31, max_position_embeddings=32,
                           attention_dropout=0.0, dropout=0.0, attn_implementation="eager")
    return DistilBertModel(cfg).eval()


def _inputs():
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 10, 11, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _all_needs(n_layers: int) -> Needs:
    return Needs(layers={name: range(FEATURE_KINDS.get(name).first_layer, n_layers + 1)
                         for name in FEATURE_KINDS.names()})


@pytest.mark.parametrize("build", [_bert, _distilbert], ids=["bert", "distilbert"])
def test_every_kind_has_its_layers_width_and_layout(build):
    model = build()
    w = read_widths(model.config)
    f = run_model(model, _inputs(), _all_needs(w.layers), _NoLogits())
    b, n = _inputs()["input_ids"].shape
    for name in FEATURE_KINDS.names():
        kind = FEATURE_KINDS.get(name)
        assert sorted(f.layers[name]) == list(range(kind.first_layer, w.layers + 1)), name
        shape = {"tok": (b, n, kind.width(w)), "att": (b, kind.width(w), n, n)}[kind.layout]
        for x in f.layers[name].values():
            assert tuple(x.shape) == shape, name


@pytest.mark.parametrize("build", [_bert, _distilbert], ids=["bert", "distilbert"])
def test_scores_are_the_models_own_attention_before_its_softmax(build):
    model = build()
    w = read_widths(model.config)
    inputs = _inputs()
    f = run_model(model, inputs, Needs(layers={"scores": range(1, w.layers + 1), "attention": range(1, w.layers + 1)}),
                  _NoLogits())
    keys = inputs["attention_mask"][:, None, None, :].bool()
    for layer in range(1, w.layers + 1):
        probs = f.attention[layer]
        mine = f.at("scores", layer).masked_fill(~keys, float("-inf")).softmax(-1)
        assert torch.allclose(mine, probs, atol=1e-6), layer


def test_q_k_v_are_the_projection_outputs_and_hooks_are_removed():
    model = _bert()
    inputs = _inputs()
    f = run_model(model, inputs, Needs(layers={"hidden": [1], "q": [2], "v": [2]}), _NoLogits())
    layer2 = model.encoder.layer[1].attention.self
    h1 = f.hidden[1]
    assert torch.allclose(f.at("q", 2), layer2.query(h1), atol=1e-6)
    assert torch.allclose(f.at("v", 2), layer2.value(h1), atol=1e-6)
    assert "k" not in f.layers
    projections = [m for layer in model.encoder.layer for m in (layer.attention.self.query, layer.attention.self.key,
                                                                 layer.attention.self.value)]
    assert not any(m._forward_hooks for m in projections)  # transformers keeps hooks of its own elsewhere


def test_gradients_flow_through_hooked_features():
    model = _bert().train()
    f = run_model(model, _inputs(), Needs.of("scores", [3]), _NoLogits())
    f.at("scores", 3).sum().backward()
    assert model.encoder.layer[2].attention.self.query.weight.grad.abs().sum() > 0


def test_families_that_cannot_be_hooked_say_why():
    from transformers import GPT2Config, LlamaConfig

    assert "gpt2" in hook_problem(GPT2Config(n_layer=2, n_embd=16, n_head=2), "q")
    llama = LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=20)
    assert hook_problem(llama, "q") is None
    assert "rotary" in hook_problem(llama, "scores")


def test_every_kind_survives_the_teacher_cache(recipe_file, tmp_path, monkeypatch):
    """A warm fp32 cache gives the live teacher's loss terms for matches on every kind (q, k, v, scores, attention,
    hidden): the cache stores each kind in its registered layout."""
    from tests.test_cache import plan_for, step_terms

    monkeypatch.setenv("BREW_CACHE", str(tmp_path / "cache"))
    matches = [{"preset": "tinybert"}, {"preset": "minilm-v2", "relation_heads": 4},
               {"teacher_layer": 2, "student_layer": 1, "feature": "attention", "loss": "attention_mse"}]
    path = recipe_file(train__max_steps=2, student={"preset": "T3", "init": "random"},
                       distill={"temperature": 2, "matches": matches})
    live = step_terms(plan_for(path, "distill.teacher_cache=off", f"train.output_dir={tmp_path / 'live'}"), 2)
    step_terms(plan_for(path, "distill.cache_dtype=fp32", f"train.output_dir={tmp_path / 'cold'}"), 1)
    warm_plan = plan_for(path, "distill.cache_dtype=fp32", f"train.output_dir={tmp_path / 'warm'}")
    assert warm_plan.cache.hit
    assert {lay.name.split(".")[0] for lay in warm_plan.cache.layouts} >= {"hidden", "scores", "q", "k", "v",
                                                                          "attention"}
    warm = step_terms(warm_plan, 2)
    for a, b in zip(live, warm):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-5), k
