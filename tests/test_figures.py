"""Figures a user can believe: brew's SQuAD scores against the official scripts' logic, speed figures that keep
their order under load, and tables that fit the width they get."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import string
import subprocess
import sys

import pytest

from brewcli.tasks.squad import QACounter, exact_match, f1, has_answer

# ---------------------------------------------------------------- the official SQuAD scripts
# A faithful reimplementation of the logic of evaluate-v1.1.py and evaluate-v2.0.py (Rajpurkar et al., SQuAD
# explorer; also huggingface/evaluate metrics/squad and squad_v2), kept to the scripts' own structure and formulas.


def official_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace (both scripts)."""
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def v11_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def v11_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def v11_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def v11_evaluate(dataset, predictions):
    f1_sum = exact_sum = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_sum += v11_metric_max_over_ground_truths(v11_exact_match_score, prediction, ground_truths)
                f1_sum += v11_metric_max_over_ground_truths(v11_f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_sum / total, "f1": 100.0 * f1_sum / total}


def v20_get_tokens(s):
    if not s:
        return []
    return official_normalize_answer(s).split()


def v20_compute_exact(a_gold, a_pred):
    return int(official_normalize_answer(a_gold) == official_normalize_answer(a_pred))


def v20_compute_f1(a_gold, a_pred):
    gold_toks, pred_toks = v20_get_tokens(a_gold), v20_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)  # if either is no-answer, F1 is 1 if they agree, 0 otherwise
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def v20_make_qid_to_has_ans(dataset):
    return {qa["id"]: bool(qa["answers"]) for article in dataset for p in article["paragraphs"] for qa in p["qas"]}


def v20_get_raw_scores(dataset, preds):
    exact_scores, f1_scores = {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                gold_answers = [a["text"] for a in qa["answers"] if official_normalize_answer(a["text"])]
                if not gold_answers:
                    gold_answers = [""]  # for unanswerable questions, the only correct answer is the empty string
                a_pred = preds[qid]
                exact_scores[qid] = max(v20_compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(v20_compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def v20_make_eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return {"exact": 100.0 * sum(exact_scores.values()) / total,
                "f1": 100.0 * sum(f1_scores.values()) / total, "total": total}
    total = len(qid_list)
    return {"exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
            "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total, "total": total}


def v20_evaluate(dataset, preds):
    """main() with no na_prob file (every no-answer probability 0, so the threshold changes nothing)."""
    qid_to_has_ans = v20_make_qid_to_has_ans(dataset)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = v20_get_raw_scores(dataset, preds)
    out = v20_make_eval_dict(exact_raw, f1_raw)
    for prefix, qids in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in v20_make_eval_dict(exact_raw, f1_raw, qids).items()})
    return out, exact_raw, f1_raw


# ---------------------------------------------------------------- random questions with the edge cases

EMPTY = ["the", "a.", "An", "...", "!?", " ", "", "'", "the the", "(a)"]  # gold answers that normalise to nothing
WORDS = "Denver Broncos Paris tower the a an red dog dog's U.S. 1,000 é naïve -- cat big".split()


def _phrase(rng) -> str:
    words = rng.choices(WORDS, k=rng.randint(1, 4))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.upper() if rng.random() < 0.5 else text + rng.choice([".", ",", "!", "  "])
    return text


def _gold(rng) -> list[str]:
    kind = rng.random()
    if kind < 0.2:
        return []  # unanswerable
    if kind < 0.3:
        return rng.sample(EMPTY, rng.randint(1, 2))  # every answer normalises to nothing
    golds = [_phrase(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        golds.insert(rng.randrange(len(golds) + 1), rng.choice(EMPTY))
    return golds


def _pred(rng, golds) -> str:
    kind = rng.random()
    if kind < 0.2:
        return rng.choice(["", *EMPTY])
    if kind < 0.5 and golds:
        return rng.choice(golds)  # a gold answer itself (possibly one that normalises to nothing)
    if kind < 0.7 and golds:
        return rng.choice(golds).lower() + rng.choice(["", " dog", " the", "."])
    return _phrase(rng)


def _questions(n: int, seed: int, answerable_only: bool = False):
    rng = random.Random(seed)
    dataset, preds, golds_of = [{"paragraphs": [{"qas": []}]}], {}, {}
    for i in range(n):
        golds = _gold(rng)
        while answerable_only and not golds:
            golds = _gold(rng)
        qid = f"q{i}"
        dataset[0]["paragraphs"][0]["qas"].append({"id": qid, "answers": [{"text": g} for g in golds]})
        preds[qid], golds_of[qid] = _pred(rng, golds), golds
    return dataset, preds, golds_of


def test_v20_agrees_with_the_official_script():
    dataset, preds, golds = _questions(4000, seed=0)
    official, exact_raw, f1_raw = v20_evaluate(dataset, preds)
    counter = QACounter(version="v2.0")
    for qid, pred in preds.items():
        assert exact_match(pred, golds[qid], "v2.0") == exact_raw[qid], (pred, golds[qid])
        assert f1(pred, golds[qid], "v2.0") == f1_raw[qid], (pred, golds[qid])  # the same float, not only close
        counter.update(pred, golds[qid])
    ours = counter.compute()
    # the split by the raw answer list: a question whose answers all normalise to nothing is answerable
    assert counter.count == official["total"] and counter.no_answer_count == official["NoAns_total"]
    assert counter.count - counter.no_answer_count == official["HasAns_total"]
    assert sum(has_answer(g) for g in golds.values()) == official["HasAns_total"]
    assert any(g and not [x for x in g if official_normalize_answer(x)] for g in golds.values())  # the edge case ran
    for key, theirs in (("exact_match", "exact"), ("f1", "f1"), ("has_answer_exact", "HasAns_exact"),
                        ("has_answer_f1", "HasAns_f1"), ("no_answer_exact", "NoAns_exact"),
                        ("no_answer_f1", "NoAns_f1")):
        assert 100 * ours[key] == pytest.approx(official[theirs], rel=1e-12, abs=1e-12), key


def test_v11_agrees_with_the_official_script():
    dataset, preds, golds = _questions(4000, seed=1, answerable_only=True)
    official = v11_evaluate(dataset, preds)
    counter = QACounter(version="v1.1")
    for qid, pred in preds.items():
        truths = golds[qid]
        assert exact_match(pred, truths, "v1.1") == float(v11_metric_max_over_ground_truths(
            v11_exact_match_score, pred, truths)), (pred, truths)
        assert f1(pred, truths, "v1.1") == v11_metric_max_over_ground_truths(v11_f1_score, pred, truths)
        counter.update(pred, truths)
    ours = counter.compute()
    assert set(ours) == {"exact_match", "f1"}  # every question has an answer
    assert 100 * ours["exact_match"] == pytest.approx(official["exact_match"], rel=1e-12)
    assert 100 * ours["f1"] == pytest.approx(official["f1"], rel=1e-12)


def test_the_versions_differ_where_the_scripts_do():
    # v1.1 keeps a gold answer that normalises to nothing: "a" matches "the" exactly, with no common token
    assert exact_match("a", ["the", "Paris"], "v1.1") == 1.0 and f1("a", ["the", "Paris"], "v1.1") == 0.0
    # v2.0 drops it, and scores an answerable question whose answers all vanish against ""
    assert exact_match("a", ["the", "Paris"], "v2.0") == 0.0
    assert exact_match("", ["the"], "v2.0") == 1.0 and f1("", ["the"], "v2.0") == 1.0 and has_answer(["the"])
    assert not has_answer([])


# ---------------------------------------------------------------- speed: paired timings


def _timed(path, layers: int, rows: int = 40, length: int = 64):
    """A real tiny BERT (hidden 256, `layers` layers) and `rows` examples of `length` tokens, ready to time."""
    import datasets
    import torch
    from transformers import BertForSequenceClassification

    from brewcli.batch import Batch
    from brewcli.evaluate import Timed
    from tests.conftest import make_model_dir

    make_model_dir(path, layers=layers, hidden=256, heads=4, ffn=1024)
    model = BertForSequenceClassification.from_pretrained(path)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30, (rows, length), generator=g).tolist()
    encoded = datasets.Dataset.from_dict({"input_ids": ids})

    def collate(batch_rows):
        x = torch.tensor([r["input_ids"] for r in batch_rows])
        return Batch({"input_ids": x, "attention_mask": torch.ones_like(x)}, {}, torch.arange(len(batch_rows)))

    return Timed(model, encoded, collate)


class _Recorder:
    """A model for the scheduling test: notes who ran, in order (the timing of the real models is below)."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def eval(self):
        return self

    def __call__(self, **inputs):
        self.log.append((self.name, inputs["input_ids"].size(0)))


def test_models_take_turns_on_the_same_rows():
    import torch

    from brewcli.batch import Batch
    from brewcli.evaluate import Timed, paired_seconds

    log = []
    rows = [{"x": i} for i in range(7)]

    class Rows(list):
        def __getitems__(self, idx):
            return [self[i] for i in idx]

    def collate(batch_rows):
        x = torch.tensor([[r["x"]] for r in batch_rows])
        return Batch({"input_ids": x, "attention_mask": torch.ones_like(x)}, {}, x[:, 0])

    models = {"teacher": Timed(_Recorder("teacher", log), Rows(rows), collate),
              "student": Timed(_Recorder("student", log), Rows(rows), collate)}
    times = paired_seconds(models, batch_size=3, rounds=4, warmup=2)
    assert [n for n, _ in log] == ["teacher", "student"] * 6  # 2 warm-up rounds, then 4 timed, in turns
    assert all(size == 3 for _, size in log) and {len(v) for v in times.values()} == {4}


def test_speedup_is_the_median_of_neighbouring_ratios():
    from brewcli.evaluate import BUSY_PCT, report, speed_note
    from brewcli.tasks import TASKS

    # a load that comes and goes: every second round is 10x slower for both models alike
    teacher = {"latency_ms": [10.0, 100.0] * 10, "throughput": [100.0, 10.0] * 3}
    student = {"latency_ms": [4.0, 40.0] * 10, "throughput": [250.0, 25.0] * 3}
    task = TASKS.get("classification")
    out = report(task, "test", 20, {"accuracy": 0.9, "params": 10}, {"accuracy": 1.0, "params": 20},
                 "t", timings={"student": student, "teacher": teacher})
    assert out["speedup"] == 2.5 and out["speedup_spread_pct"] == 0.0  # a ratio of medians would mislead too
    assert out["student"]["latency_ms"] == 22.0 and out["student"]["latency_spread_pct"] > BUSY_PCT
    assert out["timing_spread_pct"] == out["student"]["latency_spread_pct"]
    assert "the machine is busy; rerun for a firm figure" in speed_note(out)
    steady = {"latency_ms": [10.0, 10.5, 9.5, 10.0], "throughput": [100.0, 101.0]}
    out = report(task, "test", 20, {"accuracy": 0.9, "params": 10}, timings={"student": steady})
    assert out["student"]["latency_ms"] == 10.0 and "busy" not in speed_note(out) and "speedup" not in out
    assert "median of 4 single-example passes" in speed_note(out) and out["timing_rounds"] == 4
    out = report(task, "test", 20, {"accuracy": 0.9, "params": 10}, {"accuracy": 1.0, "params": 20}, "t", timings={})
    assert "latency_ms" not in out["student"] and "speedup" not in out and "not timed" in speed_note(out)


def test_timing_rounds_set_the_passes_and_zero_times_nothing(tmp_path):
    from brewcli.evaluate import measure_speed, time_against

    small = _timed(tmp_path / "small", layers=1)
    timings = measure_speed({"student": small}, rounds=5, throughput_batch=4)
    assert len(timings["student"]["latency_ms"]) == 5 and len(timings["student"]["throughput"]) == 1
    assert time_against(small, None, None, rounds=0) == {}


@contextlib.contextmanager
def cpu_load():
    """Busy loops on every core, as a parallel job would run, while the block times the models."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_timings_keep_their_order_under_load(tmp_path):
    import torch

    from brewcli.evaluate import measure_speed, report
    from brewcli.tasks import TASKS

    small, big = _timed(tmp_path / "small", layers=1), _timed(tmp_path / "big", layers=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread among the busy loops: the load slows it, spinning threads do not
    try:
        with cpu_load() as procs:
            timings = measure_speed({"student": small, "teacher": big}, rounds=12, throughput_batch=8)
            assert all(p.poll() is None for p in procs)  # the load ran all along
    finally:
        torch.set_num_threads(threads)
    params = {name: sum(p.numel() for p in t.model.parameters()) for name, t in (("student", small), ("teacher", big))}
    out = report(TASKS.get("classification"), "test", 40, {"accuracy": 0.5, "params": params["student"]},
                 {"accuracy": 0.5, "params": params["teacher"]}, "big", timings=timings)
    assert out["teacher"]["latency_ms"] > out["student"]["latency_ms"]
    assert out["teacher"]["throughput"] < out["student"]["throughput"]
    assert out["speedup"] > 1
    for model in ("student", "teacher"):
        assert {"latency_spread_pct", "throughput_spread_pct"} <= set(out[model])


# ---------------------------------------------------------------- tables at the width they get


def _render(monkeypatch, width: int, show) -> str:
    """What `show()` prints on a non-terminal console `width` columns wide (a CI log)."""
    import io

    from rich.console import Console

    from brewcli import ui

    out = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=out, width=width, force_terminal=False, highlight=False))
    show()
    return out.getvalue()


def _one_line_rows(text: str) -> None:
    """No table row continues on a second line: each line of a table body names its row in its first cell."""
    for line in text.splitlines():
        if line.startswith("│"):
            first = line.split("│")[1]
            assert first.strip(), f"a row wrapped onto a second line: {line!r}"


@pytest.fixture(scope="module")
def quickstart_like_plan(tmp_path_factory):
    """The quickstart's shape: a 6 x 384 teacher, a T3 student from its layers, uniform hidden matches."""
    import yaml

    from brewcli.plan import build_plan
    from brewcli.recipe import load_recipe
    from tests.conftest import base_recipe, make_model_dir, make_rows, write_csv

    d = tmp_path_factory.mktemp("quickstart")
    teacher = make_model_dir(d / "runs" / "bbc-teacher", layers=6, hidden=384, heads=12, ffn=1536)
    files = {"train": str(write_csv(d / "train.csv", make_rows(48, 1))),
             "test": str(write_csv(d / "test.csv", make_rows(16, 2)))}
    recipe = base_recipe(teacher, files, d / "runs" / "bbc-T3",
                         student={"preset": "T3", "init": "teacher-layers", "teacher_layers": "uniform"},
                         data__max_length=64, distill__temperature=8)
    (d / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return build_plan(load_recipe(d / "r.yaml"))


def test_plan_rows_stay_on_one_line_at_80_columns(monkeypatch, quickstart_like_plan):
    from brewcli.ui import render_plan

    text = _render(monkeypatch, 80, lambda: render_plan(quickstart_like_plan))
    _one_line_rows(text)
    lines = text.splitlines()
    matches = [line for line in lines if "hidden_mse" in line]
    assert len(matches) == 4 and all(len(line) <= 80 for line in matches)  # 0->0 .. 6->3, one line each
    assert [m.split("│")[2].strip() for m in matches] == ["0 -> 0", "2 -> 1", "4 -> 2", "6 -> 3"]
    for key in ("teacher", "student", "task", "data", "training", "output"):  # the plan: one line per key
        assert sum(bool(re.match(rf"{key}\s\s", line)) for line in lines) == 1, key
    assert any("6 layers x 384" in line and re.match(r"teacher\s\s", line) for line in lines)
    wide = _render(monkeypatch, 200, lambda: render_plan(quickstart_like_plan))
    assert sum("hidden_mse" in line for line in wide.splitlines()) == 4
    assert "shapes (teacher | student)" in wide and "(B, L, 384) | (B, L, 384)" in wide  # room: every column


def test_results_rows_stay_on_one_line_at_80_columns(monkeypatch):
    from brewcli.ui import plain_table, results_table

    scores = {"precision": 0.81234, "recall": 0.7712, "f1": 0.79, "accuracy": 0.9612, "params_h": "109.5M",
              "size_h": "438.0MB", "latency_ms": 31.24, "throughput": 1234.5}
    cols = [(m, m) for m in ("precision", "recall", "f1", "accuracy")] + [
        ("params_h", "params"), ("size_h", "size"), ("latency_ms", "ms/example"), ("throughput", "examples/s")]
    rows = [("teacher", scores), ("student", {**scores, "params_h": "17.4M"})]
    for width in (80, 60, 40):
        text = _render(monkeypatch, width, lambda: __import__("brewcli.ui").ui.console.print(
            results_table("runs/wnut16-T3 on test (1287 rows, cpu)", rows, cols)))
        _one_line_rows(text)
        lines = text.splitlines()
        assert sum("teacher" in line for line in lines) == 1 and all(len(line) <= width for line in lines), text
        assert any("17.4M" in line for line in lines)  # the parameter count survives every width
    ls = [("95b1ee55c9248c1eaeddfcd9", "runs/teacher", "logits, hidden.0, hidden.2, hidden.4, hidden.6", "258.2kB")]
    text = _render(monkeypatch, 80, lambda: __import__("brewcli.ui").ui.console.print(
        plain_table("teacher cache", ("entry", "teacher", "stored", "size"), ls)))
    _one_line_rows(text)


def test_a_long_title_wraps_at_the_console_not_the_table(monkeypatch):
    """A checkpoint's full path as the title: one line at a width that holds it, though the table is narrower (a
    rich table's own title folds at the table's width, mid-path)."""
    from brewcli.ui import results_table

    title = "/tmp/pytest-of-root/pytest-0/popen-gw1/test_quickstart_and_bench_smok0/runs/bbc-T3 on test (4 rows, cpu)"
    rows = [("teacher", {"accuracy": 0.5}), ("student", {"accuracy": 0.25})]
    text = _render(monkeypatch, 200, lambda: __import__("brewcli.ui").ui.console.print(
        results_table(title, rows, [("accuracy", "accuracy")])))
    assert text.splitlines()[0] == title and max(len(line) for line in text.splitlines()[1:]) < len(title)
