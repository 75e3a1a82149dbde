"""The training loop on tiny models: outputs, exact resume, interrupts, attention matches, initialisation."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from brewcli.errors import BrewError
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import build_models, run


def plan_for(path, *overrides):
    return build_plan(load_recipe(path, list(overrides)))


def test_teacher_is_frozen_and_layers_are_copied(recipe_file):
    plan = plan_for(recipe_file(student={"preset": "T3", "teacher_layers": [0, 2, 3]}))
    assert plan.init == "teacher-layers" and plan.init_layers == [0, 2, 3]
    teachers, student = build_models(plan)
    teacher = teachers["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for s_idx, t_idx in enumerate([0, 2, 3]):
        s = student.bert.encoder.layer[s_idx].attention.self.query.weight
        t = teacher.bert.encoder.layer[t_idx].attention.self.query.weight
        assert torch.equal(s, t)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_a_cpu_student_trains_with_the_eager_kernel_and_saves_none(recipe_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    plan = plan_for(recipe_file(student={"preset": "T3", "config": {"attention_probs_dropout_prob": 0.1}}))
    assert build_models(plan, "cpu")[1].config._attn_implementation == "eager"  # dropout inside attention, on CPU
    assert build_models(plan, "cuda")[1].config._attn_implementation == "sdpa"  # CUDA's SDPA kernels do dropout
    no_dropout = plan_for(recipe_file(student={"preset": "T3", "config": {"attention_probs_dropout_prob": 0.0}}))
    _, student = build_models(no_dropout, "cpu")
    assert student.config._attn_implementation == "sdpa"
    _, student = build_models(plan, "cpu")
    student.save_pretrained(tmp_path / "saved")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").config._attn_implementation == "sdpa"


def test_uniform_layer_choice():
    from brewcli.models.students import teacher_layers

    assert teacher_layers("uniform", 12, 6) == [1, 3, 5, 7, 9, 11]
    assert teacher_layers("uniform", 6, 3) == [1, 3, 5]
    assert teacher_layers("first", 12, 3) == [0, 1, 2] and teacher_layers("last", 12, 3) == [9, 10, 11]
    assert teacher_layers([0, 2, 4, 7, 9, 11], 12, 6) == [0, 2, 4, 7, 9, 11]


def test_presets_have_textbrewer_sizes_for_bert_base():
    from transformers import BertConfig

    from brewcli.models.arch import ARCHS
    from brewcli.models.students import student_config

    base = BertConfig(vocab_size=28996)  # BERT-base-cased
    expected = {"T6": (6, 768, 3072, 65e6), "T3": (3, 768, 3072, 44e6), "T3-small": (3, 384, 1536, 17e6),
                "T4-tiny": (4, 312, 1200, 14e6), "T12-nano": (12, 256, 1024, 17e6)}
    for name, (layers, hidden, ffn, params) in expected.items():
        cfg = student_config(base, name, {})
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (layers, hidden, ffn)
        n = sum(p.numel() for p in ARCHS.get("hf").meta(cfg, "sequence").parameters())
        assert n == pytest.approx(params, rel=0.08), name  # TextBrewer's README counts


def test_distill_run_writes_standard_outputs(recipe_file, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    report = run(plan_for(recipe_file()))
    out = tmp_path / "out"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 16
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert AutoTokenizer.from_pretrained(out)("good movie")["input_ids"][1] == 5  # "good" is id 5
    assert (out / "model.safetensors").exists() and (out / "recipe.yaml").exists()
    proj = load_file(str(out / "projections.safetensors"))  # 16 -> 32 projections for 4 hidden matches
    assert {k: tuple(v.shape) for k, v in proj.items() if k.endswith("weight")} == {
        f"{i}.weight": (32, 16) for i in range(4)}
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    assert (out / "best" / "model.safetensors").exists() and list((out / "logs").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 10 and metrics["split"] == "test"
    assert 0 <= metrics["student"]["accuracy"] <= 1 and 0 <= metrics["teacher"]["accuracy"] <= 1
    assert metrics["student"]["params"] < metrics["teacher"].get("params", 10**9)
    assert [h["step"] for h in metrics["history"]] == [5, 10]
    assert report["retained_pct"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/total", "loss/kd", "weighted/kd", "loss/hidden_hidden_mse_3_4", "train/lr",
            "train/lr_projections", "eval/accuracy"} <= tags
    kd = [e.value for e in events.Scalars("loss/hidden_hidden_mse_3_4")]
    assert kd[-1] < kd[0]  # the student moves towards the teacher


def test_refuses_to_overwrite_and_resume_is_exact(recipe_file, tmp_path, capsys):
    path = recipe_file(train__save_every=2, train__keep_checkpoints=5, train__max_steps=4, train__eval_every=2)
    out = tmp_path / "out"
    run(plan_for(path))
    full = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    with pytest.raises(BrewError, match="already holds checkpoints"):
        run(plan_for(path))
    shutil.rmtree(out / "checkpoint-4")
    capsys.readouterr()
    run(plan_for(path, "train.log_every=1"), resume=True)
    assert "recipe differs from the checkpoint's in: train.log_every" in " ".join(capsys.readouterr().err.split())
    resumed = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [2, 4]  # history survives the resume


def test_interrupt_saves_a_checkpoint(recipe_file, tmp_path, monkeypatch):
    import os
    import signal

    import brewcli.train as train_mod
    from brewcli.stopping import Stopped

    real_due, sent = train_mod._due, []

    def due(every, step, end):  # Ctrl-C (a real SIGINT) while step 3 is being wrapped up
        if step == 3 and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return real_due(every, step, end)

    monkeypatch.setattr(train_mod, "_due", due)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Stopped) as stopped:
        run(plan_for(recipe_file(train__save_every=2, train__max_steps=6)))
    assert stopped.value.exit_code == 130 and stopped.value.message is None  # saved: no "stopped at once"
    assert (tmp_path / "out" / "checkpoint-3" / "training_state.json").exists()
    assert (tmp_path / "out" / "checkpoint-2").exists() and not (tmp_path / "out" / "checkpoint-4").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handler lasts only as long as fit


def test_sigterm_saves_at_a_step_boundary_and_resume_is_exact(recipe_file, tmp_path):
    """A scheduler's preemption: SIGTERM to a real `brew distill` process once it has logged step 2; it exits 143
    with the step it finished saved, and --resume ends on the weights and optimizer state of an unbroken run."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = recipe_file(train__epochs=6, train__log_every=1, train__keep_checkpoints=10)  # 30 steps, 5 per epoch
    child = subprocess.Popen([sys.executable, "-m", "brewcli", "distill", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[1],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("step 2/30"):
            child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=300) == 143, "".join(lines)
    text = " ".join("".join(lines).split())
    assert "SIGTERM: stopped after step " in text and "; continue with --resume" in text, text
    step = int(text.split("SIGTERM: stopped after step ")[1].split()[0])
    assert 2 <= step < 30 and f"saved {tmp_path / 'out' / f'checkpoint-{step}'};" in text
    assert "Traceback" not in text and (tmp_path / "out" / f"checkpoint-{step}" / "training_state.json").exists()
    assert f"step {step + 1}/30" not in text  # it stopped at the step boundary it announced
    run(plan_for(path), resume=True)
    run(plan_for(path, f"train.output_dir={tmp_path / 'unbroken'}"))
    for name in ("model.safetensors", "training_state.safetensors"):
        resumed = load_file(str(tmp_path / "out" / "checkpoint-30" / name))
        full = load_file(str(tmp_path / "unbroken" / "checkpoint-30" / name))
        assert full.keys() == resumed.keys() and len(full) > 10
        for k in full:
            assert torch.equal(full[k], resumed[k]), (name, k)


def test_attention_matches_train_with_eager_attention(recipe_file, tmp_path):
    plan = plan_for(recipe_file(student={"preset": "T3"},
                                distill__matches=["uniform", {"preset": "uniform", "feature": "attention",
                                                              "loss": "attention_ce"},
                                                  {"teacher_layer": [2, 4], "student_layer": [1, 3], "loss": "fsp"}],
                                distill__hard_label_weight=0.5, distill__hard_label_weight_schedule="linear_decay",
                                distill__temperature_scheduler={"name": "flsw", "beta": 1, "gamma": 2}),
                    "train.max_steps=3")
    assert plan.student_config.attention_probs_dropout_prob == 0.0
    teachers, student = build_models(plan)
    teacher = teachers["teacher"]
    assert teacher.config._attn_implementation == "eager" == student.config._attn_implementation
    report = run(plan)
    assert report["steps"] == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "logs"))
    events.Reload()
    values = {t: events.Scalars(t)[-1].value for t in events.Tags()["scalars"]}
    assert values["loss/attention_attention_ce_3_4"] > 0 and values["loss/hidden_fsp_1-3_2-4"] >= 0
    assert all(v == v for v in values.values())  # no NaN


def test_plain_training_without_teacher(recipe_file, teacher_dir, tmp_path, monkeypatch):
    import brewcli.train as train_mod

    modes = []
    real_build = train_mod.build_models

    def build(plan, device=None):
        teacher, student = real_build(plan, device)
        student.register_forward_pre_hook(lambda module, args: modes.append(module.training))
        return teacher, student

    monkeypatch.setattr(train_mod, "build_models", build)
    path = recipe_file(teacher=None, distill=None, student={"model": str(teacher_dir)})
    raw = path.read_text().replace("distill: null\n", "").replace("teacher: null\n", "")
    path.write_text(raw)
    report = run(plan_for(path, "train.max_steps=4", "train.lr=5e-3"))
    assert report["steps"] == 4 and "teacher" not in report and report["student"]["accuracy"] >= 0
    assert modes[:4] == [True] * 4  # a from_pretrained model trains with dropout on (eval passes come later)


def test_text_pairs_and_regression(recipe_file, tmp_path):
    from tests.conftest import make_model_dir, make_rows, write_csv

    rows = [{"premise": r["text"], "hypothesis": r["text"][::-1], "score": float(len(r["text"]) % 5)}
            for r in make_rows(24, 3)]
    files = {"train": str(write_csv(tmp_path / "pairs.csv", rows))}
    teacher = make_model_dir(tmp_path / "reg-teacher", labels=("score",))
    plan = plan_for(recipe_file(task="regression", teacher=str(teacher), distill__kd_loss="mse",
                                data={"files": files, "text": ["premise", "hypothesis"], "label": "score",
                                      "eval_fraction": 0.25, "max_length": 24}),
                    "train.max_steps=2")
    assert plan.splits.label_names is None and plan.student_config.num_labels == 1
    ids = plan.encoded["train"][0]["token_type_ids"]
    assert 0 in ids and 1 in ids  # both texts of the pair are there
    report = run(plan)
    assert set(report["student"]) >= {"pearson", "spearman", "mse"} and report["best"]["metric"] == "pearson"


def test_gradient_accumulation_counts_optimizer_steps(recipe_file):
    # 36 train rows, batch 8 -> 5 batches/epoch; accumulating 2 -> 3 optimizer steps/epoch (the last one smaller)
    report = run(plan_for(recipe_file(train__grad_accum=2, train__epochs=2)))
    assert report["steps"] == 6 and [h["step"] for h in report["history"]] == [3, 6]
