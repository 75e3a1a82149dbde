"""Held-out loss terms: how a run without a task metric is scored (general, task-agnostic distillation).

A general run trains the student to reproduce the teacher's layers on unlabelled text, so what it can be measured
by is the same terms on windows it did not train on: each term's mean (over the rows or tokens it averages over)
and their weighted sum, `loss` (lower is better). The teacher always runs live here: its cache holds the training
rows only.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from brewcli import data as data_mod
from brewcli.batch import run_model
from brewcli.objective import unit_counts


@torch.no_grad()
def term_metrics(student, teachers: dict, objective, task, encoded, collate, batch_size: int, acc=None) -> dict:
    """{"loss": weighted sum of the term means, term name: mean, ...} over `encoded` (every process its shard)."""
    from brewcli.evaluate import _device, _shard

    device = _device(acc)
    modes = student.training, objective.training
    student.eval()
    objective.eval()
    sums = {term.name: 0.0 for term in objective.terms}
    counts = dict.fromkeys(sums, 0)
    for batch in data_mod.loader(_shard(encoded, acc), collate, batch_size):
        batch = batch.to(device)
        with acc.autocast() if acc is not None else nullcontext():
            s = run_model(student, batch.inputs, objective.student_needs, task)
            t = {name: run_model(teachers[name], batch.for_teacher(name), needs, task)
                 for name, needs in objective.teacher_needs.items()}
            units = unit_counts(batch, task)
            for term in objective.terms:
                n = units[term.unit]
                sums[term.name] += float(term(batch, s, t)) * n
                counts[term.name] += n
    student.train(modes[0])
    objective.train(modes[1])
    if acc is not None and acc.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(sums, counts)])
        sums = {k: sum(p[0][k] for p in parts) for k in sums}
        counts = {k: sum(p[1][k] for p in parts) for k in counts}
    means = {name: sums[name] / max(counts[name], 1) for name in sums}
    loss = sum(term.weight_at(1.0) * means[term.name] for term in objective.terms)
    return {"loss": loss, **means}


def score_general(student, teachers: dict, objective, task, encoded, collate, batch_size: int, acc, folder,
                  teacher_folder) -> tuple[dict, dict]:
    """(student, teacher) scores for the report: the student's held-out terms, size and parameters; the teacher's
    size and parameters (its terms against itself are 0 by definition, so it has no `loss` to compare)."""
    from brewcli.models.hf import size_on_disk

    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    terms = term_metrics(student, teachers, objective, task, encoded, collate, batch_size, acc)
    teacher = next(iter(teachers.values()))
    return ({**terms, "params": params(student), "size_bytes": size_on_disk(folder) if folder else None},
            {"loss": None, "params": params(teacher),
             "size_bytes": size_on_disk(teacher_folder) if teacher_folder else None})


def load_projections(objective, folder) -> None:
    """The projections saved beside a student (they belong to its terms)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from brewcli.checkpoint import PROJECTIONS

    path = Path(folder) / PROJECTIONS
    if len(objective.projections) and path.is_file():
        objective.projections.load_state_dict(load_file(str(path)))


WHAT_IT_MEASURES = ("a general run has no task metric: it is scored by its loss terms on held-out windows (lower is "
                    "better; each term as it is averaged in training, and `loss` their weighted sum). The student has "
                    "no head: start a task recipe from it with student: {model: %s}")


def evaluate_general(folder, recipe, task, meta: dict, encoded, collate, batch_size: int, acc, with_teacher: bool,
                     timing_rounds: int = 20):
    """`brew eval` of a general run: (student, teacher, teacher path) and the keywords `report` takes. The terms are
    the saved recipe's matches against the teacher brew.json records, with the saved projections. Returns (student,
    teacher, teacher path, timings)."""
    from pathlib import Path
    from types import SimpleNamespace

    from brewcli.errors import BrewError, doing
    from brewcli.evaluate import Timed, load_model, time_against
    from brewcli.matches import resolve_matches
    from brewcli.models.hf import load_config
    from brewcli.objective import build_objective

    ref = meta.get("teacher") or recipe.teachers[0].model
    if not with_teacher:
        raise BrewError("--no-teacher: a general run is scored by its loss terms against its teacher; drop "
                        "--no-teacher")
    if Path(ref).is_absolute() and not Path(ref).exists():
        raise BrewError(f"the teacher this checkpoint records, {ref}, is gone, and a general run is scored against it")
    name = recipe.teachers[0].name
    doing(f"loading the teacher {ref}")
    teacher = load_model(ref, task, acc).eval()
    student = load_model(folder, task, acc)
    matches = [m for m in resolve_matches(recipe.distill.matches, {name: load_config(str(ref), "teacher")},
                                          student.config) if m.teacher == name]
    objective = build_objective(SimpleNamespace(recipe=recipe, task=task, matches=matches, teachers=[]))
    objective.to(student.device)
    load_projections(objective, folder)
    doing(f"scoring {folder}'s loss terms")
    scores = score_general(student, {name: teacher}, objective, task, encoded, collate, batch_size, acc, folder,
                           Path(ref) if Path(ref).is_dir() else None)
    timings = time_against(Timed(student, encoded, collate), (teacher, name), lambda _: (encoded, collate), acc,
                           rounds=timing_rounds)
    return (*scores, ref, timings)
