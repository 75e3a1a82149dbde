"""A brew output folder, read back: its recipe (as it ran), task, label set, splits and teacher records.

`brew eval` and `brew export` both start here, and every check is made before any weights load: the folder is a
brew output (config.json, recipe.yaml, and weights or an exported model), its brew.json is intact, the split asked
for exists. An exported folder (export.py) holds the same files beside `model.onnx` and its `export.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from brewcli import data as data_mod
from brewcli.errors import BrewError, doing

EXPORT_MANIFEST = "export.json"


@dataclass
class RunFolder:
    folder: Path
    meta: dict  # brew.json: the teachers, where the run ran
    recipe: object  # the recipe as it ran (relative paths from where it ran)
    task: object  # bound to the recipe's task and data blocks
    config: object  # the model's config
    names: list[str] | None  # the label set in id order (None for tasks without classes)
    export: dict | None = None  # an exported folder's manifest

    @property
    def teacher_ref(self) -> str | None:
        return self.meta.get("teacher") or (self.recipe.teachers[0].model if self.recipe.teachers else None)

    def teacher_records(self) -> list[dict]:
        """Each teacher the run recorded: name, model, weight, label order."""
        return self.meta.get("teachers") or ([{"name": "teacher", "model": self.teacher_ref, "weight": 1.0,
                                               "label_order": None}] if self.teacher_ref else [])

    def stages(self) -> list | None:
        """The `stages` list of a staged run's top folder (its metrics.json), for the report's line about them."""
        try:
            stages = json.loads((self.folder / "metrics.json").read_text()).get("stages")
        except (OSError, ValueError, AttributeError):
            return None
        return stages if isinstance(stages, list) and all(isinstance(s, dict) for s in stages) else None


def open_run(path: str, data_file: str | None = None, what: str = "a brew output folder, its best/ or a "
             "checkpoint-STEP/ folder") -> RunFolder:
    """Read and check a brew output (or export) folder; `data_file` replaces the recipe's data with one file."""
    from brewcli.models.hf import check_weights, load_config
    from brewcli.recipe import load_recipe
    from brewcli.tasks import task_of

    folder = Path(path)
    if not folder.is_dir():
        raise BrewError(f"{path}: no such folder; give {what}")
    if not (folder / "config.json").is_file():
        raise BrewError(f"{path}: not a model folder (no config.json); give {what}")
    if not (folder / "recipe.yaml").is_file():
        raise BrewError(f"{path}: has no recipe.yaml, so brew does not know its task and data; was it made by brew?")
    doing(f"reading {folder}")
    export = read_manifest(folder)
    meta = read_meta(folder)
    ran_in = meta.get("cwd") if isinstance(meta.get("cwd"), str) else "."  # where older runs' relative paths start
    recipe = load_recipe(folder / "recipe.yaml", ran_in=ran_in)
    if data_file:
        data = recipe.data.model_copy(update={"dataset": None, "config": None, "files": {"file": data_file},
                                              "train_split": "file", "eval_split": None, "test_split": None,
                                              "eval_fraction": None, "max_train_samples": None})
        recipe = recipe.model_copy(update={"data": data})
    task = task_of(recipe)
    config = load_config(str(folder), "checkpoint")
    if export is None:
        check_weights(str(folder), "checkpoint")
    names = [config.id2label[i] for i in range(config.num_labels)] if task.has_classes else None
    return RunFolder(folder, meta, recipe, task, config, names, export)


def pick_split(run: RunFolder, data_file: str | None = None, split: str | None = None):
    """(the split's name, its rows): the file given, the split asked for, else test, eval or train."""
    splits = data_mod.load_splits(run.task, names=run.names)
    available = {"train": splits.train, "eval": splits.eval, "test": splits.test}
    if data_file:
        return Path(data_file).name, splits.train
    split = split or ("test" if splits.test is not None else "eval" if splits.eval is not None else "train")
    if split not in available or available[split] is None:
        have = [k for k, v in available.items() if v is not None]
        raise BrewError(f"--split {split}: the recipe's data has no {split} split; choose one of {', '.join(have)}")
    return split, available[split]


def read_manifest(folder: Path) -> dict | None:
    """An exported folder's export.json (None for a PyTorch folder)."""
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrewError(f"{path} is damaged ({e}); `brew export` writes it: export the run again") from None
    model = folder / str(manifest.get("file", "model.onnx")) if isinstance(manifest, dict) else None
    if model is None or not model.is_file():
        raise BrewError(f"{path} names no model file that exists in {folder} (expected model.onnx); "
                        "export the run again")
    return manifest


def read_meta(folder: Path) -> dict:
    if not (folder / "brew.json").is_file():
        return {}
    try:
        meta = json.loads((folder / "brew.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrewError(f"{folder / 'brew.json'} is damaged ({e}); brew writes it with every checkpoint") from None
    if not isinstance(meta, dict):
        raise BrewError(f"{folder / 'brew.json'} is damaged (not a JSON object)")
    problem = meta_problem(meta)
    if problem:
        raise BrewError(f"{folder / 'brew.json'} is damaged ({problem}); brew writes it with every checkpoint: "
                        "copy it from the run's checkpoint-N/ folder, or pass --no-teacher to score the student alone")
    return meta


def meta_problem(meta: dict) -> str | None:
    """What is wrong with the teacher records of a brew.json, if anything (the file is the user's to edit)."""
    if meta.get("teacher") is not None and not isinstance(meta["teacher"], str):
        return f"'teacher' is a {type(meta['teacher']).__name__}, expected a path or Hugging Face id"
    teachers = meta.get("teachers")
    if teachers is None:
        return None
    if not isinstance(teachers, list):
        return f"'teachers' is a {type(teachers).__name__}, expected a list"
    kinds = {"name": str, "model": str, "weight": (int, float), "label_order": (list, type(None))}
    for i, t in enumerate(teachers):
        if not isinstance(t, dict):
            return f"teachers[{i}] is a {type(t).__name__}, expected an object"
        for key, kind in kinds.items():
            if not isinstance(t.get(key), kind) or isinstance(t.get(key), bool):
                return f"teachers[{i}].{key} is {t.get(key)!r}, expected a {getattr(kind, '__name__', 'number')}"
    return None
