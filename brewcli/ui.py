"""Everything the terminal shows: one rich console on stderr, plan and result tables, progress."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console(stderr=True, highlight=False)


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


class FitTable:
    """A rich Table laid out for the width it is printed at (a terminal's, or COLUMNS, or 80 in a log).

    Columns and rows are added as on a Table (`add_column(header, short=..., **options)`, `add_row(*cells)`). It
    prints as a table when that fits unwrapped; else with the columns' short headers; else without the columns
    named in `drop`, one after the other, while some remain; else each row as one line of `header value` pairs
    (a cell's lines joined by "; "), wrapped under itself where it is longer than the width.
    """

    def __init__(self, title: str | None = None, drop: tuple[str, ...] = (), **options):
        self.title, self.drop, self.options = title, drop, options
        self.columns: list[tuple[str, str, dict]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, header: str = "", short: str | None = None, **options) -> None:
        self.columns.append((header, header if short is None else short, options))

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def _table(self, keep: list[int], short: bool) -> Table:
        t = Table(**self.options)  # the title goes above it on its own line: a table's title wraps at the table's width
        for i in keep:
            header, abbreviated, options = self.columns[i]
            t.add_column(abbreviated if short else header, **options)
        for row in self.rows:
            t.add_row(*[row[i] if i < len(row) else "" for i in keep])
        return t

    def layout(self, console: Console, width: int) -> Table | None:
        """The widest layout whose rows fit `width` unwrapped, or None (then: one line per row)."""
        keep = list(range(len(self.columns)))
        tries = [(keep, False), (keep, True)]
        for name in self.drop:
            keep = [i for i in keep if self.columns[i][0] != name]
            tries.append((keep, True))
        wide = console.options.update_width(10**5)
        for columns, short in tries:
            t = self._table(columns, short)
            if Measurement.get(console, wide, t).maximum <= width:
                return t
        return None

    def lines(self) -> list[str]:
        """Each row as one line: `header value` pairs (the first cell alone, as a row's name), "; " between."""
        named = not self.options.get("show_header", True)
        first = max((len(r[0]) for r in self.rows if r), default=0)
        out = []
        for row in self.rows:
            cells = [c.replace("\n", "; ") for c in row]
            head = cells[0].ljust(first) if named or not self.columns[0][0] else f"{self.columns[0][0]} {cells[0]}"
            rest = [c if named or not self.columns[i + 1][0] else f"{self.columns[i + 1][0]} {c}"
                    for i, c in enumerate(cells[1:]) if c not in ("", "-")]
            out.append(head + "  " + ", ".join(rest) if rest else head)
        return out

    def print_to(self, console: Console) -> None:
        """Print at the console's width; rows as lines never wrap (a log keeps each row on one line)."""
        table = self.layout(console, console.width)
        if self.title:
            console.print(Text(self.title, style="table.title"))
        if table is not None or console.is_terminal:  # a terminal: rich wraps the cells of the narrowest layout
            console.print(table or self._table([i for i, c in enumerate(self.columns) if c[0] not in self.drop], True))
            return
        for line in self.lines():
            console.print(line, soft_wrap=True, markup=False)

    def __rich_console__(self, console: Console, options):
        table = self.layout(console, options.max_width)
        if self.title:
            yield Text(self.title, style="table.title")
        if table is not None:
            yield table
            return
        indent = 4
        for line in self.lines():  # printed by someone else, who may crop: wrapped under itself instead
            yield Text("\n".join(textwrap.wrap(line, options.max_width, subsequent_indent=" " * indent)) or line)


def _arch(cfg) -> str:
    from brewcli.models.families import FamilyError, read_widths

    try:
        w = read_widths(cfg)
    except FamilyError:
        return f"{cfg.model_type}, vocab {cfg.vocab_size}"
    if not w.heads:  # a BiGRU
        return (f"{cfg.model_type}, {w.layers} bidirectional GRU layer{'s' if w.layers > 1 else ''} x {w.hidden} "
                f"({w.hidden // 2} per direction), embeddings {w.embedding}, vocab {w.vocab}")
    return f"{cfg.model_type}, {w.layers} layers x {w.hidden}, FFN {w.ffn}, {w.heads} heads, vocab {w.vocab}"


def augmented_text(a, examples: int = 2) -> str:
    """data.augment's row of the plan: what it added, and a few of its variants beside their originals."""
    shown = [f"'{escape(o)}' -> '{escape(v)}'" for o, v in a.examples[:examples]]
    return "\n".join([a.describe(), *(f"  e.g. {x}" for x in shown)])


def render_plan(plan, stage: str | None = None) -> None:
    """The plan as tables; `stage` (`stage 1/2: intermediate`) titles one stage's plan of several."""
    from brewcli.memory import plan_lines

    r = plan.recipe
    t = FitTable(title=f"brew plan: {r.name or 'recipe'}" + (f", {stage}" if stage else ""), show_header=False)
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
    if plan.student.embeddings:
        e = plan.student.embeddings
        init += ", embeddings " + (f"from {e}" if e not in ("teacher", "random") else
                                   "the teacher's" if e == "teacher" else "random")
    ratio = f" ({plan.student_params / plan.teacher_params:.0%} of teacher)" if plan.teacher_params else ""
    t.add_row("student", f"{src}, init {init}\n{_arch(plan.student_config)}, {human(plan.student_params)} params{ratio}")
    raw = {k: v for k, v in (("train", plan.splits.train), ("eval", plan.splits.eval), ("test", plan.splits.test))
           if v is not None}
    sizes = ", ".join(f"{k} {_count(v)}" for k, v in raw.items())
    head = plan.task.describe(plan.splits.label_names)[0]
    t.add_row("task", f"{plan.task.name} ({plan.student.arch.head_name(plan.task.head)}): "
              f"{head}")
    columns = ", ".join(f"{c.key} {plan.task.column(c.key)}" for c in plan.task.columns)
    features = ", ".join(f"{k} {_count(v)}" for k, v in plan.encoded.items())
    shown = "" if features == sizes else f" -> {features} {getattr(plan.task, 'feature_unit', 'features')}"
    notes = list(dict.fromkeys(v.estimate_note for v in plan.encoded.values() if getattr(v, "estimated", False)))
    shown += f" ({'; '.join(notes)})" if notes else ""
    t.add_row("data", f"{sizes} rows{shown}; columns: {columns}; max_length {r.data.max_length}")
    if plan.augmented is not None:
        t.add_row("augment", augmented_text(plan.augmented))
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
    t.print_to(console)
    if too_big:
        console.print(f"[yellow]warning:[/yellow] {too_big}")
    terms = FitTable(title="loss terms")
    for col in ("term", "weight", "details"):
        terms.add_column(col)
    from brewcli.objective import Match, build_objective

    for term in build_objective(plan).terms:  # the run's own terms; matches get the table below
        if not isinstance(term, Match):
            terms.add_row(term.name, _w(term.weight, term.schedule_name), term.describe())
    if terms.rows:  # matches alone (a general run, an intermediate stage): their table says it all
        terms.print_to(console)
    if plan.matches:
        m = FitTable(title="layer matches (layer 0 = embeddings)", drop=("shapes (teacher | student)", "weight"))
        for col, short in (("#", "#"), ("teacher -> student", "T -> S"), ("feature", "feature"), ("loss", "loss"),
                           ("weight", "weight"), ("shapes (teacher | student)", "shapes T | S"),
                           ("projection", "proj")):
            m.add_column(col, short)
        if several:
            m.add_column("teacher")
        for i, x in enumerate(plan.matches):
            fmt = lambda v: str(list(v)) if isinstance(v, tuple) else str(v)  # noqa: E731
            from brewcli.models.features import FEATURE_KINDS

            kind = FEATURE_KINDS.get(x.feature)
            dims = f"{kind.shape(x.teacher_width)} | {kind.shape(x.student_width)}"
            proj = f"{x.proj} {x.student_width}->{x.teacher_width}" + (f" (shared: {x.group})" if x.group else "") \
                if x.proj else "-"
            m.add_row(str(i), f"{fmt(x.teacher_layer)} -> {fmt(x.student_layer)}", x.feature, x.loss, f"{x.weight:g}",
                      dims, proj, *([x.teacher] if several else []))
        m.print_to(console)
    for term in build_objective(plan).terms:
        if hasattr(term, "last_flow"):  # BERT-EMD: the layer weights it starts from, or --resume continues
            flow_table(term, _resumed_weights(term, plan.recipe.train.output_dir)).print_to(console)
    if plan.needs_attention:
        console.print("[dim]attention matches: both models run eager attention (SDPA returns no maps); the student's "
                      "attention dropout is 0 so its maps stay distributions[/dim]")


def _resumed_weights(term, output_dir: str) -> str | None:
    """Load the layer weights of the newest checkpoint in output_dir into the term (what --resume continues with);
    the checkpoint's name, or None where there is none."""
    from brewcli.checkpoint import PROJECTIONS, checkpoints

    found = checkpoints(Path(output_dir))
    if not found or not (found[-1] / PROJECTIONS).is_file():
        return None
    from safetensors.torch import load_file

    saved = load_file(str(found[-1] / PROJECTIONS))
    mine = {k: v for k, v in saved.items() if k.startswith(term.name + ".")}
    if {k.split(".", 1)[1] for k in mine} != {"student", "teacher"}:
        return None
    term.state.load_state_dict({k.split(".", 1)[1]: v for k, v in mine.items()})
    return found[-1].name


def flow_table(term, resumed: str | None = None) -> FitTable:
    """A BERT-EMD term's layer weights and (once a step has run) its last flow: student layers down, teacher
    layers across. `resumed`: the checkpoint the weights were read from."""
    e, flow = term.e, term.last_flow
    title = f"{term.name}: flow from student layers (rows) to teacher layers (columns), {e.loss} cost" if flow is \
        not None else (f"{term.name}: layer weights " + (f"in {resumed} (what --resume continues)" if resumed else
                       f"(uniform at the start; the flow follows from them and the cost, {e.loss}, every step)"))
    table = FitTable(title=title)
    table.add_column("S \\ T")
    for j in e.teacher_layers:
        table.add_column(str(j))
    table.add_column("weight")
    # with a flow: the weights it moved (its sums); the adaptive update has moved them on since
    ws = flow.sum(1) if flow is not None else term.state.student
    wt = flow.sum(0) if flow is not None else term.state.teacher
    for r, i in enumerate(e.student_layers):
        cells = [f"{float(flow[r, c]):.3f}" if flow is not None else "" for c in range(len(e.teacher_layers))]
        table.add_row(str(i), *cells, f"{float(ws[r]):.3f}")
    table.add_row("weight", *(f"{float(w):.3f}" for w in wt), "")
    return table


def _count(split) -> str:
    """A split's size: exact, or `about N` for a dry run's estimate from a sample (data.Sample)."""
    return f"about {human(len(split))}" if getattr(split, "estimated", False) else str(len(split))


def plain_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> FitTable:
    table = FitTable(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def _w(weight: float, schedule: str) -> str:
    return f"{weight:g}" + ("" if schedule == "none" else f" x {schedule}")


def results_table(title: str, rows: list[tuple[str, dict]], columns: list[tuple[str, str]]) -> FitTable:
    """Metrics per model; at a narrow width the size and throughput columns go first, then rows become lines."""
    t = FitTable(title=title, drop=("size", "examples/s"))
    t.add_column("")
    for _, label in columns:
        t.add_column(label, justify="right")
    for name, values in rows:
        t.add_row(name, *[_fmt(values.get(key), key in TIMINGS) for key, _ in columns])
    return t


TIMINGS = ("latency_ms", "throughput")  # measured figures: a decimal or two, not a metric's four


def _fmt(v, timing: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}" if timing else f"{v:.4f}"
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

    @property
    def on_terminal(self) -> bool:
        return not self.bar.disable

    def update(self, step: int, info: str | None = None) -> None:
        self.bar.update(self.task, completed=step, **({} if info is None else {"info": info}))

    def log(self, step: int, info: str, terms: str) -> None:
        self.bar.update(self.task, info=info)
        if self.bar.disable:
            console.print(f"step {step}/{self.total}  {info}  {terms}", soft_wrap=True)
