"""Student presets and student initialisation.

A preset is built as the teacher's own model family (same model type, vocabulary, position and type
embeddings) with fewer or narrower layers. T6, T3 and T3-small keep a width relative to the teacher's, so
for a BERT-base teacher they are exactly TextBrewer's T6 (6x768), T3 (3x768) and T3-small (3x384); T4-tiny
(TinyBERT4, 4x312) and T12-nano (12x256) have fixed widths.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from brewcli.errors import RecipeError, did_you_mean
from brewcli.models.families import FamilyError, check_copy, copy_layers, plan_copy, read_widths, resize
from brewcli.registry import Registry


@dataclass(frozen=True)
class StudentPreset:
    layers: int
    hidden: int | None = None  # None: the teacher's width times `width_ratio`
    width_ratio: float = 1.0
    ffn: int | None = None  # None: the teacher's FFN/hidden ratio times the width
    heads: int | None = None  # None: the teacher's head count
    matches: tuple[str, ...] = ()  # TextBrewer's published pairing for a 12-layer teacher
    arch: str = "hf"  # models/arch.py ARCHS: hf resizes the teacher's config; bigru builds models/bigru.py's


PRESETS: Registry[StudentPreset] = Registry("student", "students")
PRESETS.add("T6", StudentPreset(6, matches=("L6_hidden_mse", "L6_hidden_smmd")),
            "6 layers, teacher's width (BERT-base: 768, FFN 3072); DistilBERT / BERT6-PKD shape")
PRESETS.add("T3", StudentPreset(3, matches=("L3_hidden_mse", "L3_hidden_smmd")),
            "3 layers, teacher's width (BERT-base: 768, FFN 3072); BERT3-PKD shape")
PRESETS.add("T3-small", StudentPreset(3, width_ratio=0.5, matches=("L3n_hidden_mse", "L3_hidden_smmd")),
            "3 layers, half the teacher's width (BERT-base: 384, FFN 1536)")
PRESETS.add("T4-tiny", StudentPreset(4, hidden=312, ffn=1200, heads=12, matches=("L4t_hidden_mse", "L4_hidden_smmd")),
            "4 layers x 312, FFN 1200, 12 heads; TinyBERT4 shape")
PRESETS.add("T12-nano", StudentPreset(12, hidden=256, ffn=1024, heads=4, matches=("small_hidden_mse", "small_hidden_smmd")),
            "12 layers x 256, FFN 1024, 4 heads; ELECTRA-small shape")
PRESETS.add("BiGRU", StudentPreset(1, arch="bigru"),
            "1 bidirectional GRU layer as wide as the teacher (half per direction), the teacher's word embeddings; "
            "TextBrewer's BiGRU student (student.config: hidden_size, num_hidden_layers, embedding_size)")


def student_config(teacher_config, preset_name: str | None, overrides: dict):
    """The student's Hugging Face config: the teacher's config resized by the preset (through its family's field
    names, so BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa, GPT-2 and Llama-style teachers all work), then
    `overrides`."""
    cfg = copy.deepcopy(teacher_config)
    if preset_name:
        p = PRESETS.get(preset_name)
        try:
            w = read_widths(teacher_config)
            hidden = p.hidden or int(round(w.hidden * p.width_ratio))
            heads = p.heads or w.heads
            cfg = resize(teacher_config, layers=p.layers, hidden=hidden, ffn=p.ffn or int(round(hidden * w.ffn / w.hidden)),
                         heads=heads)
        except FamilyError as e:
            raise RecipeError("student.preset", str(e), "give student.model (a model to start from) instead") from None
    apply_config_overrides(cfg, overrides)
    return cfg


def apply_config_overrides(cfg, overrides: dict) -> None:
    known = set(cfg.to_dict()) | set(getattr(cfg, "attribute_map", {}))
    for key, value in overrides.items():
        where = f"student.config.{key}"
        if key not in known:
            raise RecipeError(where, f"not a field of the {cfg.model_type} config", did_you_mean(key, known))
        if key in ("num_labels", "id2label", "label2id", "problem_type"):
            raise RecipeError(where, "is set from the data's labels", "use task.num_labels, or drop it")
        _check_config_value(where, key, value, getattr(cfg, key, None))
        setattr(cfg, key, value)
    try:
        w = read_widths(cfg)
    except FamilyError:
        return
    if w.hidden % w.heads:
        raise RecipeError("student.config", f"the hidden width {w.hidden} is not divisible by {w.heads} attention "
                          "heads", "change one of them")


_COUNTS = re.compile(r"^(num_\w+|n_(?!_)\w+|(hidden|intermediate|vocab|type_vocab|embedding|head)_size|max_position_embeddings|dim|"
                     r"hidden_dim|head_dim)$")


def _check_config_value(where: str, key: str, value, current) -> None:
    """The override has the type of the config's own value, and a count is at least 1, a probability in [0, 1)."""
    import math

    def kind(v):
        return "a boolean" if isinstance(v, bool) else "an integer" if isinstance(v, int) else \
            "a number" if isinstance(v, float) else "a string" if isinstance(v, str) else type(v).__name__

    if current is not None:
        ok = (isinstance(value, bool) if isinstance(current, bool) else
              isinstance(value, int) and not isinstance(value, bool) if isinstance(current, int) else
              isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(current, float) else
              isinstance(value, type(current)))
        if not ok:
            raise RecipeError(where, f"expected {kind(current)} (like the config's {current!r}), got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(where, f"must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and _COUNTS.match(key) and value < 1:
        raise RecipeError(where, f"must be at least 1, got {value}")
    if isinstance(value, (int, float)) and ("dropout" in key or key.endswith("_prob")) and not 0 <= value < 1:
        raise RecipeError(where, f"is a probability and must be in [0, 1), got {value}")
    if key in ("hidden_act", "activation_function", "hidden_activation"):
        from transformers.activations import ACT2FN

        if value not in ACT2FN:
            raise RecipeError(where, f"'{value}' is not an activation transformers knows", did_you_mean(value, ACT2FN))


def teacher_layers(strategy: str | list[int], n_teacher: int, n_student: int) -> list[int]:
    """Which teacher layers (0-based) initialise the student's layers."""
    if isinstance(strategy, list):
        layers = strategy
        if len(layers) != n_student:
            raise RecipeError("student.teacher_layers", f"lists {len(layers)} layers but the student has {n_student}")
        bad = [i for i in layers if not 0 <= i < n_teacher]
        if bad:
            raise RecipeError("student.teacher_layers", f"layer {bad[0]} is out of range; the teacher has layers "
                              f"0..{n_teacher - 1}")
        return layers
    if n_student > n_teacher:
        raise RecipeError("student.teacher_layers", f"the student has {n_student} layers, the teacher only {n_teacher}")
    if strategy == "first":
        return list(range(n_student))
    if strategy == "last":
        return list(range(n_teacher - n_student, n_teacher))
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]  # uniform: keeps the last layer


def resolve_init(spec, teacher_config, cfg) -> str:
    """Turn `init: auto` into a concrete choice and check that the choice can work."""
    init = spec.init

    def widths(c):
        try:
            w = read_widths(c)
            return c.model_type, w.hidden, w.ffn, w.heads, w.embedding
        except FamilyError:
            return c.model_type, None, None, None, None

    same_width = teacher_config is not None and widths(cfg) == widths(teacher_config) and widths(cfg)[1] is not None
    if init == "auto":
        init = "pretrained" if spec.model else ("teacher-layers" if same_width else "random")
    if init == "teacher-layers" and not same_width:
        show = lambda c: "{} {}/{}/{}".format(*widths(c)[:4])  # noqa: E731
        raise RecipeError("student.init", f"'teacher-layers' copies layers, so the student needs the teacher's "
                          f"family and hidden/FFN/heads sizes (teacher {show(teacher_config)}, student {show(cfg)})",
                          "use init: random, or a preset that keeps the teacher's width (T6, T3)")
    return init


def check_layer_copy(student, teacher, layers: list[int]) -> None:
    """At plan time, on meta-device models: refuse an init that would leave student layer tensors random."""
    try:
        check_copy(student, teacher, layers)
    except FamilyError as e:
        raise RecipeError("student.init", str(e)) from None
    _, report = plan_copy(student.state_dict(), teacher.state_dict(), student.config, layers)
    if not report.complete:
        raise RecipeError("student.init", f"teacher-layers would copy only {report.copied} of the student's "
                          f"{report.expected} layer tensors (not found or another shape: "
                          f"{', '.join(report.missing_keys[:3])})", "use init: random")


def copy_teacher_layers(student, teacher, layers: list[int]):
    """Copy embeddings, the chosen layers, final norms, pooler and head from teacher to student (DistilBERT-style)."""
    report = copy_layers(student, teacher, layers)
    if not report.complete:  # the plan checked this on the same shapes; a mismatch here is a bug
        raise RuntimeError(f"copied {report.copied} of {report.expected} layer tensors: {report.missing_keys[:3]}")
    return report
