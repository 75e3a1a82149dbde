"""Resolve a recipe against real configs and data, before any weights load.

`--dry-run` prints the plan and stops; a run trains from it. Every user error that can be found without
weights is found here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from brewcli import data as data_mod
from brewcli.errors import RecipeError
from brewcli.matches import ResolvedMatch, resolve_matches
from brewcli.models import count_params, has_task_head, load_config, load_tokenizer, set_labels
from brewcli.recipe import Recipe
from brewcli.students import apply_config_overrides, resolve_init, student_config, teacher_layers
from brewcli.tasks import TASKS, Task


@dataclass
class Plan:
    recipe: Recipe
    task: Task
    teacher_config: object | None
    student_config: object
    init: str  # random | teacher-layers | pretrained
    init_layers: list[int] | None
    matches: list[ResolvedMatch]
    splits: data_mod.Splits
    tokenizer: object
    teacher_params: int | None
    student_params: int
    steps_per_epoch: int
    total_steps: int

    @property
    def needs_attention(self) -> bool:
        return any(m.feature == "attention" for m in self.matches)


def _check_device(recipe: Recipe) -> None:
    import torch

    t = recipe.train
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        raise RecipeError("train.device", "is cuda but no CUDA GPU is visible", "use device: auto or cpu")
    on_cpu = t.device == "cpu" or not cuda
    if t.precision == "fp16" and on_cpu:
        raise RecipeError("train.precision", "fp16 needs a CUDA GPU", "use fp32 (or bf16 on a CPU that supports it)")


def build_plan(recipe: Recipe) -> Plan:
    task = TASKS.get(recipe.task.name)
    _check_device(recipe)
    tc = None
    if recipe.teacher:
        t = recipe.teacher
        tc = load_config(t.model, "teacher", t.revision, t.trust_remote_code)
        if recipe.distill.kd_weight > 0 and not has_task_head(tc, task):
            raise RecipeError("teacher", f"'{t.model}' has no {task.name} head (architectures: "
                              f"{', '.join(tc.architectures or ['none'])}), so its logits mean nothing",
                              "fine-tune it first with `brew train`, or set distill.kd_weight: 0")
    s = recipe.student
    if s.model:
        sc = load_config(s.model, "student.model", s.revision, s.trust_remote_code)
        apply_config_overrides(sc, s.config)
        if tc is not None and sc.vocab_size != tc.vocab_size:
            raise RecipeError("student.model", f"its vocabulary ({sc.vocab_size} tokens) differs from the teacher's "
                              f"({tc.vocab_size}); both models read the same tokens",
                              "use a student of the teacher's family, or a preset")
    else:
        sc = student_config(tc, s.preset, s.config)
    init = resolve_init(s, tc, sc)
    layers = teacher_layers(s.teacher_layers, tc.num_hidden_layers, sc.num_hidden_layers) if init == "teacher-layers" else None
    matches = resolve_matches(recipe.distill.matches, tc, sc) if tc is not None else []
    if any(m.feature == "attention" for m in matches):
        for cfg in (tc, sc):
            cfg._attn_implementation = "eager"  # SDPA returns no attention maps
        if hasattr(sc, "attention_probs_dropout_prob"):
            sc.attention_probs_dropout_prob = 0.0  # HF returns maps after dropout; keep them true distributions
    tok_ref, tok_key = (recipe.teacher.model, "teacher") if recipe.teacher else (s.model, "student.model")
    tokenizer = load_tokenizer(tok_ref, tok_key)
    splits = data_mod.load_splits(recipe, task, tc)
    set_labels(sc, task, splits.label_names)
    t = recipe.train
    batches = math.ceil(len(splits.train) / t.batch_size)
    per_epoch = math.ceil(batches / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch))
    return Plan(recipe, task, tc, sc, init, layers, matches, splits, tokenizer,
                count_params(tc, task) if tc is not None else None, count_params(sc, task), per_epoch, total)
