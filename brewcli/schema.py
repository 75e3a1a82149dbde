"""Building blocks of the recipe schema, shared by `recipe.py` and the tasks (each task owns its `task:` block)."""

from __future__ import annotations

import typing
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from brewcli.registry import Registry, UnknownName


class Strict(BaseModel):
    """Unknown keys are errors; NaN and infinities are refused; `true` is not a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info: ValidationInfo):
        if isinstance(v, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(v).lower()}")
        return v


def _numeric(annotation) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    return any(a in (int, float) or (typing.get_args(a) and _numeric(a)) for a in args if a is not bool)


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what torch and numpy accept


def column(what: str, key: str):
    """A task block's column key (`task: {label: topic}`); `data.<key>` is the older spelling of the same."""
    return Field(None, description=f"the column holding {what}; null: data.{key}, else the task's default")


def one_or_a_pair(v):
    if isinstance(v, list) and not 1 <= len(v) <= 2:
        raise ValueError("takes one column or a pair of columns")
    return v


def known(registry: Registry, name: str) -> str:
    try:
        return registry.canonical(name)
    except UnknownName as e:
        raise ValueError(str(e)) from None


def shorthand(key: str):
    """Let a section be written as a bare string: `teacher: bert-base-uncased` means `teacher: {model: ...}`."""

    def before(cls, v):
        return {key: v} if isinstance(v, str) else v

    return model_validator(mode="before")(classmethod(before))
