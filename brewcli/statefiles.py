"""Nested training state (dicts, lists, tuples, plain values, tensors, NumPy arrays) as a JSON skeleton plus a
flat {path: tensor} mapping for safetensors, and back. Reading builds nothing but those types, so a state file
can hold data only, never code (unlike a pickle)."""

from __future__ import annotations

import numpy as np
import torch

TENSOR, ARRAY, TUPLE, ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"
MARKERS = (TENSOR, ARRAY, TUPLE, ITEMS)
PLAIN = (bool, int, float, str, type(None))


class StateError(ValueError):
    """A state skeleton that does not describe a state (a wrong type, a missing tensor, another structure)."""


class MissingTensor(StateError):
    """The skeleton names a tensor the tensor file does not hold."""


def flatten(obj) -> tuple[object, dict[str, torch.Tensor]]:
    """(JSON-able skeleton, {path: tensor}). Tuples and dicts with int keys are marked so they come back as such."""
    tensors: dict[str, torch.Tensor] = {}

    def leaf(kind: str, path: str, tensor: torch.Tensor) -> dict:
        name = path or "state"
        while name in tensors:  # a key holding "/" could repeat a path
            name += "+"
        tensors[name] = tensor.detach().cpu().contiguous()
        return {kind: name}

    def walk(x, path: str):
        if isinstance(x, torch.Tensor):
            return leaf(TENSOR, path, x)
        if isinstance(x, np.ndarray):
            return leaf(ARRAY, path, torch.from_numpy(np.ascontiguousarray(x)))
        if isinstance(x, PLAIN):
            return x
        if isinstance(x, tuple):
            return {TUPLE: [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not any(k in MARKERS for k in x):
                return {k: walk(v, f"{path}/{k}".lstrip("/")) for k, v in x.items()}
            if all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in x):
                return {ITEMS: [[k, walk(v, f"{path}/{k}".lstrip("/"))] for k, v in x.items()]}
        raise TypeError(f"{path or 'the state'}: a {type(x).__name__} cannot be saved as plain data")

    return walk(obj, ""), tensors


def unflatten(skeleton, tensors: dict[str, torch.Tensor]):
    """The state `flatten` took apart. Raises StateError naming the place that does not fit."""

    def tensor(name, path: str) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors:
            raise MissingTensor(f"{name!r}" if isinstance(name, str) else f"a {kind(name)} at {path}")
        return tensors[name]

    def walk(x, path: str):
        if isinstance(x, PLAIN):
            return x
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if not isinstance(x, dict):
            raise StateError(f"{path}: a {type(x).__name__} is not plain data")
        marked = len(x) == 1 and next(iter(x)) in MARKERS
        if marked and TENSOR in x:
            return tensor(x[TENSOR], path)
        if marked and ARRAY in x:
            return tensor(x[ARRAY], path).numpy()
        if marked and TUPLE in x:
            if not isinstance(x[TUPLE], list):
                raise StateError(f"{path}: a tuple holds {type(x[TUPLE]).__name__} where a list is expected")
            return tuple(walk(v, f"{path}/{i}") for i, v in enumerate(x[TUPLE]))
        if marked and ITEMS in x:
            items = x[ITEMS]
            if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 and
                                                       isinstance(i[0], (str, int)) for i in items):
                raise StateError(f"{path}: the items of a mapping are not [key, value] pairs")
            return {k: walk(v, f"{path}/{k}".lstrip("/")) for k, v in items}
        return {k: walk(v, f"{path}/{k}".lstrip("/")) for k, v in x.items()}

    return walk(skeleton, "")


def kind(x) -> str:
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, (int, float)):
        return "number"
    return {dict: "mapping", list: "list", tuple: "tuple", str: "text", type(None): "null"}.get(type(x), "tensor")


def check_like(saved, live, path: str) -> None:
    """`saved` has the structure of `live` (a fresh object's state): the same keys, lengths and kinds of values.
    Raises StateError naming the first place that differs."""
    if kind(saved) != kind(live):
        raise StateError(f"{path} holds a {kind(saved)} where a {kind(live)} is expected")
    if isinstance(live, dict):
        missing, extra = [k for k in live if k not in saved], [k for k in saved if k not in live]
        if missing or extra:
            raise StateError(f"{path} lacks {missing[:3]}" if missing else f"{path} has unexpected keys {extra[:3]}")
        for k in live:
            check_like(saved[k], live[k], f"{path}.{k}")
    elif isinstance(live, (list, tuple)):
        if len(saved) != len(live):
            raise StateError(f"{path} holds {len(saved)} entries where {len(live)} are expected")
        for i, (s, v) in enumerate(zip(saved, live)):
            check_like(s, v, f"{path}[{i}]")
