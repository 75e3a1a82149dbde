"""task: general, the data side: documents from .txt files (lines or paragraphs) or a text column, packed into
windows; the recipe rules of a task without logits; plan-time checks through the command line; the dry run's
estimate from a sample of a large corpus."""

from __future__ import annotations

import codecs
import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from brewcli import datafiles
from brewcli.cli import app
from brewcli.models.arch import ARCHS
from brewcli.data import load_splits
from brewcli.errors import RecipeError
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.tasks import TASKS, task_of
from brewcli.tasks.general import MIN_TAIL, pack, separator, special_tokens
from tests.conftest import WORDS, make_tokenizer

runner = CliRunner()
MATCH = {"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}
TASK = TASKS.get("general")


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def docs(n: int, seed: int = 0, lo: int = 1, hi: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(lo, hi))) for _ in range(n)]


def write_recipe(tmp: Path, files: dict, teacher="teacher", task="general", data=None, distill=None) -> Path:
    r = {"task": task, "teacher": str(teacher), "student": {"preset": "T3-small", "init": "random"},
         "data": {"files": {k: str(v) for k, v in files.items()}, "max_length": 32, **(data or {})},
         "distill": {"matches": [MATCH]} if distill is None else distill,
         "train": {"output_dir": str(tmp / "out"), "epochs": 1, "batch_size": 8}}
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def documents(path: Path, dry_run: bool, **task) -> list[str]:
    recipe = load_recipe(write_recipe(path.parent, {"train": path}, task={"name": "general", **task}))
    return list(load_splits(task_of(recipe), dry_run=dry_run).train["text"])


# ---------------------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("content, options, expected", [
    ("good movie\nbad plot\n", {}, ["good movie", "bad plot"]),  # auto: no empty line, a document per line
    ("good movie\nbad plot", {}, ["good movie", "bad plot"]),  # no line end at the end
    ("good movie\nbad\n\nthe plot\n", {}, ["good movie\nbad", "the plot\n"]),  # auto: an empty line -> paragraphs
    ("good\r\nmovie\r\n\r\nbad\r\n", {}, ["good\nmovie", "bad\n"]),  # Windows line ends
    ("\ufeffgood movie\nbad\n", {}, ["good movie", "bad"]),  # a byte-order mark
    ("good movie\nbad\n\nthe plot\n", {"documents": "lines"}, ["good movie", "bad", "", "the plot"]),
    ("good movie\nbad plot\n", {"documents": "paragraphs"}, ["good movie\nbad plot\n"]),
])
def test_text_files_read_as_lines_or_paragraphs(content, options, expected, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content.encode("utf-8"))
    assert documents(path, dry_run=False, **options) == expected  # datasets' text builder
    assert documents(path, dry_run=True, **options) == expected  # the dry run's own reader: the same documents


def test_a_text_column_of_csv_or_json_gives_the_windows_of_the_same_text(tmp_path):
    texts = docs(120, seed=1)
    (tmp_path / "corpus.txt").write_text("".join(t + "\n" for t in texts))
    with open(tmp_path / "corpus.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body"])
        w.writerows(enumerate(texts))
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    tok = make_tokenizer()
    windows = {}
    for name in ("corpus.txt", "corpus.csv", "corpus.jsonl"):
        data = {} if name.endswith(".txt") else {"text": "body"}
        recipe = load_recipe(write_recipe(tmp_path, {"train": tmp_path / name}, data=data))
        task = task_of(recipe)
        splits = load_splits(task)
        assert splits.label_names is None
        windows[name] = task.encode(splits.train, tok, None)["input_ids"]
    assert windows["corpus.txt"] == windows["corpus.csv"] == windows["corpus.jsonl"] and len(windows["corpus.txt"]) > 20


# ---------------------------------------------------------------------------------------------- packing


def encode(tmp_path, texts: list[str], max_length=16, stride=0, tok=None):
    corpus, text = tmp_path / "corpus.txt", "".join(t + "\n" for t in texts)
    if not corpus.is_file() or corpus.read_text() != text:  # the same file: datasets' cache holds its encoding
        corpus.write_text(text)
    recipe = load_recipe(write_recipe(tmp_path, {"train": tmp_path / "corpus.txt"}, data={"max_length": max_length},
                                      task={"name": "general", "stride": stride}))
    tok = tok or make_tokenizer()
    task = task_of(recipe)
    return task.encode(load_splits(task).train, tok, None), tok


def stream_of(tok, texts: list[str]) -> list[int]:
    out = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        if ids:
            out += ([tok.sep_token_id] if out else []) + ids
    return out


def test_windows_hold_the_token_stream_in_order(tmp_path):
    texts = docs(200, seed=2, lo=1, hi=40)  # short and long documents: short ones share windows
    enc, tok = encode(tmp_path, texts)
    assert set(enc.column_names) == {"input_ids", "attention_mask", "token_type_ids", "example"}  # no labels
    ids = enc["input_ids"]
    assert all(len(w) == 16 for w in ids[:-1]) and MIN_TAIL + 2 <= len(ids[-1]) <= 16
    assert all(w[0] == tok.cls_token_id and w[-1] == tok.sep_token_id for w in ids)
    assert all(m == [1] * len(w) for w, m in zip(ids, enc["attention_mask"]))
    assert enc["example"] == list(range(len(enc)))
    content = [t for w in ids for t in w[1:-1]]
    stream = stream_of(tok, texts)
    assert content == stream[:len(content)] and len(stream) - len(content) < MIN_TAIL  # only a short tail dropped


def test_stride_overlaps_consecutive_windows(tmp_path):
    texts = docs(100, seed=3)
    plain, tok = encode(tmp_path, texts)
    enc, _ = encode(tmp_path, texts, stride=4)
    windows = [w[1:-1] for w in enc["input_ids"]]
    assert all(len(w) == 14 for w in windows[:-1])
    for a, b in zip(windows, windows[1:]):
        assert b[:4] == a[-4:]  # 4 tokens of overlap
    unrolled = windows[0] + [t for w in windows[1:] for t in w[4:]]
    stream = stream_of(tok, texts)
    assert unrolled == stream[:len(unrolled)]
    assert len(enc) > len(plain)  # each window advances 10 tokens instead of 14


def test_pack_keeps_a_tail_with_enough_new_tokens():
    doc = list(range(100, 130))
    assert pack([doc[:9]], room=14, stride=0, sep=[3]) == [doc[:9]]  # one short window: enough text
    assert pack([doc[:MIN_TAIL - 1]], room=14, stride=0, sep=[3]) == []
    assert pack([doc[:14 + MIN_TAIL - 1]], room=14, stride=0, sep=[3]) == [doc[:14]]  # the tail is too short
    assert pack([doc[:14 + MIN_TAIL]], room=14, stride=0, sep=[3]) == [doc[:14], doc[14:14 + MIN_TAIL]]
    # with a stride the tail holds the overlap too, and only its new tokens count
    assert pack([doc[:14 + MIN_TAIL]], room=14, stride=4, sep=[3]) == [doc[:14], doc[10:14 + MIN_TAIL]]
    assert pack([doc[:3], [], doc[3:5]], room=14, stride=0, sep=[3]) == []  # 6 tokens with the separator
    assert pack([doc[:5], [], doc[5:8]], room=14, stride=0, sep=[3]) == [doc[:5] + [3] + doc[5:8]]  # empty skipped


def test_a_tokenizer_without_cls_and_sep_packs_without_specials(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "<pad>", *WORDS])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    assert special_tokens(tok) == ([], []) and separator(tok) == [1]  # documents joined by the end-of-text token
    enc, _ = encode(tmp_path, docs(50, seed=4), tok=tok)
    assert all(len(w) == 16 for w in enc["input_ids"][:-1]) and "token_type_ids" not in enc.column_names
    assert 1 in enc["input_ids"][0] and 0 not in {t for w in enc["input_ids"] for t in w}


def test_collate_pads_windows_without_labels(tmp_path):
    enc, tok = encode(tmp_path, docs(40, seed=5))
    batch = TASK.collate(tok)([enc[len(enc) - 1], enc[0]])
    assert batch.labels == {} and batch.ids.tolist() == [len(enc) - 1, 0]
    assert batch.inputs["input_ids"].shape == (2, 16) and batch.mask.sum(1).tolist() == [len(enc[len(enc) - 1][
        "input_ids"]), 16]


def test_encoding_is_cached_and_runs_in_several_processes(tmp_path, monkeypatch):
    from brewcli.tasks import general

    enc, _ = encode(tmp_path, docs(600, seed=6))
    again, _ = encode(tmp_path, docs(600, seed=6))
    assert enc.cache_files and enc.cache_files == again.cache_files  # datasets' cache, by fingerprint
    monkeypatch.setattr(general, "PARALLEL_ABOVE", 100)  # 600 documents: two processes (or cpu_count)
    split, tok = encode(tmp_path, docs(600, seed=6))
    assert split.cache_files != enc.cache_files and split["example"] == list(range(len(split)))
    assert abs(len(split) - len(enc)) <= 4  # each process packs its own documents: a tail or so apart


# ---------------------------------------------------------------------------------------------- the recipe


def test_kd_is_off_by_default_for_a_task_without_logits(tmp_path):
    files = {"train": tmp_path / "corpus.txt"}
    r = load_recipe(write_recipe(tmp_path, files))
    assert r.distill.kd_weight == 0 and r.distill.hard_label_weight == 0
    assert yaml.safe_load(r.dump())["distill"]["kd_weight"] == 0  # the saved recipe says so
    assert load_recipe(write_recipe(tmp_path, files, distill={"matches": [MATCH], "kd_weight": 0})).distill.kd_weight == 0
    assert load_recipe(write_recipe(tmp_path, files, task="classification", data={"label": "label"})).distill.kd_weight == 1
    assert ARCHS.get("hf").head_class(TASK.head).__name__ == "AutoModel" and TASK.describe(None) == ("no head (a plain encoder)",
                                                                                  "no logits: layer matches only")


def test_brew_ls_tasks_lists_general():
    r = brew("ls", "tasks")
    assert r.exit_code == 0 and "general" in r.output and "stride" in r.output


# ---------------------------------------------------------------------------------------------- bad inputs


BAD_UTF8 = b"good movie\nbad plot\nthe \xff actor\n"


@pytest.mark.parametrize("case, train, held, extra, needles", [
    ("empty", b"", None, {}, ["data.files.train", "corpus.txt has no text"]),
    ("blank lines", b"\n  \n\n", None, {}, ["data.files.train", "corpus.txt has no text"]),
    ("not utf-8", BAD_UTF8, None, {}, ["data.files.train", "corpus.txt line 3 is not UTF-8", "byte 0xff",
                                       "column 5", "save the file as UTF-8"]),
    ("too small", b"good movie bad plot the actor was very boring and\n", None, {},
     ["data.files.train", "corpus.txt has 10 tokens of text, fewer than one window holds (data.max_length 32: 30 "
      "tokens of text and 2 special tokens)", "lower data.max_length to 8"]),
    ("eval yields no window", None, b"good movie\n", {},
     ["data.files.validation", "held.txt yields no window", "2 tokens"]),
    ("stride", None, None, {"task": {"name": "general", "stride": 30}}, ["task.stride", "less than 30"]),
    ("kd", None, None, {"distill": {"matches": [MATCH], "kd_weight": 1}},
     ["distill.kd_weight", "task 'general' has no logits to distil; use layer matches (distill.matches) and set "
      "distill.kd_weight: 0"]),
    ("hard labels", None, None, {"distill": {"matches": [MATCH], "hard_label_weight": 0.5}},
     ["distill.hard_label_weight", "task 'general' has no labels"]),
    ("no matches", None, None, {"distill": {"temperature": 2}}, ["distill.matches", "layer matches only"]),
    ("a label column", None, None, {"data": {"label": "label"}}, ["data.label", "task 'general' does not read it"]),
    ("documents of a column", None, None, {"task": {"name": "general", "documents": "lines"}, "csv": True},
     ["task.documents", "a row is a document"]),
])
def test_bad_inputs_are_refused_at_plan_time(case, train, held, extra, needles, tmp_path, teacher_dir):
    corpus, other = tmp_path / "corpus.txt", tmp_path / "held.txt"
    corpus.write_bytes("".join(t + "\n" for t in docs(100, seed=7)).encode() if train is None else train)
    other.write_bytes(b"good movie was very boring\n" * 10 if held is None else held)
    if extra.get("csv"):
        corpus, other = corpus.with_suffix(".csv"), other.with_suffix(".csv")
        for f in (corpus, other):
            f.write_text("text\n" + "".join(t + "\n" for t in docs(100, seed=7)))
    path = write_recipe(tmp_path, {"train": corpus, "validation": other}, teacher=teacher_dir,
                        task=extra.get("task", "general"), distill=extra.get("distill"), data=extra.get("data"))
    r = brew("distill", path, "--dry-run")
    text = " ".join(r.output.split())
    assert r.exit_code == 2, text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("rows, needles", [
    ([{"body": "good movie"}, {"body": None}], ["data.text", "line", "has no text in column 'body'"]),
    ([{"body": 1}, {"body": 2}], ["data.text", "column 'body' holds int64 values, not text"]),
])
def test_a_bad_text_column_is_refused(rows, needles, tmp_path, teacher_dir):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 20))
    with open(tmp_path / "corpus.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["body"])
        w.writeheader()
        w.writerows(rows * 20)
    for name in ("corpus.csv", "corpus.jsonl"):
        r = brew("distill", write_recipe(tmp_path, {"train": tmp_path / name}, teacher=teacher_dir,
                                         data={"text": "body"}), "--dry-run")
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and all(n in text for n in needles), text


def test_other_tasks_still_refuse_text_files(tmp_path, teacher_dir):
    (tmp_path / "corpus.txt").write_text("good movie\n")
    r = brew("distill", write_recipe(tmp_path, {"train": tmp_path / "corpus.txt"}, teacher=teacher_dir,
                                     task="classification", distill={}), "--dry-run")
    assert r.exit_code == 2 and "cannot read" in r.output and "corpus.txt" in r.output


def test_a_bad_byte_anywhere_in_a_large_file_is_found_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "_CHUNK", 64)  # many chunks: a line crosses their ends
    path = tmp_path / "corpus.txt"
    lines = [f"line {i} é good movie" for i in range(1, 200)]
    lines[150] = "a bad \xff byte"
    path.write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode("utf-8").replace(b"\xc3\xbf", b"\xff") + b"\n")
    with pytest.raises(RecipeError) as e:
        datafiles.check_text(path, "data.files.train")
    assert "corpus.txt line 151 is not UTF-8 text (byte 0xff at column 7)" in str(e.value)
    path.write_bytes("\n".join(f"line {i} é" for i in range(300)).encode())
    assert datafiles.check_text(path, "data.files.train") == "lines"


# ---------------------------------------------------------------------------------------------- dry-run estimate


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_dry_run_estimates_a_large_corpus_from_its_start(kind, tmp_path, teacher_dir, monkeypatch):
    import datasets

    texts = docs(18_000, seed=8, lo=1, hi=50)  # about 2.5 MB of text, short and long documents
    if kind == "txt":
        name = "corpus.txt"
        (tmp_path / name).write_text("".join(t + "\n" for t in texts))
    else:
        name = "corpus.csv"
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text"])
            w.writerows([t] for t in texts)
    path = write_recipe(tmp_path, {"train": tmp_path / name}, teacher=teacher_dir)
    monkeypatch.setattr(datafiles, "SAMPLE_BYTES", 250_000)
    real = build_plan(load_recipe(path))
    exact = len(real.encoded["train"])
    if kind == "txt":  # nothing in a dry run reads the whole text file
        def whole(*a, **k):
            raise AssertionError("a dry run read the whole file")

        monkeypatch.setattr("brewcli.data.check_text", whole)
        monkeypatch.setattr(datasets, "load_dataset", whole)
    dry = build_plan(load_recipe(path), dry_run=True)
    estimate = dry.encoded["train"]
    assert estimate.estimated and "estimated from the first" in estimate.estimate_note
    assert len(estimate.ds) < exact / 5  # it encoded a sample
    assert abs(len(estimate) - exact) <= 0.1 * exact, (len(estimate), exact)
    assert abs(len(dry.splits.train) - len(texts)) <= 0.1 * len(texts)
    assert dry.steps_per_epoch == pytest.approx(real.steps_per_epoch, rel=0.1)
    r = brew("distill", path, "--dry-run")
    text = " ".join(r.output.split())
    assert r.exit_code == 0, text
    assert f"-> train about {len(estimate) / 1e3:.1f}k windows (estimated from the first" in text, text


@pytest.mark.parametrize("head", [True, False])
def test_any_encoder_teaches_and_the_student_is_a_plain_encoder(head, tmp_path, teacher_dir):
    """A teacher with a task head or without one; the student (built with teacher layers) saves as an encoder
    that AutoModel loads, and a window of the plan runs through it."""
    from transformers import AutoModel, BertModel

    from brewcli.train import build_models

    teacher = teacher_dir
    if not head:
        teacher = tmp_path / "encoder"
        BertModel(AutoModel.from_pretrained(teacher_dir).config).save_pretrained(teacher)
        make_tokenizer().save_pretrained(teacher)
    (tmp_path / "corpus.txt").write_text("".join(t + "\n" for t in docs(60, seed=9)))
    path = write_recipe(tmp_path, {"train": tmp_path / "corpus.txt"}, teacher=teacher)
    recipe = yaml.safe_load(path.read_text())
    recipe["student"] = {"preset": "T3", "init": "teacher-layers"}  # the teacher's width: its layers copy
    path.write_text(yaml.safe_dump(recipe))
    plan = build_plan(load_recipe(path))
    _, student = build_models(plan)
    assert type(student).__name__ == "BertModel"
    student.save_pretrained(tmp_path / "student")
    loaded = AutoModel.from_pretrained(tmp_path / "student")
    batch = plan.task.collate(plan.tokenizer)([plan.encoded["train"][i] for i in range(3)])
    out = plan.task.logits(loaded(**batch.inputs))
    assert out.shape == (3, 32, plan.task.logit_width(loaded.config))


def test_a_small_eval_fraction_is_held_out_not_trained_on(tmp_path, teacher_dir):
    """eval_fraction carves a few documents off the corpus: too few for a full window is fine for held-out text (it
    is scored on what windows it yields), and the message for a corpus too small names the training text only."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs(200, lo=5, hi=6)) + "\n")  # 4 held out: fewer tokens than a window
    path = write_recipe(tmp_path, {"train": corpus}, teacher=teacher_dir, data={"eval_fraction": 0.02})
    plan = build_plan(load_recipe(path))
    assert len(plan.encoded["eval"]) >= 1 and len(plan.encoded["train"]) > 10


def test_skip_train_samples_leaves_out_the_rows_a_capped_run_saw(tmp_path):
    """data.skip_train_samples N then max_train_samples M: rows N..N+M of the train split after the eval carve, so
    a continued run reads none of a first run's max_train_samples N rows; the held-out rows are the same."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"document {i} " + d for i, d in enumerate(docs(40, seed=3))) + "\n")

    def splits(**data):
        recipe = load_recipe(write_recipe(tmp_path, {"train": path}, data={"eval_fraction": 0.2, **data}))
        return load_splits(task_of(recipe))

    whole, first, rest = splits(), splits(max_train_samples=10), splits(skip_train_samples=10, max_train_samples=12)
    assert list(first.train["text"]) == list(whole.train["text"])[:10]
    assert list(rest.train["text"]) == list(whole.train["text"])[10:22]
    assert list(rest.eval["text"]) == list(whole.eval["text"])
