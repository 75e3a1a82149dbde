"""The training loop. One loop serves plain fine-tuning and every kind of distillation: what differs is the
set of loss terms in `Objective`. Read it top to bottom: setup, loop, finish."""

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
from brewcli.checkpoint import checkpoints, load_checkpoint, rng_state, save_checkpoint, save_model_folder
from brewcli.errors import BrewError, TrainingDiverged, doing
from brewcli.evaluate import predict, score
from brewcli.models import from_config, load_pretrained
from brewcli.objective import Objective
from brewcli.schedulers import LR
from brewcli.students import copy_teacher_layers
from brewcli.tasks import LOWER_IS_BETTER, retained_pct
from brewcli.ui import console, is_tty, results_table

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    history: list = field(default_factory=list)
    train_seconds: float = 0.0


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on (seed, epoch), sharded by process, able to start mid-epoch.
    It never touches the global RNG, so resuming replays exactly the batches an unbroken run would see."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0

    def _order(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order += order[: (-len(order)) % self.world]  # equal shards
        return order[self.rank :: self.world]

    def per_process(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self):
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return self.per_process() - self.start


def build_models(plan):
    r, task = plan.recipe, plan.task
    teacher = None
    if r.teacher:
        teacher = load_pretrained(r.teacher.model, plan.teacher_config, task, r.teacher.revision,
                                  r.teacher.trust_remote_code)
        teacher.eval().requires_grad_(False)
    s = r.student
    if plan.init == "pretrained":
        student = load_pretrained(s.model, plan.student_config, task, s.revision, s.trust_remote_code)
    else:
        student = from_config(plan.student_config, task)
        if plan.init == "teacher-layers":
            copy_teacher_layers(student, teacher, plan.init_layers)
    if plan.needs_attention:
        for m in (teacher, student):
            m.set_attn_implementation("eager")
    return teacher, student


def _param_groups(student, objective, t):
    decay = [p for p in student.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    proj = list(objective.projections.parameters())
    if proj:
        groups.append({"params": proj, "weight_decay": t.weight_decay, "lr": t.projection_lr or t.lr})
    return groups


def _due(every, step: int, end_of_epoch: bool) -> bool:
    return end_of_epoch if every == "epoch" else step % every == 0


def _better(metric: str, new: float, old: float | None) -> bool:
    return old is None or (new < old if metric in LOWER_IS_BETTER else new > old)


def _meta(plan, step: int, metrics: dict | None) -> dict:
    r = plan.recipe
    teacher = r.teacher.model if r.teacher else None
    if teacher and Path(teacher).exists():
        teacher = str(Path(teacher).resolve())
    return {"brew_version": __version__, "task": r.task.name, "teacher": teacher, "step": step,
            "metrics": metrics, "cwd": os.getcwd()}


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new), key=str)
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _publish(src: Path, out: Path) -> None:
    """Put the final student's files at the top of the output folder (each file replaced atomically)."""
    for f in src.iterdir():
        if f.is_file() and f.name != "training_state.pt":
            tmp = out / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)


def run(plan, resume: bool = False) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.tensorboard import SummaryWriter
    from transformers import get_scheduler

    r, t, task = plan.recipe, plan.recipe.train, plan.task
    out = Path(t.output_dir)
    found = checkpoints(out)
    if resume and not found:
        raise BrewError(f"--resume: no checkpoint in {out}; start without --resume")
    if resume:
        _check_resumable(found[-1], plan.student_config)
    if found and not resume:
        raise BrewError(f"{out} already holds checkpoints of an earlier run (latest: {found[-1].name}); pass "
                        f"--resume to continue it, or set train.output_dir to a new folder")
    acc = Accelerator(mixed_precision=PRECISION[t.precision], cpu=t.device == "cpu")
    main = acc.is_main_process
    set_seed(t.seed)

    # ---- data
    doing("tokenising the data", log_dir=out)
    tok = plan.tokenizer
    with acc.main_process_first():
        train_ds = data_mod.tokenize(plan.splits.train, tok, r.data)
        eval_ds = data_mod.tokenize(plan.splits.eval, tok, r.data)
    sampler = EpochSampler(len(train_ds), t.seed, acc.process_index, acc.num_processes)
    train_dl = data_mod.loader(train_ds, tok, t.batch_size, sampler)
    batches = math.ceil(sampler.per_process() / t.batch_size)
    per_epoch = math.ceil(batches / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch))

    # ---- models, objective, optimizer
    doing("loading the teacher and building the student")
    teacher, student = build_models(plan)
    objective = Objective(r, plan.matches, teacher is not None)
    fused = {"fused": True} if acc.device.type in ("cpu", "cuda") else {}
    optimizer = torch.optim.AdamW(_param_groups(student, objective, t), lr=t.lr, **fused)
    scheduler = get_scheduler(LR.get(t.lr_schedule), optimizer, num_warmup_steps=int(t.warmup * total),
                              num_training_steps=total)
    student, optimizer = acc.prepare(student, optimizer)
    objective = acc.prepare(objective) if len(objective.projections) else objective.to(acc.device)
    if teacher is not None:
        teacher.to(acc.device)
    plain_student, plain_objective = acc.unwrap_model(student), acc.unwrap_model(objective)
    student.train()  # from_pretrained returns models in eval mode: dropout must be on while training
    state = TrainState()
    recipe_text = r.dump()
    if resume:
        doing(f"resuming from {found[-1]}")
        state = TrainState(**load_checkpoint(found[-1], model=plain_student, projections=plain_objective.projections,
                                             optimizer=optimizer.optimizer, scheduler=scheduler, scaler=acc.scaler))
        console.print(f"resumed from {found[-1]} at step {state.step}/{total}")
        changed = _changed_keys(yaml.safe_load((found[-1] / "recipe.yaml").read_text()), yaml.safe_load(recipe_text))
        if changed:
            console.print(f"[yellow]note:[/yellow] the recipe differs from the checkpoint's in: {', '.join(changed)}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_text)
    writer = SummaryWriter(str(out / "logs"), purge_step=state.step or None) if main else None
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def save(step: int, rng: dict) -> Path:
        doing(f"saving the checkpoint of step {step}")
        broken = [n for n, p in plain_student.named_parameters() if not torch.isfinite(p).all()]
        if broken:  # never write a checkpoint that --resume would continue from
            raise _diverged(step, "a weight", {f"{broken[0]} (and {len(broken) - 1} more)": math.nan}, out)
        return save_checkpoint(out, step, model=plain_student, tokenizer=tok, projections=plain_objective.projections,
                               recipe_text=recipe_text, meta=_meta(plan, step, state.history[-1:] or None),
                               optimizer=optimizer.optimizer, scheduler=scheduler, scaler=acc.scaler,
                               trainer=asdict(state), keep=t.keep_checkpoints, rng=rng)

    def evaluate(step: int) -> None:
        if eval_ds is None or not main:
            return
        doing(f"evaluating at step {step}")
        logits, labels, _ = predict(plain_student, eval_ds, tok, t.eval_batch_size, acc)
        metrics = task.compute_metrics(logits, labels)
        state.history.append({"step": step, **metrics})
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, step)
        metric = r.best_metric
        line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if metric and _better(metric, metrics[metric], state.best_metric):
            state.best_metric, state.best_step = metrics[metric], step
            save_model_folder(out / "best", plain_student, tok, plain_objective.projections, recipe_text,
                              _meta(plan, step, metrics))
            line += "  [green]new best[/green]"
        console.print(f"step {step}: eval {line}")

    # ---- the loop
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                        disable=not (main and is_tty()))
    bar = progress.add_task("training", total=total, completed=state.step, info="")
    meter = Meter()
    last_saved, started, step_rng = state.step, time.time(), rng_state()
    want_h, want_a = plain_objective.needs_hidden, plain_objective.needs_attention
    try:
        with progress:
            while state.step < total:
                epoch, done_steps = divmod(state.step, per_epoch)
                sampler.epoch, sampler.start = epoch, min(done_steps * t.grad_accum * t.batch_size, sampler.per_process())
                micro = done_steps * t.grad_accum
                for batch in train_dl:
                    group = min(t.grad_accum, batches - (micro - micro % t.grad_accum))
                    micro += 1
                    sync = micro % t.grad_accum == 0 or micro == batches
                    doing(f"training, step {state.step + 1} of {total}")
                    batch = {k: v.to(acc.device) for k, v in batch.items()}
                    with nullcontext() if sync else acc.no_sync(student):
                        with acc.autocast():
                            t_out = None
                            if teacher is not None:
                                with torch.no_grad():
                                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                                    t_out = teacher(**inputs, output_hidden_states=want_h, output_attentions=want_a)
                            s_out = student(**batch, output_hidden_states=want_h, output_attentions=want_a)
                            loss, terms, tau = objective(batch, s_out, t_out, state.step / total)
                        values = {name: value.item() for name, (value, _) in terms.items()}
                        if not math.isfinite(loss.item()):
                            raise _diverged(state.step + 1, "the loss", values, out)
                        acc.backward(loss / group)
                    for name, (_, weight) in terms.items():
                        meter.add(name, values[name] / group, weight)
                    meter.add("total", loss.item() / group)
                    if tau is not None:
                        meter.add("temperature", tau / group)
                    if not sync:
                        continue
                    norm = acc.clip_grad_norm_(params, t.max_grad_norm or math.inf)
                    if acc.scaler is None and not math.isfinite(float(norm)):  # fp16's scaler skips such steps itself
                        raise _diverged(state.step + 1, "the gradient norm", {"grad_norm": float(norm)}, out)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    step_rng = rng_state()
                    meter.steps += 1
                    end_of_epoch = micro == batches
                    if main and (state.step % t.log_every == 0 or end_of_epoch or state.step == total):
                        _log(writer, meter, scheduler, state.step, total, progress, bar)
                        meter = Meter()
                    progress.update(bar, completed=state.step)
                    do_eval = state.step == total or _due(t.eval_every, state.step, end_of_epoch)
                    do_save = state.step == total or _due(t.save_every, state.step, end_of_epoch)
                    if do_eval:
                        evaluate(state.step)
                    if main and do_save:
                        state.train_seconds += time.time() - started
                        started = time.time()
                        save(state.step, step_rng)
                        last_saved = state.step
                    if do_eval or do_save:
                        acc.wait_for_everyone()
                    if state.step >= total:
                        break
    except KeyboardInterrupt:
        if main and state.step > last_saved:
            state.train_seconds += time.time() - started
            path = save(state.step, step_rng)
            console.print(f"\ninterrupted: saved {path}; continue with --resume")
        raise
    finally:
        if writer:
            writer.close()
    if not main:
        return {}
    return _finish(plan, out, state, acc, teacher)


def _check_resumable(folder: Path, config) -> None:
    """Before any weights load: the checkpoint's student has the shape this recipe builds."""
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise BrewError(f"--resume: {folder / 'config.json'} cannot be read ({e}); move {folder} away to resume from "
                        "the checkpoint before it") from None
    mine = config.to_dict()
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size",
            "n_layers", "dim", "n_layer", "n_embd", "num_labels")
    changed = [f"{k} {saved.get(k)} -> {mine.get(k)}" for k in keys if k in mine and saved.get(k) != mine.get(k)]
    if "id2label" in saved and len(saved["id2label"]) != len(mine.get("id2label", {})):
        changed.append(f"labels {len(saved['id2label'])} -> {len(mine.get('id2label', {}))}")
    if changed:
        raise BrewError(f"--resume: the student in {folder} differs from the one this recipe builds ({', '.join(changed)}); "
                        "restore the recipe's student section, or start in a new train.output_dir")


def _diverged(step: int, what: str, values: dict[str, float], out: Path) -> TrainingDiverged:
    bad = ", ".join(f"{k} {v}" for k, v in values.items() if not math.isfinite(v)) or "the sum of the terms"
    found = checkpoints(out)
    kept = (f"the last good checkpoint, {found[-1]}, is kept: continue from it with --resume after the fix" if found
            else "no checkpoint had been saved yet")
    return TrainingDiverged(f"training stopped at step {step}: {what} is not a finite number ({bad}); nothing of this "
                            f"step was saved and {kept}. Lower train.lr, keep train.max_grad_norm on, or check the "
                            "data and the teacher for extreme values")


class Meter:
    """Loss terms summed over the optimizer steps since the last log line (weighted where a weight applies)."""

    def __init__(self):
        self.raw: dict[str, float] = {}
        self.weighted: dict[str, float] = {}
        self.steps = 0

    def add(self, name: str, value: float, weight: float | None = None) -> None:
        self.raw[name] = self.raw.get(name, 0.0) + value
        if weight is not None:
            self.weighted[name] = self.weighted.get(name, 0.0) + value * weight


def _log(writer, meter: Meter, scheduler, step, total, progress, bar) -> None:
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
    progress.update(bar, info=info)
    if progress.disable:
        terms = "  ".join(f"{k} {v / n:.4f}" for k, v in meter.raw.items() if k != "total")
        console.print(f"step {step}/{total}  {info}  {terms}", soft_wrap=True)


def _finish(plan, out: Path, state: TrainState, acc, teacher) -> dict:
    r, task = plan.recipe, plan.task
    src = out / "best" if (out / "best").exists() else checkpoints(out)[-1]
    _publish(src, out)
    # Score the published student as any user would load it, and the teacher on the same split.
    split_name, split = ("test", plan.splits.test) if plan.splits.test is not None else ("eval", plan.splits.eval)
    report = {"recipe": r.name, "steps": state.step, "train_seconds": round(state.train_seconds, 1),
              "best": {"metric": r.best_metric, "value": state.best_metric, "step": state.best_step},
              "history": state.history, "final_split": split_name if split is not None else None}
    if split is not None:
        ds = data_mod.tokenize(split, plan.tokenizer, r.data)
        report["student"] = score(out, ds, plan.tokenizer, task, r.train.eval_batch_size, acc)
        if teacher is not None:
            logits, labels, _ = predict(teacher, ds, plan.tokenizer, r.train.eval_batch_size, acc)
            report["teacher"] = {**task.compute_metrics(logits, labels),
                                 "params": sum(p.numel() for p in teacher.parameters())}
            kept = retained_pct(task.main_metric, report["student"][task.main_metric], report["teacher"][task.main_metric])
            if kept is not None:
                report["retained_pct"] = kept
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    rows = [("student" if teacher is not None else "model", report.get("student", {}))]
    if "teacher" in report:
        rows.insert(0, ("teacher", report["teacher"]))
    if split is not None:
        console.print(results_table(f"{split_name} split ({len(split)} rows)", rows, [(m, m) for m in task.metrics]))
    if "retained_pct" in report:
        console.print(f"student keeps [bold]{report['retained_pct']}%[/bold] of the teacher's {task.main_metric}")
    console.print(f"saved to {out}/ ({state.train_seconds / 60:.1f} min training); next: brew eval {out}")
    return report
