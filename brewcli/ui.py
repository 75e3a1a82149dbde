"""Everything the terminal shows: one rich console on stderr, plan and result tables, progress."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

console = Console(stderr=True, highlight=False)


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _arch(cfg) -> str:
    from brewcli.families import FamilyError, read_widths

    try:
        w = read_widths(cfg)
    except FamilyError:
        return f"{cfg.model_type}, vocab {cfg.vocab_size}"
    return f"{cfg.model_type}, {w.layers} layers x {w.hidden}, FFN {w.ffn}, {w.heads} heads, vocab {w.vocab}"


def render_plan(plan) -> None:
    from brewcli.memory import plan_lines

    r = plan.recipe
    t = Table(title=f"brew plan: {r.name or 'recipe'}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    several = len(plan.teachers) > 1
    for pt in plan.teachers:
        label = f"teacher {pt.name}" if several else "teacher"
        extra = f"; weight {pt.spec.weight:g}" if several else ""
        extra += "; labels reordered to the first teacher's" if pt.label_order else ""
        t.add_row(label, f"{pt.spec.model}\n{_arch(pt.config)}, {human(pt.params)} params{extra}")
    src = r.student.model or (f"preset {r.student.preset}" if r.student.preset else "teacher's config")
    init = plan.init + (f" (teacher layers {plan.init_layers})" if plan.init_layers else "")
    ratio = f" ({plan.student_params / plan.teacher_params:.0%} of teacher)" if plan.teacher_params else ""
    t.add_row("student", f"{src}, init {init}\n{_arch(plan.student_config)}, {human(plan.student_params)} params{ratio}")
    sizes = ", ".join(f"{k} {v}" for k, v in plan.splits.sizes().items())
    head, compared = plan.task.describe(plan.splits.label_names)
    t.add_row("task", f"{plan.task.name} ({plan.task.auto_class.removeprefix('AutoModel')}): {head}")
    columns = ", ".join(f"{c.key} {plan.task.column(r.data, c.key)}" for c in plan.task.columns)
    features = ", ".join(f"{k} {len(v)}" for k, v in plan.encoded.items())
    shown = "" if features == sizes else f" -> {features} features"
    t.add_row("data", f"{sizes} rows{shown}; columns: {columns}; max_length {r.data.max_length}")
    tr = r.train
    procs = f" x {plan.processes} processes" if plan.processes > 1 else ""
    t.add_row("training", f"{plan.total_steps} steps ({plan.steps_per_epoch}/epoch), batch {tr.batch_size}{procs} x "
              f"accum {tr.grad_accum}, lr {tr.lr:g} {tr.lr_schedule}, warmup {tr.warmup:g}, {tr.precision}, "
              f"device {tr.device}")
    for pt in plan.teachers:
        if pt.cache is not None:
            t.add_row(f"cache {pt.name}" if several else "teacher cache", pt.cache.describe())
    if plan.cache_note:
        t.add_row("teacher cache", plan.cache_note)
    memory, too_big = plan_lines(plan)
    t.add_row("memory", memory)
    t.add_row("output", tr.output_dir)
    console.print(t)
    if too_big:
        console.print(f"[yellow]warning:[/yellow] {too_big}")
    terms = Table(title="loss terms", title_justify="left")
    for col in ("term", "weight", "details"):
        terms.add_column(col)
    d = r.distill
    if not r.teacher:
        terms.add_row("hard_label", "1", "task loss on gold labels (plain fine-tuning)")
    else:
        if d.kd_weight > 0:
            sched = d.temperature_scheduler
            kw = ", ".join(f"{k}={v}" for k, v in sched.kwargs().items())
            mixed = f"; target: the teachers' weighted mean {d.ensemble}" if several else ""
            terms.add_row("kd", _w(d.kd_weight, d.kd_weight_schedule),
                          f"{r.kd_loss} on {compared}{mixed}, T={d.temperature:g} ({sched.name}{', ' + kw if kw else ''})"
                          + (", x T^2" if d.scale_by_t2 else "") + (", probability shift" if d.probability_shift else ""))
        if d.hard_label_weight > 0:
            terms.add_row("hard_label", _w(d.hard_label_weight, d.hard_label_weight_schedule), "task loss on gold labels")
    console.print(terms)
    if plan.matches:
        m = Table(title="layer matches (layer 0 = embeddings)", title_justify="left")
        for col in ("#", "teacher -> student", "feature", "loss", "weight", "shapes (teacher | student)", "projection"):
            m.add_column(col)
        if several:
            m.add_column("teacher")
        for i, x in enumerate(plan.matches):
            fmt = lambda v: str(list(v)) if isinstance(v, tuple) else str(v)  # noqa: E731
            dims = (f"(B, L, {x.teacher_width}) | (B, L, {x.student_width})" if x.feature == "hidden"
                    else f"(B, {x.teacher_width}, L, L) | (B, {x.student_width}, L, L)")
            proj = f"{x.proj} {x.student_width}->{x.teacher_width}" if x.proj else "-"
            m.add_row(str(i), f"{fmt(x.teacher_layer)} -> {fmt(x.student_layer)}", x.feature, x.loss, f"{x.weight:g}",
                      dims, proj, *([x.teacher] if several else []))
        console.print(m)
    if plan.needs_attention:
        console.print("[dim]attention matches: both models run eager attention (SDPA returns no maps); the student's "
                      "attention dropout is 0 so its maps stay distributions[/dim]")


def plain_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def _w(weight: float, schedule: str) -> str:
    return f"{weight:g}" + ("" if schedule == "none" else f" x {schedule}")


def results_table(title: str, rows: list[tuple[str, dict]], columns: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("")
    for _, label in columns:
        t.add_column(label, justify="right")
    for name, values in rows:
        t.add_row(name, *[_fmt(values.get(key)) for key, _ in columns])
    return t


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def is_tty() -> bool:
    return sys.stderr.isatty()


class Progress:
    """The training progress bar on a terminal; a plain line per log step otherwise (CI, files, other processes)."""

    def __init__(self, total: int, completed: int, enabled: bool = True, description: str = "training"):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.total = total
        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                console=console, disable=not (enabled and is_tty()))
        self.task = self.bar.add_task(description, total=total, completed=completed, info="")

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, step: int) -> None:
        self.bar.update(self.task, completed=step)

    def log(self, step: int, info: str, terms: str) -> None:
        self.bar.update(self.task, info=info)
        if self.bar.disable:
            console.print(f"step {step}/{self.total}  {info}  {terms}", soft_wrap=True)
