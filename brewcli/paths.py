"""Paths in a recipe. A path in a recipe file is relative to the recipe's folder; on the command line (overrides),
to the current folder. Data files, data.augment.glove, train.output_dir and distill.cache_dir are always paths. A model (teacher,
student.model, student.tokenizer, student.embeddings, data.augment.mlm) or data.dataset is a local path when it starts with ./ ../ / or ~, or exists relative to that
folder; otherwise it is a Hugging Face id (bert-base-uncased, org/name) and stays as written. Resolved paths are
absolute. These work on the raw mapping, before the schema checks it."""

from __future__ import annotations

import os
from pathlib import Path


def _path_slots(raw: dict) -> list[tuple[tuple, bool]]:
    """Where a raw recipe holds paths: (location, always a path); False marks a model or dataset reference."""
    slots: list[tuple[tuple, bool]] = []
    teacher = raw.get("teacher")
    for loc, t in ([(("teacher", i), t) for i, t in enumerate(teacher)] if isinstance(teacher, list)
                   else [(("teacher",), teacher)]):
        slots.append((loc + ("model",), False) if isinstance(t, dict) else (loc, False))
    slots += [(("student", "model"), False), (("student", "tokenizer"), False), (("student", "embeddings"), False),
              (("data", "dataset"), False), (("data", "augment", "mlm"), False), (("data", "augment", "glove"), True),
              (("train", "output_dir"), True),
              (("distill", "cache_dir"), True)]
    files = _at(raw, ("data", "files"))
    for split, paths in files.items() if isinstance(files, dict) else ():
        slots += ([(("data", "files", split, j), True) for j in range(len(paths))] if isinstance(paths, list)
                  else [(("data", "files", split), True)])
    return slots


def _at(raw, loc: tuple):
    for part in loc:
        ok = isinstance(raw, dict) and part in raw or isinstance(raw, list) and isinstance(part, int) and part < len(raw)
        if not ok:
            return None
        raw = raw[part]
    return raw


def _put(raw, loc: tuple, value) -> None:
    for part in loc[:-1]:
        raw = raw[part]
    raw[loc[-1]] = value


def resolve_path(value: str, base: Path, always: bool = True) -> str:
    """`value` as an absolute path against `base`, or unchanged when it is a Hugging Face id (see above)."""
    try:
        path = base / Path(value).expanduser()
        local = always or value.startswith(("./", "../", "/", "~")) or path.exists()
    except (OSError, ValueError, RuntimeError):  # a name no file can have (a NUL byte, too long, ~nosuchuser)
        return value  # left for the checks that name the key
    return os.path.normpath(path) if local else value


def resolve_paths(raw: dict, base: Path, only_changed_from: dict | None = None) -> dict:
    """Resolve the raw recipe's paths against `base` in place (with `only_changed_from`, only the values that
    differ from it); returns {location: value} of the paths, to tell later changes apart."""
    for loc, always in _path_slots(raw):
        value = _at(raw, loc)
        if isinstance(value, str) and value and (only_changed_from is None or only_changed_from.get(loc) != value):
            _put(raw, loc, resolve_path(value, base, always))
    return {loc: _at(raw, loc) for loc, _ in _path_slots(raw)}


def shown_path(path: str | Path) -> str:
    """A path as the user would type it here: relative to the current folder when inside it, else absolute."""
    full = Path(os.path.abspath(path))
    try:
        return str(full.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(full)
