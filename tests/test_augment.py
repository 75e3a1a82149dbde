"""data.augment: TinyBERT's word-replacement variants on hand-made rows, with seeded generators; the teacher-only
rows leave the hard-label term; the stored set; `brew augment`; and the bad inputs."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml
from conftest import NEGATIVE, POSITIVE, WORDS, base_recipe, make_tokenizer
from typer.testing import CliRunner

from brewcli.augment import words as W
from brewcli.augment.rows import Options, Words, qa_variants, row_variants, text_variants, word_slots, word_variants
from brewcli.batch import Batch
from brewcli.cli import app
from brewcli.errors import RecipeError
from brewcli.objective import HardLabel, unit_counts

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


class Fixed:
    """Candidates by hand: every word may become `<word>x` or `<word>y` (GloVe's part in these tests)."""

    def __call__(self, word):
        return [word + "x", word + "y"]


def fixed_words() -> Words:
    return Words("glove", glove=Fixed())


def options(n=20, p=0.5, ngram=0.0) -> Options:
    return Options(n, p, ngram, "[MASK]", ["film", "plot"])


# ------------------------------------------------------------------------------------------- the word rules


def test_pieces_keep_the_text_and_find_whole_words():
    text = "Don't stop: the film's plot (2004) was GREAT!"
    parts = W.pieces(text)
    assert "".join(parts) == text
    assert parts[1::2] == ["stop", "the", "plot", "was", "GREAT"]  # not the parts of don't / film's
    assert [parts[i] for i in word_slots(parts)] == ["stop", "plot", "GREAT"]  # no stop words


def test_case_follows_the_word():
    assert [W.cased_like("paris", w) for w in ("rome", "Rome", "ROME")] == ["paris", "Paris", "PARIS"]


def test_variants_are_seeded_distinct_and_change_only_slots():
    parts = W.pieces("the movie was lovely")
    slots = [W.Slot(i, ["a", "b"]) for i in word_slots(parts)]
    first = W.variants(parts, slots, 50, 1.0, random.Random(3))
    assert first == W.variants(parts, slots, 50, 1.0, random.Random(3))
    assert len(first) == len({tuple(v) for v in first}) == 4  # 2 slots x 2 candidates, duplicates dropped
    fixed = [i for i in range(len(parts)) if i not in word_slots(parts)]  # "the", "was" and the spaces
    assert all(v[i] == parts[i] for v in first for i in fixed)
    assert W.variants(parts, [W.Slot(1, [])], 5, 1.0, random.Random(0)) == []  # no candidates: no variants


def test_simple_masks_swaps_and_cuts():
    parts = W.pieces("good movie with lovely plot")
    words = word_slots(parts)
    tries = W.simple_variants(parts, words, 40, 1.0, 1.0, "[MASK]", ["film"], random.Random(0))
    assert tries
    for new, kept in tries:
        assert kept != slice(0, len(parts))  # ngram 1.0: every try is cut to 1-5 words
        assert all(new[i] in ("[MASK]", "film", "Film") for i in words)  # p 1.0: every word masked or swapped


# ------------------------------------------------------------------------------------------- rows by task


def test_a_pair_changes_one_side_at_a_time():
    row = {"premise": "the film was lovely", "hypothesis": "the plot was boring", "labels": 1}
    out = text_variants(row, ["premise", "hypothesis"], fixed_words(), options(), random.Random(0))
    assert out
    for v in out:
        changed = [c for c in ("premise", "hypothesis") if v[c] != row[c]]
        assert len(changed) == 1 and v["labels"] == 1
    assert {c for v in out for c in ("premise", "hypothesis") if v[c] != row[c]} == {"premise", "hypothesis"}


def test_token_rows_keep_every_tag_on_its_word():
    row = {"tokens": ["Alice", "visited", "Oslo", "yesterday"], "labels": [1, 0, 3, 2]}
    for v in word_variants(row, "tokens", fixed_words(), options(), random.Random(0)):
        assert v["labels"] == row["labels"] and len(v["tokens"]) == 4
        assert all(new == old or new in (old + "x", old + "y") for new, old in zip(v["tokens"], row["tokens"]))
    simple = Words("simple")
    cut = word_variants(row, "tokens", simple, Options(20, 0.5, 1.0, "[MASK]", ["film"]), random.Random(1))
    assert cut
    for v in cut:  # an n-gram keeps the tags of the words it keeps
        assert len(v["tokens"]) == len(v["labels"])
        start = row["labels"].index(v["labels"][0])
        assert v["labels"] == row["labels"][start:start + len(v["labels"])]
        assert all(t in (row["tokens"][start + j], "[MASK]", "film", "Film") for j, t in enumerate(v["tokens"]))


def qa_row():
    context = "Alice went to Oslo yesterday. Bob stayed in lovely Rome."
    return {"question": "Where did Alice go?", "context": context,
            "answers": {"text": ["lovely Rome"], "answer_start": [context.index("lovely Rome")]}}


def test_qa_answers_stay_untouched_and_their_starts_move():
    row = qa_row()
    out = qa_variants(row, ("question", "context", "answers"), fixed_words(), options(), random.Random(0), lambda: "r1")
    contexts = [v for v in out if v["context"] != row["context"]]
    assert contexts and [v for v in out if v["question"] != row["question"]]
    moved = 0
    for v in contexts:
        (start,), (text,) = v["answers"]["answer_start"], v["answers"]["text"]
        assert v["context"][start:start + len(text)] == "lovely Rome"
        moved += start != row["answers"]["answer_start"][0]
    assert moved  # words before the answer grew by a letter


def test_qa_row_whose_answer_is_not_where_it_says_is_named():
    row = qa_row()
    row["answers"] = {"text": ["Rome"], "answer_start": [3]}  # the context there reads "ce "
    with pytest.raises(RecipeError) as e:
        qa_variants(row, ("question", "context", "answers"), fixed_words(), options(p=1.0), random.Random(0),
                    lambda: "train.json row 7")
    assert "train.json row 7" in str(e.value) and "'Rome'" in str(e.value)


def test_row_variants_dispatch_by_kind():
    row = {"text": "lovely film", "labels": 0}
    assert row_variants("text", row, ["text"], fixed_words(), options(), random.Random(0), lambda: "") == \
        text_variants(row, ["text"], fixed_words(), options(), random.Random(0))


# ------------------------------------------------------------------------------------------- candidates


def write_glove(path, width=4):
    """Positive words near each other, negative words near each other, the rest elsewhere."""
    rng = random.Random(0)
    lines = []
    for w in WORDS:
        base = [1.0, 0, 0, 0] if w in POSITIVE else [0, 1.0, 0, 0] if w in NEGATIVE else [0, 0, 1.0, 0]
        lines.append(w + " " + " ".join(f"{b + rng.uniform(-0.1, 0.1):.4f}" for b in base[:width]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_glove_neighbours_are_nearest_by_cosine(tmp_path):
    g = W.GloveNeighbours(str(write_glove(tmp_path / "glove.tiny.txt")), 1000, 3, "data.augment.glove")
    near = g("Good")
    assert len(near) == 3 and all(w.lower() in POSITIVE and w[0].isupper() for w in near)
    assert g("zebra") == []  # not in GloVe: nothing to offer


def test_masked_lm_offers_whole_words_of_its_vocabulary(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tok = make_tokenizer()
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=20, max_position_embeddings=64)).save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    mlm = W.MaskedLM(str(tmp_path / "mlm"), 4, "data.augment.mlm")
    assert mlm.single_piece("movie") and not mlm.single_piece("zebra")
    (got,) = mlm.candidates([("the [MASK] was good", "the movie was good", "movie")])
    assert len(got) == 4 and "movie" not in got and all(w in WORDS for w in got)


# ------------------------------------------------------------------------------------------- teacher-only rows


def test_teacher_only_rows_leave_the_hard_label_term():
    from brewcli.tasks.sequence import Classification
    from brewcli.tasks.tokens import IGNORE, TokenClassification

    inputs = {"input_ids": torch.ones(3, 4, dtype=torch.long), "attention_mask": torch.ones(3, 4, dtype=torch.long)}
    batch = Batch(inputs, {"labels": torch.tensor([1, 0, 1])}, torch.arange(3), gold=torch.tensor([True, False, True]))
    task = Classification.__new__(Classification)
    assert task.gold_labels(batch)["labels"].tolist() == [1, -100, 1]
    assert unit_counts(batch, task)["gold"] == 2 and unit_counts(batch, task)["rows"] == 3
    batch.gold = torch.tensor([False, False, False])
    assert task.gold_labels(batch) is None
    from brewcli.batch import Features

    term = HardLabel(1.0, "none")
    value = term(batch, Features(mask=inputs["attention_mask"]), None)
    assert float(value) == 0.0 and not torch.isnan(value)

    tokens = TokenClassification.__new__(TokenClassification)
    tags = torch.tensor([[IGNORE, 2, 0, IGNORE], [IGNORE, 1, 1, IGNORE], [IGNORE, 0, IGNORE, IGNORE]])
    batch = Batch(inputs, {"labels": tags}, torch.arange(3), gold=torch.tensor([True, False, True]))
    assert tokens.gold_labels(batch)["labels"][1].tolist() == [IGNORE] * 4
    assert unit_counts(batch, tokens)["gold"] == 3 and unit_counts(batch, tokens)["labels"] == 5


# ------------------------------------------------------------------------------------------- end to end


def augment_recipe(tmp_path, teacher_dir, data_files, augment, **changes):
    r = base_recipe(teacher_dir, data_files, tmp_path / "out", **changes)
    r["data"]["augment"] = augment
    r = {k: v for k, v in r.items() if v is not None}
    r.setdefault("distill", {})["cache_dir"] = str(tmp_path / "cache")
    if "teacher" not in r:
        del r["distill"]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def test_the_recipe_a_run_saves_loads_back(tmp_path, teacher_dir, data_files):
    from brewcli.recipe import load_recipe

    for augment in ({"method": "glove", "glove": "g.txt"}, {"method": "simple", "ngram": 0.5}):
        recipe = load_recipe(augment_recipe(tmp_path, teacher_dir, data_files, augment))
        (tmp_path / "saved.yaml").write_text(recipe.dump())  # what a run folder holds, for brew eval
        again = load_recipe(tmp_path / "saved.yaml").data.augment
        assert again == recipe.data.augment and again.ngram_chance == (0.25 if augment["method"] == "glove" else 0.5)


def test_distill_with_glove_augmentation_stores_the_set_and_reads_it_back(tmp_path, teacher_dir, data_files):
    glove = write_glove(tmp_path / "glove.tiny.txt")
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, {"method": "glove", "glove": str(glove), "n": 4,
                                                                "m": 3}, train__epochs=1)
    r = brew("augment", recipe, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "variants, labelled by the teacher only" in r.output and "->" in r.output
    assert not (tmp_path / "cache" / "augment").exists()  # a dry run stores nothing

    r = brew("distill", recipe)
    assert r.exit_code == 0, r.output
    assert "augment" in r.output and "(built now)" in r.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    added = int(next(line for line in r.output.splitlines() if "variants, labelled" in line)
                .split(" rows + ")[1].split(" ")[0].replace(",", ""))
    assert added > 36  # 36 train rows (48 less a quarter held out), up to 4 variants each
    assert metrics["steps"] == -(-(36 + added) // 8)  # one epoch over the originals and their variants
    (stored,) = (tmp_path / "cache" / "augment").iterdir()

    out = tmp_path / "rows.jsonl"
    r = brew("augment", recipe, "--out", out)
    assert r.exit_code == 0, r.output and "(hit)" in r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 36 + added and sum(r["gold"] for r in rows) == 36
    assert {r["labels"] for r in rows} <= {"neg", "pos"}
    assert not rows[36]["gold"] and rows[36]["text"] != rows[0]["text"]
    r = brew("augment", recipe, "--out", out)
    assert r.exit_code == 2 and "exists" in r.output

    r = brew("cache", "ls", "--cache-dir", tmp_path / "cache")
    assert "augmented training sets (data.augment): 1" in r.output
    brew("cache", "rm", "--all", "--cache-dir", tmp_path / "cache")
    assert not stored.exists()


def test_qa_and_ner_distil_on_augmented_rows(tmp_path):
    from test_tasks import make_task_teacher, ner_rows, qa_rows, write_conll, write_jsonl

    for task, rows, write, labels in (("question-answering", qa_rows, write_jsonl, ()),
                                       ("token-classification", ner_rows, write_conll,
                                        ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))):
        d = tmp_path / task
        d.mkdir()
        teacher = make_task_teacher(d / "teacher", task, labels)
        suffix = ".jsonl" if write is write_jsonl else ".conll"
        files = {"train": write(d / f"train{suffix}", rows(24, 1)), "test": write(d / f"test{suffix}", rows(8, 2))}
        recipe = augment_recipe(d, teacher, files, {"method": "simple", "n": 3}, train__epochs=1,
                                data__max_length=32, distill={"temperature": 2, "hard_label_weight": 1.0},
                                task={"name": task, "doc_stride": 8} if task == "question-answering" else task)
        r = brew("distill", recipe)
        assert r.exit_code == 0, r.output
        assert "variants, labelled by the teacher only" in r.output


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("augment, key, says", [
    ({"method": "wordnet"}, "data.augment.method", "tinybert"),
    ({"method": "glove", "n": 0}, "data.augment.n", "greater than or equal to 1"),
    ({"method": "glove", "p": 1.5}, "data.augment.p", "less than or equal to 1"),
    ({"method": "tinybert"}, "data.augment.mlm", "name one"),
    ({"method": "simple", "glove": "x.txt"}, "data.augment.glove", "uses no model"),
    ({"method": "glove", "glove": "missing/glove.txt"}, "data.augment.glove", "does not exist"),
])
def test_bad_augment_options_are_named(tmp_path, teacher_dir, data_files, augment, key, says):
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, augment)
    r = brew("distill", recipe, "--dry-run")
    assert r.exit_code == 2, r.output
    assert key in r.output and says in r.output


def test_an_mlm_without_its_head_and_a_damaged_glove_file_are_refused(tmp_path, teacher_dir, data_files):
    glove = write_glove(tmp_path / "glove.tiny.txt")
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, {"method": "tinybert", "mlm": str(teacher_dir),
                                                                "glove": str(glove)})
    r = brew("distill", recipe, "--dry-run")
    assert r.exit_code == 2 and "data.augment.mlm" in r.output and "no masked-LM head" in r.output, r.output
    bad = tmp_path / "glove.bad.txt"
    bad.write_text("good 0.1 zero 0.3\n")
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, {"method": "glove", "glove": str(bad)})
    r = brew("distill", recipe, "--dry-run")
    assert r.exit_code == 2 and "glove.bad.txt:1 is not a GloVe line" in r.output, r.output


def test_augmentation_needs_a_teacher_and_a_loss_that_can_skip_rows(tmp_path, teacher_dir, data_files):
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, {"method": "simple"}, teacher=None, distill=None,
                            student={"model": str(teacher_dir)})
    r = brew("train", recipe, "--dry-run")
    assert r.exit_code == 2 and "no gold labels" in r.output, r.output
    recipe = augment_recipe(tmp_path, teacher_dir, data_files, {"method": "simple"}, task="regression",
                            distill={"hard_label_weight": 1.0})
    r = brew("distill", recipe, "--dry-run")
    assert r.exit_code == 2 and "distill.hard_label_weight" in r.output, r.output
    r = brew("augment", augment_recipe(tmp_path, teacher_dir, data_files, None), "--dry-run")
    assert r.exit_code == 2 and "does not augment" in r.output, r.output
