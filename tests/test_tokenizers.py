"""A teacher with its own tokenizer: each model gets its own batch of the same rows, KD and [CLS] matches work
across two vocabularies, token KD maps first sub-words word by word, and what cannot line up is refused."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import build_job, run
from tests import conftest
from tests.test_tasks import WORDS as NER_WORDS
from tests.test_tasks import make_task_teacher, ner_rows

runner = CliRunner()


def make_student_dir(path, words, head="BertForSequenceClassification", labels=("neg", "pos")):
    """A tiny pretrained-looking student whose vocabulary orders the words differently (and has one more)."""
    import transformers
    from transformers import BertConfig, BertTokenizer

    torch.manual_seed(1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "extra"] + list(reversed(words)) + ["##oslo"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=20, max_position_embeddings=64, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    getattr(transformers, head)(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_classification_across_tokenizers(tmp_path, teacher_dir, data_files):
    student = make_student_dir(tmp_path / "student", conftest.WORDS)
    r = conftest.base_recipe(teacher_dir, data_files, tmp_path / "out")
    r["student"] = {"model": str(student)}
    r["distill"]["matches"] = [{"teacher_layer": 4, "student_layer": 2, "loss": "pkd"}]
    r["train"]["max_steps"] = 3
    plan = build_plan(load_recipe(write(tmp_path, r)))
    (t,) = plan.teachers
    assert t.tokenizer is not None and len(t.tokenizer) != len(plan.tokenizer)
    assert len(t.encoded) == len(plan.encoded["train"])
    job = build_job(plan)
    window, _ = next(job.windows())
    batch = window[0]
    own = batch.teachers["teacher"]
    # the same rows, each read by its own tokenizer
    for i, row in enumerate(batch.rows.tolist()):
        words = plan.splits.train[row]["text"].split()
        s_ids = batch.inputs["input_ids"][i][batch.inputs["attention_mask"][i].bool()].tolist()
        t_ids = own.inputs["input_ids"][i][own.inputs["attention_mask"][i].bool()].tolist()
        assert plan.tokenizer.convert_ids_to_tokens(s_ids)[1:-1] == words
        assert t.tokenizer.convert_ids_to_tokens(t_ids)[1:-1] == words
        assert s_ids != t_ids
    report = run(build_plan(load_recipe(write(tmp_path, {**r, "train": {**r["train"],
                                                                          "output_dir": str(tmp_path / "o2")}}))))
    assert report["steps"] == 3 and "retained_pct" in report
    saved = json.loads((tmp_path / "o2" / "tokenizer.json").read_text())["model"]["vocab"]
    assert saved["extra"] == 5  # the student keeps and saves its own tokenizer
    result = runner.invoke(app, ["eval", str(tmp_path / "o2"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["teacher"]["accuracy"] == pytest.approx(report["teacher"]["accuracy"])


def test_per_token_match_across_tokenizers_is_refused(tmp_path, teacher_dir, data_files):
    student = make_student_dir(tmp_path / "student", conftest.WORDS)
    r = conftest.base_recipe(teacher_dir, data_files, tmp_path / "out")
    r["student"] = {"model": str(student)}
    result = runner.invoke(app, ["distill", str(write(tmp_path, r)), "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "distill.matches[0]: hidden_mse compares the models token by token" in text
    assert "loss: pkd" in text and "Traceback" not in text


def test_token_kd_maps_first_sub_words(tmp_path):
    tags = ["O", "B-PER", "B-LOC", "I-LOC"]
    teacher = make_task_teacher(tmp_path / "teacher", "token-classification", tags)
    student = make_student_dir(tmp_path / "student", NER_WORDS, "BertForTokenClassification", tags)
    data = tmp_path / "train.jsonl"
    with open(data, "w") as f:
        for row in ner_rows(24, 1):
            row["tokens"] = [w if w != "oslo" else "oslooslo" for w in row["tokens"]]  # sub-words differ
            f.write(json.dumps(row) + "\n")
    r = {"task": "token-classification", "teacher": str(teacher), "student": {"model": str(student)},
         "data": {"files": {"train": str(data)}, "max_length": 16},
         "train": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "batch_size": 8}}
    plan = build_plan(load_recipe(write(tmp_path, r)))
    job = build_job(plan)
    window, _ = next(job.windows())
    batch = window[0]
    s_logits = torch.randn(*batch.inputs["input_ids"].shape, 4)
    t_logits = torch.randn(*batch.teachers["teacher"].inputs["input_ids"].shape, 4)
    zs, zt = plan.task.views(s_logits, t_logits, batch, batch.teachers["teacher"])
    words = sum(len(plan.splits.train[row]["tokens"]) for row in batch.rows.tolist())
    assert zs.shape == zt.shape == (words, 4)  # one row per word on each side
    # row 0's first word: the student's and the teacher's logits at that word's first sub-word
    s_first = (batch.aux["word_starts"][0].bool()).nonzero()[0, 0]
    t_first = (batch.teachers["teacher"].aux["word_starts"][0].bool()).nonzero()[0, 0]
    assert torch.equal(zs[0], s_logits[0, s_first]) and torch.equal(zt[0], t_logits[0, t_first])
    assert run(plan)["steps"] == 2


def test_qa_across_tokenizers_is_refused(tmp_path):
    teacher = make_task_teacher(tmp_path / "teacher", "question-answering")
    student = make_student_dir(tmp_path / "student", NER_WORDS, "BertForQuestionAnswering")
    data = tmp_path / "qa.jsonl"
    from tests.test_tasks import qa_rows

    data.write_text("".join(json.dumps(row) + "\n" for row in qa_rows(8, 1)))
    r = {"task": "question-answering", "teacher": str(teacher), "student": {"model": str(student)},
         "data": {"files": {"train": str(data)}, "max_length": 32},
         "train": {"output_dir": str(tmp_path / "out")}}
    result = runner.invoke(app, ["distill", str(write(tmp_path, r)), "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "uses another tokenizer than the student" in text and "Traceback" not in text
