"""Loss-scale guidance (warnings, gradient shares, the probe leaves training unchanged) and the memory estimate."""

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from brewcli import guidance, memory
from brewcli.guidance import KDFigures, TermFigures
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import run
from tests.conftest import base_recipe, make_model_dir


@pytest.fixture(scope="module")
def sure_teacher(tmp_path_factory):
    """The tiny teacher with its classifier scaled up, so that its logits are confident (a random one is unsure)."""
    from transformers import BertForSequenceClassification

    path = make_model_dir(tmp_path_factory.mktemp("sure") / "teacher")
    model = BertForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(300.0)
    model.save_pretrained(path)
    return path


def write(tmp_path, teacher, data_files, name="r", **changes):
    recipe = base_recipe(teacher, data_files, tmp_path / name, **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def warnings_in(err: str) -> list[str]:
    return [line for line in " ".join(err.split()).split("warning: ")[1:] if line.startswith("loss scale")]


# ---------------------------------------------------------------------------------------------- pure functions


def test_flat_kd_warns_with_the_figures_and_the_fix():
    kd = KDFigures(temperature=8, entropy=0.97, classes=5, kind="softmax", scale_by_t2=False, value=1.573)
    terms = [TermFigures("kd", "distill.kd_weight", 1.0, 1.573, 0.3, floored=True),
             TermFigures("hidden_mse", "distill.matches[0].weight", 1.0, 0.2, 0.7)]
    (line,) = guidance.warnings(terms, kd, steps=10)
    assert "distill.temperature 8" in line and "0.970" in line and "ln 5 = 1.6094" in line and "1.5730" in line
    assert "Lower distill.temperature" in line and "distill.scale_by_t2: true" in line
    sharp = KDFigures(temperature=2, entropy=0.55, classes=5, kind="softmax", scale_by_t2=False, value=0.9)
    assert guidance.warnings(terms, sharp) == []
    scaled = KDFigures(temperature=8, entropy=0.97, classes=5, kind="softmax", scale_by_t2=True, value=99.0)
    assert guidance.warnings(terms, scaled) == []  # Hinton's logit-matching limit, chosen; the share checks its size
    unsure = KDFigures(temperature=1, entropy=0.99, classes=5, kind="softmax", scale_by_t2=False, value=1.6)
    (line,) = guidance.warnings(terms, unsure)
    assert "the teacher itself is unsure" in line and "distill.kd_weight" in line


def test_a_term_orders_of_magnitude_below_warns_once_naming_its_key():
    terms = [TermFigures("kd", "distill.kd_weight", 1.0, 0.004, 0.004),
             TermFigures("hard_label", "distill.hard_label_weight", 1.0, 0.9, 0.996)]
    (line,) = guidance.warnings(terms, KDFigures(4, 0.3, 5, "softmax", False, 0.004), steps=10)
    assert line.startswith("loss scale: kd is") and "249x below hard_label" in line
    assert "0.40% against 99.60%" in line and "distill.kd_weight (now 1)" in line
    assert "distill.scale_by_t2: true" in line and "1/16" in line  # T=4 without T^2 scaling
    balanced = [TermFigures("kd", "distill.kd_weight", 1.0, 0.3, 0.4),
                TermFigures("hard_label", "distill.hard_label_weight", 1.0, 0.9, 0.6)]
    assert guidance.warnings(balanced) == []
    by_value = [TermFigures("a", "distill.matches[0].weight", 1.0, 5.0), TermFigures("b", "distill.matches[1].weight",
                                                                                     0.001, 0.01)]
    (line,) = guidance.warnings(by_value)  # not probed: the weighted values alone
    assert "b is 500x below a" in line and "distill.matches[1].weight (now 0.001)" in line
    # a soft-CE KD value includes the teacher's entropy: it is not compared by value
    assert guidance.warnings([TermFigures("kd", "distill.kd_weight", 1, 1.6, floored=True), by_value[1]]) == []


def test_a_copied_layer_match_is_not_flagged_as_small():
    # the quickstart at T=2, first window: the embeddings match starts at its minimum (T3 copies the embeddings)
    terms = [TermFigures("kd", "distill.kd_weight", 1.0, 1.23, 0.366, floored=True),
             TermFigures("hidden_0_0", "distill.matches[0].weight", 1.0, 0.03, 0.0032, settled=True),
             TermFigures("hidden_1_2", "distill.matches[0].weight", 1.0, 0.21, 0.2)]
    assert guidance.warnings(terms) == []
    terms[1].settled = False
    (line,) = guidance.warnings(terms)
    assert "hidden_0_0 is 114x below kd" in line
    assert guidance.copied_at_init(0, 0, [1, 3, 5]) and not guidance.copied_at_init(1, 2, [1, 3, 5])
    assert guidance.copied_at_init(2, 2, [0, 1, 4]) and not guidance.copied_at_init(3, 3, [0, 1, 4])
    assert guidance.copied_at_init((1, 2), (1, 2), [0, 1]) and not guidance.copied_at_init(0, 0, None)


def test_one_term_above_all_the_others_is_one_warning():
    terms = [TermFigures("kd", "distill.kd_weight", 1.0, 50.0, 0.9990)] + [
        TermFigures(f"m{i}", "distill.matches[0].weight", 1.0, 0.01, 0.00025) for i in range(4)]
    (line,) = guidance.warnings(terms)
    assert "kd takes 99.9% of the gradient" in line and "(m0, m1, m2, m3)" in line and "Lower distill.kd_weight" in line


def test_target_entropy_per_kind():
    assert guidance.target_entropy(torch.zeros(4, 5), 1.0, "softmax") == pytest.approx((1.0, 5.0))
    h, c = guidance.target_entropy(torch.tensor([[10.0, 0, 0, 0, 0]]), 1.0, "softmax")
    assert h < 0.01 and c == 5
    assert guidance.target_entropy(torch.tensor([[10.0, 0, 0, 0, 0]]), 100.0, "softmax")[0] > 0.99
    # QA: positions outside the context carry -1e4 and do not count as classes
    qa = torch.full((2, 10), -1e4)
    qa[:, :4] = 0.0
    assert guidance.target_entropy(qa, 1.0, "softmax") == pytest.approx((1.0, 4.0))
    # per-row temperatures
    h = guidance.target_entropy(torch.tensor([[10.0, 0], [10.0, 0]]), torch.tensor([1.0, 1000.0]), "softmax")[0]
    assert 0.45 < h < 0.55
    assert guidance.target_entropy(torch.zeros(3, 8), 2.0, "sigmoid") == pytest.approx((1.0, 8.0))
    assert guidance.target_entropy(torch.zeros(3, 1), 1.0, None) is None  # KD on logits (regression, mse)


def test_shares_sum_to_one_and_probes_are_spread():
    s = guidance.shares({"a": 3.0, "b": 1.0, "c": 0.0})
    assert s == {"a": 0.75, "b": 0.25, "c": 0.0} and math.isclose(sum(s.values()), 1.0)
    probed, done = [], 0
    for step in range(1, 201, 10):  # the first step of each window of 10
        if guidance.probe_due(step, 200, done):
            probed.append(step)
            done += 1
    assert probed[0] == 1 and len(probed) == guidance.PROBES and probed == sorted(set(probed))
    t = guidance.tally({}, {"a": 3.0, "b": 1.0}, 2, {"a": 3.0, "b": 1.0})
    t = guidance.tally(t, {"a": 1.0, "b": 1.0}, 2, {"a": 1.0, "b": 1.0})
    assert guidance.summary(t) == {"probes": 2, "terms": {"a": {"weighted": 1.0, "grad_share": 0.625},
                                                          "b": {"weighted": 0.5, "grad_share": 0.375}}}


# ---------------------------------------------------------------------------------------------- real runs


def test_flat_kd_recipe_warns_once_and_a_balanced_one_does_not(tmp_path, sure_teacher, data_files, capsys):
    flat = write(tmp_path, sure_teacher, data_files, "flat", distill__temperature=1000, train__max_steps=4)
    run(build_plan(load_recipe(flat)))
    (line,) = warnings_in(capsys.readouterr().err)
    assert "at distill.temperature 1000" in line and "over 2 classes" in line and "Lower distill.temperature" in line
    balanced = write(tmp_path, sure_teacher, data_files, "balanced", train__max_steps=4,
                     distill={"temperature": 1, "hard_label_weight": 1.0})
    run(build_plan(load_recipe(balanced)))
    assert warnings_in(capsys.readouterr().err) == []


def test_gradient_shares_reach_metrics_and_tensorboard(tmp_path, teacher_dir, data_files, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write(tmp_path, teacher_dir, data_files, "out", train__max_steps=6)
    run(build_plan(load_recipe(path)))
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())["loss_terms"]
    terms = report["terms"]
    assert report["probes"] == 4  # windows (2 steps, 5 per epoch) start at steps 1, 3, 5, 6: a probe is due at each
    assert set(terms) == {"kd", "hidden_hidden_mse_0_0", "hidden_hidden_mse_1_1", "hidden_hidden_mse_2_3",
                          "hidden_hidden_mse_3_4"}
    assert math.isclose(sum(t["grad_share"] for t in terms.values()), 1.0, rel_tol=1e-9)
    assert all(t["weighted"] > 0 for t in terms.values())
    assert "gradient share" in capsys.readouterr().err  # the end-of-run table
    events = EventAccumulator(str(tmp_path / "out" / "logs"))
    events.Reload()
    shares = [events.Scalars(f"grad_share/{n}") for n in terms]
    assert [len(s) for s in shares] == [4] * 5 and sum(s[0].value for s in shares) == pytest.approx(1.0)


def test_the_probe_leaves_the_trained_weights_bit_identical(tmp_path, teacher_dir, data_files, monkeypatch):
    path = write(tmp_path, teacher_dir, data_files, "probed", train__max_steps=4, train__grad_accum=2,
                 train__log_every=1, distill={"temperature": 2, "hard_label_weight": 0.5, "matches": [
                     {"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]})
    run(build_plan(load_recipe(path)))
    probed = json.loads((tmp_path / "probed" / "metrics.json").read_text())["loss_terms"]
    assert probed["probes"] == 4
    monkeypatch.setattr(guidance, "PROBES", 0)
    plain = write(tmp_path, teacher_dir, data_files, "plain", train__max_steps=4, train__grad_accum=2,
                  train__log_every=1, distill=yaml.safe_load(path.read_text())["distill"])
    run(build_plan(load_recipe(plain)))
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["loss_terms"]["probes"] == 0
    a, b = load_file(str(tmp_path / "probed" / "model.safetensors")), load_file(str(tmp_path / "plain" /
                                                                                  "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------- memory


def test_memory_estimate_grows_as_the_formula_says(tmp_path, teacher_dir, data_files):
    def est(**changes):
        return memory.estimate(build_plan(load_recipe(write(tmp_path, teacher_dir, data_files, **changes))), "cpu")

    small = est(train__batch_size=8)
    big = est(train__batch_size=16)
    plan = build_plan(load_recipe(write(tmp_path, teacher_dir, data_files)))
    assert small.parts["student weights, gradients, AdamW"] >= 16 * plan.student_params
    assert small.parts["teacher weights"] == 4 * plan.teacher_params
    assert big.parts["activations"] == pytest.approx(2 * small.parts["activations"])  # linear in the batch
    long = est(data__max_length=32)  # the L^2 attention term: more than twice at twice the length
    assert long.parts["activations"] > 2 * est(data__max_length=16).parts["activations"]
    assert small.parts["libraries and data"] == memory.BASELINE and "libraries and data" not in \
        memory.estimate(plan, "cuda").parts
    memory_cache = est(distill__teacher_cache="memory")
    assert memory_cache.parts["teacher cache (memory)"] > 0
    assert memory.estimate(memory_cache_plan := build_plan(load_recipe(write(
        tmp_path, teacher_dir, data_files, distill__teacher_cache="memory"))), "cuda").host  # RAM beside the GPU
    assert memory_cache_plan.cache.mode == "memory"


def test_memory_warning_when_it_cannot_fit(tmp_path, teacher_dir, data_files, capsys, monkeypatch):
    from brewcli.cli import app
    from typer.testing import CliRunner

    path = write(tmp_path, teacher_dir, data_files)
    est = memory.estimate(build_plan(load_recipe(path)), "cpu")
    assert memory.fit_warning(est, est.total * 2) is None and memory.fit_warning(est, None) is None
    line = memory.fit_warning(est, est.total / 2)
    assert "may not fit" in line and "train.batch_size" in line and "data.max_length" in line
    result = CliRunner().invoke(app, ["distill", str(path), "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "GB peak on cpu" in text and "GB RAM free" in text and "may not fit" not in text
    monkeypatch.setattr(memory, "available", lambda device: 1e6)
    result = CliRunner().invoke(app, ["distill", str(path), "--dry-run"])
    assert result.exit_code == 0 and "may not fit" in " ".join(result.output.split())
