"""Saving and resuming. Every folder is written to a temporary name and renamed into place, so a crash or
Ctrl-C never leaves a half-written checkpoint and never removes a good one."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PROJECTIONS = "projections.safetensors"
TRAINING_STATE = "training_state.pt"
META = "brew.json"


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


def save_model_folder(folder: Path, model, tokenizer, projections, recipe_text: str, meta: dict) -> Path:
    """A folder plain transformers loads: config + model.safetensors + tokenizer, plus brew's own files."""

    def write(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if projections is not None and len(projections):
            state = {k: v.detach().contiguous().cpu() for k, v in projections.state_dict().items()}
            save_file(state, str(tmp / PROJECTIONS))
        (tmp / "recipe.yaml").write_text(recipe_text)
        (tmp / META).write_text(json.dumps(meta, indent=2))

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
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, *, model, tokenizer, projections, recipe_text, meta, optimizer,
                    scheduler, scaler, trainer: dict, keep: int, rng: dict) -> Path:
    folder = save_model_folder(out / f"checkpoint-{step}", model, tokenizer, projections, recipe_text, meta)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
             "scaler": scaler.state_dict() if scaler is not None else None, "trainer": trainer}
    tmp = folder / (TRAINING_STATE + ".tmp")
    torch.save(state, tmp)
    tmp.rename(folder / TRAINING_STATE)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return folder


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in Path(out).glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / TRAINING_STATE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def load_checkpoint(folder: Path, *, model, projections, optimizer, scheduler, scaler) -> dict:
    from brewcli.errors import BrewError

    try:
        weights = load_file(str(folder / "model.safetensors"))
        state = torch.load(folder / TRAINING_STATE, weights_only=False)
    except Exception as e:  # a damaged or truncated file
        raise BrewError(f"--resume: {folder} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        "move that folder away to resume from the checkpoint before it") from None
    own = model.state_dict()
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    shapes = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in weights and k not in tied]
    unexpected = [k for k in weights if k not in own]
    if unexpected or shapes or missing:
        raise BrewError(f"--resume: the weights in {folder} do not fit the student this recipe builds (missing "
                        f"{missing[:2]}, unexpected {unexpected[:2]}, other shapes {shapes[:2]}); the student section "
                        "changed since that run. Restore it, or start in a new train.output_dir")
    model.load_state_dict(weights, strict=False)
    if (folder / PROJECTIONS).exists():
        projections.load_state_dict(load_file(str(folder / PROJECTIONS)))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["trainer"]
