"""Entity-level NER scores and SQuAD scoring/post-processing against values worked out by hand."""

from __future__ import annotations

import json

import pytest

from brewcli.tasks.spans import SpanCounter, detect_scheme, entities, parse_tag, span_scores
from brewcli.tasks.squad import (
    QACounter,
    best_spans,
    exact_match,
    f1,
    has_answer,
    normalize_answer,
    predict_answer,
    qa_scores,
)

# ---------------------------------------------------------------- span extraction


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    # ill-formed: an I- after O opens an entity (seqeval's default mode)
    (["I-PER", "I-PER", "O"], {("PER", 0, 2)}),
    # a type switch inside an entity closes it and opens another
    (["B-PER", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 2)}),
    # B- after B- of the same type: two entities
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 3)}),
    # tags without a prefix count as I-: PER PER is one entity
    (["PER", "PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["O", "O"], set()),
    ([], set()),
])
def test_iob2_entities(tags, expected):
    assert entities(tags, "iob2") == expected
    assert entities(tags, "BIO") == expected  # alias, any case


@pytest.mark.parametrize("tags, expected", [
    # E- closes its entity; an E- right after it opens (and, at the end, closes) a new one
    (["B-PER", "E-PER", "E-PER"], {("PER", 0, 2), ("PER", 2, 3)}),
    # S- is a whole entity; an I- after S- or an E- after O opens one
    (["S-PER", "I-PER", "O", "E-LOC", "S-LOC"], {("PER", 0, 1), ("PER", 1, 2), ("LOC", 3, 4), ("LOC", 4, 5)}),
    (["B-PER", "S-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 2), ("PER", 2, 3)}),
])
def test_iob2_mode_reads_e_and_s_leniently(tags, expected):
    # seqeval's default mode also knows E- and S-; these values were checked against seqeval 1.2.2
    assert entities(tags, "iob2") == expected


def test_iob1_entities():
    # IOB1: I- opens an entity, B- only separates two adjacent entities of one type
    tags = ["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-LOC"]
    assert entities(tags, "iob1") == {("PER", 0, 2), ("PER", 2, 4), ("LOC", 5, 6)}


@pytest.mark.parametrize("tags, expected", [
    (["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"], {("PER", 0, 1), ("LOC", 2, 5)}),
    (["S-PER", "S-PER"], {("PER", 0, 1), ("PER", 1, 2)}),
    (["B-PER", "E-PER"], {("PER", 0, 2)}),
    # broken: E without B, B..I without E, B and E of different types -> dropped
    (["O", "E-PER", "O"], set()),
    (["B-PER", "I-PER", "O"], set()),
    (["B-PER", "E-LOC"], set()),
    # a broken run does not hide what follows: S-LOC inside an unfinished PER still counts
    (["B-PER", "S-LOC", "E-PER"], {("LOC", 1, 2)}),
    # the second B restarts the entity; the first B is dropped
    (["B-PER", "B-PER", "E-PER"], {("PER", 1, 3)}),
    # E ends the entity: the following E is stray
    (["B-PER", "E-PER", "E-PER"], {("PER", 0, 2)}),
])
def test_bioes_entities(tags, expected):
    assert entities(tags, "bioes") == expected
    assert entities(tags, "iobes") == expected


def test_bilou_letters_read_as_bioes():
    assert entities(["U-PER", "B-LOC", "I-LOC", "L-LOC", "O"], "bilou") == {("PER", 0, 1), ("LOC", 1, 4)}
    assert entities(["B-LOC", "I-LOC"], "bilou") == set()


def test_auto_detects_scheme_from_prefixes():
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "iob2"
    assert detect_scheme(["O", "B-PER", "I-PER", "E-PER", "S-PER"]) == "bioes"
    assert detect_scheme(["O", "U-PER"]) == "bioes"
    # no E/S prefix: IOB2 rules, the unfinished B-PER I-PER is an entity
    assert entities(["B-PER", "I-PER", "O"]) == {("PER", 0, 2)}
    # an S- prefix switches to strict BIOES, so the same B-PER I-PER is dropped
    assert entities(["B-PER", "I-PER", "O", "S-LOC"]) == {("LOC", 3, 4)}
    # whereas IOB2 rules read it as seqeval's default mode does
    assert entities(["B-PER", "I-PER", "O", "S-LOC"], "iob2") == {("PER", 0, 2), ("LOC", 3, 4)}


def test_parse_tag():
    assert parse_tag("O") == ("O", "_")
    assert parse_tag("B-PER") == ("B", "PER")
    assert parse_tag("L-LOC") == ("E", "LOC")
    assert parse_tag("U-LOC") == ("S", "LOC")
    assert parse_tag("B") == ("B", "_")
    assert parse_tag("ORG") == ("I", "ORG")
    assert parse_tag("B-NORP-X") == ("B", "NORP-X")


def test_unknown_scheme_rejected():
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        entities(["O"], "ioe2")


# ---------------------------------------------------------------- span scores

TRUE = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-MISC"]]
PRED = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "B-MISC"]]


def test_span_scores_by_hand():
    # gold entities: PER(0,2) LOC(3,4) | ORG(0,2) | MISC(1,2)  -> 4
    # predicted:     PER(0,2)          | ORG(0,1) | MISC(1,2)  -> 3, of which PER and MISC are right: tp = 2
    # precision 2/3, recall 2/4, f1 = 2*2/(3+4) = 4/7
    # tokens: 3/4 + 2/3 + 2/2 right -> 7/9
    got = span_scores(TRUE, PRED)
    assert got == pytest.approx({"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "accuracy": 7 / 9})


def test_span_scores_zero_denominators():
    assert span_scores([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0}
    assert span_scores([], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    # predictions but no gold: precision 0/1, recall 0/0
    assert span_scores([["O"]], [["B-PER"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_span_scores_auto_decides_on_whole_corpus():
    # The gold tags use S-, so the corpus is BIOES: the predicted B-PER I-PER (no E) in sentence 2 is dropped.
    true = [["S-LOC", "O"], ["O", "O"]]
    pred = [["S-LOC", "O"], ["B-PER", "I-PER"]]
    # 1 gold, 1 predicted, 1 right; tokens 2/2 + 0/2
    assert span_scores(true, pred) == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 0.5})
    # Read as IOB2, the B-PER I-PER is a false positive: precision 1/2, f1 = 2/3
    assert span_scores(true, pred, "iob2")["precision"] == pytest.approx(0.5)


def test_span_scores_rejects_ragged_input():
    with pytest.raises(ValueError):
        span_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError):
        span_scores([["O", "O"]], [["O"]])


def test_span_counter_merge_equals_one_shot():
    one_shot = span_scores(TRUE, PRED, "iob2")
    first, second = SpanCounter("iob2"), SpanCounter("iob2")
    first.update(TRUE[0], PRED[0])
    for t, p in zip(TRUE[1:], PRED[1:]):
        second.update(t, p)
    assert first.compute() != one_shot  # each half alone differs
    assert first.merge(second).compute() == one_shot
    assert first.state() == {"tp": 2, "pred": 3, "gold": 4, "correct": 7, "tokens": 9}


def test_span_counter_state_round_trip():
    counter = SpanCounter()
    counter.update(TRUE[1], PRED[1])
    # a state survives JSON (or an all-reduce of its ints) and sums with another process's state
    states = [json.loads(json.dumps(counter.state())) for _ in range(2)]
    total = SpanCounter.from_state(states[0]).merge(SpanCounter.from_state(states[1]))
    # per process: gold ORG(0,2), pred ORG(0,1): tp 0, 1 pred, 1 gold, 2/3 tokens
    assert total.state() == {"tp": 0, "pred": 2, "gold": 2, "correct": 4, "tokens": 6}
    assert total.compute() == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 2 / 3})


# ---------------------------------------------------------------- SQuAD scoring


@pytest.mark.parametrize("text, expected", [
    ("The  Cat!", "cat"),
    ("An apple, a day.", "apple day"),
    ("Theater   of\tthe Absurd", "theater of absurd"),  # articles only as whole words
    ("U.S.-led", "usled"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_best_gold():
    assert exact_match("the Eiffel Tower", ["Eiffel Tower", "Paris"]) == 1.0
    assert exact_match("paris.", ["Eiffel Tower", "Paris"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "Paris"]) == 0.0
    assert exact_match("Paris", "Paris") == 1.0  # a single gold string


def test_f1_by_hand():
    # pred [eiffel] vs [eiffel, tower]: 1 common, P=1, R=1/2 -> 2/3; vs [paris]: 0
    assert f1("Eiffel", ["Eiffel Tower", "Paris"]) == pytest.approx(2 / 3)
    # pred [big, red, dog]; vs [red, dog, barked]: 2 common, P=R=2/3 -> 2/3; vs [big, dog]: P=2/3, R=1 -> 0.8
    assert f1("the big red dog", ["red dog barked", "a big dog"]) == pytest.approx(0.8)
    # repeated tokens count once each: [dog, dog] vs [dog]: 1 common, P=1/2, R=1 -> 2/3
    assert f1("dog dog", ["dog"]) == pytest.approx(2 / 3)
    # [dog, dog] vs [dog, dog, cat]: 2 common, P=1, R=2/3 -> 0.8
    assert f1("dog dog", ["dog dog cat"]) == pytest.approx(0.8)
    assert f1("London", ["Paris"]) == 0.0
    assert f1("", ["Paris"]) == 0.0


def test_no_answer_scores_one_only_for_empty_prediction():
    assert has_answer(["Paris"]) and not has_answer([])
    assert has_answer(["", " the "])  # the raw list decides the split (official v2.0 script), not normalisation
    assert exact_match("", []) == 1.0 and f1("", []) == 1.0
    assert exact_match("Paris", []) == 0.0 and f1("Paris", []) == 0.0
    # golds that all normalise to nothing are scored against "" (official v2.0 script)
    assert f1("", ["", "  "]) == 1.0
    # a prediction that normalises to nothing is an empty answer
    assert exact_match("The.", []) == 1.0


def test_qa_counter_by_hand():
    pairs = [("Eiffel", ["Eiffel Tower", "Paris"]),  # EM 0, F1 2/3
             ("Paris", ["paris."]),  # EM 1, F1 1
             ("", []),  # no answer, predicted none: 1, 1
             ("London", [])]  # no answer, predicted one: 0, 0
    # EM 2/4; F1 (2/3 + 1 + 1 + 0)/4 = 2/3; answerable F1 (2/3 + 1)/2 = 5/6; unanswerable F1 1/2
    expected = {"exact_match": 0.5, "f1": 2 / 3, "has_answer_exact": 0.5, "has_answer_f1": 5 / 6,
                "no_answer_exact": 0.5, "no_answer_f1": 0.5}
    assert qa_scores([p for p, _ in pairs], [g for _, g in pairs]) == pytest.approx(expected)
    first, second = QACounter(), QACounter()
    for pred, gold in pairs[:2]:
        first.update(pred, gold)
    for pred, gold in pairs[2:]:
        second.update(pred, gold)
    assert "no_answer_f1" not in first.compute()  # only answerable questions so far
    assert first.compute() == pytest.approx({"exact_match": 0.5, "f1": 5 / 6})
    state = json.loads(json.dumps(second.state()))
    assert first.merge(QACounter.from_state(state)).compute() == pytest.approx(expected)


def test_qa_counter_empty():
    assert QACounter().compute() == {"exact_match": 0.0, "f1": 0.0}


# ---------------------------------------------------------------- SQuAD post-processing

# One window: [CLS] q1 q2 [SEP] red fox jumps high [SEP] over the context "red fox jumps high".
# The question tokens carry the largest logits, to show that the context mask excludes them.
CTX = "red fox jumps high"
OFFSETS = [(0, 0), (0, 0), (0, 0), (0, 0), (0, 3), (4, 7), (8, 13), (14, 18), (0, 0)]
MASK = [False, False, False, False, True, True, True, True, False]
START = [2.0, 10.0, 0.0, 0.0, 1.0, 3.0, -1.0, 0.5, 0.0]
END = [1.5, 0.0, 10.0, 0.0, 0.0, 1.0, 4.0, 0.0, 0.0]


def test_best_spans_by_hand():
    # context tokens 4..7: start [1, 3, -1, 0.5], end [0, 1, 4, 0]. Spans (s, e) with e >= s:
    # (5,6)=7 (4,6)=5 (5,5)=4 (5,7)=3 (6,6)=3 (4,5)=2 (4,4)=1 (4,7)=1 (7,7)=0.5 (6,7)=-1
    spans, null = best_spans(START, END, OFFSETS, MASK, n_best=20, max_answer_len=30)
    assert null == 3.5  # start[0] + end[0]
    assert len(spans) == 10
    assert spans[:3] == [(7.0, 4, 13), (5.0, 0, 13), (4.0, 4, 7)]
    assert [s for s, _, _ in spans] == sorted((s for s, _, _ in spans), reverse=True)
    assert all(start < end for _, start, end in spans)  # never end before start


def test_best_spans_limits():
    # n_best=3 keeps the three best
    spans, _ = best_spans(START, END, OFFSETS, MASK, n_best=3)
    assert spans == [(7.0, 4, 13), (5.0, 0, 13), (4.0, 4, 7)]
    # one token at most: (5,5)=4 "fox", (6,6)=3 "jumps", (4,4)=1 "red", (7,7)=0.5 "high"
    spans, _ = best_spans(START, END, OFFSETS, MASK, max_answer_len=1)
    assert spans == [(4.0, 4, 7), (3.0, 8, 13), (1.0, 0, 3), (0.5, 14, 18)]
    # two tokens at most: (5,6) "fox jumps" is back on top, (4,6) is not allowed
    spans, _ = best_spans(START, END, OFFSETS, MASK, max_answer_len=2)
    assert spans[0] == (7.0, 4, 13) and (5.0, 0, 13) not in spans
    # only the n_best best starts and ends are paired: with n_best=1 that is (5,6), two tokens, too long for 1
    assert best_spans(START, END, OFFSETS, MASK, n_best=1, max_answer_len=1) == ([], 3.5)
    # no context at all: no spans, still a null score
    assert best_spans(START, END, OFFSETS, [False] * 9) == ([], 3.5)


# Context "alpha beta gamma delta epsilon" in two overlapping windows; gamma (11, 16) is in both.
#   window A: [CLS] q [SEP] alpha beta gamma [SEP]      best span "beta" (tokens 4..4): 2 + 2 = 4, null 1 + 1 = 2
#   window B: [CLS] q [SEP] gamma delta epsilon [SEP]   best span "delta epsilon" (4..5): 3 + 3 = 6, null 4 + 4 = 8
LONG = "alpha beta gamma delta epsilon"
WINDOW_A = {"start_logits": [1.0, 0.0, 0.0, 0.0, 2.0, -1.0, 0.0], "end_logits": [1.0, 0.0, 0.0, -1.0, 2.0, 0.0, 0.0],
            "offsets": [None, None, None, (0, 5), (6, 10), (11, 16), None],
            "context_mask": [False, False, False, True, True, True, False]}
WINDOW_B = {"start_logits": [4.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0], "end_logits": [4.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0],
            "offsets": [None, None, None, (11, 16), (17, 22), (23, 30), None],
            "context_mask": [False, False, False, True, True, True, False]}


def test_predict_answer_picks_best_window_and_maps_offsets():
    assert predict_answer(LONG, [WINDOW_A, WINDOW_B]) == "delta epsilon"
    assert predict_answer(LONG, [WINDOW_B, WINDOW_A]) == "delta epsilon"  # not the first or last window
    assert predict_answer(LONG, [WINDOW_A]) == "beta"
    # one token at most: A gives beta 4; B gives delta 3 + 0 = 3, epsilon 0 + 3 = 3 -> beta
    assert predict_answer(LONG, [WINDOW_A, WINDOW_B], max_answer_len=1) == "beta"
    assert predict_answer(LONG, []) == ""


def test_predict_answer_null_threshold():
    # smallest null score 2 (window A), best span 6: null - best = -4
    assert predict_answer(LONG, [WINDOW_A, WINDOW_B], null_threshold=0.0) == "delta epsilon"
    assert predict_answer(LONG, [WINDOW_A, WINDOW_B], null_threshold=-3.9) == "delta epsilon"  # -4 > -3.9 is false
    assert predict_answer(LONG, [WINDOW_A, WINDOW_B], null_threshold=-4.5) == ""  # -4 > -4.5
    # window B alone: null 8 - best 6 = 2 > 0 -> no answer; a threshold of 2 keeps the span (2 > 2 is false)
    assert predict_answer(LONG, [WINDOW_B], null_threshold=0.0) == ""
    assert predict_answer(LONG, [WINDOW_B], null_threshold=2.0) == "delta epsilon"
    # without a threshold (SQuAD v1.1) the null score is ignored
    assert predict_answer(LONG, [WINDOW_B]) == "delta epsilon"
