"""Failures during a run: a loss that stops being finite, and an unexpected exception. Each ends with one
message and a non-zero exit, never a traceback on the terminal, and never a bad or lost checkpoint."""

import os
import re

import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from brewcli.cli import app

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result, " ".join(result.output.split())


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(recipe_file, tmp_path):
    result, text = brew("distill", recipe_file(), "train.lr=1e25", "train.save_every=1", "train.max_grad_norm=null")
    assert result.exit_code == 2, text
    assert "training stopped at step" in text and "is not a finite number" in text and "kd nan" in text
    out = tmp_path / "out"
    kept = sorted(out.glob("checkpoint-*"))
    assert kept and f"the last good checkpoint, {kept[-1]}, is kept" in text
    step = int(text.split("training stopped at step ")[1].split(":")[0])
    assert int(kept[-1].name.split("-")[1]) == step - 1  # nothing of the bad step was written
    assert all(torch.isfinite(w).all() for w in load_file(str(kept[-1] / "model.safetensors")).values())
    assert not (out / "model.safetensors").exists()  # no final model was published


def test_nan_teacher_stops_at_step_one(recipe_file, teacher_dir, tmp_path):
    import shutil

    broken = tmp_path / "nan-teacher"
    shutil.copytree(teacher_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights = {k: torch.full_like(v, float("nan")) if "classifier" in k else v for k, v in weights.items()}
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    result, text = brew("distill", recipe_file(teacher=str(broken)))
    assert result.exit_code == 2, text
    assert "training stopped at step 1: the loss is not a finite number (kd nan" in text
    assert "no checkpoint had been saved yet" in text
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_unexpected_error_names_the_stage_and_writes_the_traceback(recipe_file, tmp_path, monkeypatch):
    import brewcli.train

    def broken_build(plan, device=None):
        raise RuntimeError("boom inside brew")

    monkeypatch.setattr(brewcli.train, "build_models", broken_build)
    result, text = brew("distill", recipe_file())
    assert result.exit_code == 1, text
    assert ("brew stopped while loading the teacher and building the student: RuntimeError: boom inside brew"
            in text)
    logs = list((tmp_path / "out").glob("brew-error-*.log"))
    assert len(logs) == 1 and re.fullmatch(rf"brew-error-\d{{8}}-\d{{6}}-{os.getpid()}\.log", logs[0].name), logs
    log = logs[0]
    assert f"the full traceback is in {log}" in text and "please report it" in text
    assert "Traceback" in log.read_text() and "broken_build" in log.read_text()
    # a second crash in the same second keeps the first log: every log has a name of its own
    assert brew("distill", recipe_file())[0].exit_code == 1
    assert len(set((tmp_path / "out").glob("brew-error-*.log"))) == 2 and "broken_build" in log.read_text()


def test_crash_logs_before_the_output_folder_exists_do_not_overwrite_each_other(monkeypatch, tmp_path):
    import tempfile

    import brewcli.recipe

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken_load(*a, **k):
        raise RuntimeError("boom while reading")

    monkeypatch.setattr(brewcli.recipe, "load_recipe", broken_load)
    for _ in range(3):
        result, text = brew("distill", tmp_path / "any.yaml")
        assert result.exit_code == 1 and "brew stopped while reading the recipe" in text, text
    logs = sorted(tmp_path.glob("brew-error-*.log"))
    assert len(logs) == 3 and all("boom while reading" in p.read_text() for p in logs), logs


def test_resume_refuses_a_changed_student_or_a_damaged_checkpoint(recipe_file, tmp_path):
    recipe = recipe_file()
    result, text = brew("distill", recipe, "train.max_steps=2", "train.save_every=1")
    assert result.exit_code == 0, text
    result, text = brew("distill", recipe, "--resume", "student.preset=T3", "train.max_steps=4")
    assert result.exit_code == 2 and "differs from the one this recipe builds (hidden_size 16 -> 32" in text, text
    (tmp_path / "out" / "checkpoint-2" / "training_state.json").write_text("garbage")
    result, text = brew("distill", recipe, "--resume", "train.max_steps=4")
    assert result.exit_code == 2 and "checkpoint-2/training_state.json cannot be read" in text, text
    assert "to resume from checkpoint-1" in text, text
    assert (tmp_path / "out" / "checkpoint-1").is_dir()  # the older checkpoint is untouched
