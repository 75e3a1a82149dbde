"""Stages: a recipe's `stages:` run one after the other, each a normal brew run in train.output_dir/NAME whose
student starts from the one the stage before saved (TinyBERT's pipeline: intermediate layers, then predictions).
Every stage is planned before any weights load; `fit` runs once per stage, unchanged. At the end the last stage's
student is published at the top of train.output_dir, so that folder is a brew output folder like any other."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from brewcli.checkpoint import PROJECTIONS, STATE_FILES, checkpoint_folders
from brewcli.errors import BrewError, RecipeError, RecipeErrors, doing
from brewcli.recipe import Stage


def plan_stages(stages: list[Stage], dry_run: bool = False, augment_sample: bool = False) -> list:
    """Every stage's plan, each from the one before (plan.build_plan(recipe, previous=...)); an error names the
    stage's key (stages[i].key) or the stage."""
    from brewcli import plan as plan_mod

    plans = []
    for st in stages:
        if st.name is not None:
            doing(f"checking {st.title} against the model configs, tokenizer and data")
        try:
            plans.append(plan_mod.build_plan(st.recipe, previous=plans[-1] if plans else None, dry_run=dry_run,
                                             augment_sample=augment_sample))
        except RecipeErrors as e:
            raise RecipeErrors([st.error(x) for x in e.errors], e.source) from None
        except RecipeError as e:
            raise st.error(e) from None
        except BrewError as e:
            if st.name is None:
                raise
            raise BrewError(f"{st.title}: {e}") from None
    return plans


def top_folder(stages: list[Stage]) -> Path:
    """train.output_dir: the stages' folders are in it, and the last stage's student is published at its top."""
    return Path(stages[0].recipe.train.output_dir).parent


def _finished(out: Path) -> bool:
    return (out / "metrics.json").is_file()


def _check_folders(stages: list[Stage], resume: bool) -> None:
    """Before anything trains: without --resume no stage folder (nor the top) holds an earlier run's checkpoints;
    with it, no stage after the first unfinished one holds any (that run started from another student)."""
    from brewcli.train import refuse_earlier_run

    folders = [Path(st.recipe.train.output_dir) for st in stages]
    if not resume:
        for out in (top_folder(stages), *folders):
            refuse_earlier_run(out)
        return
    if not any(_finished(f) or checkpoint_folders(f) for f in folders):
        raise BrewError(f"--resume: no checkpoint in {top_folder(stages)} nor in its stage folders "
                        f"({', '.join(st.name for st in stages)}); start without --resume")
    unfinished = next((i for i, f in enumerate(folders) if not _finished(f)), len(folders))
    for st, out in zip(stages[unfinished + 1:], folders[unfinished + 1:]):
        if checkpoint_folders(out):
            raise BrewError(f"--resume: {out} holds checkpoints of stage '{st.name}', but stage "
                            f"'{stages[unfinished].name}' before it is not finished, so they started from another "
                            f"student; move {out} away to run that stage afresh")


def execute(stages: list[Stage], plans: list, resume: bool = False) -> dict:
    """Run a recipe's planned stages: one run (train.run), or the stages in order (`run_stages`)."""
    if stages[0].name is None:
        from brewcli.train import run

        return run(plans[0], resume=resume)
    return run_stages(stages, plans, resume=resume)


def run_stages(stages: list[Stage], plans: list, resume: bool = False) -> dict:
    """Run the stages in order (train.run each), skipping, under --resume, those already finished; then publish
    the last stage's student at the top. Returns the top-level report (the last stage's, plus `stages`)."""
    from brewcli import train as train_mod
    from brewcli.ui import console

    _check_folders(stages, resume)
    main = os.environ.get("RANK", "0") == "0"
    results = []
    for st, plan in zip(stages, plans):
        out = Path(plan.recipe.train.output_dir)
        if resume and _finished(out):
            if main:
                console.print(f"{st.title}: finished earlier ({out / 'metrics.json'}); skipped", markup=False)
            results.append(_read_metrics(out))
            continue
        again = resume and bool(checkpoint_folders(out))
        if main:
            console.print(f"[bold]{st.title}[/bold] -> {out}" + (" (resuming)" if again else ""))
        results.append(train_mod.run(plan, resume=again) or {})
    if not main:
        return {}
    return publish(stages, plans, results)


def _read_metrics(out: Path) -> dict:
    try:
        return json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise BrewError(f"{out / 'metrics.json'} cannot be read ({e}); move {out} away to run that stage "
                        "again") from None


def publish(stages: list[Stage], plans: list, results: list[dict]) -> dict:
    """Copy the last stage's published files to the top of train.output_dir (each replaced atomically) and write
    the top metrics.json: the last stage's report with a `stages` list."""
    from brewcli.paths import shown_path
    from brewcli.ui import console

    top, last = top_folder(stages), Path(plans[-1].recipe.train.output_dir)
    doing(f"publishing the last stage's student in {top}")
    for f in sorted(last.iterdir()):
        if f.is_file() and f.name not in (*STATE_FILES, "metrics.json") and not f.name.startswith("brew-error-"):
            tmp = top / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, top / f.name)
    if not (last / PROJECTIONS).exists():
        (top / PROJECTIONS).unlink(missing_ok=True)  # an earlier last stage's projections, not this student's
    plans[-1].task.publish(top, plans[-1].student_config)  # the task's own files (sentence-transformers')
    report = {**results[-1], "stages": [_summary(st, plan, r) for st, plan, r in zip(stages, plans, results)]}
    tmp = top / "metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, top / "metrics.json")
    console.print(f"stages done: {stages_line(report['stages'])}", markup=False)
    console.print(f"the last stage's student ({stages[-1].name}) is in {shown_path(top)}/; next: brew eval "
                  f"{shown_path(top)}", markup=False)
    return report


def _summary(st: Stage, plan, result: dict) -> dict:
    student = result.get("student") or {}
    return {"name": st.name, "output_dir": str(plan.recipe.train.output_dir), "steps": result.get("steps"),
            "best": result.get("best"), "split": result.get("split"),
            "metrics": {m: student[m] for m in plan.task.metrics if m in student}}


def stages_line(stages: list[dict]) -> str:
    """`intermediate (best accuracy 0.61 at step 5) -> predictions (...)`, from metrics.json's `stages`."""
    parts = []
    for s in stages:
        best = s.get("best") or {}
        value = best.get("value")
        shown = f"best {best.get('metric')} {value:.4f} at step {best.get('step')}" if isinstance(value, (int, float)) \
            else f"{s.get('steps')} steps"
        parts.append(f"{s.get('name')} ({shown})")
    return " -> ".join(parts)
