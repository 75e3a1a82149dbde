"""General distillation end to end on tiny models: a run on a generated text file (relation presets, scored by its
loss terms on held-out windows, a plain encoder out), `brew eval` on it, and TinyBERT's pipeline as stages
(general, then classification) with a resume interrupted in stage 2."""

import json
import os
import random
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.recipe import load_stages
from tests.conftest import WORDS, base_recipe

runner = CliRunner()
MATCHES = [{"preset": "tinybert"}, {"preset": "minilm-v2", "relation_heads": 4}]


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for split, n in (("train", 160), ("validation", 16)):
        docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]
        (d / f"{split}.txt").write_text("\n\n".join(docs) + "\n")
    return {"train": str(d / "train.txt"), "validation": str(d / "validation.txt")}


def general_recipe(teacher_dir, corpus, out, **train) -> dict:
    return {"task": "general", "teacher": str(teacher_dir), "student": {"preset": "T3-small", "init": "random"},
            "data": {"files": corpus, "max_length": 32}, "distill": {"matches": MATCHES},
            "train": {"output_dir": str(out), "epochs": 2, "batch_size": 16, "lr": 1e-3, "log_every": 5, **train}}


def test_a_general_run_on_a_text_file(teacher_dir, corpus, tmp_path):
    from transformers import AutoModel

    path = tmp_path / "general.yaml"
    path.write_text(yaml.safe_dump(general_recipe(teacher_dir, corpus, tmp_path / "out")))
    r = brew("distill", path)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    history = [h["loss"] for h in metrics["history"]]
    assert len(history) == 2 and history[1] < history[0]  # the held-out terms fall as it trains
    assert metrics["best"] == {"metric": "loss", "value": min(history), "step": metrics["history"][1]["step"]}
    terms = {k for k in metrics["student"] if k.startswith(("hidden_", "scores_", "q_", "k_", "v_"))}
    assert len(terms) == 4 + 3 + 3  # tinybert, 4 -> 3 layers: hidden 0..3 and scores 1..3; minilm-v2: q, k, v
    assert metrics["student"]["loss"] == pytest.approx(min(history), rel=1e-4)  # scored from disk, the best student
    assert "no task metric" in " ".join(r.output.split())
    model = AutoModel.from_pretrained(out)  # a plain encoder, as any Hugging Face script loads it
    assert type(model).__name__ == "BertModel" and (out / "tokenizer_config.json").is_file()
    e = brew("eval", out, "--json")
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["student"]["loss"] == pytest.approx(metrics["student"]["loss"], rel=1e-4)


def staged_recipe(teacher_dir, data_files, corpus, out) -> dict:
    recipe = base_recipe(teacher_dir, data_files, out)
    general = general_recipe(teacher_dir, corpus, out)
    return {**recipe, "train": {**recipe["train"], "max_steps": 3}, "stages": [
        {"name": "general", "task": "general", "data": {**general["data"], "eval_fraction": None, "test_split": None},
         "distill": general["distill"],
         "student": {"preset": "T3-small", "init": "random"}},
        {"name": "intermediate", "distill": {"kd_weight": 0, "matches": [{"preset": "tinybert"}]}},
        {"name": "predictions", "distill": {"kd_weight": 1, "matches": []}, "train": {"max_steps": 4}}]}


def test_general_then_task_stages_resume_in_stage_two(teacher_dir, data_files, corpus, tmp_path, monkeypatch):
    import brewcli.train as train_mod
    from brewcli.stages import plan_stages, run_stages
    from brewcli.stopping import Stopped

    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(staged_recipe(teacher_dir, data_files, corpus, tmp_path / "out"), sort_keys=False))
    out = tmp_path / "out"

    def run(*overrides, resume=False):
        stages = load_stages(path, list(overrides))
        return run_stages(stages, plan_stages(stages), resume=resume)

    with monkeypatch.context() as m:  # Ctrl-C at step 2 of the intermediate stage
        seen, real_job, real_due = [], train_mod.build_job, train_mod._due

        def job(plan, resume=False):
            seen.append(plan.recipe.train.output_dir)
            return real_job(plan, resume)

        def due(every, step, end):
            if step == 2 and seen[-1].endswith("intermediate") and "sent" not in seen:
                seen.append("sent")
                os.kill(os.getpid(), signal.SIGINT)
            return real_due(every, step, end)

        m.setattr(train_mod, "build_job", job)
        m.setattr(train_mod, "_due", due)
        with pytest.raises(Stopped):
            run()
    assert json.loads((out / "general" / "metrics.json").read_text())["task"] == "general"
    assert (out / "intermediate" / "checkpoint-2" / "training_state.json").is_file()
    report = run(resume=True)
    assert [s["name"] for s in report["stages"]] == ["general", "intermediate", "predictions"]
    assert (out / "model.safetensors").is_file()
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 2

    run(f"train.output_dir={tmp_path / 'unbroken'}")
    resumed, full = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "unbroken" / "model.safetensors"))
    assert resumed.keys() == full.keys()
    for k in full:
        assert torch.equal(resumed[k], full[k]), k
