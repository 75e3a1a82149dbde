"""Saving and resuming. Every folder, training state included, is written to a temporary name and renamed into
place, so a crash or a signal never leaves a half-written checkpoint and never removes a good one. The training
state is data only: tensors in safetensors, the rest in JSON (statefiles.py); nothing a resume reads can run code."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brewcli.errors import BrewError
from brewcli.statefiles import MissingTensor, StateError, check_like, flatten, kind, unflatten

PROJECTIONS = "projections.safetensors"
TRAINING_STATE = "training_state.json"  # written last: with it, a checkpoint is complete
TRAINING_TENSORS = "training_state.safetensors"
LEGACY_STATE = "training_state.pt"  # brew before 0.x: a pickle, never read
STATE_FILES = (TRAINING_STATE, TRAINING_TENSORS, LEGACY_STATE)
META = "brew.json"
FORMAT = "brew-training-state/1"
# TrainState's fields and the types a resume accepts for them
TRAINER = {"step": (int,), "best_metric": (int, float, type(None)), "best_step": (int, type(None)),
           "history": (list,), "train_seconds": (int, float), "loss_terms": (dict,)}


def _atomic_folder(final: Path, write) -> Path:
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_model_folder(folder: Path, model, tokenizer, projections, recipe_text: str, meta: dict, extra=None) -> Path:
    """A folder plain transformers loads: config + model.safetensors + tokenizer, plus brew's own files (and
    whatever `extra(tmp_folder)` writes, inside the same atomic rename)."""

    def write(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if projections is not None and len(projections):
            state = {k: v.detach().contiguous().cpu() for k, v in projections.state_dict().items()}
            save_file(state, str(tmp / PROJECTIONS))
        (tmp / "recipe.yaml").write_text(recipe_text)
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if extra is not None:
            extra(tmp)

    return _atomic_folder(folder, write)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda in zip(range(torch.cuda.device_count()), state["cuda"]):
            torch.cuda.set_rng_state(cuda, device)


def save_checkpoint(out: Path, step: int, *, model, tokenizer, projections, recipe_text, meta, optimizer,
                    scheduler, scaler, trainer: dict, keep: int, rng: dict) -> Path:
    state = {"format": FORMAT, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
             "scaler": scaler.state_dict() if scaler is not None else None, "trainer": trainer}
    skeleton, tensors = flatten(state)

    def write_state(tmp: Path):
        save_file(tensors, str(tmp / TRAINING_TENSORS))
        (tmp / TRAINING_STATE).write_text(json.dumps(skeleton))

    folder = save_model_folder(out / f"checkpoint-{step}", model, tokenizer, projections, recipe_text, meta,
                               write_state)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return folder


def _step(p: Path) -> int:
    return int(p.name.split("-")[-1])


def checkpoint_folders(out: Path) -> list[Path]:
    """Everything named checkpoint-STEP, complete or not, oldest first."""
    return sorted((p for p in Path(out).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=_step)


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (an old brew's included), oldest first."""
    return [p for p in checkpoint_folders(out) if all((p / f).is_file() for f in (TRAINING_STATE, TRAINING_TENSORS))
            or (p / LEGACY_STATE).is_file()]


def _remedy(folder: Path) -> str:
    before = [p for p in checkpoints(folder.parent) if _step(p) < _step(folder)]
    if before:
        return (f"move {folder} out of the way to resume from {before[-1].name}, or start afresh in a new "
                "train.output_dir")
    return "it is the only checkpoint: start afresh in a new train.output_dir (or move the folder away)"


def resume_point(out: Path) -> Path:
    """The checkpoint --resume continues: the newest one, which must be one this brew reads."""
    found = checkpoint_folders(out)
    if not found:
        raise BrewError(f"--resume: no checkpoint in {out}; start without --resume")
    last = found[-1]
    if not last.is_dir():
        raise BrewError(f"--resume: {last} is not a folder; {_remedy(last)}")
    if (last / LEGACY_STATE).exists() and not any((last / f).exists() for f in (TRAINING_STATE, TRAINING_TENSORS)):
        raise BrewError(f"--resume: {last} was saved by an older brew ({LEGACY_STATE}, a pickle, which could run code "
                        "when loaded, so brew no longer reads it); continue from its weights in a new run: "
                        f"`student: {{model: {last}}}` with a new train.output_dir (the optimizer starts afresh)")
    return last


@dataclass
class Saved:
    """A checkpoint folder as read for --resume: every file parsed into plain data and tensors, nothing applied."""

    folder: Path
    config: dict
    weights: dict
    projections: dict | None
    state: dict
    recipe: dict

    def error(self, name: str, what: str, remedy: str | None = None) -> BrewError:
        return BrewError(f"--resume: {self.folder / name} {what}; {remedy or _remedy(self.folder)}")


def _read(path: Path, reader):
    if not path.exists():
        raise StateError("is missing")
    if path.is_dir():
        raise StateError("is a folder where a file is expected")
    if path.stat().st_size == 0:
        raise StateError("is empty")
    try:
        return reader(path)
    except (OSError, ValueError, SafetensorError, yaml.YAMLError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise StateError(f"cannot be read ({type(e).__name__}: {first})") from None


def _mapping(value) -> dict:
    if not isinstance(value, dict):
        raise StateError(f"holds a {kind(value)} where a mapping (a JSON object) is expected")
    return value


def read_checkpoint(folder: Path) -> Saved:
    """Read and check every file --resume needs, before anything is built or loaded."""
    folder = Path(folder)
    saved = Saved(folder, {}, {}, None, {}, {})

    def read(name, reader, mapping=True):
        try:
            value = _read(folder / name, reader)
            return _mapping(value) if mapping else value
        except StateError as e:
            raise saved.error(name, str(e)) from None

    as_json = lambda p: json.loads(p.read_text())  # noqa: E731
    saved.config = read("config.json", as_json)
    saved.weights = read("model.safetensors", lambda p: load_file(str(p)))
    if (folder / PROJECTIONS).exists():
        saved.projections = read(PROJECTIONS, lambda p: load_file(str(p)))
    saved.recipe = read("recipe.yaml", lambda p: yaml.safe_load(p.read_text()))
    skeleton = read(TRAINING_STATE, as_json)
    tensors = read(TRAINING_TENSORS, lambda p: load_file(str(p)))
    try:
        saved.state = unflatten(skeleton, tensors)
    except MissingTensor as e:
        raise saved.error(TRAINING_TENSORS, f"lacks a tensor that {TRAINING_STATE} names ({e})") from None
    except StateError as e:
        raise saved.error(TRAINING_STATE, f"is not a training state ({e})") from None
    try:
        _check_state(saved.state, _step(folder))
    except StateError as e:
        raise saved.error(TRAINING_STATE, str(e)) from None
    return saved


def _check_state(state: dict, step: int) -> None:
    """The parts of a training state that need no live object to check: keys, types, RNG states, trainer state."""
    if state.get("format") != FORMAT:
        raise StateError(f"has format {state.get('format')!r}, not {FORMAT!r}")
    missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "trainer") if k not in state]
    if missing:
        raise StateError(f"lacks {', '.join(repr(k) for k in missing)}")
    for key in ("optimizer", "scheduler", "rng", "trainer"):
        if not isinstance(state[key], dict):
            raise StateError(f"holds a {kind(state[key])} as {key!r} where a mapping is expected")
    opt = state["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise StateError("'optimizer' lacks its 'state' mapping or its 'param_groups' list")
    _check_rng(state["rng"])
    trainer = state["trainer"]
    for key, types in TRAINER.items():
        if key not in trainer:
            raise StateError(f"'trainer' lacks {key!r}")
        if not isinstance(trainer[key], types) or isinstance(trainer[key], bool):
            raise StateError(f"'trainer.{key}' holds a {kind(trainer[key])}")
    if set(trainer) != set(TRAINER):
        raise StateError(f"'trainer' has unexpected keys {sorted(set(trainer) - set(TRAINER))[:3]}")
    if trainer["step"] != step:
        raise StateError(f"says step {trainer['step']} in the folder of step {step}")


def _check_rng(rng: dict) -> None:
    """Each RNG state fits a fresh generator of its kind (the global ones are untouched until the load)."""
    for key, check in (("python", lambda s: random.Random().setstate(s)),
                       ("numpy", lambda s: np.random.RandomState().set_state(s)),
                       ("torch", lambda s: torch.Generator().set_state(s))):
        if key not in rng:
            raise StateError(f"'rng' lacks {key!r}")
        try:
            check(rng[key])
        except (TypeError, ValueError, RuntimeError, IndexError) as e:
            raise StateError(f"'rng.{key}' is not a random state ({type(e).__name__}: {str(e)[:80]})") from None
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        raise StateError("'rng.cuda' is not a list of CUDA random states")


def _check_optimizer(saved: dict, optimizer) -> None:
    live = optimizer.state_dict()
    check_like(saved["param_groups"], live["param_groups"], "optimizer.param_groups")
    if [g["params"] for g in saved["param_groups"]] != [g["params"] for g in live["param_groups"]]:
        raise StateError("optimizer.param_groups number the parameters differently from this optimizer")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    names = None
    for index, entry in saved["state"].items():
        where = f"optimizer.state[{index}]"
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise StateError(f"{where}: no parameter {index!r} in this optimizer ({len(params)} parameters)")
        if not isinstance(entry, dict) or not all(isinstance(v, torch.Tensor) for v in entry.values()):
            raise StateError(f"{where} is not a mapping of tensors")
        names = set(entry) if names is None else names
        if set(entry) != names:
            raise StateError(f"{where} holds {sorted(entry)} where the others hold {sorted(names)}")
        for name, value in entry.items():
            if value.ndim and value.shape != params[index].shape:
                raise StateError(f"{where}.{name} has shape {tuple(value.shape)}, the parameter "
                                 f"{tuple(params[index].shape)}")


def load_checkpoint(saved: Saved, *, model, projections, optimizer, scheduler, scaler) -> dict:
    """Check that the state fits the live objects, then load it into them; returns the trainer state."""
    weights = saved.weights
    own = model.state_dict()
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    shapes = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in weights and k not in tied]
    unexpected = [k for k in weights if k not in own]
    if unexpected or shapes or missing:
        raise saved.error("model.safetensors", f"does not fit the student this recipe builds (missing {missing[:2]}, "
                          f"unexpected {unexpected[:2]}, other shapes {shapes[:2]})",
                          "if the student section changed since that run, restore it; otherwise "
                          + _remedy(saved.folder))
    mine = projections.state_dict()
    theirs = saved.projections or {}
    if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
        what = "is missing" if mine and saved.projections is None else \
            f"holds {len(theirs)} tensors where the recipe's matches have {len(mine)} (or other shapes)"
        raise saved.error(PROJECTIONS, what, f"if distill.matches changed since that run, restore them; otherwise "
                          f"{_remedy(saved.folder)}")
    state = saved.state
    live_scaler = scaler.state_dict() if scaler is not None else None
    try:
        _check_optimizer(state["optimizer"], optimizer)
        check_like(state["scheduler"], scheduler.state_dict(), "scheduler")
        if live_scaler and state["scaler"]:
            check_like(state["scaler"], live_scaler, "scaler")
    except StateError as e:
        raise saved.error(TRAINING_STATE, f"does not fit this run: {e}") from None
    model.load_state_dict(weights, strict=False)
    if mine:
        projections.load_state_dict(theirs)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if live_scaler and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["trainer"]
