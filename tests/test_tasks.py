"""Every registered task through the same seams: the contract test, hand-computed cases for what the new tasks
compute, and an end-to-end run per new task through the command line (brew init -> distill -> eval)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from brewcli.batch import Needs, run_model
from brewcli.cli import app
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.tasks import TASKS, Task
from tests.conftest import make_model_dir, make_rows, write_csv

runner = CliRunner()
PEOPLE, PLACES = ["alice", "bob", "carol", "dave"], ["paris", "london", "rome", "oslo"]
WORDS = PEOPLE + PLACES + ["went", "to", "met", "in", "who", "where", "did", "go", "the", "city", "?", "."]
HEADS = {"token-classification": "BertForTokenClassification", "question-answering": "BertForQuestionAnswering",
         "multi-label": "BertForSequenceClassification"}


def make_task_teacher(path: Path, task: str, labels=()) -> Path:
    import transformers
    from transformers import BertConfig, BertTokenizer

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##oslo"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, num_labels=len(labels) or 2,
                     id2label=dict(enumerate(labels)) if labels else None,
                     problem_type="multi_label_classification" if task == "multi-label" else None)
    getattr(transformers, HEADS[task])(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p, q, place = rng.choice(PEOPLE), rng.choice(PEOPLE), rng.choice(PLACES)
        rows.append(rng.choice([
            {"tokens": [p, "went", "to", place], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
            {"tokens": [p, "met", q, "in", place, "city"], "ner_tags": ["B-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]},
        ]))
    return rows


def qa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, q = rng.sample(PEOPLE, 2)
        a, b = rng.sample(PLACES, 2)
        context = f"{p} went to {a} . {q} went to {b} ."
        if rng.random() < 0.5:
            question, answer = f"who went to {b} ?", q
        else:
            question, answer = f"where did {p} go ?", a
        rows.append({"id": str(i), "question": question, "context": context,
                     "answers": {"text": [answer], "answer_start": [context.index(answer)]}})
    return rows


def multilabel_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS[8:14], 3) + rng.sample(PEOPLE + PLACES, rng.randint(1, 2))
        rng.shuffle(words)
        labels = (["person"] if set(words) & set(PEOPLE) else []) + (["place"] if set(words) & set(PLACES) else [])
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_conll(path: Path, rows: list[dict]) -> str:
    blocks = ["-DOCSTART- O\n"] + ["".join(f"{w} {t}\n" for w, t in zip(r["tokens"], r["ner_tags"])) for r in rows]
    path.write_text("\n".join(blocks))
    return str(path)


def write_squad(path: Path, rows: list[dict]) -> str:
    paragraphs = [{"context": r["context"], "qas": [{"id": r["id"], "question": r["question"],
                   "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"],
                                                                                r["answers"]["answer_start"])]}]}
                  for r in rows]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}))
    return str(path)


def task_setup(name: str, tmp: Path) -> dict:
    """Teacher folder and data files for one task (recipe keys to merge into a tiny distillation recipe)."""
    if name == "classification":
        files = {"train": str(write_csv(tmp / "train.csv", make_rows(32, 1))),
                 "test": str(write_csv(tmp / "test.csv", make_rows(12, 2)))}
        return {"teacher": str(make_model_dir(tmp / "teacher")), "data": {"files": files}}
    if name == "regression":
        rows = [{"text": r["text"], "label": float(len(r["text"]) % 5)} for r in make_rows(44, 3)]
        files = {"train": str(write_csv(tmp / "train.csv", rows[:32])), "test": str(write_csv(tmp / "test.csv", rows[32:]))}
        return {"teacher": str(make_model_dir(tmp / "teacher", labels=("score",))), "data": {"files": files}}
    if name == "token-classification":
        files = {"train": write_jsonl(tmp / "train.jsonl", ner_rows(32, 1)),
                 "test": write_jsonl(tmp / "test.jsonl", ner_rows(12, 2))}
        labels = ("O", "B-LOC", "I-LOC", "B-PER")
    elif name == "question-answering":
        files = {"train": write_jsonl(tmp / "train.jsonl", qa_rows(32, 1)),
                 "test": write_jsonl(tmp / "test.jsonl", qa_rows(12, 2))}
        labels = ()
    elif name == "causal-lm":
        from tests.test_causal import make_lm_teacher, text_rows

        files = {"train": write_jsonl(tmp / "train.jsonl", text_rows(40, 1)),
                 "test": write_jsonl(tmp / "test.jsonl", text_rows(12, 2))}
        return {"teacher": str(make_lm_teacher(tmp / "teacher")), "data": {"files": files}, "task": name,
                "student": {"init": "teacher-layers", "config": {"num_hidden_layers": 2}}}
    elif name == "sentence-embedding":
        from tests.test_embedding import make_sentence_teacher, pair_rows

        files = {"train": write_jsonl(tmp / "train.jsonl", pair_rows(32, 1)),
                 "test": write_jsonl(tmp / "test.jsonl", pair_rows(12, 2))}
        return {"teacher": str(make_sentence_teacher(tmp / "teacher")), "data": {"files": files},
                "task": {"name": name, "text": ["title", "body"], "pairs": ["title", "body"]},
                "distill": {"kd_loss": "cosine"}}
    else:
        files = {"train": write_jsonl(tmp / "train.jsonl", multilabel_rows(32, 1)),
                 "test": write_jsonl(tmp / "test.jsonl", multilabel_rows(12, 2))}
        labels = ("person", "place")
    data = {"files": files, **({"label": "labels"} if name == "multi-label" else {})}
    return {"teacher": str(make_task_teacher(tmp / "teacher", name, labels)), "data": data,
            "task": {"name": name, "doc_stride": 8} if name == "question-answering" else name}


def recipe_for(name: str, tmp: Path, **train) -> Path:
    setup = task_setup(name, tmp)
    recipe = {"task": setup.get("task", name), "teacher": setup["teacher"],
              "student": setup.get("student", {"preset": "T3-small", "init": "random"}),
              "data": {**setup["data"], "eval_fraction": 0.25, "max_length": 32},
              "distill": {"temperature": 2, "matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}],
                          **setup.get("distill", {})},
              "train": {"output_dir": str(tmp / "out"), "epochs": 1, "batch_size": 4, "lr": 1e-3, **train}}
    if not TASKS.get(name).tempered:  # sentence vectors: no temperature
        del recipe["distill"]["temperature"]
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def expected_rows(name: str, batch) -> int:
    """How many rows KD compares in a batch: a row per example, a labelled token, or a start and an end."""
    if name == "token-classification":
        return int((batch.labels["labels"] != -100).sum())
    if name == "causal-lm":  # every target token, the logits shifted by one
        return int((batch.labels["labels"][:, 1:] != -100).sum())
    return 2 * batch.size if name == "question-answering" else batch.size


SCORED = {"sentence-embedding": ("recall@1", "recall@10", "mrr")}  # text pairs: retrieval (STS pairs: Spearman)
NOT_YET = {"general": "the contract compares KD views of task.logits() and scores task.metric(); task 'general' has "
                      "no logits to distil and its metric (the loss on held-out windows) comes with the loss/evaluation "
                      "side; its data side is tested in tests/test_general_data.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skip(reason=NOT_YET[n])) if n in NOT_YET else n
                                  for n in TASKS.names()])
def test_task_contract(name, tmp_path):
    from brewcli.checkpoint import save_model_folder
    from brewcli.evaluate import evaluate_model, evaluate_models, load_model
    from brewcli.train import Meter, build_job

    plan = build_plan(load_recipe(recipe_for(name, tmp_path), ["train.max_steps=2"]))
    task = plan.task
    job = build_job(plan)
    window, _ = next(job.windows())
    meter = Meter()
    job.step(window, meter)
    assert math.isfinite(meter.raw["total"]) and job.state.step == 1
    assert set(meter.raw) >= {t.name for t in job.objective.terms} | {"total"}  # every term is logged

    batch = window[0]
    s = run_model(job.plain_student, batch.inputs, Needs(logits=True), task)
    projections = job.objective.projections  # a narrower student's sentence vectors: through KD's projection
    mine = projections["kd"](s.logits) if "kd" in projections else s.logits
    zs, zt = task.views(mine, job.teacher(batch)["teacher"].logits, batch)
    assert zs.shape == zt.shape and zs.shape[0] == expected_rows(name, batch)  # no padding rows
    if name == "question-answering":  # masked positions: exactly the padding and the question tokens
        keep = batch.aux["context_mask"].clone()
        keep[:, 0] = True
        keep &= batch.mask.bool()
        assert torch.equal(zs.reshape(batch.size, 2, -1)[:, 0] > -1e3, keep)

    raw, names = plan.splits.eval, plan.splits.label_names
    before, _ = evaluate_model(job.plain_student, task, plan.encoded["eval"], job.collate, 8, task.metric(names, raw))
    scored = set(SCORED.get(name, task.metrics))  # what this task's eval split can be scored on
    assert scored <= set(before) <= set(task.metrics) and all(math.isfinite(v) for v in before.values())
    save_model_folder(tmp_path / "saved", job.plain_student, plan.tokenizer, job.objective.projections, "name: x\n", {})
    after, _ = evaluate_model(load_model(tmp_path / "saved", task), task, plan.encoded["eval"], job.collate, 8,
                              task.metric(names, raw))
    # the loaded copy runs the default attention kernel, the training student on CPU the eager one: equal up to
    # float rounding, which a correlation of near-constant predictions (regression, one step) magnifies
    assert after == pytest.approx(before, rel=1e-6, abs=1e-4)
    # scored side by side in one pass (as brew eval scores a student and its teacher): each as it scores alone, and
    # their agreement where the task measures one (the same model twice: full agreement)
    (paired, copy), agreed = evaluate_models([job.plain_student, load_model(tmp_path / "saved", task)], task,
                                             plan.encoded["eval"], job.collate, 8,
                                             [task.metric(names, raw), task.metric(names, raw)], agreement=True)
    assert paired == pytest.approx(before, rel=1e-6, abs=1e-4) and copy == pytest.approx(after, rel=1e-6, abs=1e-4)
    measured = type(task).agreement is not Task.agreement
    assert agreed == pytest.approx(1.0, abs=1e-3) if measured else agreed is None


def test_labels_go_on_the_first_sub_word(tmp_path):
    path = recipe_for("token-classification", tmp_path)
    plan = build_plan(load_recipe(path))
    tok, names = plan.tokenizer, plan.splits.label_names
    row = plan.encoded["train"][0]
    words = plan.splits.train[0]["tokens"]
    pieces = tok.convert_ids_to_tokens(row["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) == len(words) + 2  # one piece per word here
    assert row["labels"][0] == row["labels"][-1] == -100
    assert [names[i] for i in row["labels"][1:-1]] == plan.splits.train[0]["ner_tags"]
    # a word split in two: its tag on the first piece only; with label_all_tokens, B- becomes I- on the rest
    from brewcli.tasks.tokens import TokenClassification

    ds = plan.splits.train.select([0]).map(lambda r: {"tokens": ["parisoslo", *r["tokens"][1:]],
                                                      "labels": [names.index("B-LOC"), *r["labels"][1:]]})
    for label_all, second in ((False, -100), (True, names.index("I-LOC"))):
        recipe = plan.recipe.model_copy(update={"task": plan.recipe.task.model_copy(update={"label_all_tokens": label_all})})
        enc = TokenClassification().bind(recipe.task, recipe.data).encode(ds, tok, names)[0]
        assert tok.convert_ids_to_tokens(enc["input_ids"])[1:3] == ["paris", "##oslo"]
        assert enc["labels"][1:3] == [names.index("B-LOC"), second] and enc["word_starts"][1:3] == [1, 0]


def test_multi_label_kd_by_hand():
    from brewcli.losses import KD_LOSSES

    s, t = torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, -2.0]])
    # T=2: p_T = sigmoid([1, -1]) = [0.7311, 0.2689]; q_S = sigmoid([0, 1]) = [0.5, 0.7311]
    # BCE per label: -(p log q + (1-p) log(1-q)):  label 0: 0.6931;  label 1: -(0.2689 ln 0.7311 + 0.7311 ln 0.2689)
    label1 = -(0.268941 * math.log(0.731059) + 0.731059 * math.log(0.268941))
    assert KD_LOSSES.get("bce")(s, t, 2.0).item() == pytest.approx((math.log(2) + label1) / 2, rel=1e-5)
    same = KD_LOSSES.get("bce")(t, t, 2.0) - KD_LOSSES.get("bce")(t + 1, t, 2.0)
    assert same.item() < 0  # identical logits give the smallest loss


def test_qa_answer_positions_and_windows(tmp_path):
    path = recipe_for("question-answering", tmp_path)
    plan = build_plan(load_recipe(path, ["data.max_length=17", "task.doc_stride=2"]))  # short windows
    enc, raw = plan.encoded["train"], plan.splits.train
    assert len(enc) > len(raw)  # several windows per example
    for row in enc:
        example = raw[row["example"]]
        start, end = row["start_positions"], row["end_positions"]
        if start == 0:
            continue  # the answer is not in this window: [CLS]
        s, e = row["offsets"][start][0], row["offsets"][end][1]
        assert example["context"][s:e] == example["answers"]["text"][0]
    assert any(r["start_positions"] == 0 for r in enc) and any(r["start_positions"] > 0 for r in enc)


def test_token_losses_are_normalised_over_the_accumulation_window(tmp_path):
    """Two micro-batches with different numbers of labelled tokens give the gradient of one batch holding both."""
    from brewcli.objective import build_objective
    from brewcli.train import build_models, window_shares

    path = recipe_for("token-classification", tmp_path)
    plan = build_plan(load_recipe(path, ["distill.hard_label_weight=1", "distill.kd_weight=0", "distill.matches=[]"]))
    task, collate = plan.task, plan.task.collate(plan.tokenizer)
    _, student = build_models(plan)
    student.eval()
    objective = build_objective(plan)
    rows = [plan.encoded["train"][i] for i in range(4)]
    rows[0] = {**rows[0], "labels": [-100 if i > 1 else v for i, v in enumerate(rows[0]["labels"])]}  # fewer labels

    def grads(window):
        student.zero_grad()
        for batch, scale in zip(window, window_shares(window, task)):
            s = run_model(student, batch.inputs, objective.student_needs, task, batch.labels)
            loss, _, _ = objective(batch, s, None, 0.0, scale)
            loss.backward()
        return [p.grad.clone() for p in student.parameters() if p.grad is not None]

    split = grads([collate(rows[:1]), collate(rows[1:])])
    whole = grads([collate(rows)])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(split, whole))


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.mark.parametrize("name, writer, rows", [
    ("token-classification", write_conll, ner_rows),
    ("question-answering", write_squad, qa_rows),
    ("multi-label", write_jsonl, multilabel_rows),
])
def test_init_distill_eval_per_task(name, writer, rows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suffix = {write_conll: ".conll", write_squad: ".json", write_jsonl: ".jsonl"}[writer]
    train = writer(tmp_path / f"train{suffix}", rows(40, 1))
    teacher = task_setup(name, tmp_path)["teacher"]
    r = brew("init", "--teacher", teacher, "--student", "T3-small", "--data", train, "--out", "r.yaml")
    assert r.exit_code == 0, r.output
    assert f"task {name}" in " ".join(r.output.split())  # proposed from the data alone
    r = brew("distill", "r.yaml", "--dry-run")
    assert r.exit_code == 0, r.output
    r = brew("distill", "r.yaml", "train.epochs=2", "train.batch_size=8", "train.lr=1e-3")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    task = TASKS.get(name)
    assert metrics["task"] == name and set(task.metrics) <= set(metrics["student"]) <= set(metrics["teacher"])
    r = brew("eval", "runs/r", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["student"][task.main_metric] == pytest.approx(metrics["student"][task.main_metric])


@pytest.mark.parametrize("name, rows, needles", [
    ("token-classification", [{"tokens": "alice went", "ner_tags": ["B-PER", "O"]}],
     ["data.tokens", "line 1", "takes a list of words"]),
    ("token-classification", [{"tokens": ["alice", "went"], "ner_tags": ["B-PER"]}],
     ["data.tags", "line 1 has 2 words but 1 tags"]),
    ("token-classification", [{"tokens": ["alice"], "ner_tags": ["B-PRE"]}],
     ["data.tags", "tags ['B-PRE'] are not among the teacher's tags", "did you mean 'B-PER'?"]),
    ("question-answering", [{"question": "who ?", "context": "alice went", "answers": {"text": ["alice"],
                                                                                      "answer_start": [3]}}],
     ["data.answers", "line 1", "answer_start 3 does not point at the answer 'alice'", "the text occurs at 0"]),
    ("multi-label", [{"text": "alice went", "labels": ["persn"]}],
     ["data.label", "labels ['persn'] are not among the teacher's labels", "did you mean 'person'?"]),
    ("multi-label", [{"text": "alice went", "labels": "person"}], ["data.label", "line 1", "a list of label names"]),
])
def test_bad_task_rows_fail_before_weights_load(name, rows, needles, tmp_path, monkeypatch):
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the data was checked")

    path = recipe_for(name, tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", rows * 4)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(no_weights))
    r = brew("distill", path, "--dry-run", f"data.files={{train: {bad}}}", "data.eval_fraction=0.5")
    text = " ".join(r.output.split())
    assert r.exit_code == 2, text
    for needle in needles:
        assert needle in text, text


def test_teacher_without_the_task_head(tmp_path):
    path = recipe_for("token-classification", tmp_path)
    other = make_task_teacher(tmp_path / "qa-teacher", "question-answering")
    r = brew("distill", path, "--dry-run", f"teacher={other}")
    assert r.exit_code == 2 and "has no token-classification head" in r.output


@pytest.mark.parametrize("family", ["gpt2", "llama", "distilbert", "roberta", "electra", "deberta-v2"])
def test_presets_and_layer_copy_for_other_families(family, tmp_path):
    """A decoder or another encoder family as the teacher: the preset resizes it through the family's own field
    names and teacher-layers copies the right layers (GPT-2's h.N., Llama's layers.N.)."""
    import transformers

    from brewcli.models.families import read_widths
    from brewcli.train import build_models
    from tests.conftest import make_tokenizer

    tok = make_tokenizer()
    common = dict(vocab_size=len(tok), num_labels=2, id2label={0: "neg", 1: "pos"}, pad_token_id=0)
    config = {"gpt2": transformers.GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=64, **common),
              "llama": transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                                                num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=64, **common),
              "distilbert": transformers.DistilBertConfig(dim=32, hidden_dim=48, n_layers=4, n_heads=4,
                                                          max_position_embeddings=64, **common),
              "roberta": transformers.RobertaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                                                    num_attention_heads=4, max_position_embeddings=66,
                                                    **{**common, "pad_token_id": 1}),
              "electra": transformers.ElectraConfig(embedding_size=32, hidden_size=32, intermediate_size=48,
                                                    num_hidden_layers=4, num_attention_heads=4,
                                                    max_position_embeddings=64, **common),
              "deberta-v2": transformers.DebertaV2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                                                         num_attention_heads=4, max_position_embeddings=64,
                                                         **common)}[family]
    teacher_dir = tmp_path / "teacher"
    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    files = {"train": str(write_csv(tmp_path / "train.csv", make_rows(16, 1)))}
    recipe = {"teacher": str(teacher_dir), "student": {"preset": "T3", "init": "teacher-layers"},
              "data": {"files": files, "max_length": 16},
              "distill": {"matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]},
              "train": {"output_dir": str(tmp_path / "out"), "max_steps": 1, "batch_size": 8}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plan = build_plan(load_recipe(path))
    assert read_widths(plan.student_config).layers == 3 and plan.init_layers == [0, 2, 3]
    teachers, student = build_models(plan)
    teacher = teachers["teacher"]
    pattern = {"gpt2": "h.{}.", "llama": "layers.{}.", "distilbert": "transformer.layer.{}."}.get(family,
                                                                                              "encoder.layer.{}.")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s_layer, t_layer in enumerate(plan.init_layers):
        keys = [k for k in s_state if pattern.format(s_layer) in k]
        assert keys
        for k in keys:
            assert torch.equal(s_state[k], t_state[k.replace(pattern.format(s_layer), pattern.format(t_layer))]), k
    r = brew("distill", path)
    assert r.exit_code == 0, r.output
