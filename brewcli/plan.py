"""Resolve a recipe against real configs and data, before any weights load.

`--dry-run` prints the plan and stops; a run trains from it. Every user error that can be found without
weights is found here.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brewcli import augment
from brewcli import data as data_mod
from brewcli.errors import RecipeError, did_you_mean
from brewcli.emd import resolve_emd
from brewcli.matches import ResolvedMatch, resolve_matches
from brewcli.models.arch import arch_of
from brewcli.models.bigru import bigru_config, is_bigru, source
from brewcli.models.families import FamilyError, read_widths
from brewcli.models.features import FEATURE_KINDS
from brewcli.models.hf import architectures, check_weights, load_config, load_tokenizer, max_positions
from brewcli.models.side import Side
from brewcli.models.students import (apply_config_overrides, check_layer_copy, resolve_init, student_config,
                                     teacher_layers)
from brewcli.recipe import Recipe
from brewcli.tasks import Task, task_of


@dataclass
class PlannedTeacher(Side):
    """A teacher's side, with what only a teacher has."""

    spec: object = None  # its TeacherSpec
    label_order: list[int] | None = None  # puts its outputs in the first teacher's label order (same names)
    cache: object | None = None  # the teacher cache it is read from (cache.CachePlan), or None: run live
    encoded: object | None = None  # where it reads its own tokens: its own encoding of the train split, row for row


@dataclass
class Plan:
    recipe: Recipe
    task: Task
    teachers: list[PlannedTeacher]  # the first one's config shapes the student and names the labels
    student: Side  # ref: where its weights load from (init pretrained); None: built from its config
    init: str  # random | teacher-layers | pretrained
    init_layers: list[int] | None
    matches: list[ResolvedMatch]
    splits: data_mod.Splits
    encoded: dict  # split -> the task's encoded features (tokenised; QA: one row per window)
    processes: int  # the run's process count (WORLD_SIZE under torchrun / accelerate launch)
    steps_per_epoch: int
    total_steps: int
    attention: str | None  # "eager" when a match reads attention maps (SDPA returns none); else the default
    cache_note: str | None = None  # why `teacher_cache: auto` runs the teacher live
    augmented: object | None = None  # what data.augment added to the train split (augment.Augmented)
    emd: list = field(default_factory=list)  # BERT-EMD terms (emd.ResolvedEMD), from distill.emd

    @property
    def tokenizer(self):  # the student's
        return self.student.tokenizer

    @property
    def student_config(self):
        return self.student.config

    @property
    def student_params(self) -> int:
        return self.student.params

    @property
    def needs_attention(self) -> bool:
        return self.attention == "eager"

    @property
    def teacher_config(self):
        return self.teachers[0].config if self.teachers else None

    @property
    def teacher_params(self) -> int | None:
        return self.teachers[0].params if self.teachers else None

    @property
    def cache(self):
        return self.teachers[0].cache if self.teachers else None


def _check_device(recipe: Recipe) -> None:
    import torch

    t = recipe.train
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        raise RecipeError("train.device", "is cuda but no CUDA GPU is visible", "use device: auto or cpu")
    on_cpu = t.device == "cpu" or not cuda
    if t.precision == "fp16" and on_cpu:
        raise RecipeError("train.precision", "fp16 needs a CUDA GPU", "use fp32 (or bf16 on a CPU that supports it)")


def _check_output_dir(recipe: Recipe) -> None:
    out = Path(recipe.train.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise RecipeError("train.output_dir", f"'{out}' is a file, not a folder", "choose a new folder name")
    parent = next(p for p in (out, *out.parents) if p.exists())
    if not parent.is_dir():
        raise RecipeError("train.output_dir", f"'{parent}' is a file, so '{out}' cannot be created inside it")
    several = isinstance(recipe.teacher, list)
    models = {**{f"teacher[{i}]" if several else "teacher": t.model for i, t in enumerate(recipe.teachers)},
              "student.model": recipe.student.model}
    for key, ref in models.items():
        if ref and Path(ref).expanduser().exists() and Path(ref).expanduser().resolve() == out.resolve():
            raise RecipeError("train.output_dir", f"is the {key} folder; the run would overwrite that model",
                              "write the run to a folder of its own")
    if not os.access(parent, os.W_OK):
        raise RecipeError("train.output_dir", f"cannot write in '{parent}' (permission denied)",
                          "choose a folder you can write to")


def _check_lengths(recipe: Recipe, tokenizer, configs: dict) -> None:
    """max_length within every model's position embeddings; every token id within every vocabulary."""
    n = recipe.data.max_length
    for key, cfg in configs.items():
        limit = max_positions(cfg)
        if limit is not None and n > limit:
            raise RecipeError("data.max_length", f"is {n}, but the {key} ({cfg.model_type}) reads at most {limit} "
                              "tokens (its position embeddings)", f"set data.max_length: {limit} or less")
        if len(tokenizer) > cfg.vocab_size:
            where = "student.config.vocab_size" if key == "student" and "vocab_size" in recipe.student.config else key
            raise RecipeError(where, f"the tokenizer has {len(tokenizer)} tokens but the {key}'s vocabulary only "
                              f"{cfg.vocab_size}, so some token ids have no embedding", "use the model's own tokenizer")


def _check_tokenizer_reads_the_text(tokenizer, splits, recipe: Recipe, task, key: str) -> None:
    """Refuse a tokenizer that turns most of the training text into [UNK] (a wrong or empty tokenizer)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    texts = task.sample_texts(splits.train)
    ids = [i for enc in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in enc]
    if len(ids) >= 20 and ids.count(unk) / len(ids) > 0.5:
        raise RecipeError(key, f"its tokenizer turns {ids.count(unk) / len(ids):.0%} of the training text's tokens "
                          f"into {tokenizer.unk_token}, so the model would read almost nothing",
                          "check that the folder holds the model's own tokenizer files")


def _layers(config) -> int:
    try:
        return read_widths(config).layers
    except FamilyError:
        return config.num_hidden_layers


def _teachers(recipe: Recipe, task) -> list[PlannedTeacher]:
    out = []
    several = isinstance(recipe.teacher, list)
    for i, t in enumerate(recipe.teachers):
        key = f"teacher[{i}]" if several else "teacher"
        config = load_config(t.model, key, t.revision, t.trust_remote_code)
        check_weights(t.model, key)
        side = PlannedTeacher(t.name, key, config, task.head, t.model, t.revision, t.trust_remote_code, spec=t)
        side.check_serves(task)
        if _reads_teacher_logits(recipe) and not side.has_head():
            raise RecipeError(key, f"'{t.model}' has no {task.name} head (architectures: "
                              f"{', '.join(architectures(config) or ['none'])}), so its logits mean nothing",
                              "fine-tune it first with `brew train`, or set distill.kd_weight: 0")
        out.append(side)
    return out


def _reads_teacher_logits(recipe: Recipe) -> bool:
    """Whether a term reads the teachers' logits: only KD does (hard labels are the data's, matches read layers)."""
    return recipe.teacher is not None and recipe.distill.kd_weight > 0


def _label_teacher(recipe: Recipe, teacher: PlannedTeacher | None):
    """The teacher config that names the labels and must predict them: none for a head-less teacher whose logits
    nothing reads (a plain encoder distilled through its layers only)."""
    if teacher is None or not (_reads_teacher_logits(recipe) or teacher.has_head()):
        return None
    return teacher.config


def _check_teachers_agree(teachers: list[PlannedTeacher], task, names) -> None:
    """Several teachers: one label set by name (each gets its order relative to the first teacher's)."""
    from brewcli.tasks.sequence import teacher_label_names

    first = teachers[0]
    for t in teachers[1:]:
        task.check_teacher(t.config, names)
        if not task.has_classes:
            continue
        mine, theirs = teacher_label_names(t.config), teacher_label_names(first.config)
        if len(mine) != len(theirs):
            raise RecipeError(t.key, f"predicts {len(mine)} labels but {first.key} predicts {len(theirs)}; the "
                              "teachers' label sets must agree", "fine-tune every teacher on the same labels")
        generic = all(n.startswith("LABEL_") for n in mine + theirs)
        if not generic and set(mine) != set(theirs):
            extra = sorted(set(mine) - set(theirs))
            raise RecipeError(t.key, f"predicts labels {extra[:5]} that {first.key} does not ({', '.join(theirs[:10])}); "
                              "the teachers' label sets must agree by name", did_you_mean(extra[0], theirs))
        if not generic and mine != theirs:
            t.label_order = [mine.index(n) for n in theirs]


def _has_tokenizer(folder: Path) -> bool:
    from brewcli.models.hf import TOKENIZER_FILES

    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def _check_own_tokenizer(recipe: Recipe, task, t: PlannedTeacher, matches) -> None:
    """A teacher that reads other tokens than the student: what can be compared across two tokenizations."""
    if not task.cross_tokenizer:
        raise RecipeError(t.key, f"'{t.spec.model}' uses another tokenizer than the student, and task '{task.name}' "
                          "compares token positions that depend on the tokenizer (windows, answer positions)",
                          "use a teacher and student of one tokenizer for this task")
    for m in matches:
        if m.teacher == t.name and m.loss != "pkd":
            raise RecipeError(m.key, f"{m.loss} compares the models token by token, but '{t.spec.model}' uses another "
                              "tokenizer than the student, so their tokens do not line up",
                              "match pooled [CLS] features (loss: pkd), or use a teacher of the student's tokenizer")
    _check_lengths(recipe, t.tokenizer, {t.key: t.config})


def build_plan(recipe: Recipe, *, previous: Plan | None = None, dry_run: bool = False,
               augment_sample: bool = False) -> Plan:
    """`previous`: the plan of the stage before (stages:); this stage's student is the one that stage saves in its
    output folder, planned from that plan's config and tokenizer, since the folder is not there yet. `dry_run`: the
    plan is only printed, so a task that can (task: general) reads a sample of a large corpus and estimates its size
    (the encoded splits are data.Sample objects: `estimated`, `estimate_note`). `augment_sample` (brew augment
    --dry-run): data.augment varies a sample of the rows, stores nothing and estimates what it would add; the train
    split stays the original."""
    if previous is not None:
        recipe = _after(recipe, previous)
    from brewcli.models import gguf

    recipe = gguf.resolve(recipe)  # a GGUF teacher: its converted folder, made once
    task = task_of(recipe)
    _check_device(recipe)
    _check_output_dir(recipe)
    teachers = _teachers(recipe, task)
    task = task.resolve(teachers[0].spec.model if teachers else recipe.student.model)
    if task.options is not recipe.task:  # what the run used, in its saved recipe
        recipe = recipe.model_copy(update={"task": task.options})
    if recipe.data.augment:
        augment.check(recipe.data.augment, task)
    tc = teachers[0].config if teachers else None
    s = recipe.student
    tokenizer = None
    if previous is not None:
        sc = _previous_student(previous, s.config)
    elif s.model:
        sc = load_config(s.model, "student.model", s.revision, s.trust_remote_code)
        if s.init in ("auto", "pretrained"):  # auto means pretrained when a model is named
            check_weights(s.model, "student.model")
        apply_config_overrides(sc, s.config)
        _check_arch(s, sc)
    elif s.arch_name == "bigru":  # built from the tokenizer it reads
        tokenizer = load_tokenizer(*_bigru_tokenizer(s, teachers))
        sc = bigru_config(tokenizer, tc, s.config, _embeddings(s, teachers))
    else:
        sc = student_config(tc, s.preset, s.config)
    init = "pretrained" if previous is not None else "random" if is_bigru(sc) and not s.model else \
        resolve_init(s, tc, sc)
    layers = teacher_layers(s.teacher_layers, _layers(tc), _layers(sc)) if init == "teacher-layers" else None
    matches = resolve_matches(recipe.distill.matches, {t.name: t.config for t in teachers}, sc) if teachers else []
    emd, emd_matches = resolve_emd(recipe.distill.emd, {t.name: t.config for t in teachers}, sc) if teachers else ([], [])
    matches += emd_matches
    attention = "eager" if any(FEATURE_KINDS.get(m.feature).eager for m in [*matches, *emd]) else None
    if attention and hasattr(sc, "attention_probs_dropout_prob"):
        sc.attention_probs_dropout_prob = 0.0  # HF returns maps after dropout; keep them true distributions
    own = s.model and (not Path(s.model).expanduser().is_dir() or _has_tokenizer(Path(s.model).expanduser()))
    tok_ref, tok_key = (s.model, "student.model") if own or not teachers or previous else \
        (teachers[0].spec.model, teachers[0].key)
    # the student's (a preset reads its first teacher's; a later stage's is the previous stage's)
    if previous is not None:
        tokenizer = previous.tokenizer
    elif tokenizer is not None:  # a new BiGRU's, loaded above
        tok_ref, tok_key = _bigru_tokenizer(s, teachers)
    else:
        tokenizer = load_tokenizer(tok_ref, tok_key)
    for t in teachers:
        theirs = tokenizer if t.spec.model == tok_ref else load_tokenizer(t.spec.model, t.key)
        t.own_tokens = theirs.get_vocab() != tokenizer.get_vocab()
        t.tokenizer = theirs if t.own_tokens else tokenizer
    if task.needs_fast_tokenizer and not tokenizer.is_fast:
        raise RecipeError(tok_key, f"task '{task.name}' maps words and answers to sub-words, which needs a fast "
                          f"(Rust) tokenizer; '{tok_ref}' has only a slow one", "save a tokenizer.json beside the model")
    for cfg in (*(t.config for t in teachers), sc):
        if getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = tokenizer.pad_token_id  # decoders (GPT-2, Llama) pad with their end-of-text token
    _check_lengths(recipe, tokenizer, {**{t.key: t.config for t in teachers if not t.own_tokens}, "student": sc})
    for t in teachers:
        if t.own_tokens:
            _check_own_tokenizer(recipe, task, t, matches)
    splits = data_mod.load_splits(task, _label_teacher(recipe, teachers[0] if teachers else None),
                                  dry_run=dry_run)
    if len(teachers) > 1 and all(_label_teacher(recipe, t) for t in teachers):
        _check_teachers_agree(teachers, task, splits.label_names)
    _check_tokenizer_reads_the_text(tokenizer, splits, recipe, task, tok_key)
    augmented = None
    if recipe.data.augment:
        splits.train, augmented = augment.augment_train(recipe, task, splits.train, tokenizer,
                                                    sample=augment_sample)
    task.configure(sc, splits.label_names)
    student = Side("student", "student", sc, task.head, s.model if init == "pretrained" else None, s.revision,
                   s.trust_remote_code, arch_of(sc).name, tokenizer=tokenizer,
                   embeddings=_embeddings(s, teachers) if is_bigru(sc) and init == "random" else None)
    # ^ a later stage's s.model: the previous stage's output
    student.check_serves(task)
    _check_top_k(recipe.distill.top_k, task, teachers)
    meta = _meta_student(student, s.config)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    student.params = params(meta)
    for t in teachers:
        t.params = params(t.meta())
    if layers is not None:
        check_layer_copy(meta, teachers[0].meta(), layers)
    encoded = {k: student.encode(task, v, splits.label_names)
               for k, v in (("train", splits.train), ("eval", splits.eval), ("test", splits.test)) if v is not None}
    if len(encoded["train"]) == 0:
        raise RecipeError("data", "the train split is empty")
    if augmented is not None:  # the original rows come first: theirs are the gold labels
        gold = np.asarray(encoded["train"]["example"]) < augmented.original
        encoded["train"] = encoded["train"].add_column(data_mod.GOLD, gold.astype(np.int8))
    for t in teachers:
        if t.own_tokens:
            _check_tokenizer_reads_the_text(t.tokenizer, splits, recipe, task, t.key)
            t.encoded = t.encode(task, splits.train, splits.label_names)
    t = recipe.train
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    batches = math.ceil(math.ceil(len(encoded["train"]) / processes) / t.batch_size)  # per process and epoch
    per_epoch = math.ceil(batches / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch))
    plan = Plan(recipe, task, teachers, student, init, layers, matches, splits, encoded, processes, per_epoch, total,
                attention, emd=emd, augmented=augmented)
    if teachers:
        from brewcli.cache import plan_cache
        from brewcli.objective import build_objective
        from brewcli.tasks.sequence import INPUT_KEYS

        inputs = [k for k in INPUT_KEYS if k in encoded["train"].column_names]
        needs = build_objective(plan).teacher_needs
        for t in teachers:
            t.cache, note = plan_cache(plan, t, needs.get(t.name), inputs)
            plan.cache_note = plan.cache_note or note
    return plan


def _check_top_k(k: int | None, task, teachers) -> None:
    """distill.top_k cannot name more tokens than a teacher's vocabulary holds."""
    for t in teachers if k is not None else ():
        vocab = task.logit_width(t.config)
        if k > vocab:
            raise RecipeError("distill.top_k", f"is {k}, but {t.key} ({t.spec.model}) has a vocabulary of {vocab} tokens",
                              f"set distill.top_k to at most {vocab} (64 to 256 keep nearly all the mass)")


def _check_arch(s, config) -> None:
    if s.arch == "bigru" and not is_bigru(config):
        raise RecipeError("student.arch", f"is bigru, but student.model '{s.model}' is a {config.model_type} model",
                          "drop student.arch (a saved model's arch is read from its config)")


def _embeddings(s, teachers) -> str:
    """Where a new BiGRU's embeddings come from: student.embeddings, else the first teacher's."""
    return s.embeddings or ("teacher" if teachers else "random")


def _bigru_tokenizer(s, teachers) -> tuple[str, str]:
    """(ref, recipe key) of the tokenizer a new BiGRU reads: student.tokenizer, the model its embeddings come
    from, else the first teacher's."""
    if s.tokenizer:
        return s.tokenizer, "student.tokenizer"
    if s.embeddings and source(s.embeddings) == "model":
        return s.embeddings, "student.embeddings"
    if not teachers:
        raise RecipeError("student.tokenizer", "without a teacher, a BiGRU whose embeddings are not a model's needs "
                          "the tokenizer it reads", "name a model folder or Hub id (student.tokenizer: DIR)")
    return teachers[0].spec.model, teachers[0].key


def _after(recipe: Recipe, previous: Plan) -> Recipe:
    """A later stage's recipe with its student made the previous stage's: the model saved in that stage's output
    folder, pretrained (the stage's own student.config stays)."""
    s = recipe.student.model_copy(update={"preset": None, "model": previous.recipe.train.output_dir,
                                          "init": "pretrained", "teacher_layers": "uniform", "revision": None})
    return recipe.model_copy(update={"student": s})


def _previous_student(previous: Plan, overrides: dict):
    """The previous stage's student config (a copy: this stage's task sets its own head), with this stage's
    student.config, which must keep the shape of every weight, since this stage loads them."""
    sc = copy.deepcopy(previous.student_config)
    apply_config_overrides(sc, overrides)

    def shapes(config):
        try:
            return {k: tuple(p.shape) for k, p in previous.student.arch.meta(config, previous.task.head).named_parameters()}
        except Exception:  # noqa: BLE001 - a config that builds no model: _meta_student names it
            return None

    before, after = shapes(previous.student_config), shapes(sc)
    if before is not None and after is not None and before != after:
        old = previous.student_config
        changed = [k for k, v in overrides.items() if getattr(old, k, None) != v]
        key = f"student.config.{changed[0]}" if len(changed) == 1 else "student.config"
        shown = ", ".join(f"{k} {getattr(old, k, None)} -> {overrides[k]}" for k in changed)
        raise RecipeError(key, f"changes the student's shape ({shown}), but this stage starts from the previous "
                          "stage's student and loads its weights", "change only keys that keep the shape (dropout "
                          "and the like); a student of another shape is a first stage or a recipe of its own")
    return sc


def _meta_student(student: Side, overrides: dict):
    """Build the student on the meta device: a config that cannot make a model fails here, naming the key."""
    try:
        return student.meta()
    except Exception as e:  # transformers raises many types for a config it cannot build
        key = "student.config" if overrides else "student"
        raise RecipeError(key, f"the {student.config.model_type} config does not build a model: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
