"""Figures a user can believe: brew's SQuAD scores against the official scripts' logic, speed figures that keep
their order under load, and tables that fit the width they get."""

from __future__ import annotations

import collections
import random
import re
import string

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
