"""Scoring: task metrics on a split, plus size and measured speed. Used at the end of a run and by
`brew eval`, which compares a checkpoint with the teacher it recorded."""

from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from brewcli import data as data_mod
from brewcli.errors import BrewError
from brewcli.models import quiet_transformers, size_on_disk


def _device(acc):
    return acc.device if acc is not None else torch.device("cpu")


@torch.no_grad()
def predict(model, ds, tokenizer, batch_size: int, acc=None):
    """Logits and labels over a tokenised dataset; also the wall time of the pass."""
    was_training = model.training
    model.eval()
    device = _device(acc)
    logits, labels = [], []
    start = time.perf_counter()
    for batch in data_mod.loader(ds, tokenizer, batch_size):
        labels.append(batch.pop("labels").numpy())
        with acc.autocast() if acc is not None else nullcontext():
            out = model(**{k: v.to(device) for k, v in batch.items()})
        logits.append(out.logits.float().cpu().numpy())
    seconds = time.perf_counter() - start
    model.train(was_training)
    return np.concatenate(logits), np.concatenate(labels), seconds


@torch.no_grad()
def latency_ms(model, ds, tokenizer, acc=None, runs: int = 20) -> float:
    """Median time of one single-example forward pass on real examples, after a warm-up."""
    model.eval()
    device = _device(acc)
    collate = data_mod.loader(ds.select(range(min(runs, len(ds)))), tokenizer, 1)
    examples = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in collate]
    for ex in examples[:3]:
        model(**ex)
    times = []
    for ex in examples:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**ex)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def score(folder_or_model, ds, tokenizer, task, batch_size: int, acc=None) -> dict:
    """Metrics + parameter count + size on disk + latency + throughput of one model on one split."""
    if isinstance(folder_or_model, (str, Path)):
        quiet_transformers()
        folder = Path(folder_or_model)
        model = task.model_class().from_pretrained(folder).to(_device(acc))
        size = size_on_disk(folder)
    else:
        model, size = folder_or_model, None
    logits, labels, seconds = predict(model, ds, tokenizer, batch_size, acc)
    result = task.compute_metrics(logits, labels)
    result.update(params=sum(p.numel() for p in model.parameters()), size_bytes=size,
                  latency_ms=round(latency_ms(model, ds, tokenizer, acc), 2),
                  throughput=round(len(ds) / seconds, 1))
    return result


def evaluate_checkpoint(path: str, data_file: str | None = None, split: str | None = None,
                        batch_size: int = 64, with_teacher: bool = True) -> dict:
    from brewcli.errors import doing
    from brewcli.models import check_weights, load_config, load_tokenizer
    from brewcli.recipe import load_recipe
    from brewcli.tasks import TASKS, retained_pct

    folder = Path(path)
    if not folder.is_dir():
        raise BrewError(f"{path}: no such folder; give a brew output folder, its best/ or a checkpoint-STEP/ folder")
    if not (folder / "config.json").is_file():
        raise BrewError(f"{path}: not a model folder (no config.json); give a brew output folder, its best/ "
                        f"or a checkpoint-STEP/ folder")
    if not (folder / "recipe.yaml").is_file():
        raise BrewError(f"{path}: has no recipe.yaml, so brew does not know its task and data; was it made by brew?")
    doing(f"reading {folder}")
    meta = _read_meta(folder)
    recipe = load_recipe(folder / "recipe.yaml")
    task = TASKS.get(recipe.task.name)
    if data_file:
        data = recipe.data.model_copy(update={"dataset": None, "config": None, "files": {"eval": data_file},
                                              "train_split": "eval", "eval_split": None, "test_split": None,
                                              "eval_fraction": None, "max_train_samples": None})
        recipe = recipe.model_copy(update={"data": data})
    else:
        recipe = _rebase(recipe, Path(meta.get("cwd", ".")))
    config = load_config(str(folder), "checkpoint")
    check_weights(str(folder), "checkpoint")
    names = None if task.regression else [config.id2label[i] for i in range(config.num_labels)]
    splits = data_mod.load_splits(recipe, task, names=names)
    available = {"train": splits.train, "eval": splits.eval, "test": splits.test}
    if data_file:
        split, ds = "file", splits.train
    else:
        split = split or ("test" if splits.test is not None else "eval" if splits.eval is not None else "train")
        if split not in available or available[split] is None:
            have = [k for k, v in available.items() if v is not None]
            raise BrewError(f"--split {split}: the recipe's data has no {split} split; choose one of {', '.join(have)}")
        ds = available[split]
    tokenizer = load_tokenizer(str(folder), "checkpoint")
    tok_ds = data_mod.tokenize(ds, tokenizer, recipe.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from accelerate import Accelerator

    acc = Accelerator(cpu=device == "cpu")
    doing(f"scoring {folder} on the {split} split")
    report = {"checkpoint": str(folder), "split": split, "rows": len(ds), "task": task.name,
              "device": device, "student": score(folder, tok_ds, tokenizer, task, batch_size, acc)}
    teacher = meta.get("teacher") or (recipe.teacher.model if recipe.teacher else None)
    if with_teacher and teacher:
        tdir = Path(teacher)
        if tdir.is_absolute() and not tdir.exists():
            raise BrewError(f"the teacher this checkpoint records, {teacher}, is gone; pass --no-teacher to score the "
                            "student alone")
        doing(f"scoring the teacher {teacher}")
        check_weights(teacher, "teacher")
        t_tok = load_tokenizer(teacher, "teacher")
        t_ds = tok_ds if t_tok.get_vocab() == tokenizer.get_vocab() else data_mod.tokenize(ds, t_tok, recipe.data)
        report["teacher_path"] = teacher
        report["teacher"] = score(tdir if tdir.exists() else teacher, t_ds, t_tok, task, batch_size, acc)
        kept = retained_pct(task.main_metric, report["student"][task.main_metric], report["teacher"][task.main_metric])
        if kept is not None:
            report["retained_pct"] = kept
        report["speedup"] = round(report["teacher"]["latency_ms"] / report["student"]["latency_ms"], 2)
        report["size_ratio"] = round(report["student"]["params"] / report["teacher"]["params"], 3)
    return report


def _read_meta(folder: Path) -> dict:
    if not (folder / "brew.json").is_file():
        return {}
    try:
        meta = json.loads((folder / "brew.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrewError(f"{folder / 'brew.json'} is damaged ({e}); brew writes it with every checkpoint") from None
    if not isinstance(meta, dict):
        raise BrewError(f"{folder / 'brew.json'} is damaged (not a JSON object)")
    return meta


def _rebase(recipe, run_dir: Path):
    """Relative data paths are relative to where the run started; use that folder if they are not found here."""
    files = recipe.data.files
    if not files:
        return recipe
    fixed = {}
    for split, paths in files.items():
        paths_list = [paths] if isinstance(paths, str) else paths
        moved = [p if Path(p).exists() or Path(p).is_absolute() else str(run_dir / p) for p in paths_list]
        fixed[split] = moved[0] if isinstance(paths, str) else moved
    return recipe.model_copy(update={"data": recipe.data.model_copy(update={"files": fixed})})
