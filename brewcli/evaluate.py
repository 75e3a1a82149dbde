"""Scoring and the report. `evaluate_models` streams a split through one model, or a student and its teacher side
by side, into the task's metrics (sharded across processes, states merged). `report` compares a student with its
teacher (metric, % retained, size, speed); the end of a run and `brew eval` both call it, so metrics.json and `brew eval --json` share its shape.
Speed is timed with the student and its teacher taking turns on the same rows (`measure_speed`): medians, their
spreads, and the speedup as the median of neighbouring ratios, so a parallel job skews neither model alone.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from brewcli import data as data_mod
from brewcli.errors import BrewError, doing
from brewcli.models.hf import size_on_disk
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


def evaluate_model(model, task, encoded, collate, batch_size: int, metric, acc=None) -> tuple[dict, float]:
    """(metrics, seconds): every process scores its shard, process 0 merges the metric states."""
    start = time.perf_counter()
    (metrics,), _ = evaluate_models([model], task, encoded, collate, batch_size, [metric], acc)
    return metrics, time.perf_counter() - start


@torch.no_grad()
def evaluate_models(models: list, task, encoded, collate, batch_size: int, metrics: list, acc=None,
                    agreement: bool = False) -> tuple[list[dict], float | None]:
    """Each model into its metric, all on each batch in turn, in one pass over the split; with `agreement`, also how
    far models[0] (the student) agrees with models[1] (its teacher) as the task measures it (Task.agreement; None
    where the task does not). Every process scores its shard; the states and sums are merged."""
    device = _device(acc)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    total, count, agreeing = 0.0, 0, agreement
    for batch in data_mod.loader(_shard(encoded, acc), collate, batch_size):
        moved = batch.to(device)
        logits = []
        for model, metric in zip(models, metrics):
            with acc.autocast() if acc is not None else nullcontext():
                z = task.logits(model(**moved.inputs), moved.mask)
            metric.update(task.reduce(z, moved).float().cpu(), batch)
            logits.append(z)
        if agreeing:
            got = task.agreement(logits[0].float(), logits[1].float(), moved)
            agreeing = got is not None
            if agreeing:
                total, count = total + got[0], count + got[1]
        del logits
    for m, was in zip(models, was_training):
        m.train(was)
    if acc is not None and acc.num_processes > 1:
        from accelerate.utils import gather_object

        states = gather_object([([metric.state() for metric in metrics], total, count)])
        for rank, (theirs, t, c) in enumerate(states):
            if rank != acc.process_index:
                for metric, state in zip(metrics, theirs):
                    metric.merge(state)
                total, count = total + t, count + c
    return [metric.compute() for metric in metrics], (round(total / count, 4) if agreeing and count else None)


@dataclass
class Timed:
    """One model and its own encoding of the split, for timing."""

    model: object
    encoded: object
    collate: object


BUSY_PCT = 25  # timings that vary more than this (interquartile range over the median) are not a firm figure


def _forward_seconds(model, inputs, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(**inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def paired_seconds(models: dict[str, Timed], acc=None, batch_size: int = 1, rounds: int = 20,
                   warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of one forward pass of each model at `batch_size`, the models taking turns: each round runs every
    model once, one after the other, on the same rows, so a load that comes and goes meets them alike (round r of
    one model and round r of another are neighbours). `warmup` untimed rounds come first."""
    device = _device(acc)
    for t in models.values():
        t.model.eval()
    batches = {}
    for name, t in models.items():
        n = len(t.encoded)
        rows = [[(r * batch_size + i) % n for i in range(min(batch_size, n))] for r in range(rounds)]
        batches[name] = [t.collate(t.encoded.__getitems__(rs)).to(device).inputs for rs in rows]
    times = {name: [] for name in models}
    for r in range(-warmup, rounds):
        for name, t in models.items():
            seconds = _forward_seconds(t.model, batches[name][r % rounds], device)
            if r >= 0:
                times[name].append(seconds)
    return times


def spread_pct(values: list[float]) -> float:
    """The interquartile range of `values` relative to their median, in %."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return round(100 * (q3 - q1) / statistics.median(values), 1)


def measure_speed(models: dict[str, Timed], acc=None, rounds: int = 20,
                  throughput_batch: int = 32) -> dict[str, dict[str, list[float]]]:
    """The paired timings `report` summarises: per model, ms per example at batch 1 (`rounds` passes) and examples/s
    at a batch of `throughput_batch` or the split's size (a quarter as many), round by round."""
    latency = paired_seconds(models, acc, 1, rounds, warmup=min(3, rounds))
    rows = min(throughput_batch, *(len(t.encoded) for t in models.values()))
    batched = paired_seconds(models, acc, rows, max(1, rounds // 4), warmup=1)
    return {name: {"latency_ms": [1000 * s for s in latency[name]], "throughput": [rows / s for s in batched[name]]}
            for name in models}


def speed_figures(timings: dict[str, list[float]]) -> dict:
    """One model's median ms per example and examples/s, with their spreads (interquartile range / median, %)."""
    return {"latency_ms": round(statistics.median(timings["latency_ms"]), 2),
            "latency_spread_pct": spread_pct(timings["latency_ms"]),
            "throughput": round(statistics.median(timings["throughput"]), 1),
            "throughput_spread_pct": spread_pct(timings["throughput"])}


def speedup(student: dict[str, list[float]], teacher: dict[str, list[float]]) -> dict:
    """The student's speedup at batch 1: the median over rounds of the teacher's time over the student's in the same
    round (a ratio of neighbours, which a load that comes and goes changes little), and that ratio's spread."""
    ratios = [t / s for t, s in zip(teacher["latency_ms"], student["latency_ms"]) if s > 0]
    if not ratios:
        return {}
    return {"speedup": round(statistics.median(ratios), 2), "speedup_spread_pct": spread_pct(ratios)}


def score(model, task, encoded, collate, batch_size: int, metric, acc=None, folder: Path | None = None) -> dict:
    """Metrics + parameter count + size on disk of one model on one split (its speed: `measure_speed`)."""
    metrics, _ = evaluate_model(model, task, encoded, collate, batch_size, metric, acc)
    return described(model, metrics, folder)


def described(model, metrics: dict, folder: Path | None = None) -> dict:
    """A model's metrics with its parameter count and size on disk."""
    params = getattr(model, "num_params", None) or sum(p.numel() for p in model.parameters())
    return {**metrics, "params": params,
            "size_bytes": size_on_disk(folder) if folder is not None else None}


def ensemble_mix(recipe) -> str | None:
    """What several teachers' scores average: probabilities (softmax or sigmoid), or logits (None)."""
    from brewcli.losses import KD_LOSSES

    return KD_LOSSES.get(recipe.kd_loss).target if recipe.distill.ensemble == "probabilities" else None


def score_teachers(teachers: list[tuple], task, mix: str | None, scorer, shared: bool = True):
    """(the score the student is compared with, each teacher's score when there are several, (the model behind the
    first score, its teacher's name or None for the ensemble)). `teachers` holds (name, model, weight, label order);
    `scorer(model, name)` scores one. Several teachers are compared as their weighted ensemble, which needs one
    tokenizer (`shared`); else the student is compared with the first teacher."""
    if not teachers:
        return None, None, None
    each = {name: scorer(model, name) for name, model, _, _ in teachers}
    if len(teachers) == 1 or not shared:
        return next(iter(each.values())), (each if len(teachers) > 1 else None), (teachers[0][1], teachers[0][0])
    from brewcli.teachers import Ensemble

    kept = [t for t in teachers if t[2] > 0]
    ensemble = Ensemble([m for _, m, _, _ in kept], [w for _, _, w, _ in kept], [o for _, _, _, o in kept], task, mix)
    return scorer(ensemble), each, (ensemble, None)


@dataclass
class Scored:
    """One model to score on a split: the encoding and collate it reads, its folder (for its size on disk), and,
    for a teacher, its ensemble weight and label order."""

    name: str
    model: object
    encoded: object
    collate: object
    folder: Path | None = None
    weight: float = 1.0
    label_order: list[int] | None = None


def local_folder(ref: str) -> Path | None:
    """A model reference's folder on this machine; None for a Hub id."""
    path = Path(ref).expanduser()
    return path if path.is_dir() else None


def score_against(task, ds, names, student: Scored, teachers: list[Scored], mix: str | None, batch_size: int,
                  acc=None, also: list[Scored] = (), timing_rounds: int = 20):
    """The student and its teachers on one split, then timed in turns: (student, teacher, each, timings, others)
    for `report`. `also`: more models scored and timed beside them (an export's PyTorch source), their scores in
    `others` by name. The end of a run and `brew eval` both score this way."""
    by_name = {t.name: t for t in teachers}

    def inputs(name=None):  # a teacher with its own tokenizer reads its own encoding; the ensemble, the shared one
        t = by_name.get(name, student)
        return t.encoded, t.collate

    def scorer(model, name=None):
        folder = by_name[name].folder if name in by_name else None
        return score(model, task, *inputs(name), batch_size, task.metric(names, ds), acc, folder)

    shared = all(t.encoded is student.encoded for t in teachers)
    if len(teachers) == 1 and shared:  # one pass with both side by side, which also gives their agreement
        doing("scoring the student and the teacher, side by side")
        t = teachers[0]
        (ours, theirs), agreed = evaluate_models([student.model, t.model], task, student.encoded, student.collate,
                                                 batch_size, [task.metric(names, ds), task.metric(names, ds)], acc,
                                                 agreement=True)
        mine = described(student.model, ours, student.folder)
        teacher, each, compared = described(t.model, theirs, t.folder), None, (t.model, t.name)
        if agreed is not None:
            mine["teacher_agreement"] = agreed
    else:
        mine = score(student.model, task, student.encoded, student.collate, batch_size, task.metric(names, ds), acc,
                     student.folder)
        if teachers:
            doing("scoring the teacher" + ("s" if len(teachers) > 1 else ""))
        teacher, each, compared = score_teachers([(t.name, t.model, t.weight, t.label_order) for t in teachers],
                                                 task, mix, scorer, shared=shared)
    others = {a.name: score(a.model, task, a.encoded, a.collate, batch_size, task.metric(names, ds), acc, a.folder)
              for a in also}
    timings = time_against(Timed(student.model, student.encoded, student.collate), compared, inputs, acc,
                           {a.name: Timed(a.model, a.encoded, a.collate) for a in also}, timing_rounds)
    return mine, teacher, each, timings, others


def time_against(student: Timed, compared, inputs, acc=None, also: dict[str, Timed] | None = None,
                 rounds: int = 20) -> dict:
    """The paired timings (`measure_speed`) of the student and the model it is compared with: `compared` as
    `score_teachers` returns it, `inputs(name)` that teacher's (encoded, collate). The student alone without one;
    `also`, more models timed in the same rounds. None timed at 0 rounds."""
    if rounds == 0:
        return {}
    doing("timing the student" + (" and the teacher, in turns" if compared is not None else ""))
    models = {"student": student, **(also or {})}
    if compared is not None:
        model, name = compared
        models["teacher"] = Timed(model, *inputs(name))
    return measure_speed(models, acc, rounds)


def teacher_rows(teacher: dict | None, each: dict | None) -> list[tuple[str, dict]]:
    """The teachers' rows of a results table: one teacher, or each teacher and their ensemble."""
    if teacher is None:
        return []
    if not each:
        return [("teacher", teacher)]
    ensemble = [] if teacher in each.values() else [("ensemble", teacher)]  # not scored across tokenizers
    return [(f"teacher {name}", s) for name, s in each.items()] + ensemble


def report(task, split: str, rows: int, student: dict, teacher: dict | None = None, teacher_path: str | None = None,
           device: str = "cpu", teachers: dict | None = None, timings: dict | None = None,
           pytorch: dict | None = None) -> dict:
    """The comparison both the end of a run and `brew eval` print and save. With several teachers, `teacher` is
    their ensemble (what the student keeps is measured against it) and `teachers` holds each one's score.
    `timings` (`time_against`) adds each timed model's speed to its score (in place) and the speedup of the pairs;
    `timing_spread_pct` is the widest spread among them (above BUSY_PCT the figures are not firm). `pytorch`: an
    exported student's PyTorch source, scored beside it (what the export kept of it, and how much faster it runs)."""
    timings = timings or {}
    spreads = []
    for name, scored in (("student", student), ("teacher", teacher), ("pytorch", pytorch)):
        if scored is not None and name in timings:
            scored.update(speed_figures(timings[name]))
            spreads.append(scored["latency_spread_pct"])
    out = {"task": task.name, "split": split, "rows": rows, "device": device, "student": student}
    if teacher is not None:
        out["teacher"] = teacher
        out["teacher_path"] = teacher_path
        if teachers:
            out["teachers"] = teachers
        main = task.main_of(student)
        kept = retained_pct(main, student.get(main), teacher.get(main), task.lower_is_better)
        if kept is not None:
            out["retained_pct"] = kept
        out["size_ratio"] = round(student["params"] / teacher["params"], 3)
        if "student" in timings and "teacher" in timings:
            out.update(speedup(timings["student"], timings["teacher"]))
            spreads.append(out.get("speedup_spread_pct", 0.0))
    if pytorch is not None:
        main = task.main_of(student)
        out["pytorch"] = pytorch
        out["pytorch_delta"] = round(student[main] - pytorch[main], 4)
        if "student" in timings and "pytorch" in timings:
            out["speedup_vs_pytorch"] = speedup(timings["student"], timings["pytorch"]).get("speedup")
    if spreads:
        out["timing_spread_pct"] = max(spreads)
        out["timing_rounds"] = len(timings["student"]["latency_ms"])
    return out


def speed_note(report: dict) -> str:
    """The line under `brew eval`'s table: how the speed was timed, and whether the machine was too busy to trust it."""
    if "timing_rounds" not in report:
        return "[dim]speed: not timed (--timing-rounds 0)[/dim]"
    spread, n = report["timing_spread_pct"], report["timing_rounds"]
    how = (f"medians of {n} single-example passes, student and teacher in turns; speedup: the median ratio of "
           "neighbouring timings" if "speedup" in report else f"median of {n} single-example passes")
    if spread > BUSY_PCT:
        return f"[yellow]timings varied by {spread:.0f}%: the machine is busy; rerun for a firm figure[/yellow] ({how})"
    return f"[dim]speed: {how}; they varied by {spread:.0f}% (interquartile range over the median)[/dim]"


def load_model(folder, task, acc=None, arch: str = "hf"):
    """A saved model with the task's head, as saved (its own config)."""
    from brewcli.models.arch import ARCHS

    return ARCHS.get(arch).load(str(folder), None, task.head).to(_device(acc))


def evaluate_checkpoint(path: str, data_file: str | None = None, split: str | None = None,
                        batch_size: int = 64, with_teacher: bool = True, timing_rounds: int = 20) -> dict:
    """`brew eval`: a brew output folder (or an export of one) against its teacher (and, for an export, the PyTorch
    student it came from), on a split of the recipe's data or on one file."""
    from accelerate import Accelerator

    from brewcli.models.hf import load_tokenizer
    from brewcli.runfolder import open_run, pick_split

    run = open_run(path, data_file)
    if run.export is not None and run.task.headless:
        raise BrewError(f"{run.folder}: an export of a general (task-agnostic) student has no task metric to score; "
                        f"its export was checked against PyTorch ({run.export.get('max_difference')} at most, "
                        f"export.json). Score a task student's export, or the PyTorch folder "
                        f"{run.export.get('source')}")
    split, ds = pick_split(run, data_file, split)
    task, names, folder = run.task, run.names, run.folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    acc = Accelerator(cpu=device == "cpu")
    tokenizer = load_tokenizer(str(folder), "checkpoint")
    encoded = task.encode(ds, tokenizer, names)
    if task.headless:
        from brewcli.heldout import evaluate_general

        student, teacher, ref, timings = evaluate_general(folder, run.recipe, task, run.meta, encoded,
                                                          task.collate(tokenizer), batch_size, acc, with_teacher,
                                                          timing_rounds)
        return {"checkpoint": str(folder), **report(task, split, len(encoded), student, teacher, ref, device, None,
                                                    timings)}
    doing(f"scoring {folder} on the {split} split")
    collate = task.collate(tokenizer)
    also = []
    if run.export is not None:
        from brewcli.runtime import OnnxModel

        me = Scored("student", OnnxModel(folder, run.export), encoded, collate, folder)
        source = Path(run.export["source"])
        if source.is_dir():
            doing(f"loading the PyTorch student it was exported from, {source}")
            also.append(Scored("pytorch", load_model(source, task, acc), encoded, collate, source))
    else:
        me = Scored("student", load_model(folder, task, acc), encoded, collate, folder)
    teachers = _load_teachers(run, ds, tokenizer, encoded, collate, acc) if with_teacher else []
    student, teacher, each, timings, scored = score_against(task, ds, names, me, teachers, ensemble_mix(run.recipe),
                                                            batch_size, acc, also, timing_rounds)
    out = report(task, split, len(ds), student, teacher, run.teacher_ref, device, each, timings, scored.get("pytorch"))
    if run.export is None:
        shown = {"teacher": teachers[0].model} if teachers else {}
        samples = task.samples({**shown, "student": me.model}, tokenizer, ds)
        if samples:
            out["samples"] = samples
    stages = run.stages()
    extra = {"export": {k: run.export.get(k) for k in ("precision", "per_channel", "opset", "max_difference")}} \
        if run.export is not None else {}
    return {"checkpoint": str(folder), **out, **extra, **({"stages": stages} if stages else {})}


def _load_teachers(run, ds, tokenizer, encoded, collate, acc) -> list[Scored]:
    """The teachers a run recorded, loaded to be scored beside it (a teacher with its own tokenizer gets its own
    encoding of the split)."""
    from brewcli.models.hf import check_weights, load_tokenizer

    teachers = []
    for t in run.teacher_records():
        ref, tdir = t["model"], Path(t["model"])
        if tdir.is_absolute() and not tdir.exists():
            raise BrewError(f"the teacher this checkpoint records, {ref}, is gone; pass --no-teacher to score "
                            "the student alone")
        doing(f"loading the teacher {ref}")
        check_weights(ref, "teacher")
        model = load_model(tdir if tdir.exists() else ref, run.task, acc)
        own = load_tokenizer(ref, "teacher")
        enc = (run.task.encode(ds, own, run.names), run.task.collate(own)) \
            if own.get_vocab() != tokenizer.get_vocab() else (encoded, collate)
        teachers.append(Scored(t["name"], model, *enc, tdir if tdir.exists() else None, t["weight"],
                               t["label_order"]))
    return teachers
