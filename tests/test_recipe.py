"""Recipe schema, overrides, and every kind of bad input: one short message naming the key, exit code 2,
no traceback, and nothing loaded or written."""

import pytest
import yaml
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.errors import RecipeError, RecipeErrors
from brewcli.recipe import apply_override, load_recipe, parse_override

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def fails(recipe_path, *needles, extra=()):
    result = brew("distill", recipe_path, "--dry-run", *extra)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text
    return text


def test_valid_recipe_and_shorthands(recipe_file):
    r = load_recipe(recipe_file(student="T3"))
    assert r.student.preset == "T3" and r.teacher.model.endswith("tiny-teacher")
    assert r.distill.matches[0].preset == "uniform"
    assert r.train.keep_best == "auto" and r.best_metric == "accuracy"


def test_overrides_go_through_the_schema(recipe_file):
    r = load_recipe(recipe_file(), ["train.lr=3e-5", "distill.temperature=8", "student.init=random",
                                    "distill.matches.0.weight=2", "distill.matches.1=L3_hidden_mse"])
    assert r.train.lr == 3e-5 and r.distill.temperature == 8
    assert r.distill.matches[0].weight == 2 and r.distill.matches[1].preset == "L3_hidden_mse"
    with pytest.raises(RecipeErrors) as e:
        load_recipe(recipe_file(), ["train.lrr=1"])
    assert "train.lrr: unknown key (command-line override); did you mean 'lr'?" in str(e.value)
    r = load_recipe(recipe_file(student="T3"), ["student.init=random"])  # shorthand section gains a key
    assert r.student.preset == "T3" and r.student.init == "random"


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="not key=value"):
        parse_override("train.lr")
    with pytest.raises(RecipeError, match="no such key or list item"):
        apply_override({"distill": {"matches": []}}, ["distill", "matches", 3, "weight"], 1)


def test_unknown_key_names_line_and_nearest(recipe_file, tmp_path):
    path = recipe_file()
    raw = yaml.safe_load(path.read_text())
    raw["distill"]["temprature"] = raw["distill"].pop("temperature")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    text = fails(path, "distill.temprature: unknown key; did you mean 'temperature'?")
    assert "recipe.yaml:" in text  # line number of the key


@pytest.mark.parametrize("changes, needles", [
    ({"student": "T4tiny"}, ["student.preset", "'T4tiny' is not a known student; did you mean 'T4-tiny'?"]),
    ({"distill__kd_loss": "kll"}, ["distill.kd_loss", "did you mean 'kl'?", "(see `brew ls losses`)"]),
    ({"distill__matches": ["L3_hidden_mes"]}, ["distill.matches[0].preset", "did you mean 'L3_hidden_mse'?"]),
    ({"distill__matches": [{"preset": "uniform", "loss": "hiden_mse"}]}, ["distill.matches[0].loss",
                                                                       "did you mean 'hidden_mse'?"]),
    ({"distill__temperature_scheduler": "fls"}, ["distill.temperature_scheduler.name", "did you mean 'flsw'?"]),
    ({"train__precision": "fp8"}, ["train.precision", "expected one of fp32, bf16, fp16"]),
    ({"task": "regresion"}, ["task.name", "did you mean 'regression'?"]),
    ({"train__keep_best": "f1"}, ["train.keep_best: 'f1' is not a metric", "accuracy, macro_f1"]),
])
def test_schema_errors(recipe_file, changes, needles):
    fails(recipe_file(**changes), *needles)


def test_regression_rejects_ce_kd(recipe_file):
    fails(recipe_file(task="regression", distill__kd_loss="ce"), "distill.kd_loss: 'ce' does not fit task 'regression'",
          "use one of mse")


@pytest.mark.parametrize("changes, needles", [
    ({"distill__matches": [{"teacher_layer": 9, "student_layer": 1}]},
     ["distill.matches[0].teacher_layer", "teacher layer 9 is out of range", "hidden layers run 0..4"]),
    ({"distill__matches": ["L3_hidden_mse"]}, ["preset L3_hidden_mse", "teacher layer 8 is out of range",
                                                "preset: uniform"]),
    ({"distill__matches": [{"teacher_layer": 0, "student_layer": 0, "feature": "attention"}]},
     ["attention layers run 1..4"]),
    ({"distill__matches": [{"teacher_layer": 4, "student_layer": 3, "proj": "none"}]},
     ["distill.matches[0].proj", "hidden sizes differ (student 16, teacher 32) and proj is none"]),
    ({"distill__matches": [{"teacher_layer": 4, "student_layer": 3, "loss": "attention_mse", "feature": "hidden"}]},
     ["distill.matches[0].loss", "'attention_mse' is a loss on attention features"]),
    ({"distill__matches": [{"teacher_layer": 4, "student_layer": 3, "loss": "mmd"}]},
     ["distill.matches[0].teacher_layer", "give a pair such as [4, 4]"]),
    ({"student": {"preset": "T3-small", "init": "teacher-layers"}}, ["student.init", "'teacher-layers' copies layers"]),
    ({"student": {"preset": "T3", "teacher_layers": [0, 1, 7]}}, ["student.teacher_layers", "layer 7 is out of range"]),
    ({"student": {"preset": "T3", "config": {"hidden_sise": 8}}}, ["student.config.hidden_sise",
                                                                  "did you mean 'hidden_size'?"]),
    ({"teacher": "/no/such/teacher"}, ["teacher: folder not found: /no/such/teacher"]),
    ({"data__files": {"train": "/no/such.csv"}}, ["data.files.train: file not found: /no/such.csv"]),
    ({"data__text": "txt"}, ["data.text: no column 'txt'", "in train.csv", "did you mean 'text'?"]),
    ({"data__label": "labl"}, ["data.label: no column 'labl'", "did you mean 'label'?"]),
    ({"data__test_split": "tset"}, ["data.test_split: no split 'tset'", "did you mean 'test'?"]),
    ({"task": {"name": "classification", "num_labels": 3}}, ["task.num_labels: is 3 but the data has 2 labels"]),
    ({"train__device": "cuda"}, ["train.device: is cuda but no CUDA GPU is visible"]),
])
def test_bad_input_fails_before_weights_load(recipe_file, changes, needles, monkeypatch):
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the recipe was checked")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(no_weights))
    fails(recipe_file(**changes), *needles)


def test_attention_heads_must_agree_for_per_head_losses(recipe_file, tmp_path):
    from tests.conftest import make_model_dir

    teacher = make_model_dir(tmp_path / "t8", heads=8)
    fails(recipe_file(teacher=str(teacher), student={"preset": "T3", "config": {"num_attention_heads": 4}},
                      distill__matches=["L3_attention_mse"]),
          "distill.matches[0].loss", "teacher has 8 heads and the student 4", "attention_mse_sum")


def test_label_set_must_match_teacher(recipe_file, tmp_path):
    from tests.conftest import make_model_dir

    teacher = make_model_dir(tmp_path / "t3", labels=("a", "b", "c"))
    fails(recipe_file(teacher=str(teacher)), "data.label: labels ['neg', 'pos'] are not among the teacher's labels")


def test_teacher_without_task_head(recipe_file, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37)).save_pretrained(tmp_path / "base")
    fails(recipe_file(teacher=str(tmp_path / "base")), "teacher:", "has no classification head", "brew train")


def test_distill_needs_teacher_and_train_refuses_one(recipe_file, teacher_dir):
    fails(recipe_file(teacher=None), "the distill section needs a teacher")
    result = brew("train", recipe_file(), "--dry-run")
    assert result.exit_code == 2 and "brew train fine-tunes one model" in result.output


def test_missing_recipe_file(tmp_path):
    result = brew("distill", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "recipe file not found" in result.output


def test_dry_run_prints_the_plan(recipe_file, monkeypatch):
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("--dry-run loaded weights")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(no_weights))
    result = brew("distill", recipe_file(student={"preset": "T3-small"},
                                         distill__matches=["uniform", {"preset": "uniform", "loss": "mmd"},
                                                           {"preset": "uniform", "feature": "attention",
                                                            "loss": "attention_ce"}]), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in ("brew plan", "teacher", "student", "init random", "layer matches", "hidden_mse", "linear 16->32",
                   "[4, 4] -> [3, 3]", "attention_ce", "eager attention", "train 36, eval 12, test 16", "kd"):
        assert needle in out, needle


def test_local_files_named_test_or_eval_are_used(recipe_file, data_files):
    from brewcli.plan import build_plan

    plan = build_plan(load_recipe(recipe_file(data__test_split=None)))
    assert plan.splits.sizes() == {"train": 36, "eval": 12, "test": 16}
    files = {"train": data_files["train"], "validation": data_files["test"]}
    plan = build_plan(load_recipe(recipe_file(data__test_split=None, data__eval_fraction=None, data__files=files)))
    assert plan.splits.sizes() == {"train": 48, "eval": 16}


def test_init_accepts_a_layer_list_or_strategy(recipe_file):
    r = load_recipe(recipe_file(student={"preset": "T3", "init": [0, 2, 3]}))
    assert r.student.init == "teacher-layers" and r.student.teacher_layers == [0, 2, 3]
    assert load_recipe(recipe_file(student={"preset": "T3", "init": "last"})).student.teacher_layers == "last"


def test_hub_names_that_cannot_be_fetched(recipe_file):
    fails(recipe_file(teacher="some-org/no-such-model"), "teacher: 'some-org/no-such-model' is not a local "
          "folder and not in the local Hugging Face cache", "offline mode is on")
    fails(recipe_file(data={"dataset": "no-such-dataset-xyz", "max_length": 16}), "data.dataset: could not load 'no-such-dataset-xyz'")


def test_unreachable_hub_fails_at_once(recipe_file, monkeypatch):
    """Without HF_HUB_OFFLINE, brew probes the Hub once and goes offline instead of retrying for half a minute."""
    import huggingface_hub.constants

    from brewcli import hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.unreachable.cache_clear()
    try:
        fails(recipe_file(teacher="some-org/no-such-model"), "the Hub cannot be used: 127.0.0.1:9 cannot be reached")
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    finally:
        hub.unreachable.cache_clear()


def test_unlabelled_test_split_is_refused(recipe_file, tmp_path):
    from tests.conftest import write_csv

    files = {"train": str(write_csv(tmp_path / "tr.csv", [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])),
             "test": str(write_csv(tmp_path / "te.csv", [{"text": "fine", "label": -1}]))}
    fails(recipe_file(data={"files": files, "test_split": "test", "max_length": 16}), "data: te.csv line 2 is unlabelled (label -1")


def test_columns_can_be_named_in_the_task_block(recipe_file, data_files, tmp_path):
    """A task is built from its own block: `task: {text: ..., label: ...}` reads those columns; `data.text` (the older
    spelling) still works; naming a column in both is an error; a missing column names the key the recipe used."""
    import csv

    from brewcli.plan import build_plan

    renamed = {}
    for split, path in data_files.items():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        renamed[split] = tmp_path / f"{split}-renamed.csv"
        with open(renamed[split], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["body", "topic"])
            w.writeheader()
            w.writerows({"body": r["text"], "topic": r["label"]} for r in rows)
    files = {k: str(v) for k, v in renamed.items()}
    in_task = build_plan(load_recipe(recipe_file(task={"name": "classification", "text": "body", "label": "topic"},
                                                 data__files=files)))
    in_data = build_plan(load_recipe(recipe_file(data__files=files, data__text="body", data__label="topic")))
    assert in_task.splits.label_names == in_data.splits.label_names == ["neg", "pos"]
    assert in_task.encoded["train"]["input_ids"] == in_data.encoded["train"]["input_ids"]
    fails(recipe_file(task={"name": "classification", "text": "body"}, data__files=files, data__text="body"),
          "task.text: data.text names this column too; give it once")
    fails(recipe_file(task={"name": "classification", "text": "body", "label": "gold"}, data__files=files),
          "task.label: no column 'gold'", "(columns: body, topic)")
    fails(recipe_file(task={"name": "classification", "text": ["body", "topic", "body"]}, data__files=files),
          "task.text", "takes one column or a pair of columns")
