"""`stages:`: several training stages in one recipe (TinyBERT's intermediate layers, then predictions). The merge
rule, the bad inputs (one message, exit 2), the dry-run, a two-stage run end to end, and --resume in stage 2."""

import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.errors import RecipeError
from brewcli.recipe import load_recipe, load_stages, merge
from tests.conftest import base_recipe

runner = CliRunner()

TWO = [{"name": "intermediate", "distill": {"kd_weight": 0}},
       {"name": "predictions", "distill": {"kd_weight": 1, "matches": []}, "train": {"lr": 5e-4}}]


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result, " ".join(result.output.split())


@pytest.fixture
def staged(tmp_path, teacher_dir, data_files):
    """Write a recipe with `stages` (default: intermediate, then predictions), 3 steps a stage."""

    def write(stages=TWO, **changes):
        recipe = base_recipe(teacher_dir, data_files, tmp_path / "out", **changes)
        recipe["train"].setdefault("max_steps", 3)
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump({**recipe, "stages": stages}, sort_keys=False))
        return path

    return write


def test_a_stage_changes_only_what_it_names(staged, tmp_path):
    assert merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": 1}
    assert merge({"teacher": "t"}, {"teacher": {"revision": "v1"}}) == {"teacher": {"model": "t", "revision": "v1"}}
    path = staged([{"name": "intermediate", "distill": {"kd_weight": 0}, "data": {"max_length": 12}},
                   {"name": "predictions", "distill": {"kd_weight": 1, "matches": []}, "train": {"epochs": 3},
                    "student": {"config": {"hidden_dropout_prob": 0.0}}}])
    first, second = load_stages(path)
    out = tmp_path / "out"
    assert (first.name, first.index, second.name, second.count) == ("intermediate", 0, "predictions", 2)
    assert first.recipe.distill.kd_weight == 0 and first.recipe.distill.temperature == 2  # the rest of distill stays
    assert first.recipe.distill.matches[0].preset == "uniform" and first.recipe.data.max_length == 12
    assert first.recipe.data.files["train"].endswith("train.csv") and second.recipe.data.max_length == 16
    assert second.recipe.distill.matches == [] and second.recipe.distill.temperature == 2  # a list replaces
    assert second.recipe.train.epochs == 3 and second.recipe.train.lr == 1e-3 and second.recipe.train.batch_size == 8
    assert first.recipe.train.output_dir == str(out / "intermediate")
    assert second.recipe.train.output_dir == str(out / "predictions")
    assert first.recipe.student.preset == "T3-small" and first.recipe.student.init == "random"
    s = second.recipe.student  # the student stage 1 saves, with stage 2's own config keys
    assert (s.model, s.init, s.preset, s.config) == (str(out / "intermediate"), "pretrained", None,
                                                     {"hidden_dropout_prob": 0.0})
    # the command line has the last word in every stage; stages.N.key=value changes one stage
    first, second = load_stages(path, ["train.epochs=1", "stages.1.train.lr=5e-4", f"train.output_dir={tmp_path / 'o'}",
                                       "student.config.attention_probs_dropout_prob=0.0"])
    assert first.recipe.train.epochs == second.recipe.train.epochs == 1
    assert (first.recipe.train.lr, second.recipe.train.lr) == (1e-3, 5e-4)
    assert second.recipe.student.model == first.recipe.train.output_dir == str(tmp_path / "o" / "intermediate")
    assert second.recipe.student.config == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    with pytest.raises(RecipeError, match="runs in stages"):
        load_recipe(path)  # a staged recipe is read as its stages
    raw = yaml.safe_load(path.read_text())
    raw.pop("stages")
    path.write_text(yaml.safe_dump(raw))
    [only] = load_stages(path)  # a recipe without stages: one stage, no name
    assert only.name is None and only.recipe.train.output_dir == str(out)


BAD = {
    "empty": ([], ["stages: the list of stages is empty"]),
    "not a list": ({"name": "a"}, ["stages: expected a list of stages", "got a mapping"]),
    "no name": ([{"distill": {"kd_weight": 0}}], ["stages[0]: has no `name:`"]),
    "same name": ([{"name": "a"}, {"name": "A"}], ["stages[1].name: 'A' also names stages[0]"]),
    "unsafe name": ([{"name": "../up"}], ["stages[0].name: '../up' cannot name a stage's folder"]),
    "brew's folder": ([{"name": "best"}], ["stages[0].name: 'best' cannot name"]),
    "not a section": ([{"name": "a", "distil": {"kd_weight": 0}}],
                      ["stages[0].distil: not a recipe section", "task, teacher, student, data, distill, train",
                       "did you mean 'distill'?"]),
    "bad value": ([{"name": "a"}, {"name": "b", "distill": {"kd_weight": -1}}],
                  ["r.yaml:LINE stages[1].distill.kd_weight: input should be greater than or equal to 0"]),
    "own folder": ([{"name": "a", "train": {"output_dir": "x"}}],
                   ["stages[0].train.output_dir: a stage writes to train.output_dir/NAME"]),
    "other preset": ([{"name": "a"}, {"name": "b", "student": {"preset": "T3"}}],
                     ["stages[1].student.preset: stage 'b' starts from the previous stage's student"]),
    "other shape": ([{"name": "a"}, {"name": "b", "student": {"config": {"hidden_size": 32}}}],  # found at plan time
                    [("stages[1].student.config.hidden_size: changes the student's shape (hidden_size 16 -> 32), but "
                      "this stage starts from the previous stage's student")]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_stages_are_one_message(staged, tmp_path, case):
    stages, needles = BAD[case]
    path = staged(stages)
    line = next((i for i, text in enumerate(path.read_text().splitlines(), 1) if "kd_weight: -1" in text), None)
    result, text = brew("distill", path, "--dry-run")
    assert result.exit_code == 2, text
    assert text.count("error") == 1 and "problem(s)" not in text, text
    for needle in needles:
        assert needle.replace("LINE", str(line)) in text, text
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_every_stage(staged, tmp_path):
    result, text = brew("distill", staged(), "--dry-run")
    assert result.exit_code == 0, text
    text = " ".join(text.replace("│", " ").split())  # the plan's table cells
    assert "brew plan: tiny, stage 1/2: intermediate" in text and "brew plan: tiny, stage 2/2: predictions" in text
    out = tmp_path / "out"
    assert f"student {out / 'intermediate'}, init pretrained" in text  # stage 2 starts from stage 1's student
    assert f"output {out / 'intermediate'}" in text and f"output {out / 'predictions'}" in text
    assert "lr 0.001 linear" in text and "lr 0.0005 linear" in text
    assert not out.exists()


def test_two_stages_end_to_end(staged, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    import brewcli.train as train_mod

    started = {}
    real = train_mod.build_models

    def build(plan, device=None):
        teachers, student = real(plan, device)
        started[plan.recipe.train.output_dir] = {k: v.clone() for k, v in student.state_dict().items()}
        return teachers, student

    monkeypatch.setattr(train_mod, "build_models", build)
    result, text = brew("distill", staged())
    assert result.exit_code == 0, text
    out = tmp_path / "out"
    assert "stage 1/2: intermediate" in text and "stage 2/2: predictions" in text and f"brew eval {out}" in text
    for name in ("intermediate", "predictions"):
        folder = out / name
        assert (folder / "metrics.json").is_file() and (folder / "best").is_dir() and (folder / "logs").is_dir()
        assert (folder / "checkpoint-3" / "training_state.json").is_file()
    # stage 2 started from the student stage 1 published
    saved = load_file(str(out / "intermediate" / "model.safetensors"))
    begun = started[str(out / "predictions")]
    assert all(torch.equal(saved[k], begun[k]) for k in saved) and len(saved) > 10
    assert yaml.safe_load((out / "predictions" / "recipe.yaml").read_text())["student"]["model"] == \
        str(out / "intermediate")
    # the top is the last stage's student, a plain transformers checkpoint
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 3 and model.config.id2label == {0: "neg", 1: "pos"}
    top, last = load_file(str(out / "model.safetensors")), load_file(str(out / "predictions" / "model.safetensors"))
    assert all(torch.equal(top[k], last[k]) for k in last)
    assert (out / "recipe.yaml").read_text() == (out / "predictions" / "recipe.yaml").read_text()
    assert not (out / "projections.safetensors").exists()  # stage 2 has no matches
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["stages"]] == ["intermediate", "predictions"]
    assert [s["output_dir"] for s in metrics["stages"]] == [str(out / "intermediate"), str(out / "predictions")]
    assert all(s["steps"] == 3 and s["best"]["metric"] == "accuracy" and "accuracy" in s["metrics"]
               for s in metrics["stages"])
    assert metrics["student"]["accuracy"] == metrics["stages"][1]["metrics"]["accuracy"]

    result, text = brew("eval", out)
    assert result.exit_code == 0, text
    assert "trained in 2 stages: intermediate (best accuracy" in text and "-> predictions (best accuracy" in text
    result, _ = brew("eval", out, "--json", "--no-teacher")
    assert [s["name"] for s in json.loads(result.stdout)["stages"]] == ["intermediate", "predictions"]

    result, text = brew("distill", staged())  # without --resume: refused, naming the stage's folder
    assert result.exit_code == 2 and f"{out / 'intermediate'} already holds checkpoints" in text, text


def test_resume_in_the_second_stage_ends_on_the_unbroken_weights(staged, tmp_path, monkeypatch, capsys):
    import brewcli.train as train_mod
    from brewcli.stages import plan_stages, run_stages
    from brewcli.stopping import Stopped

    path = staged([TWO[0], {**TWO[1], "train": {"lr": 5e-4, "max_steps": 4}}])
    out = tmp_path / "out"

    def run(*overrides, resume=False):
        stages = load_stages(path, list(overrides))
        return run_stages(stages, plan_stages(stages), resume=resume)

    with monkeypatch.context() as m:  # Ctrl-C while step 2 of stage 2 is being wrapped up
        current, real_job, real_due = [], train_mod.build_job, train_mod._due

        def job(plan, resume=False):
            current.append(plan.recipe.train.output_dir)
            return real_job(plan, resume)

        def due(every, step, end):
            if step == 2 and current[-1].endswith("predictions") and len(current) == 2:
                current.append("sent")
                os.kill(os.getpid(), signal.SIGINT)
            return real_due(every, step, end)

        m.setattr(train_mod, "build_job", job)
        m.setattr(train_mod, "_due", due)
        with pytest.raises(Stopped):
            run()
    assert (out / "intermediate" / "metrics.json").is_file()  # the finished stage is kept as it was
    assert (out / "predictions" / "checkpoint-2" / "training_state.json").is_file()
    assert not (out / "predictions" / "metrics.json").exists() and not (out / "model.safetensors").exists()
    stage1 = (out / "intermediate" / "model.safetensors").read_bytes()
    capsys.readouterr()
    report = run(resume=True)
    err = " ".join(capsys.readouterr().err.split())
    assert f"stage 1/2: intermediate: finished earlier ({out / 'intermediate' / 'metrics.json'}); skipped" in err
    assert "stage 2/2: predictions" in err and "resumed from" in err and "at step 2/4" in err
    assert (out / "intermediate" / "model.safetensors").read_bytes() == stage1
    assert [s["steps"] for s in report["stages"]] == [3, 4]

    run(f"train.output_dir={tmp_path / 'unbroken'}")
    for name in ("predictions/checkpoint-4/model.safetensors", "predictions/checkpoint-4/training_state.safetensors",
                 "model.safetensors"):
        resumed, full = load_file(str(out / name)), load_file(str(tmp_path / "unbroken" / name))
        assert resumed.keys() == full.keys() and len(full) > 10
        for k in full:
            assert torch.equal(resumed[k], full[k]), (name, k)


def test_brew_train_runs_stages(staged, teacher_dir, tmp_path):
    stages = [{"name": "warm", "train": {"lr": 1e-3}}, {"name": "cool", "train": {"lr": 1e-4}}]
    path = staged(stages, teacher=None, distill=None, student={"model": str(teacher_dir)})
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}, sort_keys=False))
    result, text = brew("train", path, "train.max_steps=2")
    assert result.exit_code == 0, text
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [(s["name"], s["steps"]) for s in metrics["stages"]] == [("warm", 2), ("cool", 2)]
    assert "teacher" not in metrics and (tmp_path / "out" / "model.safetensors").is_file()
    raw["stages"][1]["teacher"] = str(teacher_dir)
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}, sort_keys=False))
    result, text = brew("train", path, "--dry-run")
    assert result.exit_code == 2 and "stages[1].teacher: brew train fine-tunes one model" in text, text


def test_init_writes_a_two_stage_recipe(tmp_path, teacher_dir, data_files):
    out = tmp_path / "s.yaml"
    result, text = brew("init", "--stages", "--teacher", teacher_dir, "--student", "T4-tiny", "--data",
                        data_files["train"], "--out", out)
    assert result.exit_code == 0, text
    body = out.read_text()
    assert "stages:" in body and "- name: intermediate" in body and "- name: predictions" in body
    assert "General distillation" in body and "in two stages" in body
    first, second = load_stages(out)
    assert first.recipe.distill.kd_weight == 0 and first.recipe.distill.matches[0].loss == "hidden_mse"
    assert second.recipe.distill.kd_weight == 1 and second.recipe.distill.matches == []
    result, text = brew("init", "--stages", "--train", "--model", teacher_dir, "--data", data_files["train"],
                        "--out", tmp_path / "t.yaml")
    assert result.exit_code == 2 and "--stages writes a distillation recipe" in text, text
