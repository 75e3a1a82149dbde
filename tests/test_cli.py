"""End to end through the command line, as a user runs it: brew init -> brew distill -> brew eval."""

import json

from typer.testing import CliRunner

from brewcli.cli import app

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_init_distill_eval(tmp_path, teacher_dir, data_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "my.yaml"
    r = brew("init", "--task", "classification", "--teacher", teacher_dir, "--student", "T3-small",
             "--data", data_files["train"], "--out", recipe)
    assert r.exit_code == 0, r.output
    text = recipe.read_text()
    assert "# brew recipe" in text and "preset: T3-small" in text and "eval_fraction: 0.1" in text
    r = brew("init", "--task", "classification", "--teacher", teacher_dir, "--student", "T3", "--data", data_files["train"],
             "--out", recipe)
    assert r.exit_code == 2 and "exists; pass --force" in r.output

    r = brew("distill", recipe, "train.epochs=2", "train.batch_size=8", "data.max_length=16", "train.lr=1e-3")
    assert r.exit_code == 0, r.output
    out = tmp_path / "runs" / "my"
    assert "student keeps" in r.output and f"brew eval {out.relative_to(tmp_path)}" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["steps"] == 12  # 43 train rows / 8 = 6 steps x 2 epochs
    assert metrics["rows"] == 16  # test.csv beside train.csv is the test split

    r = brew("eval", out, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["split"] == "test" and report["rows"] == 16
    assert set(report) - {"checkpoint"} <= set(metrics)  # one report: metrics.json holds the same keys
    assert report["student"]["accuracy"] == metrics["student"]["accuracy"]  # same split, same model, same score
    assert report["teacher"]["accuracy"] == metrics["teacher"]["accuracy"]
    assert report["student"]["params"] < report["teacher"]["params"] and report["size_ratio"] < 1
    assert report["student"]["latency_ms"] > 0 and report["speedup"] >= 0 and report["student"]["size_bytes"] > 10_000
    assert report["timing_rounds"] == 20

    r = brew("eval", out / "best", "--data", data_files["test"], "--no-teacher", "--timing-rounds", "0")
    flat = " ".join(r.output.split())
    assert r.exit_code == 0 and "on test.csv (16 rows" in flat and "accuracy" in r.output
    assert "speed: not timed" in flat and "timing the student" not in flat
    r = brew("eval", out, "--split", "eval", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == 5  # the 10% held out from train.csv


def test_init_without_a_terminal_needs_the_required_flags(tmp_path):
    r = brew("init", "--out", tmp_path / "r.yaml")
    assert r.exit_code == 2 and "--data is required" in r.output


def test_init_rejects_unknown_student(tmp_path, data_files):
    r = brew("init", "--teacher", "x", "--student", "T5", "--data", data_files["train"], "--out", tmp_path / "r.yaml")
    assert r.exit_code == 2 and "not a known student" in r.output


def test_ls():
    r = brew("ls")
    assert r.exit_code == 0
    for name in ("T4-tiny", "L4t_hidden_mse", "uniform", "attention_ce_mean", "mmd (alias nst)", "flsw",
                 "linear_decay", "cosine", "classification", "regression"):
        assert name in r.output, name
    r = brew("ls", "loses")
    assert r.exit_code == 2 and "did you mean 'losses'?" in r.output
    r = brew("ls", "students")
    assert "T12-nano" in r.output and "hidden_mse" not in r.output


def test_eval_of_a_folder_that_is_not_a_checkpoint(tmp_path):
    r = brew("eval", tmp_path)
    assert r.exit_code == 2 and "not a model folder" in r.output


def test_init_asks_for_what_the_flags_leave_out(tmp_path, teacher_dir, data_files, monkeypatch):
    import brewcli.cli as cli

    monkeypatch.setattr(cli, "_interactive", lambda: True)
    monkeypatch.chdir(tmp_path)
    answers = "\n".join(["asked.yaml", data_files["train"], "regression", str(teacher_dir), "T4-tiny"]) + "\n"
    r = runner.invoke(app, ["init"], input=answers)
    assert r.exit_code == 0, r.output
    assert "Task (classification, regression, multi-label, token-classification, question-answering, general, " \
        "sentence-embedding, causal-lm)" in " ".join(r.output.split()) and "Student preset" in r.output
    text = (tmp_path / "asked.yaml").read_text()
    assert "task: regression" in text and "auto: mse for regression" in text and "preset: T4-tiny" in text
    assert "Task (classification, " in r.output and "[classification]" in r.output  # proposed from the data
