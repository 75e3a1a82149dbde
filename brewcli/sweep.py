"""`brew sweep`: runs of one recipe over several values of some of its keys.

`key=v1,v2,...` gives a key its values: the sweep runs every point of their grid. `key=lo:hi` (or `lo:hi:log`) gives
a range, which `--trials N` searches with Optuna (lists then become choices). Every trial is an ordinary run of the
recipe with the trial's values as `key=value` overrides, in its own folder `SWEEP/trial-NNN`; they share the teacher
cache (its entries are keyed by the teacher and the data, not by the trial's values). Every trial's overrides go
through the recipe schema before anything trains. sweep.json and sweep.csv hold the results as they come; best.yaml
is the recipe with the best trial's values. `--resume` skips finished trials and resumes an interrupted one.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from brewcli.errors import BrewError, RecipeError, doing

RANGE = re.compile(r"^(?P<lo>[^:,\[\]{}]*):(?P<hi>[^:,\[\]{}]*)(?::(?P<scale>\w*))?$")


@dataclass
class Axis:
    """One swept key: its values (a grid axis, or an Optuna choice), or a range searched by Optuna."""

    key: str
    values: list[str] | None = None  # each as typed, a YAML value
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False  # a range written with whole numbers (train.epochs=2:8) searches whole numbers


def _split(value: str) -> list[str]:
    """Comma-separated values, commas inside brackets or braces kept (`distill.matches=[a,b],[c]`)."""
    parts, depth, cur = [], 0, ""
    for ch in value:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def _number(text: str, item: str, which: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BrewError(f"{item}: the range's {which} bound {text!r} is not a number; write lo:hi or lo:hi:log, "
                        "e.g. train.lr=1e-5:1e-3:log") from None


def parse_axes(items: list[str]) -> list[Axis]:
    axes, seen = [], set()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise BrewError(f"sweep '{item}': expected key=v1,v2 (a grid) or key=lo:hi[:log] (a range for --trials), "
                            "e.g. distill.temperature=1,2,4 or train.lr=1e-5:1e-3:log")
        if key in seen:
            raise BrewError(f"sweep key {key} is given twice; give its values once, comma-separated")
        seen.add(key)
        m = RANGE.match(value)
        if m and not value.startswith(("/", ".")) and (m["lo"] or m["hi"] or m["scale"] is not None):
            if not m["lo"] or not m["hi"]:
                raise BrewError(f"{item}: a range needs both bounds, lo:hi (e.g. train.lr=1e-5:1e-3:log)")
            if m["scale"] not in (None, "log"):
                raise BrewError(f"{item}: a range's third part is 'log' (lo:hi:log), not {m['scale']!r}")
            low, high = _number(m["lo"], item, "lower"), _number(m["hi"], item, "upper")
            if not low < high:
                raise BrewError(f"{item}: the lower bound must be below the upper one")
            if m["scale"] == "log" and low <= 0:
                raise BrewError(f"{item}: a log range needs positive bounds")
            whole = all(re.fullmatch(r"[+-]?\d+", b) for b in (m["lo"], m["hi"]))
            axes.append(Axis(key, low=low, high=high, log=m["scale"] == "log", integer=whole))
        else:
            values = [v.strip() for v in _split(value)]
            if any(not v for v in values):
                raise BrewError(f"{item}: an empty value in the list; write key=v1,v2,...")
            axes.append(Axis(key, values=values))
    if not axes:
        raise BrewError("brew sweep needs at least one key to sweep, e.g. distill.temperature=1,2,4,8")
    return axes


def grid(axes: list[Axis]) -> list[dict[str, str]]:
    return [dict(zip([a.key for a in axes], point)) for point in itertools.product(*(a.values for a in axes))]


def _value_text(axis: Axis, value) -> str:
    return str(value) if axis.values is not None else str(int(value)) if axis.integer else f"{float(value):.4g}"


def check_axes(recipe: Path, axes: list[Axis], trials: int | None) -> None:
    """Every value (a range: both bounds) through the recipe schema, as `key=value` overrides are, before any run."""
    from brewcli.recipe import load_stages

    ranges = [a for a in axes if a.values is None]
    if trials is None and ranges:
        raise BrewError(f"{ranges[0].key}: a range ({ranges[0].low:g}:{ranges[0].high:g}) needs --trials N, the "
                        "number of Optuna trials; for a grid give a list of values (key=v1,v2)")
    if trials is not None and not ranges:
        raise BrewError(f"--trials {trials} with a grid: a grid runs each of its {len(grid(axes))} points; leave "
                        "--trials out, or give a range (key=lo:hi) for Optuna to search")
    if trials is not None and trials < 1:
        raise BrewError(f"--trials {trials}: expected at least 1")
    for axis in axes:
        for value in axis.values or (axis.low, axis.high):
            text = _value_text(axis, value)
            try:
                load_stages(recipe, [f"{axis.key}={text}"])
            except RecipeError as e:
                raise BrewError(f"sweep value {axis.key}={text}: {e}") from None
            except BrewError as e:  # RecipeErrors: several problems
                raise BrewError(f"sweep value {axis.key}={text}: {' / '.join(str(e).splitlines())}") from None


@dataclass
class Trial:
    number: int
    values: dict[str, str]
    status: str = "pending"  # running, done, failed
    metric: float | None = None
    retained_pct: float | None = None
    minutes: float | None = None
    message: str | None = None

    def row(self) -> dict:
        return {"trial": self.number, **self.values, "status": self.status, "metric": self.metric,
                "retained_pct": self.retained_pct, "minutes": self.minutes, "message": self.message}


class Sweep:
    """The sweep folder: its trials' folders and the results, written after each change."""

    def __init__(self, folder: Path, recipe: Path, axes: list[Axis], trials: int | None):
        self.folder, self.recipe, self.axes, self.n_trials = folder, recipe, axes, trials
        self.trials: list[Trial] = []
        self.metric, self.lower_is_better = None, False

    @property
    def spec(self) -> dict:
        return {"recipe": str(self.recipe.resolve()), "trials": self.n_trials,
                "axes": [{"key": a.key, "values": a.values, "low": a.low, "high": a.high, "log": a.log}
                         for a in self.axes]}

    def open(self, resume: bool) -> None:
        state = self.folder / "sweep.json"
        if not resume:
            if state.is_file() or any(self.folder.glob("trial-*")):
                raise BrewError(f"{self.folder} holds an earlier sweep; pass --resume to continue it, or --out DIR "
                                "for a new one")
            return
        if not state.is_file():
            raise BrewError(f"--resume: {self.folder} holds no sweep (no sweep.json); run without --resume to start it")
        saved = json.loads(state.read_text())
        if {**saved.get("spec", {}), "trials": None} != {**self.spec, "trials": None}:  # more --trials may be asked
            raise BrewError(f"--resume: {self.folder} holds a sweep of other keys or values ({state}); give the same "
                            "recipe, keys and values, or --out DIR for a new sweep")
        self.metric, self.lower_is_better = saved.get("metric"), saved.get("lower_is_better", False)
        self.trials = [Trial(t["number"], t["values"], t["status"], t.get("metric"), t.get("retained_pct"),
                             t.get("minutes"), t.get("message")) for t in saved["results"]]

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        results = [t.__dict__ for t in self.trials]
        best = self.best()
        (self.folder / "sweep.json").write_text(json.dumps(
            {"spec": self.spec, "metric": self.metric, "lower_is_better": self.lower_is_better,
             "best": best.number if best else None, "results": results}, indent=2) + "\n")
        with open(self.folder / "sweep.csv", "w", newline="") as f:
            fields = ["trial", *[a.key for a in self.axes], "status", "metric", "retained_pct", "minutes", "message"]
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(t.row() for t in self.trials)

    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.status == "done" and t.metric is not None and math.isfinite(t.metric)]
        if not done:
            return None
        return (min if self.lower_is_better else max)(done, key=lambda t: t.metric)

    def table(self):
        """The results so far, as the terminal shows them after each trial."""
        from brewcli.ui import plain_table

        keys, best, metric = [a.key for a in self.axes], self.best(), self.metric or "metric"
        rows = [(str(t.number), *(t.values[k] for k in keys), t.status,
                 "-" if t.metric is None else f"{t.metric:.4g}",
                 "-" if t.retained_pct is None else f"{t.retained_pct:.1f}%",
                 "-" if t.minutes is None else f"{t.minutes:.1f}", "*" if best is t else "") for t in self.trials]
        title = f"sweep {self.folder} ({metric}, {'lower' if self.lower_is_better else 'higher'} is better)"
        return plain_table(title, ("trial", *keys, "status", metric, "kept", "minutes", "best"), rows)

    def describe(self) -> str:
        space = ", ".join(f"{a.key} in {a.values}" if a.values else f"{a.key} in [{a.low:g}, {a.high:g}]"
                          + (" (log)" if a.log else "") for a in self.axes)
        return f"{len(self.trials) or self.n_trials} trials ({space}) into {self.folder}"

    def use_metric(self, task) -> None:
        """Trials are ranked by the final student's main metric (a general run's: its held-out loss)."""
        self.metric = task.main_metric if not task.headless else "loss"
        self.lower_is_better = task.headless or self.metric in task.lower_is_better

    def folder_of(self, trial: Trial) -> Path:
        return self.folder / f"trial-{trial.number:03d}"

    def run(self, trial: Trial) -> None:
        """One trial: plan, then run (resuming its folder when it holds checkpoints), then read its metrics.json."""
        from brewcli.checkpoint import checkpoint_folders
        from brewcli.recipe import load_stages
        from brewcli.stages import execute, plan_stages
        from brewcli.ui import console

        out = self.folder_of(trial)
        overrides = [*(f"{k}={v}" for k, v in trial.values.items()), f"train.output_dir={out}"]
        again = out.is_dir() and (bool(checkpoint_folders(out)) or any(checkpoint_folders(p) for p in out.iterdir()
                                                                        if p.is_dir()))
        console.print(f"[bold]trial {trial.number}[/bold] " + " ".join(f"{k}={v}" for k, v in trial.values.items())
                      + f" -> {out}" + (" (resuming)" if again else ""), markup=True)
        trial.status = "running"
        self.save()
        start = time.perf_counter()
        try:
            stages = load_stages(self.recipe, overrides)
            plans = plan_stages(stages)
            if self.metric is None:
                self.use_metric(plans[-1].task)
            execute(stages, plans, resume=again)
            metrics = json.loads((out / "metrics.json").read_text())
            student = metrics.get("student", {})
            if self.metric not in student:  # a task whose splits decide its metric (sentence embeddings)
                self.metric = plans[-1].task.main_of(student)
            trial.metric = student.get(self.metric)
            trial.retained_pct = metrics.get("retained_pct")
            trial.status = "done"
        except BrewError as e:  # a diverged or refused trial is a result of the sweep, not its end
            trial.status, trial.message = "failed", str(e).splitlines()[0][:300]
            console.print(f"trial {trial.number} failed: {trial.message}", markup=False)
        trial.minutes = round((time.perf_counter() - start) / 60, 2)
        self.save()

    def write_best(self) -> Path | None:
        """best.yaml: the recipe with the best trial's values, its paths made absolute (it lives in the sweep
        folder, not beside the recipe)."""
        from brewcli.errors import read_text
        from brewcli.paths import resolve_paths
        from brewcli.recipe import apply_override, parse_override, parse_yaml

        best = self.best()
        if best is None:
            return None
        raw = parse_yaml(read_text(self.recipe), self.recipe.name)
        resolve_paths(raw, self.recipe.resolve().parent)
        for item in (f"{k}={v}" for k, v in best.values.items()):
            apply_override(raw, *parse_override(item))
        path = self.folder / "best.yaml"
        head = (f"# brew sweep's best trial ({best.number}: {self.metric} {best.metric}) of {self.recipe}, with "
                + ", ".join(f"{k}={v}" for k, v in best.values.items()) + "\n")
        path.write_text(head + yaml.safe_dump(raw, sort_keys=False))
        return path


def run_grid(sweep: Sweep, on_result) -> None:
    done = {tuple(t.values.items()): t for t in sweep.trials}
    for i, values in enumerate(grid(sweep.axes)):
        trial = done.get(tuple(values.items()))
        if trial is None:
            trial = Trial(i, values)
            sweep.trials.append(trial)
        if trial.status == "done":
            continue
        sweep.run(trial)
        on_result(sweep)


def run_search(sweep: Sweep, on_result, seed: int) -> None:
    """Optuna's TPE sampler over the ranges (and lists, as choices); finished trials are told to a fresh study on
    resume, an interrupted one asked again first."""
    try:
        import optuna
    except ImportError:
        raise BrewError("brew sweep --trials needs optuna, which is not installed: pip install 'brewcli[sweep]' "
                        "(bash scripts/setup.sh installs it)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {a.key: (optuna.distributions.CategoricalDistribution(a.values) if a.values is not None else
                     optuna.distributions.IntDistribution(int(a.low), int(a.high), log=a.log) if a.integer else
                     optuna.distributions.FloatDistribution(a.low, a.high, log=a.log)) for a in sweep.axes}
    study = optuna.create_study(direction="minimize" if sweep.lower_is_better else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    pending = []
    for t in sweep.trials:
        if t.status in ("done", "failed"):
            _tell(study, optuna, t, sweep.axes, dists)
        else:
            pending.append(t)
    for t in pending:  # interrupted: run (resume) it before asking for new ones
        sweep.run(t)
        _tell(study, optuna, t, sweep.axes, dists)
        on_result(sweep)
    while len(sweep.trials) < sweep.n_trials:
        ask = study.ask(dists)
        trial = Trial(len(sweep.trials), {a.key: _value_text(a, ask.params[a.key]) for a in sweep.axes})
        sweep.trials.append(trial)
        sweep.run(trial)
        if trial.status == "done" and trial.metric is not None:
            study.tell(ask, trial.metric)
        else:
            study.tell(ask, state=optuna.trial.TrialState.FAIL)
        on_result(sweep)


def _tell(study, optuna, t: Trial, axes: list[Axis], dists) -> None:
    """A trial run earlier (or just now, outside study.ask), added to the study with its result."""
    params = {a.key: t.values[a.key] if a.values is not None else int(t.values[a.key]) if a.integer
              else float(t.values[a.key]) for a in axes}
    ok = t.status == "done" and t.metric is not None
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t.metric if ok else None,
                                              state=optuna.trial.TrialState.COMPLETE if ok else
                                              optuna.trial.TrialState.FAIL))


def sweep(recipe: Path, items: list[str], trials: int | None = None, out: str | None = None,
          resume: bool = False, on_result=lambda s: None, dry_run: bool = False) -> Sweep:
    """Check every value, then run the grid or the search; returns the sweep (its trials and best). A dry run
    checks the values and the first trial's plan, and returns the grid's trials without running any."""
    from brewcli.recipe import load_stages
    from brewcli.stages import top_folder

    axes = parse_axes(items)
    doing(f"checking the sweep's values against {recipe}")
    stages = load_stages(recipe)
    check_axes(recipe, axes, trials)
    first = stages[0].recipe
    folder = Path(out) if out else Path(f"{top_folder(stages) if stages[0].name else first.train.output_dir}-sweep")
    s = Sweep(folder, recipe, axes, trials)
    if dry_run:
        from brewcli.stages import plan_stages

        first_values = grid(axes)[0] if trials is None else {a.key: _value_text(a, a.low) for a in axes
                                                              if a.values is None}
        plans = plan_stages(load_stages(recipe, [f"{k}={v}" for k, v in first_values.items()]), dry_run=True)
        s.use_metric(plans[-1].task)
        s.trials = [Trial(i, v) for i, v in enumerate(grid(axes))] if trials is None else []
        return s
    s.open(resume)
    s.save()
    if trials is None:
        run_grid(s, on_result)
    else:
        run_search(s, on_result, first.train.seed)
    s.write_best()
    return s
