"""Heavy libraries, imported on first use. `brew --help`, `brew ls` and `brew init` never touch torch, so they
start in a fraction of a second; a module that trains imports `torch` from here and pays on its first call."""

from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy {self._name}>"


torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")
np = LazyModule("numpy")
