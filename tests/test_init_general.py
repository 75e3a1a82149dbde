"""`brew init` for general distillation: a prose .txt (or a table with only a text column) proposes task general
and gets a general recipe; `--stages --general CORPUS` writes TinyBERT's three stages (general, intermediate,
predictions) in one recipe. Every recipe written passes `brew distill --dry-run` as it is."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from brewcli.recipe import load_stages
from brewcli.scaffold import layer_preset, looks_conll, peek, propose_task
from tests.conftest import WORDS, make_rows, make_tokenizer, write_csv
from tests.test_new_user import brew, flat
from tests.test_tasks import ner_rows, write_conll


@pytest.fixture(scope="module")
def teacher12(tmp_path_factory) -> Path:
    """A tiny BERT with T4-tiny's 12 heads (TinyBERT's attention-score loss compares heads one by one) that reads
    128 tokens, so that the recipe keeps max_length 128."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("teacher12") / "teacher"
    torch.manual_seed(0)
    tok = make_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=36, num_hidden_layers=4, num_attention_heads=12,
                     intermediate_size=37, max_position_embeddings=128, num_labels=2,
                     id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def prose(n: int, seed: int) -> list[str]:
    """Documents of 5 to 30 words, as a corpus has them (the tiny tokenizer knows WORDS)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def write_text(path: Path, docs: list[str]) -> Path:
    path.write_text("\n".join(docs) + "\n")
    return path


def dry_run(recipe: Path) -> str:
    r = brew("distill", recipe, "--dry-run")
    assert r.exit_code == 0, r.output
    return flat(r.output)


# ---------------------------------------------------------------------------------------------- reading .txt


def test_a_prose_txt_is_plain_text_and_a_conll_txt_stays_conll(tmp_path):
    corpus = write_text(tmp_path / "corpus.txt", prose(40, 1))
    conll = Path(write_conll(tmp_path / "ner.txt", ner_rows(12, 1)))
    tabbed = tmp_path / "tabbed.txt"
    tabbed.write_text("The\tDT\nmovie\tNN\nwas\tVBD\ngood\tJJ\n\nIt\tPRP\nis\tVBZ\n")
    pos = tmp_path / "pos.txt"  # POS tags, not IOB: far fewer kinds of tag than of word
    pos.write_text("".join(f"{w} {'NN' if i % 3 else 'DT'}\n" for i, w in enumerate(WORDS)))
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("One short paragraph\nthat goes on.\n\nAnother one, two lines\nlong.\n")
    assert not looks_conll(corpus) and not looks_conll(paragraphs)
    assert looks_conll(conll) and looks_conll(tabbed) and looks_conll(pos)

    kind, columns, rows = peek(str(corpus))
    assert (kind, rows, propose_task(kind, columns)) == ("text", 40, "general")
    assert peek(str(paragraphs))[2] == 2  # documents split by blank lines, as task general reads them
    kind, columns, _ = peek(str(conll))
    assert (kind, propose_task(kind, columns)) == ("conll", "token-classification")
    assert peek(str(conll), text=True)[0] == "text"  # --task general reads any .txt as text


def test_the_heads_choose_the_layer_preset(teacher_dir, teacher12):
    assert layer_preset(str(teacher12), "T4-tiny")[0] == "tinybert"
    preset, why = layer_preset(str(teacher_dir), "T4-tiny")  # 4 heads against 12: no attention-score loss
    assert preset == "minilm-v2" and "4 heads" in why
    assert layer_preset("no-such-org/no-such-model", "T4-tiny")[0] == "tinybert"  # config unknown: the default


# ---------------------------------------------------------------------------------------------- task general


def test_init_general_from_a_prose_txt(teacher12, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path / "corpus.txt", prose(200, 1))
    write_text(tmp_path / "held_out.txt", prose(20, 2))
    r = brew("init", "--teacher", teacher12, "--student", "T4-tiny", "--data", "corpus.txt", "--eval",
             "held_out.txt", "--out", "g.yaml")  # no --task: proposed from the prose
    assert r.exit_code == 0, r.output
    assert "task general" in flat(r.output)
    text = Path("g.yaml").read_text()
    raw = yaml.safe_load(text)
    assert raw["task"]["name"] == "general"
    assert raw["data"]["files"] == {"train": "corpus.txt", "validation": "held_out.txt"}
    assert raw["data"]["max_length"] == 128 and "text" not in raw["data"]
    assert raw["distill"] == {"matches": [{"preset": "tinybert"}], "teacher_cache": False}  # YAML's `off`
    assert "minilm-v2" in text and "ckd" in text  # the alternatives, in a comment
    assert "kd_weight" not in text and "hard_label_weight" not in text and "temperature" not in text
    train = raw["train"]
    assert (train["epochs"], train["batch_size"], train["lr"], train["warmup"], train["weight_decay"]) == \
        (3, 32, 5e-4, 0.06, 1e-4)
    (stage,) = load_stages(Path("g.yaml"))
    d = stage.recipe.distill
    assert d.kd_weight == 0 and d.teacher_cache == "off"
    out = dry_run(Path("g.yaml"))
    assert "general (AutoModel)" in out and "attention_score_mse" in out and "eval 20 rows" in out


def test_init_general_from_a_text_only_csv_and_without_an_eval_file(teacher12, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "docs.csv", [{"body": d} for d in prose(600, 3)])  # 2% held out: more than a window
    r = brew("init", "--task", "general", "--teacher", teacher12, "--student", "T4-tiny", "--data", "docs.csv",
             "--out", "c.yaml")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(Path("c.yaml").read_text())["data"]
    assert data["files"] == {"train": "docs.csv"} and data["eval_fraction"] == 0.02 and data["text"] == "body"
    assert "general" in dry_run(Path("c.yaml"))
    r = brew("init", "--teacher", teacher12, "--student", "T4-tiny", "--data", "docs.csv", "--out", "p.yaml")
    assert r.exit_code == 0 and "task general" in flat(r.output), r.output  # one text column, no label: proposed


def test_a_conll_txt_still_proposes_token_classification(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_conll(tmp_path / "train.txt", ner_rows(12, 1))
    r = brew("init", "--teacher", teacher_dir, "--student", "T3", "--data", "train.txt", "--out", "n.yaml")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(Path("n.yaml").read_text())["task"]["name"] == "token-classification"


def test_init_general_refusals(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path / "corpus.txt", prose(40, 1))
    write_csv(tmp_path / "train.csv", make_rows(20, 1))
    cases = [
        (["--task", "general", "--stages", "--data", "corpus.txt"], "--general corpus.txt --task classification"),
        (["--data", "corpus.txt", "--general", "corpus.txt"], "--general with task general"),
        (["--data", "train.csv", "--general-eval", "corpus.txt"], "--general-eval is the held-out text"),
        (["--task", "classification", "--data", "corpus.txt"], "corpus.txt is plain text"),
        (["--task", "general", "--train", "--model", str(teacher_dir), "--data", "corpus.txt"], "no `brew train`"),
        (["--data", "train.csv", "--general", "corpus.txt", "--general-eval", "train.csv"], "is a .csv file"),
    ]
    for args, message in cases:
        r = brew("init", "--teacher", teacher_dir, *args, "--out", "x.yaml")
        assert r.exit_code == 2 and message in flat(r.output), (args, r.output)
        assert not Path("x.yaml").exists()


# ---------------------------------------------------------------------------------------------- the three stages


def test_init_stages_with_a_general_stage(teacher12, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path / "corpus.txt", prose(600, 1))  # 2% held out: 12 documents, more than a window
    write_csv(tmp_path / "train.csv", make_rows(48, 1))
    write_csv(tmp_path / "test.csv", make_rows(16, 2))
    r = brew("init", "--stages", "--general", "corpus.txt", "--teacher", teacher12, "--student", "T4-tiny",
             "--data", "train.csv", "--out", "s.yaml")
    assert r.exit_code == 0, r.output
    text = Path("s.yaml").read_text()
    raw = yaml.safe_load(text)
    assert "data" not in raw and [s["name"] for s in raw["stages"]] == ["general", "intermediate", "predictions"]
    assert "&task-data" in text and "*task-data" in text
    general, intermediate, predictions = load_stages(Path("s.yaml"))
    g = general.recipe
    assert g.task.name == "general" and g.distill.kd_weight == 0 and g.distill.teacher_cache == "off"
    assert [m.preset for m in g.distill.matches] == ["tinybert"] and g.data.eval_fraction == 0.02
    assert (g.train.epochs, g.train.lr, g.train.warmup, g.train.weight_decay) == (3, 5e-4, 0.06, 1e-4)
    assert g.data.files["train"].endswith("corpus.txt")
    i, p = intermediate.recipe, predictions.recipe
    assert i.task.name == p.task.name == "classification"
    assert i.distill.kd_weight == 0 and [m.preset for m in i.distill.matches] == ["tinybert"]
    assert p.distill.kd_weight == 1 and p.distill.matches == []
    assert i.data == p.data and i.data.files["train"].endswith("train.csv") and i.data.test_split == "test"
    assert i.train.lr == p.train.lr == 1e-4  # the task's settings: the general stage's are its own
    out = dry_run(Path("s.yaml"))
    assert "stage 1/3: general" in out and "stage 3/3: predictions" in out


def test_plain_stages_point_at_the_general_flag(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "train.csv", make_rows(20, 1))
    r = brew("init", "--stages", "--teacher", teacher_dir, "--student", "T4-tiny", "--data", "train.csv",
             "--out", "s.yaml")
    assert r.exit_code == 0, r.output
    assert "brew init --stages --general corpus.txt" in Path("s.yaml").read_text()
