"""The relation presets (tinybert, minilm, minilm-v2, ckd): what each expands into for a depth pair, the plan-time
checks of their options, and one shared TinyBERT projection."""

from __future__ import annotations

import pytest
from transformers import BertConfig, GPT2Config

from brewcli.errors import RecipeError
from brewcli.matches import ckd_layers, relation_heads_for, resolve_matches
from brewcli.recipe import MatchSpec


def bert(layers, hidden, heads=12):
    return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden, vocab_size=100)


def expand(spec: dict, teacher=None, student=None):
    return resolve_matches([MatchSpec(**spec)], {"teacher": teacher or bert(6, 384)}, student or bert(4, 312))


def test_tinybert_pairs_hidden_from_the_embeddings_and_scores_from_layer_one():
    got = expand({"preset": "tinybert"}, bert(12, 768), bert(4, 312))
    hidden = [(m.teacher_layer, m.student_layer) for m in got if m.feature == "hidden"]
    scores = [(m.teacher_layer, m.student_layer) for m in got if m.feature == "scores"]
    assert hidden == [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]  # TinyBERT's 12 -> 4: hidden 0,3,6,9,12
    assert scores == [(3, 1), (6, 2), (9, 3), (12, 4)]  # attentions 2,5,8,11 counted from 0
    assert {m.loss for m in got} == {"hidden_mse", "attention_score_mse"}
    assert {m.group for m in got if m.feature == "hidden"} == {"tinybert"} and all(m.proj for m in got if m.group)


def test_tinybert_shares_one_projection():
    from types import SimpleNamespace

    from brewcli.objective import build_objective

    matches = expand({"preset": "tinybert"})
    plan = SimpleNamespace(recipe=SimpleNamespace(teacher="t", distill=SimpleNamespace(kd_weight=0,
                                                                                       hard_label_weight=0)),
                           task=None, matches=matches, teachers=[])
    objective = build_objective(plan)
    assert list(objective.projections) == ["tinybert"]
    hidden_terms = [t for t in objective.terms if t.match.feature == "hidden"]
    assert len(hidden_terms) == 5 and all(t.projection is objective.projections["tinybert"] for t in hidden_terms)


def test_minilm_v1_reads_the_last_layers():
    got = expand({"preset": "minilm"})
    assert [(m.feature, m.loss, m.teacher_layer, m.student_layer) for m in got] == [
        ("scores", "attention_kl", 6, 4), ("v", "value_relation", 6, 4)]


def test_minilm_v1_needs_equal_head_counts():
    with pytest.raises(RecipeError, match="teacher has 12 heads and the student 6"):
        expand({"preset": "minilm"}, student=bert(4, 312, heads=6))


def test_minilm_v2_relation_heads_default_and_check():
    got = expand({"preset": "minilm-v2"})
    assert [m.feature for m in got] == ["q", "k", "v"]
    assert {dict(m.options)["relation_heads"] for m in got} == {24}  # most up to 48 dividing 384 and 312
    assert relation_heads_for(768, 768) == 48 and relation_heads_for(768, 312) == 24
    got = expand({"preset": "minilm-v2", "relation_heads": 12, "teacher_layer": 5})
    assert {(m.teacher_layer, m.student_layer) for m in got} == {(5, 4)}
    with pytest.raises(RecipeError) as e:
        expand({"preset": "minilm-v2", "relation_heads": 48})
    assert "does not divide the width 312" in e.value.message and "relation_heads: 24" in str(e.value)


def test_ckd_layer_selection_and_terms():
    assert ckd_layers(12, 6) == (0, 2, 4, 6, 8, 10, 12) and ckd_layers(6, 12) == (0, 1, 2, 3, 4, 5, 6)
    assert ckd_layers(6, 4) == (0, 3, 6) and ckd_layers(4, 6) == (0, 2, 4)
    got = expand({"preset": "ckd", "weights": {"wr_angle": 0}})
    assert {m.loss for m in got} == {"wr_distance", "ltr_distance", "ltr_angle"}
    ltr = [m for m in got if m.loss == "ltr_distance"][0]
    assert ltr.teacher_layer == (0, 3, 6) and ltr.student_layer == (0, 2, 4) and ltr.proj is None


def test_preset_options_are_checked():
    with pytest.raises(RecipeError, match="has no term 'wr_dist'"):
        expand({"preset": "ckd", "weights": {"wr_dist": 1}})
    with pytest.raises(RecipeError, match="does not take relation_heads"):
        expand({"preset": "tinybert", "relation_heads": 12})


def test_relation_on_a_family_the_seam_cannot_hook():
    gpt2 = GPT2Config(n_layer=4, n_embd=48, n_head=4)
    with pytest.raises(RecipeError, match="cannot hook"):
        resolve_matches([MatchSpec(preset="minilm-v2")], {"teacher": gpt2}, GPT2Config(n_layer=2, n_embd=48, n_head=4))


def test_old_attention_ce_mean_spelling_points_at_the_rename():
    with pytest.raises(RecipeError, match="attention_prob_ce_mean"):
        expand({"teacher_layer": 6, "student_layer": 4, "feature": "attention", "loss": "attention_ce_mean"})


def test_a_preset_term_is_weighted_by_its_own_key():
    """A composite preset's terms name the key that weights each (a loss-scale warning tells the user which to
    change) and its value there, not the product with the entry's weight."""
    from types import SimpleNamespace

    from brewcli.objective import build_objective

    got = expand({"preset": "ckd", "weight": 2, "weights": {"wr_angle": 3}})
    by_loss = {m.loss: m for m in got}
    assert by_loss["wr_angle"].weight_key == "distill.matches[0].weights.wr_angle"
    assert by_loss["wr_angle"].key_weight == 3 and by_loss["wr_angle"].weight == pytest.approx(2 * 3 / 3)  # 3 layers
    assert by_loss["ltr_distance"].key_weight == 1 and by_loss["ltr_distance"].weight == 2
    plain = expand({"feature": "hidden", "teacher_layer": 6, "student_layer": 4, "weight": 0.5})[0]
    assert plain.weight_key == "distill.matches[0].weight" and plain.key_weight == 0.5
    plan = SimpleNamespace(recipe=SimpleNamespace(teacher="t", distill=SimpleNamespace(kd_weight=0, hard_label_weight=0)),
                           task=None, matches=expand({"preset": "tinybert"}), teachers=[])
    keys = {(t.key, t.key_weight) for t in build_objective(plan).terms}
    assert keys == {("distill.matches[0].weights.hidden_mse", 1.0), ("distill.matches[0].weights.attention_score_mse", 1.0)}
