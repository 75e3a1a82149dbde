"""Small name -> object registries. `brew ls` lists them; recipes refer to their entries by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from brewcli.errors import BrewError, did_you_mean

T = TypeVar("T")


class UnknownName(BrewError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    doc: str
    aliases: tuple[str, ...] = ()


class Registry(Generic[T]):
    def __init__(self, kind: str, section: str):
        self.kind, self.section = kind, section  # section: the `brew ls` argument that lists it
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, obj: T, doc: str, aliases: tuple[str, ...] = ()) -> T:
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = Entry(name, obj, doc, aliases)
        for alias in aliases:
            self._aliases[alias] = name
        return obj

    def register(self, name: str, doc: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        return lambda obj: self.add(name, obj, doc, aliases)

    def canonical(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        hint = did_you_mean(name, self.all_names())
        raise UnknownName(
            f"'{name}' is not a known {self.kind}" + (f"; {hint}" if hint else "") + f" (see `brew ls {self.section}`)"
        )

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)].obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def names(self) -> list[str]:
        return list(self._entries)

    def all_names(self) -> list[str]:
        return list(self._entries) + list(self._aliases)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())
