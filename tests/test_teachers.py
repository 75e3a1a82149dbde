"""Several teachers: the ensemble target against hand-computed values, label orders, matches that name their
teacher, one cache entry per teacher, the report of each teacher and the ensemble, and bad teacher lists."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from brewcli.batch import Batch, Features
from brewcli.cli import app
from brewcli.objective import build_objective, ensemble_target
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import run
from tests.conftest import base_recipe, make_model_dir

runner = CliRunner()


def test_ensemble_target_by_hand():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # probabilities at T=2: softmax([1, 0]) = [0.7311, 0.2689]; softmax([0, 1]) reversed; weights 1:3
    target = ensemble_target([a, b], [1.0, 3.0], 2.0, "softmax")
    mixed = 0.25 * torch.tensor([0.7311, 0.2689]) + 0.75 * torch.tensor([0.2689, 0.7311])
    assert torch.allclose(torch.softmax(target / 2.0, -1), mixed, atol=1e-4)
    assert torch.allclose(ensemble_target([a, b], [1.0, 3.0], 2.0, None), torch.tensor([[0.5, 1.5]]))
    target = ensemble_target([a, b], [1.0, 1.0], 1.0, "sigmoid")
    expected = 0.5 * (torch.sigmoid(a) + torch.sigmoid(b))  # [0.5 (0.8808 + 0.5), ...] = [0.6904, 0.6904]
    assert torch.allclose(torch.sigmoid(target), expected, atol=1e-5)
    assert torch.allclose(torch.sigmoid(target), torch.tensor([[0.6904, 0.6904]]), atol=1e-4)
    # a per-example temperature, and one teacher passes through unchanged
    target = ensemble_target([a.repeat(2, 1), b.repeat(2, 1)], [1.0, 1.0], torch.tensor([1.0, 4.0]), "softmax")
    assert torch.allclose(torch.softmax(target[1] / 4.0, -1), torch.tensor([0.5, 0.5]), atol=1e-6)
    assert ensemble_target([a], [5.0], 3.0, "softmax") is a


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory):
    """A smaller teacher of the same tokenizer, with its labels in the other order."""
    return make_model_dir(tmp_path_factory.mktemp("t2") / "teacher-b", layers=2, hidden=24, heads=4,
                          labels=("pos", "neg"), seed=1)


def write(tmp_path, recipe: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def two_teachers(teacher_dir, second_teacher, data_files, out, **distill):
    r = base_recipe(teacher_dir, data_files, out)
    r["teacher"] = [{"model": str(teacher_dir), "name": "big", "weight": 2.0},
                    {"model": str(second_teacher), "name": "small"}]
    r["distill"]["matches"].append({"teacher_layer": 2, "student_layer": 3, "teacher": "small"})
    r["distill"].update(distill)
    r["train"]["max_steps"] = 4
    return r


def test_two_teachers_distill(tmp_path, teacher_dir, second_teacher, data_files, monkeypatch):
    monkeypatch.setenv("BREW_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path, two_teachers(teacher_dir, second_teacher, data_files, tmp_path / "out"))
    plan = build_plan(load_recipe(path))
    big, small = plan.teachers
    assert (big.name, small.name, big.label_order, small.label_order) == ("big", "small", None, [1, 0])
    assert [m.teacher for m in plan.matches] == ["big"] * 4 + ["small"]
    assert plan.matches[-1].teacher_width == 24  # its own projection: 16 -> 24
    objective = build_objective(plan)
    assert objective.teacher_needs["small"].hidden == {2} and objective.teacher_needs["small"].logits
    assert objective.teacher_needs["big"].hidden == {0, 1, 3, 4}
    assert tuple(objective.projections["4"].weight.shape) == (24, 16)
    # the KD target puts the second teacher's logits in the first one's label order
    kd = objective.terms[0]
    z = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    mask = torch.ones(2, 3, dtype=torch.long)
    batch = Batch({"attention_mask": mask}, {"labels": torch.tensor([0, 1])}, torch.arange(2))
    s = Features(mask, logits=torch.zeros(2, 2))
    value = kd(batch, s, {"big": Features(mask, logits=z), "small": Features(mask, logits=z.flip(-1))})
    expected = -(torch.softmax(z / 2, -1) * torch.log_softmax(torch.zeros(2, 2), -1)).sum(-1).mean()
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)

    report = run(plan)
    assert set(report["teachers"]) == {"big", "small"} and "teacher" in report
    main = report["student"]["accuracy"]
    assert report["retained_pct"] == pytest.approx(100 * main / report["teacher"]["accuracy"], abs=0.01)
    assert report["teacher"]["params"] == report["teachers"]["big"]["params"] + report["teachers"]["small"]["params"]
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 2  # one cache entry per teacher
    meta = json.loads((tmp_path / "out" / "brew.json").read_text())
    assert [t["name"] for t in meta["teachers"]] == ["big", "small"] and meta["teachers"][1]["label_order"] == [1, 0]

    result = runner.invoke(app, ["eval", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert set(evaluated["teachers"]) == {"big", "small"}
    assert evaluated["teacher"]["accuracy"] == pytest.approx(report["teacher"]["accuracy"])
    text = " ".join(runner.invoke(app, ["eval", str(tmp_path / "out")]).output.split())
    assert "teacher big" in text and "teacher small" in text and "ensemble" in text


def test_logit_ensemble_and_a_zero_weight_teacher(tmp_path, teacher_dir, second_teacher, data_files):
    r = two_teachers(teacher_dir, second_teacher, data_files, tmp_path / "out", ensemble="logits")
    r["teacher"][1]["weight"] = 0  # used by its match only: its logits are not read
    plan = build_plan(load_recipe(write(tmp_path, r)))
    objective = build_objective(plan)
    assert not objective.teacher_needs["small"].logits and objective.teacher_needs["big"].logits
    assert objective.terms[0].mix is None


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, " ".join((result.output or "").split())


def test_bad_teacher_lists(tmp_path, teacher_dir, second_teacher, data_files):
    base = lambda: two_teachers(teacher_dir, second_teacher, data_files, tmp_path / "out")  # noqa: E731
    r = base()
    r["teacher"][1]["name"] = "big"
    result, text = brew("distill", write(tmp_path, r), "--dry-run")
    assert result.exit_code == 2 and "two teachers are named 'big'" in text
    r = base()
    r["distill"]["matches"][-1]["teacher"] = "smal"
    result, text = brew("distill", write(tmp_path, r), "--dry-run")
    assert result.exit_code == 2 and "distill.matches[1].teacher: no teacher is named 'smal'" in text
    assert "did you mean 'small'?" in text
    r = base()
    for t in r["teacher"]:
        t["weight"] = 0
    result, text = brew("distill", write(tmp_path, r), "--dry-run")
    assert result.exit_code == 2 and "weights add up to 0" in text
    other = make_model_dir(tmp_path / "teacher-c", layers=2, hidden=24, heads=4, labels=("neg", "meh"))
    r = base()
    r["teacher"][1]["model"] = str(other)
    result, text = brew("distill", write(tmp_path, r), "--dry-run")
    assert result.exit_code == 2 and "teacher[1]: predicts labels ['meh']" in text and "Traceback" not in text
    r = base()
    r["teacher"] = []
    result, text = brew("distill", write(tmp_path, r), "--dry-run")
    assert result.exit_code == 2 and "list of teachers is empty" in text
    result, text = brew("distill", write(tmp_path, base()), "--dry-run")
    assert result.exit_code == 0 and "teacher small" in text and "labels reordered" in text
