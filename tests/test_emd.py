"""BERT-EMD (`distill.emd`): the flow is the optimal transport plan (the same cost as BERT-EMD's own square
formulation), the adaptive update is the paper's (checked against a direct transcription of its reference code's
loop), identical models cost nothing, a run logs its flow table and resumes its layer weights exactly, and what it
cannot compare is refused at plan time."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.emd import EMDWeights, emd_loss, flow, updated_weights
from tests.test_train import plan_for, run

runner = CliRunner()


def test_the_flow_of_a_hand_computed_case():
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    f = flow(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), cost)
    assert torch.allclose(f, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    # 2 x 3 by hand: student 1 (0.5) fills teacher 1 (0.2, free) and teacher 2 (0.3, cost 1); student 2 (0.5)
    # fills teacher 3 (free); any other plan moves weight at cost 1.5 or 2. Total 0.3.
    cost = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.5, 0.0]])
    f = flow(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]), cost)
    assert torch.allclose(f, torch.tensor([[0.2, 0.3, 0.0], [0.0, 0.0, 0.5]]))
    assert (f * cost).sum().item() == pytest.approx(0.3)
    # one student layer, three teacher layers: everything flows, in the teacher's proportions
    f = flow(torch.tensor([1.0]), torch.tensor([0.2, 0.3, 0.5]), torch.tensor([[3.0, 1.0, 2.0]]))
    assert torch.allclose(f, torch.tensor([[0.2, 0.3, 0.5]]))


@pytest.mark.parametrize("seed", range(3))
def test_the_flow_costs_what_bert_emds_square_formulation_costs(seed):
    """BERT-EMD pads both weightings to M + N layers with zeros and solves on a symmetric (M+N)^2 distance matrix
    (pyemd); the rectangular problem has the same optimum."""
    import ot

    rng = np.random.default_rng(seed)
    m, n = 4, 6
    cost = rng.random((m, n))
    ws, wt = rng.dirichlet(np.ones(m)), rng.dirichlet(np.ones(n))
    square = np.zeros((m + n, m + n))
    square[:m, m:], square[m:, :m] = cost, cost.T
    big = ot.emd(np.concatenate([ws, np.zeros(n)]), np.concatenate([np.zeros(m), wt]), square)
    f = flow(torch.tensor(ws), torch.tensor(wt), torch.tensor(cost)).numpy()
    assert np.isclose((f * cost).sum(), (big * square).sum())
    assert np.allclose(f.sum(1), ws) and np.allclose(f.sum(0), wt)


def _reference_update(trans, distance, weights, t):
    """BERT-EMD's get_new_layer_weight for the student side, as its code's loops compute it."""
    w = np.copy(weights)
    trans_weight = np.sum(trans * distance, -1)
    for i in range(len(w)):
        w[i] = trans_weight[i] / w[i]
    total = np.sum(w)
    for i in range(len(w)):
        if w[i] != 0:
            w[i] = total / w[i]
    e = np.exp(w / t - np.max(w / t))
    return e / e.sum()


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_the_adaptive_update_is_the_papers(t):
    rng = np.random.default_rng(0)
    cost = rng.random((3, 5))
    ws, wt = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(5))
    f = flow(torch.tensor(ws), torch.tensor(wt), torch.tensor(cost))
    mine = updated_weights(torch.tensor(ws), f, torch.tensor(cost), t).numpy()
    assert np.allclose(mine, _reference_update(f.numpy(), cost, ws, t))
    theirs = updated_weights(torch.tensor(wt), f.t(), torch.tensor(cost).t(), t).numpy()
    assert np.allclose(theirs, _reference_update(f.numpy().T, cost.T, wt, t))
    assert np.isclose(mine.sum(), 1) and mine.argmax() == (np.sum(f.numpy() * cost, 1) / ws).argmin()


def test_identical_layers_cost_nothing_and_the_loss_has_a_gradient():
    x = torch.randn(3, 3, requires_grad=True)
    cost = (x.unsqueeze(1) - x.detach().unsqueeze(0)).pow(2).mean(-1)  # layer i of both models is the same
    state = EMDWeights(3, 3)
    loss, f = emd_loss(cost, state, adaptive=False, temperature=1.0, update=True)
    assert loss.item() == pytest.approx(0, abs=1e-7) and torch.allclose(f, torch.eye(3, dtype=f.dtype) / 3)
    emd_loss(cost + 1.0, state, adaptive=True, temperature=1.0, update=True)[0].backward()
    assert x.grad is not None and torch.isclose(state.student.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_a_run_shows_its_flow_and_resumes_its_layer_weights_exactly(recipe_file, tmp_path):
    emd = {"feature": "both", "temperature": 2.0}
    path = recipe_file(distill={"temperature": 2, "emd": emd}, train__save_every=2, train__keep_checkpoints=5,
                       train__max_steps=4, train__eval_every=2)
    r = runner.invoke(app, ["distill", str(path), "--dry-run"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "emd_hidden: layer weights" in text and "emd_scores: layer weights" in text
    assert "hidden_mse of every student layer 1..3 against every teacher layer 1..4" in text
    out = tmp_path / "out"
    run(plan_for(path))
    full = load_file(str(out / "checkpoint-4" / "projections.safetensors"))
    assert not torch.allclose(full["emd_hidden.student"], torch.full((3,), 1 / 3, dtype=torch.float64))  # adapted
    model = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    shutil.rmtree(out / "checkpoint-4")
    r = runner.invoke(app, ["distill", str(path), "--dry-run"])
    shown = " ".join(r.output.split())
    assert "emd_hidden: layer weights in checkpoint-2 (what --resume continues)" in shown
    saved = load_file(str(out / "checkpoint-2" / "projections.safetensors"))["emd_hidden.student"]
    assert all(f"{w:.3f}" in shown for w in saved.tolist())
    run(plan_for(path), resume=True)
    again = load_file(str(out / "checkpoint-4" / "projections.safetensors"))
    assert full.keys() == again.keys()
    for k in full:
        assert torch.equal(full[k], again[k]), k
    resumed = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    for k in model:
        assert torch.equal(model[k], resumed[k]), k


def test_a_run_logs_the_flow_table_at_each_evaluation(recipe_file):
    r = runner.invoke(app, ["distill", str(recipe_file(distill={"emd": {}}, train__max_steps=2))])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "emd_hidden: flow from student layers (rows) to teacher layers (columns), hidden_mse cost" in text
    assert "hidden_hidden_mse_0_0" in text  # the embedding outputs, matched directly


BAD = [
    ({"student": {"preset": "BiGRU"}, "distill": {"emd": {"feature": "attention"}}},
     ["distill.emd.feature", "BiGRU, which has no attention"]),
    ({"student": {"preset": "T3-small", "init": "random", "config": {"num_attention_heads": 2}},
      "distill": {"emd": {"feature": "attention"}}}, ["distill.emd.loss", "heads"]),
    ({"distill": {"emd": {"loss": "hiden_mse"}}}, ["distill.emd.loss", "hidden_mse"]),
    ({"distill": {"emd": {"feature": "logits"}}}, ["distill.emd.feature", "hidden"]),
    ({"distill": {"emd": {"teacher": "other"}}}, ["distill.emd.teacher", "teacher"]),
]


@pytest.mark.parametrize("changes,needles", BAD, ids=[n[0] for _, n in BAD])
def test_what_emd_cannot_compare_is_refused_at_plan_time(changes, needles, recipe_file):
    r = runner.invoke(app, ["distill", str(recipe_file(**changes)), "--dry-run"])
    assert r.exit_code == 2, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)


def test_without_pot_brew_says_what_to_install(recipe_file, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ot", None)
    r = runner.invoke(app, ["distill", str(recipe_file(distill={"emd": {}})), "--dry-run"])
    assert r.exit_code != 0 and "pip install 'brewcli[emd]'" in r.output and "Traceback" not in r.output, r.output
