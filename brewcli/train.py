"""Training: `build_job` builds every object a run needs from the plan; `fit` is the one loop that serves plain
fine-tuning and every kind of distillation. Tasks, teacher sources and students plug into the job's objects
(the task's collate and views, the teacher source, the objective's terms); none of them edits `fit`."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from brewcli import __version__
from brewcli import data as data_mod
from brewcli import guidance
from brewcli.batch import run_model
from brewcli.cache import row_lengths
from brewcli.cache_entry import CachedTeacher, open_or_fill
from brewcli.checkpoint import (STATE_FILES, checkpoint_folders, checkpoints, load_checkpoint, read_checkpoint,
                                 resume_point, rng_state, save_checkpoint, save_model_folder)
from brewcli.errors import BrewError, TrainingDiverged, doing
from brewcli.evaluate import (Scored, Timed, ensemble_mix, evaluate_model, load_model, local_folder, report,
                              score_against, teacher_rows, time_against)
from brewcli.heldout import term_metrics
from brewcli.models.students import copy_teacher_layers
from brewcli.objective import Objective, build_objective, unit_counts
from brewcli.onpolicy import OnPolicy
from brewcli.schedulers import LR
from brewcli.stopping import Stopped, StopRequests
from brewcli.teachers import LiveTeacher, Teachers
from brewcli.topk import TopK
from brewcli.ui import Progress, console, results_table

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    loss_terms: dict = field(default_factory=dict)  # the run's loss-term figures (guidance.tally)


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on (seed, epoch), sharded by process, able to start mid-epoch.
    It never touches the global RNG, so resuming replays exactly the batches an unbroken run would see.

    With `lengths` (train.group_by_length) each run of GROUP batches is sorted by length, longest first, so a batch
    holds rows of similar length and dynamic padding adds little; the order stays random from group to group."""

    GROUP = 50  # batches per length-sorted group (as Hugging Face's LengthGroupedSampler)

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, lengths=None, batch_size: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.lengths, self.batch_size = lengths, batch_size
        self.epoch, self.start = 0, 0

    def _order(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order += order[: (-len(order)) % self.world]  # equal shards
        order = order[self.rank :: self.world]
        if self.lengths is None:
            return order
        size = self.GROUP * self.batch_size
        return [i for g in range(0, len(order), size)
                for i in sorted(order[g : g + size], key=lambda i: -int(self.lengths[i]))]

    def per_process(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self):
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return self.per_process() - self.start


class Meter:
    """Loss terms summed over the optimizer steps since the last log line (weighted where a weight applies)."""

    def __init__(self):
        self.raw: dict[str, float] = {}
        self.weighted: dict[str, float] = {}
        self.steps = 0
        self.grad: dict[str, float] | None = None  # each term's gradient norm, where this window was probed

    def add(self, name: str, value: float, weight: float | None = None) -> None:
        self.raw[name] = self.raw.get(name, 0.0) + value
        if weight is not None:
            self.weighted[name] = self.weighted.get(name, 0.0) + value * weight


# ---------------------------------------------------------------------------------------------- building


def load_teachers(plan) -> dict:
    """name -> model, in eval mode with gradients off."""
    return {t.name: t.load(plan.attention).eval().requires_grad_(False) for t in plan.teachers}


ATTENTION_DROPOUT = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def student_attention(plan, device: str | None) -> str | None:
    """The student's attention kernel while it trains. On CPU, PyTorch's SDPA spends about a quarter of a T3 step
    on attention dropout, the eager kernel (the same maths) under a tenth, so a CPU student with attention dropout
    trains with eager; elsewhere the default (SDPA) stands. Matches that read attention maps need eager anyway.
    The saved student carries no kernel choice: a plain from_pretrained gets the default."""
    if plan.attention or device != "cpu":
        return plan.attention
    dropout = max((getattr(plan.student_config, k, 0) or 0 for k in ATTENTION_DROPOUT), default=0)
    return "eager" if dropout > 0 else None


def build_models(plan, device: str | None = None):
    """(teachers by name, student): the student built, loaded or copied from the first teacher's layers. With the
    device it will train on, the student gets that device's fastest training kernel (student_attention)."""
    teachers = load_teachers(plan)
    student = plan.student.load(student_attention(plan, device))  # built from its config where it has no weights
    if plan.init == "teacher-layers":
        copy_teacher_layers(student, next(iter(teachers.values())), plan.init_layers)
    if plan.student.embeddings not in (None, "random"):
        from brewcli.models.bigru import fill_embeddings

        line = fill_embeddings(student, plan.student.embeddings, plan.tokenizer, next(iter(teachers.values()), None))
        console.print(f"student {line}")
    return teachers, student


def _param_groups(student, objective, t):
    decay = [p for p in student.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    proj = list(objective.projections.parameters())
    if proj:
        groups.append({"params": proj, "weight_decay": t.weight_decay, "lr": t.projection_lr or t.lr})
    return groups


@dataclass
class Job:
    """Everything the loop touches, built once from the plan."""

    plan: object
    acc: object
    out: Path
    student: object  # as prepared by accelerate (DDP-wrapped under several processes)
    plain_student: object
    teacher: object | None  # the teacher sources: batch -> {name: Features}
    teacher_models: dict  # name -> model (scored at the end)
    objective: Objective
    optimizer: object
    scheduler: object
    sampler: EpochSampler
    loader: object
    collate: object
    state: TrainState
    recipe_text: str
    writer: object | None
    batches: int  # micro-batches per epoch and process
    on_policy: OnPolicy | None = None  # distill.on_policy: some batches become the student's own text

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def windows(self):
        """(micro-batches of one optimizer step, end of epoch), starting where the state says."""
        t = self.plan.recipe.train
        epoch, done = divmod(self.state.step, self.plan.steps_per_epoch)
        self.sampler.epoch = epoch
        self.sampler.start = min(done * t.grad_accum * t.batch_size, self.sampler.per_process())
        window, micro = [], done * t.grad_accum
        for batch in self.loader:
            window.append(batch)
            micro += 1
            if len(window) == t.grad_accum or micro == self.batches:
                yield window, micro == self.batches
                window = []

    def step(self, window, meter: Meter) -> None:
        """Forward and backward over a window's micro-batches, each weighted by its share of the window's rows or
        tokens, then one optimizer step. A loss or gradient that is not finite stops the run before any update."""
        acc, task, objective = self.acc, self.plan.task, self.objective
        step, progress = self.state.step + 1, self.state.step / self.plan.total_steps
        if self.on_policy is not None:  # before the shares: a rollout changes a batch's targets
            window = [self.on_policy(b.to(acc.device), self.plain_student, step, i) for i, b in enumerate(window)]
        probe = self.main and meter.steps == 0 and len(objective.terms) > 1 and \
            guidance.probe_due(step, self.plan.total_steps, self.state.loss_terms.get("probes", 0))
        for i, (batch, scale) in enumerate(zip(window, window_shares(window, task))):
            batch = batch.to(acc.device)
            with nullcontext() if i == len(window) - 1 else acc.no_sync(self.student), acc.autocast():
                s = run_model(self.student, batch.inputs, objective.student_needs, task, task.gold_labels(batch))
                t = self.teacher(batch) if self.teacher is not None else None
                loss, terms, scalars = objective(batch, s, t, progress, scale)
                values = {name: value.item() for name, (value, _) in terms.items()}
                if not math.isfinite(loss.item()):
                    raise _diverged(step, "the loss", values, self.out)
                if probe and i == 0:  # before the real backward, on the same graph (see guidance.grad_norms)
                    meter.grad = guidance.grad_norms(objective.weighted(terms, scale), self._trained(),
                                                     acc.scaler.get_scale() if acc.scaler is not None else 1.0)
                acc.backward(loss)
            share = scale["rows"]
            for name, (_, weight) in terms.items():
                meter.add(name, values[name] * share, weight)
            meter.add("total", loss.item())
            for name, value in scalars.items():
                meter.add(name, value * share)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = acc.clip_grad_norm_(params, self.plan.recipe.train.max_grad_norm or math.inf)
        if acc.scaler is None and not math.isfinite(float(norm)):  # fp16's scaler skips such steps itself
            raise _diverged(step, "the gradient norm", {"grad_norm": float(norm)}, self.out)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step = step
        meter.steps += 1

    def _trained(self) -> list:
        return [p for p in self.plain_student.parameters() if p.requires_grad]

    def guide(self, meter: Meter) -> None:
        """After a log line (process 0): add the window to the run's loss-term figures, log its gradient shares,
        and after the run's first window print the loss-scale warnings (guidance.warnings), once."""
        if not self.main or not meter.steps:
            return
        first, n = not self.state.loss_terms.get("steps"), meter.steps
        self.state.loss_terms = guidance.tally(self.state.loss_terms, meter.weighted, n, meter.grad)
        share = guidance.shares(meter.grad) if meter.grad else {}
        for name, value in share.items():
            self.writer.add_scalar(f"grad_share/{name}", value, self.state.step)
        if not first:
            return
        figures, stats = guidance.read_terms(self.objective.terms, meter.weighted, meter.raw, n, share,
                                             self.plan.init_layers)
        for line in guidance.warnings(figures, stats, self.state.step):
            console.print(f"[yellow]warning:[/yellow] {line}", soft_wrap=True)

    def evaluate(self) -> None:
        """Score the eval split (all processes, merged); process 0 logs it and keeps the best student."""
        plan, state = self.plan, self.state
        if "eval" not in plan.encoded:
            return
        doing(f"evaluating at step {state.step}")
        r = plan.recipe
        if plan.task.headless:  # no head, no metric: the loss terms on the held-out rows
            metrics = term_metrics(self.plain_student, self.teacher_models, self.objective, plan.task,
                                   plan.encoded["eval"], self.collate, r.train.eval_batch_size, self.acc)
        else:
            metric = plan.task.metric(plan.splits.label_names, plan.splits.eval)
            metrics, _ = evaluate_model(self.plain_student, plan.task, plan.encoded["eval"], self.collate,
                                        r.train.eval_batch_size, metric, self.acc)
        state.history.append({"step": state.step, **metrics})
        if not self.main:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"eval/{k}", v, state.step)
        line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        best = plan.task.main_of(metrics) if r.train.keep_best == "auto" else r.best_metric
        if best and best in metrics and _better(best, metrics[best], state.best_metric, plan.task.lower_is_better):
            state.best_metric, state.best_step = metrics[best], state.step
            save_model_folder(self.out / "best", self.plain_student, plan.tokenizer, self.objective.projections,
                              self.recipe_text, _meta(plan, state.step, metrics))
            line += "  [green]new best[/green]"
        console.print(f"step {state.step}: eval {line}")
        for term in self.objective.terms:
            if getattr(term, "last_flow", None) is not None:  # BERT-EMD: where the layers' weight flows now
                from brewcli.ui import flow_table

                flow_table(term).print_to(console)

    def save(self, rng: dict) -> Path:
        step = self.state.step
        doing(f"saving the checkpoint of step {step}")
        broken = [n for n, p in self.plain_student.named_parameters() if not torch.isfinite(p).all()]
        if broken:  # never write a checkpoint that --resume would continue from
            raise _diverged(step, "a weight", {f"{broken[0]} (and {len(broken) - 1} more)": math.nan}, self.out)
        return save_checkpoint(self.out, step, model=self.plain_student, tokenizer=self.plan.tokenizer,
                               projections=self.objective.projections, recipe_text=self.recipe_text,
                               meta=_meta(self.plan, step, self.state.history[-1:] or None),
                               optimizer=self.optimizer.optimizer, scheduler=self.scheduler, scaler=self.acc.scaler,
                               trainer=asdict(self.state), keep=self.plan.recipe.train.keep_checkpoints, rng=rng)


def _pad_multiple(plan) -> int | None:
    """Training batches are padded to a multiple of 8 under mixed precision (tensor cores)."""
    return 8 if plan.recipe.train.precision != "fp32" else None


def _collate(plan, side):
    """A side's collate for training."""
    return side.collate(plan.task, _pad_multiple(plan))


def _teacher_source(pt, model, needs, plan, acc):
    """A teacher's source: live, or its cache (filled first when cold, from its own encoding of the data)."""
    live = LiveTeacher(model, plan.task, needs, pt.name, TopK.of(plan.recipe.distill))
    if pt.cache is None:
        return live
    entry = open_or_fill(pt.cache, live, pt.encoded if pt.own_tokens else plan.encoded["train"],
                         _collate(plan, pt), plan.recipe.train.eval_batch_size, acc)
    return CachedTeacher(entry, acc.device, pt.name)


PCA_ROWS = 5000  # training texts the teacher-side PCA is fitted on (sentence-transformers' example uses 20,000)


def _fit_pca(plan, objective, teacher_models: dict, device) -> None:
    """task.projection: pca: fit the map on the teachers' vectors of up to PCA_ROWS training texts, drawn with the
    run's seed (a resumed run has it from its checkpoint already)."""
    import random

    pca = [m for m in objective.projections.values() if getattr(m, "teacher_side", False) and not bool(m.fitted)]
    if not pca:
        return
    train = plan.encoded["train"]
    rows = sorted(random.Random(plan.recipe.train.seed).sample(range(len(train)), min(len(train), PCA_ROWS)))
    doing(f"fitting the teacher-side PCA on {len(rows)} training texts")
    vectors = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():  # run unchanged
        for pt in plan.teachers:
            if pt.spec.weight <= 0:
                continue
            model = teacher_models[pt.name].to(device).eval()
            encoded = pt.encoded if pt.own_tokens else train
            for batch in data_mod.loader(encoded, _collate(plan, pt), plan.recipe.train.eval_batch_size, rows):
                inputs = batch.to(device).inputs
                vectors.append(plan.task.logits(model(**inputs), inputs["attention_mask"]).float())
    for m in pca:
        m.fit(torch.cat(vectors))
        console.print(f"fitted the teacher-side PCA ({m.weight.size(1)} -> {m.out_features}) on {len(rows)} training "
                      "texts")


def _tensorboard(out: Path, resumed_at: int | None):
    """The run's TensorBoard writer. A fresh run moves the events of an earlier run in the folder (one that left no
    checkpoint) to logs.old; a resumed run purges the events logged after its checkpoint, which it logs again."""
    from torch.utils.tensorboard import SummaryWriter

    logs = out / "logs"
    if resumed_at is None and logs.is_dir() and any(logs.iterdir()):
        shutil.rmtree(out / "logs.old", ignore_errors=True)
        logs.rename(out / "logs.old")
        console.print(f"note: {logs} held an earlier run's TensorBoard events (that run saved no checkpoint); "
                      f"moved them to {out / 'logs.old'}", markup=False)
    return SummaryWriter(str(logs), purge_step=None if resumed_at is None else resumed_at + 1)


def refuse_earlier_run(out: Path) -> None:
    """A fresh run never writes over an earlier run's checkpoints."""
    found = checkpoint_folders(out)
    if found:
        raise BrewError(f"{out} already holds checkpoints of an earlier run (latest: {found[-1].name}); pass "
                        f"--resume to continue it, or set train.output_dir to a new folder")


def build_job(plan, resume: bool = False) -> Job:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    r, t = plan.recipe, plan.recipe.train
    out = Path(t.output_dir)
    if resume:  # every file of the checkpoint read and checked before anything is built
        saved = read_checkpoint(resume_point(out))
        _check_resumable(saved.folder, saved.config, plan.student_config)
    else:
        refuse_earlier_run(out)
    acc = Accelerator(mixed_precision=PRECISION[t.precision], cpu=t.device == "cpu")
    if acc.num_processes != plan.processes:
        raise BrewError(f"the plan counted steps for {plan.processes} process(es) but {acc.num_processes} are running; "
                        "launch with torchrun or accelerate launch so WORLD_SIZE is set")
    set_seed(t.seed)
    doing("loading the teacher and building the student", log_dir=out)
    teacher_models, student = build_models(plan, acc.device.type)
    objective = build_objective(plan)
    fused = {"fused": True} if acc.device.type in ("cpu", "cuda") else {}
    optimizer = torch.optim.AdamW(_param_groups(student, objective, t), lr=t.lr, **fused)
    scheduler = get_scheduler(LR.get(t.lr_schedule), optimizer, num_warmup_steps=int(t.warmup * plan.total_steps),
                              num_training_steps=plan.total_steps)
    student, optimizer = acc.prepare(student, optimizer)
    trained = any(p.requires_grad for p in objective.parameters())  # (a fitted PCA alone trains nothing)
    objective = acc.prepare(objective) if trained else objective.to(acc.device)
    plain_objective = acc.unwrap_model(objective)
    collate = _collate(plan, plan.student)
    sources = {}
    for pt in plan.teachers:
        model = teacher_models[pt.name].to(acc.device)
        needs = plain_objective.teacher_needs.get(pt.name)
        if needs is not None:
            sources[pt.name] = _teacher_source(pt, model, needs, plan, acc)
    teacher = Teachers(sources) if plan.teachers else None
    student.train()  # from_pretrained returns models in eval mode: dropout must be on while training
    state, recipe_text = TrainState(), r.dump()
    plain_student = acc.unwrap_model(student)
    if resume:
        doing(f"resuming from {saved.folder}")
        state = TrainState(**load_checkpoint(saved, model=plain_student, projections=plain_objective.projections,
                                             optimizer=optimizer.optimizer, scheduler=scheduler, scaler=acc.scaler))
        console.print(f"resumed from {saved.folder} at step {state.step}/{plan.total_steps}")
        changed = _changed_keys(saved.recipe, yaml.safe_load(recipe_text))
        if changed:
            console.print(f"[yellow]note:[/yellow] the recipe differs from the checkpoint's in: {', '.join(changed)}")
    _fit_pca(plan, plain_objective, teacher_models, acc.device)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_text)
    writer = _tensorboard(out, state.step if resume else None) if acc.is_main_process else None
    lengths = row_lengths(plan.encoded["train"]) if t.group_by_length else None
    sampler = EpochSampler(len(plan.encoded["train"]), t.seed, acc.process_index, acc.num_processes, lengths,
                           t.batch_size)
    own = {pt.name: (pt.encoded, _collate(plan, pt)) for pt in plan.teachers if pt.own_tokens}
    loader = data_mod.loader(plan.encoded["train"], collate, t.batch_size, sampler, own)
    batches = math.ceil(sampler.per_process() / t.batch_size)
    on_policy = OnPolicy(r.distill.on_policy, t.seed, plan.task, plan.tokenizer, _pad_multiple(plan)) \
        if plan.teachers and r.distill.on_policy > 0 else None
    return Job(plan, acc, out, student, plain_student, teacher, teacher_models, plain_objective, optimizer, scheduler,
               sampler, loader, collate, state, recipe_text, writer, batches, on_policy)


# ---------------------------------------------------------------------------------------------- the loop


def fit(job: Job) -> TrainState:
    t, state, total = job.plan.recipe.train, job.state, job.plan.total_steps
    meter, last_saved, started, rng = Meter(), state.step, time.time(), rng_state()
    progress, stop = Progress(total, state.step, enabled=job.main), StopRequests()
    try:
        with progress, stop:
            while state.step < total:
                for window, end_of_epoch in job.windows():
                    doing(f"training, step {state.step + 1} of {total}")
                    job.step(window, meter)
                    rng = rng_state()
                    if job.main and (state.step % t.log_every == 0 or end_of_epoch or state.step == total):
                        _log(job.writer, meter, job.scheduler, state.step, total, progress)
                        job.guide(meter)
                        meter = Meter()
                    progress.update(state.step)
                    if state.step == total or _due(t.eval_every, state.step, end_of_epoch):
                        job.evaluate()
                    if state.step == total or _due(t.save_every, state.step, end_of_epoch):
                        state.train_seconds, started = state.train_seconds + time.time() - started, time.time()
                        if job.main:
                            job.save(rng)
                        last_saved = state.step
                        job.acc.wait_for_everyone()
                    if stop.agreed(job.acc):  # SIGTERM or Ctrl-C: stop here, saved, at a step boundary
                        raise _stopped(job, stop.signum, rng, state.step > last_saved, started)
                    if state.step >= total:
                        break
    finally:
        if job.writer:
            job.writer.close()
    return state


def _stopped(job: Job, signum: int, rng: dict, unsaved: bool, started: float) -> Stopped:
    """After a stop signal: process 0 saves the step just finished (unless it was just saved) and says so."""
    state = job.state
    if unsaved:
        state.train_seconds += time.time() - started
        if job.main:
            job.save(rng)
    if job.main:
        console.print(f"\n{StopRequests.name(signum)}: stopped after step {state.step} of {job.plan.total_steps}; "
                      f"saved {job.out / f'checkpoint-{state.step}'}; continue with --resume")
    job.acc.wait_for_everyone()
    return Stopped(signum)


def build_cache(plan) -> None:
    """`brew cache build`: fill each teacher's cache without training (for example on a bigger machine)."""
    from accelerate import Accelerator

    from brewcli.ui import human

    r = plan.recipe
    acc = Accelerator(mixed_precision=PRECISION[r.train.precision], cpu=r.train.device == "cpu")
    needs = build_objective(plan).teacher_needs
    for pt in plan.teachers:
        cp = pt.cache
        if cp is None:
            continue
        if cp.hit:
            console.print(f"teacher cache hit: {cp.path} is already built ({len(cp.lengths)} rows); nothing to do")
            continue
        doing(f"loading the teacher {pt.spec.model}")
        model = pt.load(plan.attention)
        started = time.time()
        _teacher_source(pt, model.eval().to(acc.device), needs[pt.name], plan, acc)
        if acc.is_main_process:
            console.print(f"built {cp.path}: {pt.name}, {len(cp.lengths)} rows, {human(cp.bytes, 'B')} in "
                          f"{time.time() - started:.1f} s")


def run(plan, resume: bool = False) -> dict:
    """Build the job, train it, and report on the test (or eval) split."""
    job = build_job(plan, resume)
    fit(job)
    return finish(job)


# ---------------------------------------------------------------------------------------------- helpers


def window_shares(window, task) -> list[dict[str, float]]:
    """Each micro-batch's share of its accumulation window, per unit a loss averages over (objective.unit_counts):
    a term's mean times this share, summed over the window, is the mean over the whole window."""
    units = [unit_counts(b, task) for b in window]
    totals = {k: max(sum(u[k] for u in units), 1) for k in units[0]}
    return [{k: u[k] / totals[k] for k in u} for u in units]


def _due(every, step: int, end_of_epoch: bool) -> bool:
    return end_of_epoch if every == "epoch" else step % every == 0


def _better(metric: str, new: float, old: float | None, lower_is_better=frozenset()) -> bool:
    return old is None or (new < old if metric in lower_is_better else new > old)


def _meta(plan, step: int, metrics) -> dict:
    """brew.json: what `brew eval` needs besides the recipe (the teachers' resolved paths, the step, metrics)."""
    r = plan.recipe
    resolved = lambda m: str(Path(m).resolve()) if Path(m).exists() else m  # noqa: E731
    teachers = [{"name": t.name, "model": resolved(t.spec.model), "weight": t.spec.weight,
                 "label_order": t.label_order} for t in plan.teachers]
    meta = {"brew_version": __version__, "task": r.task.name, "teacher": teachers[0]["model"] if teachers else None,
            "step": step, "metrics": metrics, "cwd": os.getcwd()}
    if len(teachers) > 1:
        meta.update(teachers=teachers, ensemble=ensemble_mix(r))
    return meta


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new), key=str)
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_resumable(folder: Path, saved: dict, config) -> None:
    """Before any weights load: the checkpoint's student (its config.json) has the shape this recipe builds."""
    mine = config.to_dict()
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size",
            "n_layers", "dim", "n_layer", "n_embd", "num_labels")
    changed = [f"{k} {saved.get(k)} -> {mine.get(k)}" for k in keys if k in mine and saved.get(k) != mine.get(k)]
    if isinstance(saved.get("id2label"), dict) and len(saved["id2label"]) != len(mine.get("id2label", {})):
        changed.append(f"labels {len(saved['id2label'])} -> {len(mine.get('id2label', {}))}")
    if changed:
        raise BrewError(f"--resume: the student in {folder} differs from the one this recipe builds "
                        f"({', '.join(changed)}); restore the recipe's student section, or start in a new "
                        "train.output_dir")


def _diverged(step: int, what: str, values: dict[str, float], out: Path) -> TrainingDiverged:
    bad = ", ".join(f"{k} {v}" for k, v in values.items() if not math.isfinite(v)) or "the sum of the terms"
    found = checkpoints(out)
    kept = (f"the last good checkpoint, {found[-1]}, is kept: continue from it with --resume after the fix" if found
            else "no checkpoint had been saved yet")
    return TrainingDiverged(f"training stopped at step {step}: {what} is not a finite number ({bad}); nothing of this "
                            f"step was saved and {kept}. Lower train.lr, keep train.max_grad_norm on, or check the "
                            "data and the teacher for extreme values")


def _log(writer, meter: Meter, scheduler, step, total, progress) -> None:
    n = max(meter.steps, 1)
    for name, raw in meter.raw.items():
        if name in meter.weighted:
            writer.add_scalar(f"loss/{name}", raw / n, step)
            writer.add_scalar(f"weighted/{name}", meter.weighted[name] / n, step)
        else:
            writer.add_scalar(f"train/{name}", raw / n, step)
    lrs = scheduler.get_last_lr()
    writer.add_scalar("train/lr", lrs[0], step)
    if len(lrs) > 2:
        writer.add_scalar("train/lr_projections", lrs[2], step)
    info = f"loss {meter.raw['total'] / n:.4f}  lr {lrs[0]:.2e}"
    terms = "  ".join(f"{k} {v / n:.4f}" for k, v in meter.raw.items() if k != "total")
    progress.log(step, info, terms)


def _publish(src: Path, out: Path) -> None:
    """Put the final student's files at the top of the output folder (each file replaced atomically)."""
    for f in src.iterdir():
        if f.is_file() and f.name not in STATE_FILES:
            tmp = out / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)


def _finish_general(job: Job, split: str, result: dict) -> None:
    """The end of a run without a head: the saved student's loss terms on the held-out windows, size and speed."""
    from brewcli.heldout import WHAT_IT_MEASURES, load_projections, score_general
    from brewcli.paths import shown_path

    plan, acc, r = job.plan, job.acc, job.plan.recipe
    doing(f"scoring the student's loss terms on the {split} split")
    encoded, first = plan.encoded[split], plan.teachers[0]
    student_model = load_model(job.out, plan.task, acc)
    load_projections(job.objective, job.out)
    teacher_dir = Path(first.spec.model) if Path(first.spec.model).is_dir() else None
    student, teacher = score_general(student_model, job.teacher_models, job.objective, plan.task, encoded,
                                     job.collate, r.train.eval_batch_size, acc, job.out, teacher_dir)
    timings = time_against(Timed(student_model, encoded, job.collate),
                           (job.teacher_models[first.name], first.name), lambda name: (encoded, job.collate), acc,
                           rounds=r.train.timing_rounds)
    result.update(report(plan.task, split, len(encoded), student, teacher, _meta(plan, 0, None)["teacher"],
                         acc.device.type, None, timings))
    if job.main:
        names = [m for m in student if m not in ("params", "size_bytes") and not m.startswith(("latency", "through"))]
        console.print(results_table(f"{split} split ({len(encoded)} windows, lower is better)",
                                    [("teacher", teacher), ("student", student)],
                                    [(m, m) for m in names] + [("params", "params"), ("latency_ms", "ms/example")]))
        console.print(WHAT_IT_MEASURES % shown_path(job.out), soft_wrap=True)


def finish(job: Job) -> dict:
    """Publish the best student, score it (loaded from disk, as a user would) and the teacher on the test split
    (or eval), and write metrics.json: the same report as `brew eval`, plus the training history."""
    plan, out, state, acc = job.plan, job.out, job.state, job.acc
    r, task = plan.recipe, plan.task
    if job.main:
        _publish(out / "best" if (out / "best").exists() else checkpoints(out)[-1], out)
        task.publish(out, plan.student_config)
    acc.wait_for_everyone()  # scoring is shared by all processes
    split = "test" if "test" in plan.encoded else "eval" if "eval" in plan.encoded else None
    result = {"recipe": r.name, "steps": state.step, "train_seconds": round(state.train_seconds, 1),
              "best": {"metric": r.best_metric, "value": state.best_metric, "step": state.best_step},
              "history": state.history, "loss_terms": guidance.summary(state.loss_terms)}
    if split is not None and task.headless:
        _finish_general(job, split, result)
    elif split is not None:
        doing(f"scoring the student and the teacher on the {split} split")
        raw, encoded, names = getattr(plan.splits, split), plan.encoded[split], plan.splits.label_names
        batch_size = r.train.eval_batch_size
        me = Scored("student", load_model(out, task, acc), encoded, job.collate, out)
        teachers = [Scored(t.name, job.teacher_models[t.name],
                           *((t.encode(task, raw, names), t.collate(task)) if t.own_tokens else (encoded, job.collate)),
                           local_folder(t.spec.model), t.spec.weight, t.label_order) for t in plan.teachers]
        student, teacher, each, timings, _ = score_against(task, raw, names, me, teachers, ensemble_mix(r), batch_size,
                                                           acc, timing_rounds=r.train.timing_rounds)
        result.update(report(task, split, len(raw), student, teacher, _meta(plan, 0, None)["teacher"],
                             acc.device.type, each, timings))
        if not job.main:
            return {}
        rows = teacher_rows(teacher, each) + [("student" if teacher else "model", student)]
        shown = [(m, m) for m in task.metrics if m in student]  # sentence embeddings: what the split could score
        console.print(results_table(f"{split} split ({len(raw)} rows)", rows, shown))
        if "retained_pct" in result:
            console.print(f"student keeps [bold]{result['retained_pct']}%[/bold] of the teacher's {task.main_of(student)}")
    if not job.main:
        return {}
    if result["loss_terms"]:
        console.print(guidance.summary_table(result["loss_terms"]))
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    from brewcli.paths import shown_path

    console.print(f"saved to {out}/ ({state.train_seconds / 60:.1f} min training); next: brew eval {shown_path(out)}")
    return result
