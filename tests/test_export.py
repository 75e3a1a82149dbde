"""`brew export` on tiny models of every task: the ONNX outputs match PyTorch, int8 runs, `brew eval` scores each
export with the task's own metric beside its PyTorch student, and the bad inputs fail with one message."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from typer.testing import CliRunner

from brewcli.cli import app
from tests.conftest import WORDS
from tests.test_tasks import recipe_for

runner = CliRunner()
HEADED = ["classification", "regression", "token-classification", "question-answering", "multi-label"]


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run per task, shared by the tests of this module (each export writes its own folder)."""
    runs = {}

    def get(name):
        if name not in runs:
            tmp = tmp_path_factory.mktemp(name)
            r = brew("distill", recipe_for(name, tmp))
            assert r.exit_code == 0, r.output
            runs[name] = tmp / "out"
        return runs[name]

    return get


@pytest.mark.parametrize("name", HEADED)
def test_export_matches_pytorch_and_scores_like_it(name, trained):
    run = trained(name)
    r = brew("export", run)
    assert r.exit_code == 0, r.output
    manifest = json.loads((run / "onnx" / "export.json").read_text())
    assert manifest["task"] == name and manifest["precision"] == "fp32" and manifest["opset"] == 18
    assert manifest["relative_difference"] < 1e-5 and manifest["checked_rows"] > 0
    assert {"model.onnx", "config.json", "recipe.yaml", "tokenizer.json"} <= {p.name for p in (run / "onnx").iterdir()}
    pytorch = json.loads(brew("eval", run, "--json").stdout)
    exported = json.loads(brew("eval", run / "onnx", "--json").stdout)
    main = _main(name)
    assert exported["student"][main] == pytest.approx(pytorch["student"][main], rel=1e-4)  # the same post-processing
    assert exported["pytorch"][main] == pytest.approx(pytorch["student"][main], rel=1e-6)
    assert exported["pytorch_delta"] == pytest.approx(0, abs=1e-3) and exported["export"]["precision"] == "fp32"
    assert exported["student"]["params"] == pytorch["student"]["params"]
    assert exported["teacher"][main] == pytest.approx(pytorch["teacher"][main])


def _main(name):
    from brewcli.tasks import TASKS

    return TASKS.get(name).main_metric


@pytest.mark.parametrize("name", ["classification", "question-answering"])
def test_int8_export_runs_and_is_scored(name, trained):
    run = trained(name)
    # a tiny random 32-wide model quantizes coarsely (QA's span logits drift 18% with this machine's library
    # versions, under 15% with earlier sessions'): the tolerance here says the export runs and stays close; the
    # real int8 figures are scripts/bench_export.py's (README: Export)
    r = brew("export", run, "--quantize", "int8", "--tolerance", "0.3")
    assert r.exit_code == 0, r.output
    manifest = json.loads((run / "onnx-int8" / "export.json").read_text())
    assert manifest["precision"] == "int8" and manifest["per_channel"] is True
    assert 0 < manifest["relative_difference"] < 0.3  # quantized: close, not equal
    r = brew("eval", run / "onnx-int8")
    assert r.exit_code == 0, r.output
    assert "student (int8 ONNX)" in r.output and "student (PyTorch)" in r.output
    report = json.loads(brew("eval", run / "onnx-int8", "--json").stdout)
    assert report["speedup_vs_pytorch"] > 0 and report["student"]["size_bytes"] > 0


def test_a_general_student_exports(teacher_dir, tmp_path):
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(40)]
    (tmp_path / "train.txt").write_text("\n\n".join(docs) + "\n")
    recipe = {"task": "general", "teacher": str(teacher_dir), "student": {"preset": "T3-small", "init": "random"},
              "data": {"files": {"train": str(tmp_path / "train.txt")}, "max_length": 16, "eval_fraction": 0.2},
              "distill": {"matches": [{"preset": "tinybert"}]},
              "train": {"output_dir": str(tmp_path / "out"), "epochs": 1, "batch_size": 8}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(recipe))
    assert brew("distill", tmp_path / "g.yaml").exit_code == 0
    r = brew("export", tmp_path / "out")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "out" / "onnx" / "export.json").read_text())
    assert manifest["outputs"] == ["last_hidden_state"] and manifest["relative_difference"] < 1e-5
    r = brew("eval", tmp_path / "out" / "onnx")
    assert r.exit_code == 2 and "general" in r.output and "no task metric" in " ".join(r.output.split())


@pytest.fixture
def a_run(trained):
    return trained("classification")


@pytest.mark.parametrize("args, needles", [
    (["--quantize", "fp16"], ["--quantize fp16", "int8"]),
    (["--quantize", "int"], ["did you mean int8"]),
    (["--opset", "17"], ["--opset 17", "18 to 23", "nearest: 18"]),
    (["--opset", "30"], ["nearest: 23"]),
    (["--tolerance", "0"], ["--tolerance 0", "positive"]),
])
def test_bad_export_options_fail_before_any_model_loads(a_run, args, needles, monkeypatch):
    import brewcli.evaluate as evaluate

    monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    r = brew("export", a_run, *args)
    assert r.exit_code == 2 and all(n in " ".join(r.output.split()) for n in needles), r.output


def test_bad_export_folders(a_run, tmp_path, teacher_dir):
    r = brew("export", tmp_path / "nowhere")
    assert r.exit_code == 2 and "no such folder" in r.output
    r = brew("export", teacher_dir)  # a model folder brew did not write
    assert r.exit_code == 2 and "recipe.yaml" in r.output
    (tmp_path / "taken").mkdir()
    r = brew("export", a_run, "--out", tmp_path / "taken")
    assert r.exit_code == 2 and "exists" in r.output
    assert brew("export", a_run, "--out", tmp_path / "x").exit_code == 0
    r = brew("export", tmp_path / "x")
    assert r.exit_code == 2 and "already an export" in " ".join(r.output.split())
    (tmp_path / "x" / "export.json").write_text("{not json")
    r = brew("eval", tmp_path / "x")
    assert r.exit_code == 2 and "export.json is damaged" in " ".join(r.output.split())


def test_an_export_that_drifts_past_the_tolerance_is_refused(a_run, tmp_path):
    out = tmp_path / "int8"
    r = brew("export", a_run, "--quantize", "int8", "--tolerance", "1e-9", "--out", out)
    assert r.exit_code == 2 and "past the tolerance" in " ".join(r.output.split()) and not out.exists()
    assert not (tmp_path / "int8.partial").exists()


def test_without_the_export_extra_brew_says_what_to_install(a_run, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    r = brew("export", a_run, "--out", a_run.parent / "never")
    assert r.exit_code == 2 and "pip install 'brewcli[export]'" in " ".join(r.output.split())
