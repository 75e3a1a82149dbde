"""Causal LMs: every divergence against hand-computed values (and the JSD's continuity in beta), prompt masking, the
metric reduced on the device, runs of both data forms on a tiny Llama through the command line, and the bad inputs
(GGUF files included)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from brewcli.losses import KD_LOSSES
from tests.conftest import WORDS, apply_changes, load_script, make_tokenizer
from tests.test_tasks import brew, write_jsonl



def make_lm_teacher(path: Path, layers: int = 4) -> Path:
    import transformers

    tok = make_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def text_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))} for _ in range(n)]


def prompt_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.sample(WORDS, 4)), "completion": " ".join(rng.sample(WORDS, 3))} for _ in range(n)]


# ---- divergences

P_T, P_S = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.2, 0.5, 0.3]])


def kl(p, q):
    return float((p * (p / q).log()).sum())


def loss(name, p_s=P_S, p_t=P_T, **kw):
    return float(KD_LOSSES.get(name)(p_s.log(), p_t.log(), 1.0, **kw))


def test_divergences_by_hand():
    assert loss("kl") == pytest.approx(kl(P_T, P_S), rel=1e-5)
    assert loss("reverse_kl") == pytest.approx(kl(P_S, P_T), rel=1e-5)
    assert loss("tvd") == pytest.approx(0.5 * (0.5 + 0.3 + 0.2), rel=1e-5)
    m = 0.25 * P_T + 0.75 * P_S
    assert loss("jsd", jsd_beta=0.25) == pytest.approx((0.25 * kl(P_T, m) + 0.75 * kl(P_S, m)) / (0.25 * 0.75),
                                                       rel=1e-5)
    skew = 0.1 * P_T + 0.9 * P_S
    assert loss("skew_kl", skew_alpha=0.1) == pytest.approx(kl(P_T, skew), rel=1e-5)


@pytest.mark.parametrize("name, kw", [("kl", {}), ("reverse_kl", {}), ("tvd", {}), ("jsd", {"jsd_beta": 0.0}),
                                      ("jsd", {"jsd_beta": 0.5}), ("jsd", {"jsd_beta": 1.0}),
                                      ("skew_kl", {"skew_alpha": 0.1})])
def test_divergences_vanish_on_identical_distributions(name, kw):
    z = torch.randn(5, 11)
    assert float(KD_LOSSES.get(name)(z, z.clone(), 2.0, **kw).abs().max()) < 1e-5


def test_jsd_is_continuous_in_beta_and_meets_both_kls():
    at = lambda b: loss("jsd", jsd_beta=b)  # noqa: E731
    assert at(0.0) == pytest.approx(kl(P_T, P_S), rel=1e-5) and at(1.0) == pytest.approx(kl(P_S, P_T), rel=1e-5)
    assert at(1e-4) == pytest.approx(at(0.0), rel=1e-3) and at(1 - 1e-4) == pytest.approx(at(1.0), rel=1e-3)
    values = [at(b / 100) for b in range(101)]
    assert max(abs(a - b) for a, b in zip(values, values[1:])) < 0.05  # no jump anywhere


def test_jsd_gradient_is_finite_at_the_ends():
    z = torch.randn(3, 7, requires_grad=True)
    for b in (0.0, 1e-6, 0.5, 1 - 1e-6, 1.0):
        z.grad = None
        KD_LOSSES.get("jsd")(z, torch.randn(3, 7), 1.0, jsd_beta=b).sum().backward()
        assert torch.isfinite(z.grad).all()


# ---- the top-k target (distill.top_k)

def test_topk_forward_kl_is_exact_on_the_support_plus_the_tail():
    from brewcli.topk import TopK

    torch.manual_seed(0)
    zs, zt = torch.randn(6, 11), torch.randn(6, 11) * 2
    top = TopK(k=4, temperature=2.0)
    s_b, t_b = top.buckets(zs, top.pack(zt))
    p_t, p_s = torch.softmax(zt / 2, -1), torch.softmax(zs / 2, -1)
    ids = p_t.topk(4, -1).indices
    pt_k, ps_k = p_t.gather(-1, ids), p_s.gather(-1, ids)
    rest_t, rest_s = 1 - pt_k.sum(-1), 1 - ps_k.sum(-1)
    by_hand = (pt_k * (pt_k / ps_k).log()).sum(-1) + rest_t * (rest_t / rest_s).log()  # DistillKit's formula
    got = KD_LOSSES.get("kl")(s_b, t_b, 1.0)
    assert torch.allclose(got, by_hand, rtol=1e-4, atol=1e-6)
    full = KD_LOSSES.get("reverse_kl")(zs, zt, 2.0)  # coarser buckets never raise a divergence (data processing)
    assert (KD_LOSSES.get("reverse_kl")(s_b, t_b, 1.0) <= full + 1e-6).all()


@pytest.mark.parametrize("name, kw", [("kl", {}), ("reverse_kl", {}), ("tvd", {}), ("jsd", {"jsd_beta": 0.3}),
                                      ("skew_kl", {"skew_alpha": 0.1})])
def test_topk_of_the_whole_vocabulary_is_the_full_divergence(name, kw):
    from brewcli.topk import TopK

    torch.manual_seed(1)
    zs, zt = torch.randn(5, 9, requires_grad=True), torch.randn(5, 9)
    top = TopK(k=9, temperature=1.5)  # no tail: its bucket is empty on both sides
    s_b, t_b = top.buckets(zs, top.pack(zt))
    got = KD_LOSSES.get(name)(s_b, t_b, 1.0, **kw)
    assert torch.allclose(got, KD_LOSSES.get(name)(zs, zt, 1.5, **kw), rtol=1e-4, atol=1e-6)
    got.sum().backward()
    assert torch.isfinite(zs.grad).all()


def test_topk_cache_holds_the_live_teachers_target_and_trains_the_same(tmp_path, monkeypatch):
    """A cached top-k run and a live top-k run train the same student; the entry's rows are the live teacher's
    log-probabilities at its top k (float32, with the token ids)."""
    import numpy as np

    from brewcli.cache import entries

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BREW_CACHE", str(tmp_path / "cache"))
    path = _recipe(tmp_path, distill__top_k=5, distill__temperature=2)
    r = brew("distill", path, "--dry-run", "distill.teacher_cache=disk")
    flat = " ".join(r.output.split())
    assert r.exit_code == 0 and "top 5 tokens" in flat and "logits (float32" in flat, r.output
    assert "miss" in flat, r.output  # the plan gives the entry's size
    for cache, out in (("off", "live"), ("disk", "cached")):
        r = brew("distill", path, f"distill.teacher_cache={cache}", f"train.output_dir={out}")
        assert r.exit_code == 0, r.output
    live, cached = (json.loads((tmp_path / o / "metrics.json").read_text())["student"] for o in ("live", "cached"))
    assert cached["nll"] == pytest.approx(live["nll"], rel=1e-5)
    [entry] = entries(tmp_path / "cache")
    assert entry["features"] == ["logits (top 5)"]  # what brew cache ls shows
    values = np.load(Path(entry["path"]) / "logits.npy")
    assert values.dtype == np.float32 and values.size % 11 == 0  # 2k+1 floats a token
    rows = values.reshape(-1, 11)
    probs = np.exp(rows[:, :5]).sum(-1) + np.exp(rows[:, 5])
    assert np.allclose(probs, 1.0, atol=1e-4)  # the top 5 and the rest: the whole distribution
    assert (np.diff(rows[:, :5], axis=-1) <= 1e-6).all()  # in order, most likely first
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")
    tok = AutoTokenizer.from_pretrained(tmp_path / "teacher")
    text = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["text"]
    with torch.no_grad():
        logp = torch.log_softmax(teacher(**tok(text, return_tensors="pt")).logits[0] / 2, -1)
    top, ids = logp.topk(5, -1)  # every token of some row of the entry is this text's: find its first position
    hit = np.isclose(rows[:, :5], top[0].numpy(), atol=1e-4).all(-1) & (rows[:, 6:] == ids[0].numpy()).all(-1)
    assert hit.any()


# ---- on-policy batches (distill.on_policy)

def test_rollout_keeps_the_prompt_and_targets_only_the_students_sample(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from brewcli.tasks import TASKS
    from brewcli.tasks.causal import IGNORE

    model = AutoModelForCausalLM.from_pretrained(make_lm_teacher(tmp_path / "lm"))
    tok = AutoTokenizer.from_pretrained(tmp_path / "lm")
    task = TASKS.get("causal-lm")
    prompt, answer = tok("alpha beta gamma", add_special_tokens=False)["input_ids"], [5, 6, 7, 8]
    rows = [{"input_ids": prompt + answer, "attention_mask": [1] * 7, "labels": [IGNORE] * 3 + answer, "example": 0},
            {"input_ids": list(range(3, 13)), "attention_mask": [1] * 10, "example": 1}]  # a window: all targets
    batch = task.collate(tok)(rows)
    batch.rows = torch.tensor([0, 1])
    torch.manual_seed(0)
    new = task.rollout(batch, model.eval(), tok)
    ids, labels, mask = new.inputs["input_ids"], new.labels["labels"], new.mask.bool()
    assert ids[0, :3].tolist() == prompt and (labels[0, :3] == IGNORE).all()  # the prompt stays, not a target
    assert ids[1, :5].tolist() == list(range(3, 8)) and (labels[1, :5] == IGNORE).all()  # a window's first half
    for i in range(2):
        targets = labels[i][mask[i]] != IGNORE
        assert torch.equal(labels[i][mask[i]][targets], ids[i][mask[i]][targets])  # the targets are what it wrote
    assert int(mask[0].sum()) <= 7 and int(mask[1].sum()) <= 10  # as long as the text replaced, or ended at EOS
    assert new.gold.tolist() == [False, False] and new.rows.tolist() == [0, 1]  # teacher-only rows


def test_on_policy_run_is_seeded_and_resumes_exactly(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path, distill__on_policy=0.5, train__save_every=2, train__keep_checkpoints=5)
    r = brew("distill", path, "--dry-run")
    flat = " ".join(r.output.split())
    assert r.exit_code == 0 and "50% of batches on continuations the student samples" in flat, r.output
    assert "teacher cache off: distill.on_policy" in flat, r.output
    for out in ("a", "b"):
        r = brew("distill", path, f"train.output_dir={out}", "train.max_steps=4")
        assert r.exit_code == 0, r.output
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoint-4")
    r = brew("distill", path, "train.output_dir=b", "train.max_steps=4", "--resume")
    assert r.exit_code == 0, r.output
    a, b = (load_file(str(tmp_path / o / "checkpoint-4" / "model.safetensors")) for o in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = brew("distill", path, "train.output_dir=c", "train.max_steps=4", "distill.on_policy=0")
    c = load_file(str(tmp_path / "c" / "checkpoint-4" / "model.safetensors"))
    assert r.exit_code == 0 and not all(torch.equal(a[k], c[k]) for k in a)  # the rollouts changed what it learned


def test_a_student_made_from_a_converted_gguf_teacher_goes_on_and_saves(tmp_path, monkeypatch):
    """A teacher folder whose config still names GGUF quantization (what brew's conversion wrote before, over plain
    float weights): a student built from its layers, then a run that goes on from that student, both save (the
    second used to fail in save_pretrained: transformers refuses to save a model it thinks GGUF-quantized), and no
    saved config names GGUF."""
    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path)
    teacher = tmp_path / "teacher" / "config.json"
    teacher.write_text(json.dumps({**json.loads(teacher.read_text()), "quantization_config": {
        "quant_method": "gguf", "gguf_file": "model.Q4_1.gguf", "dequantize": False}}))
    r = brew("distill", path, "train.max_steps=1")
    assert r.exit_code == 0 and (tmp_path / "out" / "config.json").is_file(), r.output
    r = brew("distill", path, f"student={{model: {tmp_path / 'out'}}}", "train.output_dir=again",
             "train.max_steps=1", "data.skip_train_samples=8")
    assert r.exit_code == 0, r.output
    for out in ("out", "again", "again/checkpoint-1"):
        assert "quantization_config" not in json.loads((tmp_path / out / "config.json").read_text()), out
    assert brew("eval", "again", "--timing-rounds", "0").exit_code == 0


# ---- data and metric

def _recipe(tmp_path, **changes) -> Path:
    files = {"train": write_jsonl(tmp_path / "train.jsonl", text_rows(40, 1)),
             "test": write_jsonl(tmp_path / "test.jsonl", text_rows(10, 2))}
    recipe = {"task": {"name": "causal-lm"}, "teacher": str(make_lm_teacher(tmp_path / "teacher")),
              "student": {"init": "teacher-layers", "config": {"num_hidden_layers": 2}},
              "data": {"files": files, "eval_fraction": 0.2, "max_length": 16},
              "distill": {"kd_loss": "kl", "temperature": 1, "hard_label_weight": 0.5},
              "train": {"output_dir": str(tmp_path / "out"), "epochs": 2, "batch_size": 4, "lr": 1e-3}}
    apply_changes(recipe, changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_prompt_tokens_are_not_targets(tmp_path):
    from brewcli.data import loader
    from brewcli.plan import build_plan
    from brewcli.recipe import load_recipe

    rows = prompt_rows(12, 1)
    files = {"train": write_jsonl(tmp_path / "pc.jsonl", rows)}
    path = _recipe(tmp_path, task={"name": "causal-lm", "prompt": "prompt", "completion": "completion"},
                   data={"files": files, "max_length": 32})
    plan = build_plan(load_recipe(path))
    tok, task = plan.tokenizer, plan.task
    batch = next(iter(loader(plan.encoded["train"], task.collate(tok), 4)))
    for i, row in enumerate(rows[:4]):
        prompt = len(tok(row["prompt"])["input_ids"]) - 1  # [CLS] + words (the [SEP] closes no prompt here)
        labels = batch.labels["labels"][i]
        answer = tok(row["completion"], add_special_tokens=False)["input_ids"]
        assert (labels[:prompt] == -100).all()
        assert labels[prompt:prompt + len(answer)].tolist() == answer
    # what KD and the hard-label loss average over: the completion tokens (and the end token), nothing else
    assert task.units(batch) == int((batch.labels["labels"][:, 1:] != -100).sum())
    s = torch.randn(*batch.labels["labels"].shape, 7)
    zs, zt = task.views(s, s, batch)
    assert zs.shape == (task.units(batch), 7)


def test_lm_metric_reduces_on_the_device_to_two_numbers_a_token():
    from brewcli.batch import Batch
    from brewcli.tasks import TASKS

    task = TASKS.get("causal-lm")
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]))
    batch = Batch({"attention_mask": torch.ones(1, 3)}, {"labels": torch.tensor([[0, 0, 1]])}, torch.tensor([0]))
    reduced = task.reduce(logits, batch)
    assert reduced.shape == (1, 2, 2)
    metric = task.metric(None, None)
    metric.update(reduced, batch)
    got = metric.compute()
    nll = -(math.log(0.5) + math.log(0.8)) / 2  # position t predicts token t+1: 0 from row 0, 1 from row 1
    assert got["nll"] == pytest.approx(nll, rel=1e-5) and got["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert got["accuracy"] == 1.0


@pytest.mark.parametrize("form", ["windows", "prompts"])
def test_distill_and_eval_a_decoder(form, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    changes = {}
    if form == "prompts":
        files = {"train": write_jsonl(tmp_path / "pc-train.jsonl", prompt_rows(40, 1)),
                 "test": write_jsonl(tmp_path / "pc-test.jsonl", prompt_rows(8, 2))}
        changes = {"task": {"name": "causal-lm", "prompt": "prompt", "completion": "completion"},
                   "data": {"files": files, "eval_fraction": 0.2, "max_length": 24}}
    path = _recipe(tmp_path, **changes)
    r = brew("distill", path, "--dry-run")
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "teacher cache off" in flat or "teacher runs live" in flat or "kl on next-token" in flat, r.output
    r = brew("distill", path, "distill.kd_loss=jsd", "distill.jsd_beta=0.3")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["student"]) >= {"perplexity", "nll", "accuracy"} and metrics["student"]["perplexity"] > 1
    assert "retained_pct" in metrics and metrics["teacher"]["perplexity"] > 1
    r = brew("eval", "out", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["student"]["perplexity"] == pytest.approx(metrics["student"]["perplexity"], rel=1e-4)
    assert 0 <= report["student"]["teacher_agreement"] <= 1  # top-1 next tokens the same as the teacher's
    assert len(report["samples"]) == 3 and all(isinstance(x["teacher"], str) and isinstance(x["student"], str)
                                                for x in report["samples"])  # continuations of the first texts
    from transformers import AutoModelForCausalLM

    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "out")).__name__ == "LlamaForCausalLM"


def _gguf(path: Path, arch: str) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("changes, needles", [
    ({"distill__jsd_beta": 1.5}, ["distill.jsd_beta", "1"]),
    ({"distill__kd_loss": "mse"}, ["distill.kd_loss", "kl, reverse_kl, jsd"]),
    ({"task": {"name": "causal-lm", "prompt": "prompt"}}, ["task.completion", "is not set"]),
    ({"task": {"name": "causal-lm", "prompt": "prompt", "completion": "answer"}}, ["task.completion", "'answer'"]),
    ({"distill__teacher_cache": "disk"}, ["distill.teacher_cache", "vocabulary-wide", "distill.top_k"]),
    ({"distill__top_k": 5000}, ["distill.top_k", "is 5000", "at most"]),
    ({"distill__top_k": 0}, ["distill.top_k", "greater than or equal to 1"]),
    ({"distill__on_policy": 1.5}, ["distill.on_policy", "less than or equal to 1"]),
    ({"distill__on_policy": 0.5, "distill__teacher_cache": "disk"}, ["distill.teacher_cache", "no cache can hold"]),
    ({"distill__top_k": 8, "distill__temperature_scheduler": "flsw"}, ["distill.temperature_scheduler", "constant"]),
    ({"teacher": {"model": "GGUF", "gguf_file": "missing.gguf"}}, ["teacher.gguf_file", "missing.gguf",
                                                                    "model.gguf"]),
    ({"teacher": {"model": "GGUF", "gguf_file": "notes.gguf"}}, ["teacher.gguf_file", "not a GGUF model file"]),
    ({"teacher": {"model": "GGUF", "gguf_file": "bert.gguf"}}, ["teacher.gguf_file", "'bert' model, not a decoder"]),
])
def test_bad_causal_recipes_fail_before_weights_load(changes, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "gguf"
    folder.mkdir()
    _gguf(folder / "model.gguf", "llama")
    _gguf(folder / "bert.gguf", "bert")
    (folder / "notes.gguf").write_text("not a model")
    if "teacher" in changes:
        changes = {"teacher": {**changes["teacher"], "model": str(folder)}}
    if "task" in changes:
        files = {"train": write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "alice", "completion": "bob"}] * 8)}
        changes = {**changes, "data": {"files": files, "max_length": 16}}
    path = _recipe(tmp_path, **changes)
    r = brew("distill", path, "--dry-run")
    flat = " ".join(r.output.split())
    assert r.exit_code == 2 and all(n in flat for n in needles), r.output


@pytest.mark.parametrize("key, value, needle", [("top_k", 8, "nothing to cut to the top k"),
                                                ("on_policy", 0.5, "student does not write text")])
def test_causal_only_options_are_refused_elsewhere(key, value, needle, recipe_file):
    r = brew("distill", recipe_file(**{f"distill__{key}": value}), "--dry-run")
    flat = " ".join(r.output.split())
    assert r.exit_code == 2 and f"distill.{key}" in flat and needle in flat, r.output


def test_init_scaffolds_an_lm_recipe_with_top_k_and_temperature_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    teacher = make_lm_teacher(tmp_path / "teacher")
    write_jsonl(tmp_path / "train.jsonl", text_rows(40, 1))
    r = brew("init", "--task", "causal-lm", "--teacher", str(teacher), "--student", "T3", "--data", "train.jsonl",
             "--out", "r.yaml")
    assert r.exit_code == 0, r.output
    distill = yaml.safe_load((tmp_path / "r.yaml").read_text())["distill"]
    assert distill["temperature"] == 1 and distill["top_k"] == 30 and distill["teacher_cache"] == "auto"  # its vocab
    r = brew("distill", "r.yaml", "--dry-run", "data.max_length=16")
    assert r.exit_code == 0 and "top 30 tokens" in " ".join(r.output.split()), r.output


def test_lm_select_layers_drops_the_layer_that_costs_least(tmp_path, monkeypatch, capsys):
    """scripts/lm_select_layers.py: from 4 layers to 3, it drops the middle layer whose loss leaves the lower
    perplexity (computed here directly), and keeps the first and the last."""
    import math
    import sys

    from transformers import AutoModelForCausalLM

    teacher = make_lm_teacher(tmp_path / "lm")
    write_jsonl(tmp_path / "train.jsonl", text_rows(40, 0))
    monkeypatch.setattr(sys, "argv", ["lm_select_layers.py", "--model", str(teacher), "--data",
                                      str(tmp_path / "train.jsonl"), "--keep", "3", "--windows", "2",
                                      "--max-length", "16"])
    load_script("lm_select_layers").main()
    out = capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    tok = make_tokenizer()
    ids = [i for r in text_rows(40, 0)[-60:] for i in tok(r["text"])["input_ids"]][:32]
    x = torch.tensor(ids).view(2, 16)
    layers = list(model.model.layers)

    def ppl(keep):
        model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
        with torch.no_grad():
            return math.exp(model(input_ids=x, labels=x).loss.item())

    best = [0, 2, 3] if ppl([0, 2, 3]) < ppl([0, 1, 3]) else [0, 1, 3]
    assert out.strip().splitlines()[-1] == f"teacher_layers: {best}"
    # --start goes on from an earlier list: from those 3 layers to 2, the first and the last
    monkeypatch.setattr(sys, "argv", [*sys.argv[:5], "--keep", "2", "--windows", "2", "--max-length", "16",
                                      "--start", ",".join(map(str, best))])
    load_script("lm_select_layers").main()
    out = capsys.readouterr().out
    assert out.startswith("starting from 3 layers") and out.strip().splitlines()[-1] == "teacher_layers: [0, 3]"
