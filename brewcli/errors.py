"""Errors a user can fix. They are printed as one short message, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class BrewError(Exception):
    """A problem with the user's input or environment, shown without a traceback (exit code 2)."""


class TrainingDiverged(BrewError):
    """The loss or the gradients stopped being finite numbers; nothing of that step is saved."""


class Activity:
    """What brew is doing now, and where a crash log goes: the message for an unexpected failure names both."""

    doing: str = "starting"
    log_dir: Path | None = None


def doing(what: str, log_dir: str | Path | None = None) -> None:
    Activity.doing = what
    if log_dir is not None:
        Activity.log_dir = Path(log_dir)


class RecipeError(BrewError):
    """A bad recipe value: names the key path, what was expected and, when we can, the nearest valid choice."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        self.key, self.message, self.hint = key, message, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{text}; {self.hint}" if self.hint else text


class RecipeErrors(BrewError):
    """Several recipe errors found in one pass, reported together."""

    def __init__(self, errors: list[RecipeError], source: str | None = None):
        self.errors, self.source = errors, source
        super().__init__("\n".join(str(e) for e in errors))


def nearest(name: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    low = str(name).lower()
    undoubled = [low[:i] + low[i + 1:] for i in range(1, len(low)) if low[i] == low[i - 1]]
    for u in undoubled:  # a key pressed twice ('mm' for 'm') before what merely looks alike ('mlm')
        if u in lowered:
            return lowered[u]
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    best = nearest(name, choices)
    return f"did you mean '{best}'?" if best else None


def read_text(path: Path) -> str:
    """A text file as str; a non-UTF-8 byte is reported with its line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecipeError(f"{path}:{line}", f"is not UTF-8 text (byte 0x{data[e.start]:02x} at column {col})",
                          "save the file as UTF-8") from None
