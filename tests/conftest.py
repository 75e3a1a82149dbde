"""Fixtures: tiny, randomly initialised BERT models and small labelled files, built in the test run."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ["COLUMNS"] = "200"  # rich tables unwrapped, so tests can search them
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail at once instead of retrying
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["BREW_CACHE"] = tempfile.mkdtemp(prefix="brew-cache-")  # the teacher cache of this test session, not ~/.cache
# Under pytest-xdist each worker (and every brew process it starts) gets its share of the cores: two workers each
# running torch on every core oversubscribe the CPU, and the suite then runs far slower than one thread a worker.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# The tests that take minutes (the scripts' smoke runs) start first, longest first, so that the workers share them
# and the short tests fill in around them instead of one worker finishing a long one alone at the end.
# scripts/test.sh hands the tests out one at a time (--maxschedchunk 1): each worker starts with two, so the first
# worker takes the QA and multi-label real checks (the first prepares the data they share, `task_data`) and the
# second the augmentation and quickstart scripts.
HEAVY_FIRST = ("tests/test_scripts_smoke.py::test_real_checks_smoke[bbc-qa]",
               "tests/test_scripts_smoke.py::test_real_checks_smoke[bbc-multilabel]",
               "tests/test_scripts_smoke.py::test_augment_check_smoke",
               "tests/test_scripts_smoke.py::test_quickstart_and_bench_smoke",
               "tests/test_scripts_smoke.py::test_real_checks_smoke[wnut16]",
               "tests/test_scripts_smoke.py::test_embedding_check_smoke",
               "tests/test_new_user.py::test_every_example_in_help_and_readme_runs", "tests/test_multiprocess.py",
               "tests/test_bench.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, name in enumerate(HEAVY_FIRST) if item.nodeid.startswith(name)), len(HEAVY_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


WORDS = ("good great fine lovely superb happy bad awful poor sad terrible boring movie film plot actor the a is "
         "was very not and it this").split()
POSITIVE, NEGATIVE = WORDS[:6], WORDS[6:11]


def load_script(name: str):
    """scripts/NAME.py imported as a module (its own folder on the path while it loads)."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(scripts))


def make_tokenizer():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def make_model_dir(path: Path, *, layers=4, hidden=32, heads=4, ffn=37, labels=("neg", "pos"), seed=0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=64, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos = rng.random() < 0.5
        words = rng.sample(POSITIVE if pos else NEGATIVE, 2) + rng.sample(WORDS[11:], 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "pos" if pos else "neg"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("teacher") / "tiny-teacher")


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    return {"train": str(write_csv(d / "train.csv", make_rows(48, 1))),
            "test": str(write_csv(d / "test.csv", make_rows(16, 2)))}


def base_recipe(teacher_dir, data_files, out, **changes) -> dict:
    recipe = {
        "name": "tiny",
        "task": "classification",
        "teacher": str(teacher_dir),
        "student": {"preset": "T3-small", "init": "random"},
        "data": {"files": dict(data_files), "test_split": "test", "eval_fraction": 0.25, "max_length": 16},
        "distill": {"temperature": 2, "matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]},
        "train": {"output_dir": str(out), "epochs": 2, "batch_size": 8, "lr": 1e-3, "log_every": 2},
    }
    return apply_changes(recipe, changes)


def apply_changes(recipe: dict, changes: dict) -> dict:
    """`section__field=value` sets one field of a recipe dict; `section=value` replaces the section."""
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            recipe[section][field] = value
        else:
            recipe[section] = value
    return recipe


@pytest.fixture
def recipe_file(tmp_path, teacher_dir, data_files):
    """Write a recipe built from the tiny defaults; keyword `section__field=value` changes one field."""

    def write(**changes) -> Path:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(base_recipe(teacher_dir, data_files, tmp_path / "out", **changes),
                                       sort_keys=False))
        return path

    return write
