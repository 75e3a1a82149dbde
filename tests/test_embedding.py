"""Sentence embeddings: pooling and metrics against hand-computed values, the teacher's sentence-transformers folder
read and the student's written (sentence-transformers loads it and gives brew's vectors), a narrower student through
its projection, STS scoring through `brew eval --data`, and the bad inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from brewcli.batch import Batch
from brewcli.losses import KD_LOSSES
from brewcli.tasks.embedding import EmbeddingMetric, pool, sentence_config
from tests.conftest import WORDS, apply_changes, make_model_dir
from tests.test_tasks import brew, write_jsonl



def make_sentence_teacher(path: Path, pooling: str = "mean", normalize: bool = True, hidden: int = 32) -> Path:
    """A tiny BERT saved as a sentence-transformers folder (modules.json, 1_Pooling, optionally 2_Normalize)."""
    make_model_dir(path, hidden=hidden)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max"}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    return path


def pair_rows(n: int, seed: int) -> list[dict]:
    """A title and a body sharing some of their words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        key = rng.sample(WORDS, 3)
        rows.append({"title": " ".join(key), "body": " ".join(key + rng.sample(WORDS, 4))})
    return rows


def test_pooling_by_hand():
    h = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # the third token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(h, mask, "mean", False), torch.tensor([[2.0, -1.0]]))
    assert torch.allclose(pool(h, mask, "cls", False), torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(pool(h, mask, "max", False), torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(pool(h, mask, "mean", True), torch.tensor([[2.0, -1.0]]) / 5 ** 0.5)


def test_cosine_kd_by_hand():
    s, t = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert torch.allclose(KD_LOSSES.get("cosine")(s, t, 4.0), torch.tensor([1.0, 0.0]), atol=1e-6)


def _batch(examples, columns, scores):
    return Batch({"attention_mask": torch.ones(len(examples), 1)}, {}, torch.tensor(examples),
                 meta={"column": columns, "score": scores})


def test_retrieval_metric_by_hand():
    m = EmbeddingMetric(scored=False, pairs=True)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # queries 0, 1, 2
    d = torch.tensor([[1.0, 0.1], [1.0, 0.0], [1.0, 0.9]])  # query 1's own document ranks 3rd, query 2's 1st
    m.update(torch.cat([q[:2], d[:2]]), _batch([0, 1, 0, 1], [0, 0, 1, 1], [None] * 4))
    m.update(torch.cat([q[2:], d[2:]]), _batch([2, 2], [0, 1], [None] * 2))  # split across batches
    got = m.compute()
    # query 0: doc 0 (cos .995) below doc 1 (1.0): rank 2; query 1: below 2 and 0: rank 3; query 2: first
    assert got["recall@1"] == pytest.approx(1 / 3) and got["recall@10"] == 1.0
    assert got["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)


def test_sts_metric_by_hand():
    m = EmbeddingMetric(scored=True, pairs=True)
    a = torch.tensor([[1.0, 0.0]] * 3)
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cosines 1, .707, 0
    m.update(torch.cat([a, b]), _batch([0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1], [5.0, 1.0, 0.0] * 2))
    got = m.compute()
    assert got["spearman"] == pytest.approx(1.0)
    cos, gold = torch.tensor([1.0, 2 ** -0.5, 0.0]), torch.tensor([5.0, 1.0, 0.0])
    assert got["pearson"] == pytest.approx(float(torch.corrcoef(torch.stack([cos, gold]))[0, 1]), abs=1e-6)


def test_sentence_config(tmp_path):
    assert sentence_config(str(make_sentence_teacher(tmp_path / "st", "cls", True))) == \
        {"pooling": "cls", "normalize": True, "max_seq_length": 32}
    assert sentence_config(str(make_model_dir(tmp_path / "plain"))) is None


def _recipe(tmp_path, teacher, **changes) -> Path:
    files = {"train": write_jsonl(tmp_path / "train.jsonl", pair_rows(40, 1)),
             "test": write_jsonl(tmp_path / "test.jsonl", pair_rows(12, 2))}
    recipe = {"task": {"name": "sentence-embedding", "text": ["title", "body"], "pairs": ["title", "body"]},
              "teacher": str(teacher), "student": {"preset": "T3-small", "init": "random"},
              "data": {"files": files, "eval_fraction": 0.25, "max_length": 32},
              "distill": {"kd_loss": "cosine"},
              "train": {"output_dir": str(tmp_path / "out"), "epochs": 2, "batch_size": 8, "lr": 1e-3}}
    apply_changes(recipe, changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_distill_writes_a_sentence_transformers_folder(tmp_path, monkeypatch):
    """cls pooling and Normalize read from the teacher's folder; the narrower student trains through a projection;
    sentence-transformers loads the output and gives the vectors brew scores; brew eval scores STS pairs."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    teacher = make_sentence_teacher(tmp_path / "teacher", "cls", True, hidden=48)
    path = _recipe(tmp_path, teacher, student__preset="T3-small", student__config={"hidden_size": 32,
                                                                                    "num_attention_heads": 4,
                                                                                    "intermediate_size": 37})
    r = brew("distill", path, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "cls pooling, normalised" in r.output and "learned projection to 48" in " ".join(r.output.split())
    r = brew("distill", path)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["task"]["pooling"] == "cls" and saved["task"]["normalize"] is True  # what the run used
    assert load_file(out / "projections.safetensors")["kd.weight"].shape == (48, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"recall@1", "recall@10", "mrr"} <= set(metrics["student"]) and "retained_pct" in metrics
    assert "teacher_agreement" not in metrics["student"]  # 32 against 48 wide: no cosine to the teacher

    texts = ["alice went to paris", "bob met carol in rome city"]
    st = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True)
    tok, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        mine = pool(model(**batch).last_hidden_state, batch["attention_mask"], "cls", True)
    assert st.shape == (2, 32) and torch.allclose(st, mine, atol=1e-5)

    rows = pair_rows(10, 3)
    sts = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": r["title"], "sentence2": r["body"], "score": i % 4}
                                               for i, r in enumerate(rows)])
    r = brew("eval", "out", "--data", sts, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert set(report["student"]) >= {"spearman", "pearson"} and "recall@1" not in report["student"]
    assert all(-1 <= report[m]["spearman"] <= 1 for m in ("student", "teacher")), report


def test_pca_projection_reduces_the_teacher_and_resumes_with_it(tmp_path, monkeypatch):
    """task.projection: pca (sentence-transformers' recipe): the teacher's 48-wide vectors are mapped onto their first
    32 principal components of the training texts; the map is saved and a resumed run continues with it."""
    from safetensors.torch import load_file

    from brewcli.objective import TeacherPCA

    monkeypatch.chdir(tmp_path)
    teacher = make_sentence_teacher(tmp_path / "teacher", hidden=48)
    narrow = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}
    path = _recipe(tmp_path, teacher, student__preset="T3-small", student__config=narrow, task__projection="pca",
                   train__save_every=2, train__keep_checkpoints=5, train__max_steps=4)
    r = brew("distill", path, "--dry-run")
    assert r.exit_code == 0 and "the teacher's through PCA to the student's 32" in " ".join(r.output.split()), r.output
    for out in ("a", "b"):
        r = brew("distill", path, f"train.output_dir={out}")
        assert r.exit_code == 0 and "fitted the teacher-side PCA (48 -> 32)" in r.output, r.output
    saved = load_file(tmp_path / "a" / "projections.safetensors")
    w = saved["kd.weight"]
    assert w.shape == (32, 48) and torch.allclose(w @ w.T, torch.eye(32), atol=1e-4)  # orthonormal components
    assert not any(k.startswith("kd.") and k != "kd.weight" and k != "kd.fitted" for k in saved)  # nothing trained
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoint-4")
    r = brew("distill", path, "train.output_dir=b", "--resume")
    assert r.exit_code == 0 and "fitted the teacher-side PCA" not in r.output, r.output
    a, b = (load_file(tmp_path / o / "checkpoint-4" / "model.safetensors") for o in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    pca = TeacherPCA(3, 2)  # the first component of points along a line is that line
    x = torch.randn(50, 1) * torch.tensor([[3.0, 4.0, 0.0]]) / 5 + 0.01 * torch.randn(50, 3)
    pca.fit(x)
    assert abs(float(pca.weight[0] @ torch.tensor([0.6, 0.8, 0.0]))) > 0.99


@pytest.mark.parametrize("changes, needles", [
    ({"task__projection": "pca", "student__config": {"hidden_size": 64, "num_attention_heads": 4}},
     ["task.projection", "is pca", "student's are wider (64)"]),
    ({"distill__hard_label_weight": 1.0}, ["distill.hard_label_weight", "no gold labels"]),
    ({"distill__temperature": 2}, ["distill.temperature", "does not apply"]),
    ({"distill__kd_loss": "ce"}, ["distill.kd_loss", "cosine, mse"]),
    ({"task__pairs": ["title"]}, ["task.pairs", "two different columns"]),
    ({"task__text": "bodyy"}, ["task.text", "bodyy", "did you mean 'body'"]),
    ({"task__pairs": ["title", "bdy"]}, ["task.pairs", "'bdy'", "did you mean 'body'"]),
    ({"task__score": "score"}, None),  # valid: no score column, retrieval
])
def test_bad_embedding_recipes_fail_before_weights_load(changes, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path, make_sentence_teacher(tmp_path / "teacher"), **changes)
    r = brew("distill", path, "--dry-run")
    if needles is None:
        assert r.exit_code == 0, r.output
        return
    flat = " ".join(r.output.split())
    assert r.exit_code == 2 and all(n in flat for n in needles), r.output


def test_bad_scores_and_no_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    teacher = make_sentence_teacher(tmp_path / "teacher")
    rows = [{"sentence1": "alice went", "sentence2": "bob went", "score": 1.0},
            {"sentence1": "carol met", "sentence2": "dave met", "score": "high"}]
    path = _recipe(tmp_path, teacher)
    recipe = yaml.safe_load(path.read_text())
    recipe["data"]["files"] = {"train": recipe["data"]["files"]["train"]}
    recipe["data"]["files"]["train"] = write_jsonl(tmp_path / "sts.jsonl", rows * 4)
    path.write_text(yaml.safe_dump(recipe))
    r = brew("distill", path, "--dry-run")
    assert r.exit_code == 2 and "task.score" in r.output and "sts.jsonl line 2" in " ".join(r.output.split()), r.output
    recipe.pop("teacher")
    recipe.pop("distill")
    recipe["student"] = {"model": str(teacher)}
    path.write_text(yaml.safe_dump(recipe))
    r = brew("train", path, "--dry-run")
    assert r.exit_code == 2 and "has no labels to fine-tune" in " ".join(r.output.split()), r.output


def test_teacher_agreement_is_the_mean_cosine_at_one_width():
    from brewcli.tasks import TASKS

    task = TASKS.get("sentence-embedding")
    s, t = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [-1.0, -1.0]])
    total, count = task.agreement(s, t, None)
    assert total == pytest.approx(0.0, abs=1e-6) and count == 2  # cosines 1 and -1
    assert task.agreement(torch.ones(2, 3), t, None) is None  # a narrower student: its own space
