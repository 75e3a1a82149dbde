"""Scoring and the report. `evaluate_model` streams a split through a model into the task's metric (sharded
across processes, states merged). `report` compares a student with its teacher (metric, % retained, size,
speed); the end of a run and `brew eval` both call it, so metrics.json and `brew eval --json` share its shape.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from brewcli import data as data_mod
from brewcli.errors import BrewError, doing
from brewcli.models import quiet_transformers, size_on_disk
from brewcli.tasks import retained_pct


def _device(acc):
    return acc.device if acc is not None else torch.device("cpu")


def _shard(encoded, acc):
    """This process's share of a split, cut at example boundaries (a QA example's windows stay together)."""
    if acc is None or acc.num_processes == 1:
        return encoded
    examples = encoded["example"]
    n = max(examples) + 1
    lo, hi = n * acc.process_index // acc.num_processes, n * (acc.process_index + 1) // acc.num_processes
    return encoded.select([i for i, e in enumerate(examples) if lo <= e < hi])


@torch.no_grad()
def evaluate_model(model, task, encoded, collate, batch_size: int, metric, acc=None) -> tuple[dict, float]:
    """(metrics, seconds): every process scores its shard, process 0 merges the metric states."""
    was_training = model.training
    model.eval()
    device = _device(acc)
    start = time.perf_counter()
    for batch in data_mod.loader(_shard(encoded, acc), collate, batch_size):
        with acc.autocast() if acc is not None else nullcontext():
            out = model(**batch.to(device).inputs)
        metric.update(task.logits(out).float().cpu(), batch)
    seconds = time.perf_counter() - start
    model.train(was_training)
    if acc is not None and acc.num_processes > 1:
        from accelerate.utils import gather_object

        states = gather_object([metric.state()])
        for rank, state in enumerate(states):
            if rank != acc.process_index:
                metric.merge(state)
    return metric.compute(), seconds


@torch.no_grad()
def latency_ms(model, encoded, collate, acc=None, runs: int = 20) -> float:
    """Median time of one single-example forward pass on real examples, after a warm-up."""
    model.eval()
    device = _device(acc)
    examples = [b.to(device).inputs for b in data_mod.loader(encoded.select(range(min(runs, len(encoded)))), collate, 1)]
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


def score(model, task, encoded, collate, batch_size: int, metric, acc=None, folder: Path | None = None) -> dict:
    """Metrics + parameter count + size on disk + latency + throughput of one model on one split."""
    metrics, seconds = evaluate_model(model, task, encoded, collate, batch_size, metric, acc)
    return {**metrics, "params": sum(p.numel() for p in model.parameters()),
            "size_bytes": size_on_disk(folder) if folder is not None else None,
            "latency_ms": round(latency_ms(model, encoded, collate, acc), 2),
            "throughput": round(len(encoded) / seconds, 1) if seconds else None}


def ensemble_mix(recipe) -> str | None:
    """What several teachers' scores average: probabilities (softmax or sigmoid), or logits (None)."""
    from brewcli.objective import MIXES

    return MIXES[recipe.kd_loss] if recipe.distill.ensemble == "probabilities" else None


def score_teachers(teachers: list[tuple], task, mix: str | None, scorer, shared: bool = True):
    """(the score the student is compared with, each teacher's score when there are several). `teachers` holds
    (name, model, weight, label order); `scorer(model, name)` scores one. Several teachers are compared as their
    weighted ensemble, which needs one tokenizer (`shared`); else the student is compared with the first teacher."""
    if not teachers:
        return None, None
    each = {name: scorer(model, name) for name, model, _, _ in teachers}
    if len(teachers) == 1 or not shared:
        return next(iter(each.values())), (each if len(teachers) > 1 else None)
    from brewcli.teachers import Ensemble

    kept = [t for t in teachers if t[2] > 0]
    ensemble = Ensemble([m for _, m, _, _ in kept], [w for _, _, w, _ in kept], [o for _, _, _, o in kept], task, mix)
    return scorer(ensemble), each


def teacher_rows(teacher: dict | None, each: dict | None) -> list[tuple[str, dict]]:
    """The teachers' rows of a results table: one teacher, or each teacher and their ensemble."""
    if teacher is None:
        return []
    if not each:
        return [("teacher", teacher)]
    ensemble = [] if teacher in each.values() else [("ensemble", teacher)]  # not scored across tokenizers
    return [(f"teacher {name}", s) for name, s in each.items()] + ensemble


def report(task, split: str, rows: int, student: dict, teacher: dict | None = None, teacher_path: str | None = None,
           device: str = "cpu", teachers: dict | None = None) -> dict:
    """The comparison both the end of a run and `brew eval` print and save. With several teachers, `teacher` is
    their ensemble (what the student keeps is measured against it) and `teachers` holds each one's score."""
    out = {"task": task.name, "split": split, "rows": rows, "device": device, "student": student}
    if teacher is not None:
        out["teacher"] = teacher
        out["teacher_path"] = teacher_path
        if teachers:
            out["teachers"] = teachers
        main = task.main_metric
        kept = retained_pct(main, student[main], teacher[main], task.lower_is_better)
        if kept is not None:
            out["retained_pct"] = kept
        out["size_ratio"] = round(student["params"] / teacher["params"], 3)
        if student.get("latency_ms") and teacher.get("latency_ms"):
            out["speedup"] = round(teacher["latency_ms"] / student["latency_ms"], 2)
    return out


def load_model(folder, task, acc=None):
    quiet_transformers()
    return task.model_class().from_pretrained(folder).to(_device(acc))


def evaluate_checkpoint(path: str, data_file: str | None = None, split: str | None = None,
                        batch_size: int = 64, with_teacher: bool = True) -> dict:
    from brewcli.models import check_weights, load_config, load_tokenizer
    from brewcli.recipe import load_recipe
    from brewcli.tasks import TASKS

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
    ran_in = meta.get("cwd") if isinstance(meta.get("cwd"), str) else "."  # where older runs' relative paths start
    recipe = load_recipe(folder / "recipe.yaml", ran_in=ran_in)
    task = TASKS.get(recipe.task.name)
    if data_file:
        data = recipe.data.model_copy(update={"dataset": None, "config": None, "files": {"file": data_file},
                                              "train_split": "file", "eval_split": None, "test_split": None,
                                              "eval_fraction": None, "max_train_samples": None})
        recipe = recipe.model_copy(update={"data": data})
    config = load_config(str(folder), "checkpoint")
    check_weights(str(folder), "checkpoint")
    names = [config.id2label[i] for i in range(config.num_labels)] if task.has_classes else None
    splits = data_mod.load_splits(recipe, task, names=names)
    available = {"train": splits.train, "eval": splits.eval, "test": splits.test}
    if data_file:
        split, ds = Path(data_file).name, splits.train
    else:
        split = split or ("test" if splits.test is not None else "eval" if splits.eval is not None else "train")
        if split not in available or available[split] is None:
            have = [k for k, v in available.items() if v is not None]
            raise BrewError(f"--split {split}: the recipe's data has no {split} split; choose one of {', '.join(have)}")
        ds = available[split]
    from accelerate import Accelerator

    device = "cuda" if torch.cuda.is_available() else "cpu"
    acc = Accelerator(cpu=device == "cpu")
    tokenizer = load_tokenizer(str(folder), "checkpoint")
    encoded = task.encode(ds, tokenizer, recipe, names)
    doing(f"scoring {folder} on the {split} split")
    student = score(load_model(folder, task, acc), task, encoded, task.collate(tokenizer), batch_size,
                    task.metric(recipe, names, ds), acc, folder)
    teacher_ref = meta.get("teacher") or (recipe.teachers[0].model if recipe.teachers else None)
    recorded = meta.get("teachers") or ([{"name": "teacher", "model": teacher_ref, "weight": 1.0,
                                          "label_order": None}] if teacher_ref else [])
    teacher = each = None
    if with_teacher and recorded:
        models, folders, inputs = [], {}, {}
        for t in recorded:
            ref, tdir = t["model"], Path(t["model"])
            if tdir.is_absolute() and not tdir.exists():
                raise BrewError(f"the teacher this checkpoint records, {ref}, is gone; pass --no-teacher to score "
                                "the student alone")
            doing(f"loading the teacher {ref}")
            check_weights(ref, "teacher")
            model = load_model(tdir if tdir.exists() else ref, task, acc)
            folders[t["name"]] = tdir if tdir.exists() else None
            own = load_tokenizer(ref, "teacher")
            if own.get_vocab() != tokenizer.get_vocab():  # it reads other tokens: its own encoding of the split
                inputs[t["name"]] = (task.encode(ds, own, recipe, names), task.collate(own))
            models.append((t["name"], model, t["weight"], t["label_order"]))
        doing("scoring the teacher" + ("s" if len(models) > 1 else ""))

        def scorer(model, name=None):
            enc, collate = inputs.get(name, (encoded, task.collate(tokenizer)))
            return score(model, task, enc, collate, batch_size, task.metric(recipe, names, ds), acc, folders.get(name))

        teacher, each = score_teachers(models, task, ensemble_mix(recipe), scorer, shared=not inputs)
    out = report(task, split, len(ds), student, teacher, teacher_ref, device, each)
    return {"checkpoint": str(folder), **out}


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

