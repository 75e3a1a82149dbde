"""A new user's path, from `brew init` to `brew eval`, through the command line on tiny real models: each snag a
user met on an unseen CSV is a test here (issue 12, "A new user's path, smoothed")."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.recipe import load_recipe
from tests.conftest import make_rows, write_csv
from tests.test_tasks import ner_rows, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
FAST = ["train.epochs=1", "train.batch_size=8", "data.max_length=16"]


def brew(*args, input=None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output and "this is a bug" not in result.output, result.output
    return result


def flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at the terminal width


@contextmanager
def cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, teacher_dir):
    """A user's folder: train.csv and test.csv, a teacher in runs/bbc-teacher, a distill recipe r.yaml and a train
    recipe teacher.yaml written with relative paths, each run once (tiny)."""
    d = tmp_path_factory.mktemp("user")
    shutil.copytree(teacher_dir, d / "runs/bbc-teacher")
    write_csv(d / "train.csv", make_rows(48, 1))
    write_csv(d / "test.csv", make_rows(16, 2))
    (d / "r.yaml").write_text(yaml.safe_dump({
        "name": "r", "teacher": "runs/bbc-teacher", "student": {"preset": "T3-small", "init": "random"},
        "data": {"files": {"train": "train.csv", "test": "test.csv"}, "eval_fraction": 0.25, "max_length": 16},
        "distill": {"temperature": 2, "matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]},
        "train": {"output_dir": "runs/r", "epochs": 2, "batch_size": 8, "lr": 1e-3}}, sort_keys=False))
    (d / "teacher.yaml").write_text(yaml.safe_dump({
        "name": "t", "student": {"model": "./runs/bbc-teacher"},
        "data": {"files": {"train": "train.csv", "test": "test.csv"}, "eval_fraction": 0.25, "max_length": 16},
        "train": {"output_dir": "runs/t", "epochs": 1, "batch_size": 8}}, sort_keys=False))
    with cwd(d):
        for command, recipe in (("distill", "r.yaml"), ("train", "teacher.yaml")):
            r = brew(command, recipe)
            assert r.exit_code == 0, r.output
            d.joinpath(f"{recipe}.out").write_text(r.output)
    return d


# ---------------------------------------------------------------------------------------------- 1. eval a train run


def test_eval_of_a_train_output_scores_the_model_alone(sandbox, tmp_path, monkeypatch):
    said = flat((sandbox / "teacher.yaml.out").read_text())
    follow = re.search(r"next: brew eval (\S+)", said).group(1)
    assert follow == "runs/t"  # relative to the folder the user is in
    monkeypatch.chdir(sandbox)
    r = brew("eval", follow)
    assert r.exit_code == 0, r.output
    assert "model" in r.output and "teacher" not in r.output and "accuracy" in r.output
    report = json.loads(brew("eval", follow, "--json").stdout)
    assert "teacher" not in report and report["split"] == "test" and report["rows"] == 16
    saved = yaml.safe_load((sandbox / "runs/t/recipe.yaml").read_text())
    assert "distill" not in saved and saved["teacher"] is None  # a train recipe, as `brew train` accepts it
    monkeypatch.chdir(tmp_path)  # the saved recipe runs from anywhere
    r = brew("train", sandbox / "runs/t/recipe.yaml", "train.output_dir=again", "--dry-run")
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "again") in flat(r.output)  # an override's path is relative to the current folder


def test_eval_of_a_run_saved_by_older_brew(sandbox, tmp_path, monkeypatch):
    """Older brew saved a distill section with every train run, and data paths relative to where it ran."""
    old = tmp_path / "old-run"
    shutil.copytree(sandbox / "runs/t", old)
    raw = yaml.safe_load((old / "recipe.yaml").read_text())
    raw["data"]["files"] = {"train": "train.csv", "test": "test.csv"}
    raw["distill"] = {"temperature": 4.0, "kd_loss": "auto"}
    (old / "recipe.yaml").write_text(yaml.safe_dump(raw))
    meta = json.loads((old / "brew.json").read_text())
    assert meta["cwd"] == str(sandbox)
    monkeypatch.chdir(tmp_path)
    r = brew("eval", old, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 16


# ---------------------------------------------------------------------------------------------- 2. splits


def init(*args, out="r.yaml"):
    return brew("init", "--task", "classification", *args, "--out", out)


def test_init_picks_up_the_test_file_beside_train(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = init("--teacher", sandbox / "runs/bbc-teacher", "--student", "T3-small", "--data", sandbox / "train.csv")
    assert r.exit_code == 0, r.output
    assert "test.csv beside train.csv is the test split" in flat(r.output)
    data = yaml.safe_load(Path("r.yaml").read_text())["data"]
    assert data["files"] == {s: os.path.relpath(sandbox / f"{s}.csv", tmp_path) for s in ("train", "test")}
    assert data["test_split"] == "test" and data["eval_fraction"] == 0.1
    r = brew("distill", "r.yaml", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "train 43, eval 5, test 16 rows" in flat(r.output)


def test_init_test_and_eval_flags_and_names_beside_train(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, n in (("bbc_train.csv", 40), ("bbc_dev.csv", 12), ("bbc_test.csv", 9), ("held.csv", 7)):
        write_csv(tmp_path / name, make_rows(n, n))
    r = init("--teacher", teacher_dir, "--student", "T3-small", "--data", "bbc_train.csv")
    assert r.exit_code == 0, r.output
    assert "bbc_dev.csv beside bbc_train.csv is the eval split" in flat(r.output)
    data = yaml.safe_load(Path("r.yaml").read_text())["data"]
    assert data["files"] == {"train": "bbc_train.csv", "eval": "bbc_dev.csv", "test": "bbc_test.csv"}
    assert data["eval_split"] == "eval" and "eval_fraction" not in data
    assert "train 40, eval 12, test 9 rows" in flat(brew("distill", "r.yaml", "--dry-run").output)

    r = init("--teacher", teacher_dir, "--student", "T3-small", "--data", "bbc_train.csv", "--test", "held.csv",
             out="named.yaml")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(Path("named.yaml").read_text())["data"]["files"]["test"] == "held.csv"
    write_jsonl(tmp_path / "other.jsonl", make_rows(5, 5))
    r = init("--teacher", teacher_dir, "--data", "bbc_train.csv", "--eval", "other.jsonl", out="mixed.yaml")
    assert r.exit_code == 2 and "a .jsonl file but the train file is .csv" in flat(r.output)
    r = init("--teacher", teacher_dir, "--data", "bbc_train.csv", "--test", "gone.csv", out="gone.yaml")
    assert r.exit_code == 2 and "--test gone.csv: file not found" in flat(r.output)
    assert not Path("mixed.yaml").exists() and not Path("gone.yaml").exists()


def test_init_leaves_out_a_test_file_without_labels(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "train.csv", make_rows(30, 1))
    write_csv(tmp_path / "test.csv", [{"text": r["text"]} for r in make_rows(8, 2)])
    r = init("--teacher", teacher_dir, "--data", "train.csv")
    assert r.exit_code == 0, r.output
    assert "test.csv beside train.csv has no column 'label', so it is not used" in flat(r.output)
    assert list(yaml.safe_load(Path("r.yaml").read_text())["data"]["files"]) == ["train"]


def test_init_data_folder_writes_the_splits_it_holds(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ner = tmp_path / "ner"
    ner.mkdir()
    for split, n in (("train", 20), ("validation", 6)):
        write_conll(ner / f"{split}.conll", ner_rows(n, n))
    r = brew("init", "--train", "--model", teacher_dir, "--data", "ner", "--out", "ner.yaml")
    assert r.exit_code == 0, r.output
    assert "train.conll in ner is the train split" in flat(r.output)
    recipe = load_recipe("ner.yaml")
    assert recipe.task.name == "token-classification" and recipe.data.eval_split == "eval"
    assert recipe.data.files == {"train": str(ner / "train.conll"), "eval": str(ner / "validation.conll")}
    assert recipe.data.test_split is None  # there is no test file, so the recipe names none
    r = brew("init", "--train", "--model", teacher_dir, "--data", "ner", "--column", "tags=ner", "--out", "n2.yaml")
    assert r.exit_code == 0 and "eval" in load_recipe("n2.yaml").data.files  # CoNLL fields take any name

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.csv").write_text("a,b\n1,2\n")
    r = brew("init", "--teacher", teacher_dir, "--data", "empty", "--out", "e.yaml")
    assert r.exit_code == 2 and "is a folder without a train file" in flat(r.output) and "notes.csv" in r.output


# ---------------------------------------------------------------------------------------------- 3. relative paths


def test_a_recipe_runs_from_any_folder(teacher_dir, data_files, tmp_path, monkeypatch):
    """brew init writes paths relative to the recipe's folder; they resolve against it, wherever brew runs."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copytree(teacher_dir, project / "models/teacher")
    shutil.copy(data_files["train"], project / "train.csv")
    monkeypatch.chdir(project)
    r = init("--teacher", "models/teacher", "--student", "T3-small", "--data", "train.csv", out="configs/r.yaml")
    assert r.exit_code == 0, r.output
    raw = yaml.safe_load(Path("configs/r.yaml").read_text())
    assert raw["teacher"] == "../models/teacher" and raw["data"]["files"] == {"train": "../train.csv"}
    assert raw["train"]["output_dir"] == "../runs/r"  # the run lands in ./runs/r of the folder brew init ran in
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = brew("distill", project / "configs/r.yaml", "--dry-run")
    assert r.exit_code == 0, r.output
    recipe = load_recipe(project / "configs/r.yaml")
    assert recipe.teacher.model == str(project / "models/teacher")
    assert recipe.train.output_dir == str(project / "runs/r")


def test_path_keys_resolve_against_the_recipe_folder(teacher_dir, tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "data").mkdir(parents=True)
    (folder / "bert-base-uncased").mkdir()  # a local folder that looks like a Hub id: local, it exists here
    write_csv(folder / "data/train.csv", make_rows(8, 1))
    raw = {"teacher": [{"model": "bert-base-uncased"}, {"model": "org/name"}, "~/models/t", "../up"],
           "student": {"model": "distilbert-base-uncased", "init": "pretrained"},
           "data": {"files": {"train": ["data/train.csv", "data/more.csv"], "test": "data/test.csv"}},
           "distill": {"cache_dir": "cache"}, "train": {"output_dir": "runs/x"}}
    (folder / "r.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    r = load_recipe(folder / "r.yaml")
    assert [t.model for t in r.teachers] == [str(folder / "bert-base-uncased"), "org/name",
                                             str(Path.home() / "models/t"), str(tmp_path / "up")]
    assert r.student.model == "distilbert-base-uncased"  # a Hub id: no such folder beside the recipe
    assert r.data.files == {"train": [str(folder / "data/train.csv"), str(folder / "data/more.csv")],
                            "test": str(folder / "data/test.csv")}
    assert r.distill.cache_dir == str(folder / "cache") and r.train.output_dir == str(folder / "runs/x")
    # command-line overrides are relative to the current folder, as typed in a shell
    r = load_recipe(folder / "r.yaml", ["train.output_dir=out", "data.files.test=t.csv", "teacher.1.model=./here",
                                        "student.model=org/other"])
    assert r.train.output_dir == str(tmp_path / "out") and r.data.files["test"] == str(tmp_path / "t.csv")
    assert r.teachers[1].model == str(tmp_path / "here") and r.student.model == "org/other"
    assert r.teachers[0].model == str(folder / "bert-base-uncased")  # the file's paths keep their folder


def test_shipped_recipes_resolve_to_the_repository_root():
    """The quickstart (run at the repository root) writes runs/bbc-teacher and runs/bbc-T3 there."""
    teacher = load_recipe(ROOT / "recipes/bbc/teacher.yaml")
    assert teacher.train.output_dir == str(ROOT / "runs/bbc-teacher")
    assert teacher.student.model == str(ROOT / "data/all-MiniLM-L6-v2")
    for recipe in sorted((ROOT / "recipes").rglob("distill-*.yaml")):
        r = load_recipe(recipe)
        teacher = {"bbc-embed": "data/all-MiniLM-L6-v2", "lm": "data/smollm2"}.get(recipe.parent.name,  # pretrained
                                                                                   f"runs/{recipe.parent.name}-teacher")
        assert r.teacher.model == str(ROOT / teacher), recipe
        assert r.train.output_dir == str(ROOT / "runs" / f"{recipe.parent.name}-{recipe.stem[len('distill-'):]}")
        data = {"bbc-titles": "bbc", "lm": "bbc"}.get(recipe.parent.name, recipe.parent.name)  # the BBC set's text
        assert all(Path(f).parent == ROOT / "data" / data for f in r.data.files.values())


# ---------------------------------------------------------------------------------------------- 4. defaults


def test_init_proposes_training_settings_from_the_data(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = make_rows(3000, 3)
    for i, row in enumerate(rows):
        row["text"] = " ".join([row["text"]] * (1 + i % 12))  # 5 to 60 words: mostly padding in a random batch
    write_csv(tmp_path / "varied.csv", rows)
    r = brew("init", "--train", "--model", teacher_dir, "--data", "varied.csv", "--out", "t.yaml")
    assert r.exit_code == 0, r.output
    text = Path("t.yaml").read_text()
    train = yaml.safe_load(text)["train"]
    assert train["group_by_length"] is True and "5 to 60 words a row" in text and "padding" in text
    assert train["epochs"] == 1 and "1 epoch of 3,000 rows" in text
    assert train["lr"] == 1e-4 and "hidden 32" in text  # a small model: the BBC teacher recipe's lr
    assert yaml.safe_load((ROOT / "recipes/bbc/teacher.yaml").read_text())["train"]["lr"] == train["lr"]

    write_csv(tmp_path / "small.csv", make_rows(300, 4))  # every row 5 words: nothing to gain from grouping
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768,
                                                  "max_position_embeddings": 512}))
    r = brew("init", "--train", "--model", wide, "--data", "small.csv", "--out", "w.yaml")
    assert r.exit_code == 0, r.output
    text = Path("w.yaml").read_text()
    train = yaml.safe_load(text)["train"]
    assert train["group_by_length"] is False and "5 words a row" in text
    assert train["epochs"] == 5 and train["lr"] == 5e-5 and "hidden 768" in text
    r = brew("init", "--teacher", teacher_dir, "--data", "small.csv", "--out", "d.yaml")
    assert r.exit_code == 0 and yaml.safe_load(Path("d.yaml").read_text())["train"]["epochs"] == 6  # a student: more


# ---------------------------------------------------------------------------------------------- 5. asking


@pytest.fixture
def interactive(monkeypatch):
    import brewcli.cli as cli

    monkeypatch.setattr(cli, "_interactive", lambda: True)


def test_init_checks_out_first(interactive, teacher_dir, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("taken.yaml").write_text("name: mine\n")
    answers = ["taken.yaml", "new.yaml", data_files["train"], "", str(teacher_dir), "T3-small"]
    r = brew("init", input="\n".join(answers) + "\n")
    assert r.exit_code == 0, r.output
    assert r.output.index("taken.yaml exists") < r.output.index("Data (file")  # before any other question
    assert Path("taken.yaml").read_text() == "name: mine\n" and Path("new.yaml").is_file()


def test_init_refuses_an_existing_out_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_text("x: 1\n")
    r = brew("init")  # no terminal: --data would be missing too, but the output file is checked first
    assert r.exit_code == 2 and "recipe.yaml exists; pass --force" in flat(r.output)


def test_init_checks_a_local_model_path(interactive, teacher_dir, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(teacher_dir, tmp_path / "runs/teacher")
    answers = ["r.yaml", data_files["train"], "", "runs/techer", "./runs/teacher", "T3-small"]
    r = brew("init", input="\n".join(answers) + "\n")
    assert r.exit_code == 0, r.output
    assert "runs/techer: no such folder; did you mean 'runs/teacher'?" in flat(r.output)
    assert r.output.count("Teacher (Hugging Face id or folder)") == 2  # asked again
    assert yaml.safe_load(Path("r.yaml").read_text())["teacher"] == "./runs/teacher"


def test_init_refuses_a_missing_model_folder_without_a_terminal(teacher_dir, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(teacher_dir, tmp_path / "runs/teacher")
    (tmp_path / "runs/empty").mkdir()
    for ref, said in (("runs/techer", "no such folder; did you mean 'runs/teacher'?"),
                      ("./nothing/here", "no such folder (. holds no folder named like 'nothing')"),
                      ("runs/empty", "is a folder but not a model folder (no config.json)"),
                      (data_files["train"], "is a file; give the model's folder")):
        r = brew("init", "--teacher", ref, "--data", data_files["train"], "--out", "x.yaml")
        assert r.exit_code == 2 and f"--teacher {ref}" in flat(r.output) and said in flat(r.output), r.output
        assert not Path("x.yaml").exists()
    for hub_id in ("bert-base-uncased", "org/name"):  # not local paths: left to the plan (and the Hub)
        r = brew("init", "--teacher", hub_id, "--data", data_files["train"], "--out", "x.yaml", "--force")
        assert r.exit_code == 0, r.output
        assert yaml.safe_load(Path("x.yaml").read_text())["teacher"] == hub_id


# ---------------------------------------------------------------------------------------------- 6. the saved recipe


def test_the_saved_recipe_is_what_ran(sandbox, tmp_path, monkeypatch):
    from brewcli.plan import build_plan

    saved_text = (sandbox / "runs/r/recipe.yaml").read_text()
    saved = yaml.safe_load(saved_text)
    assert saved["data"]["test_split"] == "test"  # the test split was scored: the saved recipe says so
    assert saved["train"]["epochs"] == 2 and "epochs: 2\n" in saved_text and "temperature: 2\n" in saved_text
    assert saved["teacher"]["model"] == str(sandbox / "runs/bbc-teacher")
    assert saved["train"]["output_dir"] == str(sandbox / "runs/r")
    assert saved["data"]["files"] == {"train": str(sandbox / "train.csv"), "test": str(sandbox / "test.csv")}
    checkpoint = next((sandbox / "runs/r").glob("checkpoint-*"))
    assert (checkpoint / "recipe.yaml").read_text() == saved_text
    monkeypatch.chdir(tmp_path)  # from another folder, the saved recipe plans the same run
    ran, again = load_recipe(sandbox / "r.yaml"), load_recipe(sandbox / "runs/r/recipe.yaml")
    assert again == ran
    a, b = build_plan(ran), build_plan(again)
    assert a.splits.sizes() == b.splits.sizes() == {"train": 36, "eval": 12, "test": 16}
    assert (a.total_steps, a.student_params, a.init) == (b.total_steps, b.student_params, b.init)
    assert [(m.teacher_layer, m.student_layer) for m in a.matches] == [(m.teacher_layer, m.student_layer)
                                                                       for m in b.matches]
    assert again.dump() == saved_text


# ---------------------------------------------------------------------------------------------- 7. examples


def _examples_in_help() -> list[str]:
    """Every example the --help texts show: the commands' epilogs and the override arguments' `e.g.`."""
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, command in [*group.commands.items(), *(("cache " + n, c) for n, c in group.commands["cache"].commands
                                                     .items())]:
        if command.epilog:
            out += [e.strip() for e in command.epilog.split(":", 1)[1].split("  |  ")]
        for param in getattr(command, "params", []):
            if param.name == "overrides":
                example = param.help.split("e.g. ", 1)[1]
                out.append(f"brew {name} {'teacher.yaml' if name == 'train' else 'r.yaml'} {example}")
    return out


def _examples_in_readme() -> list[str]:
    block = (ROOT / "README.md").read_text().split("## Using brew", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        for command in line.split("  #")[0].strip().split(" | "):
            m = re.search(r"\[([^\]]+)\]", command)
            options = [""] + m.group(1).split("|") if m else [None]
            out += [command if o is None else " ".join(command.replace(m.group(0), o).split()) for o in options]
    return [c for c in out if c.startswith("brew")]


def _run_example(line: str, sandbox: Path, interactive_answers: list[str], monkeypatch) -> None:
    import brewcli.cli as cli

    args = shlex.split(line)[1:]
    shipped = [a for a in args if a.startswith("recipes/")]
    if shipped:  # the shipped recipes need the real weights (tests/test_shipped_recipes.py): parse them here
        recipe = load_recipe(ROOT / shipped[0], [a for a in args if "=" in a and not a.startswith("-")])
        assert (recipe.teacher is None) == (args[0] == "train"), line
        return
    if args[0] in ("distill", "train", "sweep") and "--dry-run" not in args and "--resume" not in args:
        args.append("--dry-run")
    if args[0] == "sweep" and "--resume" in args:
        return  # resumes a sweep: tests/test_sweep.py runs one and resumes it
    if args[0] == "export":  # each example writes its own export folder
        for old in (sandbox / "runs" / "r").glob("onnx*"):
            shutil.rmtree(old)
    if "KEY..." in args:
        entries = json.loads(brew("cache", "ls", "--json").stdout)["entries"]
        assert entries, "brew cache build filled an entry before this example"
        args[args.index("KEY...")] = entries[0]["key"]
    args = [a.replace("runs/bbc-T3", "runs/r", 1) if a.startswith("runs/bbc-T3") else a for a in args]
    monkeypatch.setattr(cli, "_interactive", lambda: args == ["init"])  # `brew init` alone asks: the answers
    with cwd(sandbox / "init" if args[0] == "init" else sandbox):
        r = brew(*args, input="\n".join(interactive_answers) + "\n" if args == ["init"] else None)
        for made in (sandbox / "init").glob("*.yaml"):
            made.unlink()
    assert r.exit_code == 0, f"{line}\n{r.output}"


def test_every_example_in_help_and_readme_runs(sandbox, teacher_dir, monkeypatch):
    monkeypatch.setenv("BREW_CACHE", str(sandbox / "cache"))  # `brew cache rm --all` empties this one only
    place = sandbox / "init"
    (place / "data/bbc").mkdir(parents=True, exist_ok=True)
    shutil.copytree(teacher_dir, place / "runs/bbc-teacher", dirs_exist_ok=True)
    for name in ("train.csv", "test.csv"):
        shutil.copy(sandbox / name, place / name)
    write_jsonl(place / "data/bbc/train.jsonl", make_rows(20, 1))
    write_conll(place / "train.conll", ner_rows(12, 1))
    (place / "corpus.txt").write_text("".join(r["text"] + " and the plot was not boring\n" for r in make_rows(40, 3)))
    help_examples, readme = _examples_in_help(), _examples_in_readme()
    assert "brew train teacher.yaml train.lr=3e-5 train.epochs=3" in help_examples  # not a distill key
    assert len(help_examples) >= 10 and len(readme) >= 20 and "brew cache rm --all" in readme
    for line in help_examples + readme:
        _run_example(line, sandbox, ["r.yaml", "train.csv", "", "runs/bbc-teacher", "T3-small"], monkeypatch)
