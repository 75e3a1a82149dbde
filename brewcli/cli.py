"""The `brew` command line. Thin: parse arguments, call the library, render the result or the error."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from brewcli.errors import BrewError, RecipeErrors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
                  help="Distill large NLP models into small, fast ones from one YAML recipe.")

OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. train.lr=3e-5 distill.temperature=8",
                           show_default=False)
AUGMENT_OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. data.augment.method=simple data.augment.n=5",
                                   show_default=False)
TRAIN_OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. train.lr=3e-5 train.epochs=3",
                                 show_default=False)


def _guarded(fn):
    """User errors print one message (exit 2). Anything unexpected prints what brew was doing and where the full
    traceback went (exit 1), so a bug can still be reported; never a traceback on the terminal."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from brewcli.errors import Activity
        from brewcli.stopping import Stopped
        from brewcli.ui import console

        Activity.doing, Activity.log_dir = "starting", None
        try:
            return fn(*args, **kwargs)
        except RecipeErrors as e:
            console.print(f"[red]error:[/red] {len(e.errors)} problem(s) in {e.source}:" if len(e.errors) > 1
                          else f"[red]error in {e.source}:[/red]")
            for err in e.errors:
                console.print(f"  {err}", markup=False)
            raise typer.Exit(2)
        except BrewError as e:
            console.print("[red]error:[/red] ", end="")
            console.print(str(e), markup=False)
            raise typer.Exit(2)
        except Stopped as e:  # a signal during training: saved at a step boundary (train.fit)
            if e.message:
                console.print(e.message, markup=False)
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt:
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # the last resort (Rust panics from tokenizers are BaseExceptions too)
            log = _crash_log(e)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            out_of_memory = type(e).__name__ == "OutOfMemoryError" or "out of memory" in first.lower()
            console.print(f"[red]error:[/red] brew stopped while {Activity.doing}: ", end="")
            console.print(f"{type(e).__name__}: {first}", markup=False)
            if out_of_memory:
                console.print("  lower train.batch_size (keep the effective batch with train.grad_accum) or "
                              "data.max_length")
            console.print(f"  the full traceback is in {log}", markup=False)
            if not out_of_memory:
                console.print("  if the recipe and data look right, this is a bug in brew: please report it with "
                              "that file")
            raise typer.Exit(2 if out_of_memory else 1)

    return wrapper


def _crash_log(error: Exception) -> Path:
    """Write the traceback to brew-error-TIME-PID.log in the output folder (or the temp folder before there is one):
    a name of its own, so one crash never overwrites another's log."""
    import tempfile
    import time
    import traceback

    from brewcli.errors import Activity

    text = (f"brew {' '.join(sys.argv[1:])}\n{time.strftime('%Y-%m-%d %H:%M:%S')}  while {Activity.doing}\n\n"
            + "".join(traceback.format_exception(error)))
    stem = f"brew-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    for folder in (Activity.log_dir, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(1, 100):  # the same process crashing twice in one second (tests, notebooks)
                path = folder / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
                try:
                    with open(path, "x") as f:
                        f.write(text)
                    return path
                except FileExistsError:
                    continue
        except OSError:
            continue
    return Path("(could not be written)")


def _run(recipe: Path, overrides: list[str] | None, dry_run: bool, resume: bool, command: str) -> None:
    from brewcli.errors import RecipeError, doing
    from brewcli.recipe import load_stages
    from brewcli.stages import plan_stages
    from brewcli.ui import render_plan

    doing(f"reading the recipe {recipe}")
    stages = load_stages(recipe, overrides or [])
    for st in stages:
        if command == "train" and st.recipe.teacher is not None:
            e = RecipeError("teacher", "brew train fine-tunes one model, but this recipe names a teacher",
                            "use `brew distill` to distill it")
            raise st.error(e) if "teacher" in st.own else e
    doing("checking the recipe against the model configs, tokenizer and data")
    plans = plan_stages(stages, dry_run=dry_run)  # every stage's, before any weights load; a dry run may sample
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate launch, print the plan once
        for st, plan in zip(stages, plans):
            render_plan(plan, stage=st.title if st.name is not None else None)
    if dry_run:
        return
    from brewcli.stages import execute

    execute(stages, plans, resume=resume)


@app.command(epilog="Examples:  brew distill recipes/bbc/distill-T3.yaml --dry-run  |  "
             "brew distill r.yaml train.epochs=5  |  brew distill r.yaml --resume")
@_guarded
def distill(recipe: Path = typer.Argument(..., help="the YAML recipe"), overrides: Optional[list[str]] = OVERRIDES,
            dry_run: bool = typer.Option(False, "--dry-run", help="load configs only, print the plan and exit"),
            resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in output_dir")):
    """Distill the recipe's teacher into its student: tokenise, train, checkpoint, evaluate."""
    _run(recipe, overrides, dry_run, resume, "distill")


@app.command(epilog="Example:  brew train recipes/bbc/teacher.yaml train.epochs=1")
@_guarded
def train(recipe: Path = typer.Argument(..., help="the YAML recipe (no teacher)"),
          overrides: Optional[list[str]] = TRAIN_OVERRIDES,
          dry_run: bool = typer.Option(False, "--dry-run", help="load configs only, print the plan and exit"),
          resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in output_dir")):
    """Fine-tune one model on labelled data (for example a teacher); same loop and outputs as distill."""
    _run(recipe, overrides, dry_run, resume, "train")


@app.command("eval", epilog="Examples:  brew eval runs/bbc-T3  |  brew eval runs/bbc-T3/best --split eval --json")
@_guarded
def eval_(checkpoint: str = typer.Argument(..., help="a brew output folder, best/ or checkpoint-STEP/"),
          data: Optional[str] = typer.Option(None, help="score on this CSV/JSON/JSONL/Parquet file instead"),
          split: Optional[str] = typer.Option(None, help="train, eval or test (default: test if the recipe has one)"),
          batch_size: int = typer.Option(64, min=1, help="batch size for scoring"),
          teacher: bool = typer.Option(True, help="also score the teacher the checkpoint records"),
          timing_rounds: int = typer.Option(20, min=0, help="single-example passes timed per model (batched: a "
                                            "quarter as many); 0: no timing"),
          as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout")):
    """Score a checkpoint and compare it with its teacher: quality, size, speed."""
    from brewcli.evaluate import evaluate_checkpoint, speed_note, teacher_rows
    from brewcli.tasks import TASKS
    from brewcli.ui import console, human, results_table

    report = evaluate_checkpoint(checkpoint, data, split, batch_size, teacher, timing_rounds)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    task = TASKS.get(report["task"])
    exported = report.get("export")
    mine = f"student ({exported['precision']} ONNX)" if exported else "student" if report.get("teacher") else "model"
    rows = teacher_rows(report.get("teacher"), report.get("teachers")) + (
        [("student (PyTorch)", report["pytorch"])] if "pytorch" in report else []) + [(mine, report["student"])]
    for _, r in rows:
        r["params_h"] = human(r["params"])
        r["size_h"] = human(r["size_bytes"], "B")
    cols = [(m, m) for m in task.metrics if m in report["student"]] + [("params_h", "params"), ("size_h", "size"),
                                               ("latency_ms", "ms/example"), ("throughput", "examples/s")]
    console.print(results_table(f"{report['checkpoint']} on {report['split']} ({report['rows']} rows, "
                                f"{report['device']})", rows, cols))
    main = task.main_of(report["student"])
    if "retained_pct" in report:
        faster = f", {report['speedup']}x faster at batch 1" if "speedup" in report else ""
        console.print(f"student keeps [bold]{report['retained_pct']}%[/bold] of the teacher's {main} "
                      f"with {report['size_ratio']:.0%} of its parameters{faster}")
    if "pytorch" in report:
        faster = f", {report['speedup_vs_pytorch']}x as fast at batch 1" if report.get("speedup_vs_pytorch") else ""
        console.print(f"the {exported['precision']} export against its PyTorch student: {main} "
                      f"{report['pytorch_delta']:+.4f}{faster}")
    console.print(speed_note(report))
    if "teacher_agreement" in report["student"]:
        console.print(f"teacher agreement ({task.agreement_is}): {report['student']['teacher_agreement']:.4f}",
                      markup=False)
    for sample in report.get("samples", []):
        console.print(f"{sample['prompt']} ...", soft_wrap=True, markup=False)
        for who in ("teacher", "student"):
            if who in sample:
                console.print(f"  {who}: ...{sample[who]}", soft_wrap=True, markup=False)
    if report.get("stages"):
        from brewcli.stages import stages_line

        console.print(f"trained in {len(report['stages'])} stages: {stages_line(report['stages'])}", markup=False)


@app.command(epilog="Examples:  brew export runs/bbc-T3  |  brew export runs/bbc-T3 --quantize int8  |  "
                     "brew eval runs/bbc-T3/onnx-int8")
@_guarded
def export(run: str = typer.Argument(..., help="a brew output folder (a run, its best/ or a checkpoint-STEP/)"),
           quantize: Optional[str] = typer.Option(None, help="int8: onnxruntime's dynamic quantization of the weights"),
           out: Optional[str] = typer.Option(None, help="the folder to write (default: RUN/onnx or RUN/onnx-int8)"),
           opset: int = typer.Option(18, help="the ONNX opset, 18 to 23"),
           per_tensor: bool = typer.Option(False, "--per-tensor", help="int8 scales per tensor, not per channel "
                                           "(smaller drift per channel, at the same speed)"),
           tolerance: Optional[float] = typer.Option(None, help="the largest difference from PyTorch allowed, relative "
                                                     "to the largest output (default 1e-4 fp32, 0.15 int8)")):
    """Export a student to ONNX (optionally int8), checked against PyTorch on rows of its own data."""
    from brewcli.export import export_run
    from brewcli.ui import console, human

    m = export_run(run, out, quantize, opset, per_tensor, tolerance)
    agree = f", the same prediction on {m['prediction_agreement']:.1%}" if "prediction_agreement" in m else ""
    console.print(f"wrote {m['folder']} ({m['precision']}, opset {m['opset']}, {human(m['size_bytes'], 'B')})",
                  markup=False)
    console.print(f"checked against PyTorch on {m['checked_rows']} rows of the {m['checked_split']} split: largest "
                  f"difference {m['max_difference']:.3g} ({m['relative_difference']:.3%} of the largest output"
                  f"{agree})" + (f"; score it with: brew eval {m['folder']}" if m["head"] != "none" else
                                  " (a general student has no task metric to score)"), markup=False)


@app.command(epilog="Examples:  brew augment recipes/bbc-titles/distill-T4-tiny-augment.yaml --dry-run  |  "
             "brew augment r.yaml data.augment.method=simple --out variants.jsonl")
@_guarded
def augment(recipe: Path = typer.Argument(..., help="the YAML recipe (with data.augment)"),
            overrides: Optional[list[str]] = AUGMENT_OVERRIDES,
            out: Optional[Path] = typer.Option(None, "--out", help="write the training rows with their variants as "
                                                                 "JSON lines (gold: false for a variant)"),
            dry_run: bool = typer.Option(False, "--dry-run", help="vary the first rows only, show the counts and a "
                                                                  "few examples, store nothing")):
    """Build (or read back) the recipe's augmented training set (data.augment), as `brew distill` will use it."""
    from brewcli.augment import write_rows
    from brewcli.errors import RecipeError, doing
    from brewcli.recipe import load_stages
    from brewcli.stages import plan_stages
    from brewcli.ui import augmented_text, console

    doing(f"reading the recipe {recipe}")
    stages = load_stages(recipe, overrides or [])
    if not any(st.recipe.data.augment for st in stages):
        raise RecipeError("data.augment", "this recipe does not augment its data",
                          "add e.g. data.augment: {method: glove} (brew ls augment lists the methods)")
    if out is not None and out.exists():
        raise BrewError(f"--out: {out} exists; brew augment does not overwrite a file, name another")
    doing("checking the recipe against the model configs, tokenizer and data")
    plans = plan_stages(stages, augment_sample=dry_run)
    chosen = [(st, p) for st, p in zip(stages, plans) if p.augmented is not None]
    for st, plan in chosen:
        console.print(f"{st.title + ': ' if st.name else ''}{augmented_text(plan.augmented, examples=5)}")
        if out is not None and not dry_run:
            path = out if len(chosen) == 1 else out.with_name(f"{out.stem}-{st.name}{out.suffix}")
            write_rows(plan, path)
            console.print(f"wrote {len(plan.splits.train):,} rows to {path}", markup=False)


@app.command(epilog="Examples:  brew sweep r.yaml distill.temperature=1,2,4,8 train.lr=1e-4,3e-4  |  "
                     "brew sweep r.yaml train.lr=1e-5:1e-3:log distill.temperature=1:8 --trials 12  |  "
                     "brew sweep r.yaml distill.temperature=1,2,4,8 --resume")
@_guarded
def sweep(recipe: Path = typer.Argument(..., help="the YAML recipe"),
          keys: list[str] = typer.Argument(..., help="key=v1,v2,... (a grid) or key=lo:hi[:log] (a range, with "
                                           "--trials)", show_default=False),
          trials: Optional[int] = typer.Option(None, help="search the ranges with Optuna for this many trials"),
          out: Optional[str] = typer.Option(None, help="the sweep's folder (default: train.output_dir + '-sweep')"),
          resume: bool = typer.Option(False, help="continue an interrupted sweep: finished trials are skipped"),
          dry_run: bool = typer.Option(False, "--dry-run", help="check every value and the first trial's plan; "
                                       "list the trials; train nothing")):
    """Run a recipe over a grid of values, or an Optuna search over ranges; each trial an ordinary run."""
    from brewcli.sweep import sweep as run_sweep
    from brewcli.ui import console

    s = run_sweep(recipe, keys, trials, out, resume, on_result=lambda s: console.print(s.table()), dry_run=dry_run)
    if dry_run:
        if s.trials:
            console.print(s.table())
        console.print(f"dry run: {s.describe()}; every value checked, nothing trained", markup=False)
        return
    best = s.best()
    if best is None:
        console.print(f"no trial finished; results in {s.folder / 'sweep.json'}", markup=False)
        raise typer.Exit(1)
    console.print(f"best: trial {best.number} (" + ", ".join(f"{k}={v}" for k, v in best.values.items()) +
                  f"), {s.metric} {best.metric:.4g}; its recipe: {s.folder / 'best.yaml'}; results: "
                  f"{s.folder / 'sweep.csv'}", markup=False)


@app.command(epilog="Examples:  brew init --teacher runs/bbc-teacher --student T3 --data data/bbc/train.jsonl  |  "
             "brew init --train --model bert-base-cased --data train.conll --out teacher.yaml  |  "
             "brew init --teacher runs/bbc-teacher --data data/bbc --out r.yaml  |  "
             "brew init --stages --teacher runs/bbc-teacher --student T4-tiny --data data/bbc  |  "
             "brew init --task general --teacher runs/bbc-teacher --student T4-tiny --data corpus.txt  |  "
             "brew init --stages --general corpus.txt --teacher runs/bbc-teacher --student T4-tiny --data data/bbc")
@_guarded
def init(task: Optional[str] = typer.Option(None, help="the task (`brew ls tasks`); proposed from the data if left out"),
         teacher: Optional[str] = typer.Option(None, help="Hugging Face id or local folder of the teacher"),
         student: Optional[str] = typer.Option(None, help="student preset: T6, T3, T3-small, T4-tiny, T12-nano, BiGRU"),
         data: Optional[str] = typer.Option(None, help="the training file, a folder holding train/eval/test files, "
                                            "or a Hugging Face dataset as name[:config]"),
         test: Optional[str] = typer.Option(None, "--test", help="the test file (default: test.* beside the train "
                                            "file)"),
         eval_file: Optional[str] = typer.Option(None, "--eval", help="the evaluation file (default: eval.*, "
                                                 "validation.* or dev.* beside the train file, else 10% of train)"),
         column: Optional[list[str]] = typer.Option(None, help="KEY=COLUMN, e.g. text=review or tags=ner (repeat it)"),
         text: Optional[str] = typer.Option(None, help="text column (comma-separated for a pair)"),
         label: Optional[str] = typer.Option(None, help="label column"),
         train: bool = typer.Option(False, "--train", help="write a `brew train` recipe that fine-tunes --model "
                                    "(for a pretrained model without the task's head)"),
         model: Optional[str] = typer.Option(None, help="with --train: the model to fine-tune"),
         stages: bool = typer.Option(False, "--stages", help="distill in two stages: the intermediate layers, then "
                                     "the predictions (TinyBERT's task distillation)"),
         general: Optional[str] = typer.Option(None, "--general", help="a corpus of unlabelled text (.txt, or a "
                                               "text column): a first stage of general distillation on it, before "
                                               "the task's two (implies --stages)"),
         general_eval: Optional[str] = typer.Option(None, "--general-eval", help="with --general: held-out text "
                                                    "(default: 2% of the corpus)"),
         out: Optional[Path] = typer.Option(None, help="where to write the recipe"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a commented recipe to start from: reads the data, proposes the task, its columns and the training
    settings, asks for what the flags leave out. Paths in it are relative to the recipe's folder."""
    from brewcli.models.students import PRESETS
    from brewcli.scaffold import (check_model, check_out, choose_columns, general_corpus, peek, propose_task,
                                  train_file, write_recipe)
    from brewcli.tasks import TASKS
    from brewcli.ui import console

    ask = _interactive()
    if general_eval and not general:
        raise BrewError("brew init: --general-eval is the held-out text of the corpus --general names; give both")
    if general and train:
        raise BrewError("brew init: --general adds a stage of general distillation, which needs a teacher; --train "
                        "fine-tunes one model, so give one of them")
    if stages and train:
        raise BrewError("brew init: --stages writes a distillation recipe in stages; --train fine-tunes one model, "
                        "so give one of them")
    task = TASKS.canonical(task) if task else None

    def check_task(task: str) -> None:
        if task == "general" and train:
            raise BrewError("brew init: task general distils a teacher's layers on unlabelled text, so it has no "
                            "`brew train` recipe; leave out --train and name the --teacher")
        if task == "general" and (stages or general):
            raise BrewError(f"brew init: {'--general' if general else '--stages'} with task general: the stages are "
                            "a task's, after general distillation on the corpus; give the task and its data, and the "
                            "corpus with --general, e.g. brew init --stages --general corpus.txt --task "
                            "classification --data train.csv")

    check_task(task)

    def value(current, flag, prompt, default, choices=None, check=None):
        """The flag's value, else the default (no terminal) or the answer to a prompt. `check` raises BrewError on
        a bad value: a flag is refused, a prompt asks again."""
        if current is not None or not ask:
            if current is None and default is None:
                raise BrewError(f"brew init: {flag} is required when not run interactively")
            current = default if current is None else current
            check and check(current)
            return current
        while True:
            answer = typer.prompt(prompt + (f" ({', '.join(choices)})" if choices else ""), default=default)
            try:
                check and check(answer)
                return answer
            except BrewError as e:
                console.print(str(e), markup=False)

    out = Path(value(out, "--out", "Recipe file to write", "teacher.yaml" if train else "recipe.yaml",
                     check=lambda o: check_out(Path(o), force)))
    data = value(data, "--data", "Data (file, folder or dataset[:config])", None, check=train_file)
    found = train_file(data)
    plain = {"general": True, "token-classification": False}  # how those tasks read a .txt file
    kind, columns, rows = peek(str(found), text=plain.get(task)) if found else ("hub", {}, None)
    task = TASKS.canonical(value(task, "--task", "Task", propose_task(kind, columns) if columns else "classification",
                                 TASKS.names()))
    if found and found.suffix.lower() == ".txt" and plain.get(task, kind == "text") != (kind == "text"):
        kind, columns, rows = peek(str(found), text=plain[task])  # the task answered at the prompt reads it so
    check_task(task)
    if kind == "text" and task != "general":
        raise BrewError(f"brew init: --data {found.name} is plain text (no token and tag columns: not CoNLL), which "
                        f"task general reads; task {task} reads a CSV, JSON or Parquet file with its columns")
    corpus = general_corpus(general, general_eval) if general else None
    flag = "--model" if train else "--teacher"
    model = value(model or teacher if train else teacher, flag, "Model to fine-tune (Hugging Face id or folder)"
                  if train else "Teacher (Hugging Face id or folder)", None, check=lambda m: check_model(m, flag))
    if not train:
        student = PRESETS.canonical(value(student, "--student", "Student preset", "T3", PRESETS.names()))
    chosen = choose_columns(TASKS.get(task), columns, column or [], text, label, str(data),
                            (lambda what: typer.prompt(f"Column holding {what} ({', '.join(columns)})")) if ask else None)
    notes = write_recipe(out, task=task, model=model, student=None if train else student, data=data, found=found,
                         columns=columns, chosen=chosen, rows=rows, given={"test": test, "eval": eval_file},
                         stages=stages, kind=kind, general=corpus)
    for note in notes:
        console.print(note, markup=False)
    shown = ", ".join(f"{k} <- {v}" for k, v in chosen.items())
    console.print(f"wrote {out} (task {task}; columns {shown}); check it with: "
                  f"brew {'train' if train else 'distill'} {out} --dry-run")


def _interactive() -> bool:
    return sys.stdin.isatty()


@app.command("ls")
@_guarded
def ls(what: Optional[str] = typer.Argument(None, help="students, archs, matches, losses, features, schedulers, tasks or augment")):
    """List what recipes can name: student presets, match presets, losses, feature kinds, schedulers, tasks,
    augmentation methods."""
    from brewcli.listing import SECTIONS, render_listing

    if what is not None and what not in SECTIONS:
        from brewcli.errors import did_you_mean

        hint = did_you_mean(what, SECTIONS)
        raise BrewError(f"brew ls: nothing called '{what}'; choose from {', '.join(SECTIONS)}" + (f"; {hint}" if hint else ""))
    render_listing([what] if what else list(SECTIONS))


cache_app = typer.Typer(no_args_is_help=True, help="The teacher-output cache: build, list and remove entries.")
app.add_typer(cache_app, name="cache")


@cache_app.command("build", epilog="Example:  brew cache build recipes/bbc/distill-T3.yaml")
@_guarded
def cache_build(recipe: Path = typer.Argument(..., help="the YAML recipe whose teacher outputs to store"),
                overrides: Optional[list[str]] = OVERRIDES):
    """Run the recipe's teacher over its training data once and store what the loss terms read."""
    from brewcli.errors import RecipeError, doing
    from brewcli.recipe import load_stages
    from brewcli.stages import plan_stages
    from brewcli.train import build_cache
    from brewcli.ui import console

    doing(f"reading the recipe {recipe}")
    stages = load_stages(recipe, overrides or [])

    def refuse(st, key, message, hint=None):  # one recipe: refused; a stage of several: skipped, saying why
        if len(stages) == 1:
            raise RecipeError(key, message, hint)
        console.print(f"{st.title}: nothing to cache ({key}: {message})", markup=False)

    wanted = []
    for st in stages:
        if st.recipe.teacher is None:
            refuse(st, "teacher", "this recipe has no teacher, so there is nothing to cache")
        elif st.recipe.distill.teacher_cache == "memory":
            refuse(st, "distill.teacher_cache", "is memory, which lasts one run; brew cache build fills a disk "
                   "cache", "set distill.teacher_cache: disk (or auto)")
        else:
            wanted.append(st.index)
    doing("checking the recipe against the model configs, tokenizer and data")
    plans = plan_stages(stages)
    for st, plan in zip(stages, plans):
        if st.index not in wanted:
            continue
        if plan.cache is None:
            refuse(st, "distill.teacher_cache", plan.cache_note or "is off, or the loss terms read nothing from the "
                   "teacher", "set distill.teacher_cache: disk")
            continue
        if st.name is not None:
            console.print(st.title, markup=False)
        build_cache(plan)


def _cache_root(cache_dir: Optional[str]) -> Path:
    from brewcli.cache import chosen_root

    return chosen_root(cache_dir)


CACHE_DIR = typer.Option(None, "--cache-dir", help="the cache folder (default: $BREW_CACHE or ~/.cache/brew)")


@cache_app.command("ls")
@_guarded
def cache_ls(cache_dir: Optional[str] = CACHE_DIR,
             as_json: bool = typer.Option(False, "--json", help="print the entries as JSON on stdout")):
    """List cache entries: teacher, data, features, rows, size, last used."""
    import time

    from brewcli.cache import AUGMENT_DIR, augmented_sets, entries
    from brewcli.ui import console, human, plain_table

    root = _cache_root(cache_dir)
    found = entries(root)
    sets, size = augmented_sets(root)
    if as_json:
        print(json.dumps({"root": str(root), "entries": found, "augmented_sets": sets, "augmented_bytes": size},
                         indent=2))
        return
    if sets:
        console.print(f"augmented training sets (data.augment): {sets}, {human(size, 'B')} in {root / AUGMENT_DIR}; "
                      "brew cache rm --all removes them too", markup=False)
    if not found:
        console.print(f"no teacher cache entries in {root}")
        return
    rows = [(e["key"], str(e["teacher"]), f"{e['task']}, {str(e['data'])[:8]}, max_length {e['max_length']}",
             ", ".join(e["features"] or []), str(e["rows"]), human(e["bytes"], "B"),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(e["last_used"])) if e["last_used"] else "-")
            if e["complete"] else (e["key"], f"({e['state']})", "", "", "", human(e["bytes"], "B"), "-") for e in found]
    console.print(plain_table(f"teacher cache: {root} ({human(sum(e['bytes'] for e in found), 'B')})",
                              ("key", "teacher", "data", "features", "rows", "size", "last used"), rows))
    for e in found:
        if e["state"] == "damaged":
            console.print(f"damaged: {e['key']} ({e['problem']}); the next run that needs it rebuilds it, or remove it "
                          f"with brew cache rm {e['key'][:8]}", markup=False)


@cache_app.command("rm")
@_guarded
def cache_rm(keys: Optional[list[str]] = typer.Argument(None, help="entry keys (or their first characters)"),
             everything: bool = typer.Option(False, "--all", help="remove every entry"),
             cache_dir: Optional[str] = CACHE_DIR):
    """Remove cache entries by key (see brew cache ls), or all of them (with the augmented training sets)."""
    from brewcli.cache import remove
    from brewcli.ui import console

    if not keys and not everything:
        raise BrewError("brew cache rm: name the entries to remove (keys from brew cache ls), or pass --all")
    root = _cache_root(cache_dir)
    gone = remove(root, keys or [], everything)
    console.print(f"removed {len(gone)} entr{'y' if len(gone) == 1 else 'ies'} from {root}")


def main() -> None:
    app()
