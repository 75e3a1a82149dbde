"""`brew sweep` on a tiny model: a two-point grid and its resume, an Optuna search of three trials, and the bad
inputs, each refused with one message before anything trains."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from brewcli.cli import app

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def said(result, *needles):
    text = " ".join(result.output.split())
    return all(n in text for n in needles)


def test_a_grid_sweep_and_its_resume(recipe_file, tmp_path):
    recipe = recipe_file(train__epochs=1)
    out = tmp_path / "sweep"
    r = brew("sweep", recipe, "distill.temperature=1,4", "--out", out)
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "sweep.json").read_text())
    assert [t["values"] for t in saved["results"]] == [{"distill.temperature": "1"}, {"distill.temperature": "4"}]
    assert all(t["status"] == "done" and 0 <= t["metric"] <= 1 for t in saved["results"])
    for i, t in enumerate(saved["results"]):  # each trial an ordinary run, its metric read from its metrics.json
        metrics = json.loads((out / f"trial-00{i}" / "metrics.json").read_text())
        assert metrics["student"]["accuracy"] == t["metric"]
        assert yaml.safe_load((out / f"trial-00{i}" / "recipe.yaml").read_text())["distill"]["temperature"] == [1, 4][i]
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["distill.temperature"] for r in rows] == ["1", "4"] and rows[0]["status"] == "done"
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["distill"]["temperature"] == [1, 4][saved["best"]]
    assert (out / "trial-000" / "metrics.json").is_file() and "best: trial" in r.output

    # interrupted in trial 1: its folder gone, the state says running; --resume runs trial 1 only
    first = (out / "trial-000" / "metrics.json").stat().st_mtime_ns
    saved["results"][1]["status"] = "running"
    (out / "sweep.json").write_text(json.dumps(saved))
    import shutil

    shutil.rmtree(out / "trial-001")
    r = brew("sweep", recipe, "distill.temperature=1,4", "--out", out)
    assert r.exit_code == 2 and said(r, "holds an earlier sweep", "--resume")
    r = brew("sweep", recipe, "distill.temperature=1,4", "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert "trial 0 " not in r.output.split("sweep ")[0]  # trial 0 not run again
    assert (out / "trial-000" / "metrics.json").stat().st_mtime_ns == first
    assert json.loads((out / "sweep.json").read_text())["results"][1]["status"] == "done"
    r = brew("sweep", recipe, "distill.temperature=1,8", "--out", out, "--resume")
    assert r.exit_code == 2 and said(r, "other keys or values")


def test_an_optuna_search_of_three_trials(recipe_file, tmp_path):
    recipe = recipe_file(train__epochs=1)
    out = tmp_path / "search"
    r = brew("sweep", recipe, "train.lr=1e-4:1e-2:log", "distill.temperature=1:8", "--trials", "3", "--out", out)
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "sweep.json").read_text())
    assert len(saved["results"]) == 3 and all(t["status"] == "done" for t in saved["results"])
    for t in saved["results"]:
        assert 1e-4 <= float(t["values"]["train.lr"]) <= 1e-2
        assert t["values"]["distill.temperature"] in {str(i) for i in range(1, 9)}  # whole-number bounds: integers
    assert len({t["values"]["train.lr"] for t in saved["results"]}) == 3
    r = brew("sweep", recipe, "train.lr=1e-4:1e-2:log", "distill.temperature=1:8", "--trials", "4", "--out", out,
             "--resume")  # one more trial; the three finished ones are told to the study, not rerun
    assert r.exit_code == 0, r.output
    assert len(json.loads((out / "sweep.json").read_text())["results"]) == 4
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-00{i}" for i in range(4)]


@pytest.mark.parametrize("args, needles", [
    (["distill.temperature=1,abc"], ["distill.temperature=abc"]),
    (["train.epochs=1,0"], ["train.epochs=0"]),
    (["train.lr=:1e-3", "--trials", "2"], ["train.lr=:1e-3", "both bounds"]),
    (["train.lr=1e-3:", "--trials", "2"], ["both bounds"]),
    (["train.lr=1e-3:1e-5", "--trials", "2"], ["lower bound must be below"]),
    (["train.lr=0:1e-3:log", "--trials", "2"], ["positive bounds"]),
    (["train.lr=1e-5:1e-3:exp", "--trials", "2"], ["'log'"]),
    (["train.lr=1e-5:1e-3"], ["needs --trials N"]),
    (["distill.temperature=1,2", "--trials", "3"], ["--trials 3 with a grid", "2 points"]),
    (["distill.temprature=1,2"], ["distill.temprature", "temperature"]),
    (["distill.temperature"], ["expected key=v1,v2"]),
    (["train.lr=1e-5:1e-2", "--trials", "0"], ["--trials 0"]),
])
def test_bad_sweeps_fail_before_anything_trains(recipe_file, tmp_path, args, needles, monkeypatch):
    import brewcli.train as train

    monkeypatch.setattr(train, "build_job", lambda *a, **k: pytest.fail("a trial started"))
    r = brew("sweep", recipe_file(), *args, "--out", tmp_path / "s")
    assert r.exit_code == 2 and said(r, *needles), r.output
