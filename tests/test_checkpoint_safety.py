"""Checkpoints are data, not code, and a damaged one is reported, never loaded half-way: the training state's
safetensors + JSON round trip, a pickle payload that --resume refuses without running it, an old brew's
checkpoint, and every file of the checkpoint --resume reads missing, empty, truncated, of the wrong type or
with keys missing (one message naming the file, exit 2, every checkpoint folder kept)."""

import json
import random
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.statefiles import MissingTensor, StateError, check_like, flatten, unflatten
from tests.conftest import base_recipe

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert "Traceback" not in result.output and "this is a bug" not in text and "brew stopped while" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result, text


# ---------------------------------------------------------------------------------------------- the format


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_training_state_round_trips_through_safetensors_and_json(tmp_path):
    from transformers import get_scheduler

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    opt = torch.optim.AdamW([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:]}], lr=1e-3)
    sched = get_scheduler("linear", opt, num_warmup_steps=1, num_training_steps=10)
    sum(p.sum() for p in params).backward()
    opt.step(), sched.step()
    random.random(), np.random.rand(), torch.rand(1)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "python": random.getstate(),
             "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "nan": float("inf"),
             "odd keys": {"__tensor__": 1, 7: "seven"}, "empty": ()}
    skeleton, tensors = flatten(state)
    save_file(tensors, str(tmp_path / "t.safetensors"))
    (tmp_path / "s.json").write_text(json.dumps(skeleton))
    back = unflatten(json.loads((tmp_path / "s.json").read_text()), load_file(str(tmp_path / "t.safetensors")))
    assert same(state, back)
    assert isinstance(back["python"], tuple) and list(back["optimizer"]["state"]) == [0, 1]  # int keys come back
    random.Random().setstate(back["python"]), np.random.RandomState().set_state(back["numpy"])
    check_like(back["scheduler"], sched.state_dict(), "scheduler")
    with pytest.raises(TypeError, match="a function cannot be saved"):
        flatten({"lr_lambda": lambda step: 1.0})


def test_reading_builds_plain_data_only():
    with pytest.raises(MissingTensor):
        unflatten({"w": {"__tensor__": "not there"}}, {})
    with pytest.raises(StateError, match="tuple holds"):
        unflatten({"__tuple__": "abc"}, {})
    with pytest.raises(StateError, match="holds a text where a number is expected"):
        check_like({"last_epoch": "3"}, {"last_epoch": 3}, "scheduler")
    with pytest.raises(StateError, match="holds 1 entries where 2 are expected"):
        check_like([{}], [{}, {}], "optimizer.param_groups")


def test_trainer_fields_match_the_train_state():
    from brewcli.checkpoint import TRAINER
    from brewcli.train import TrainState

    assert set(TRAINER) == set(asdict(TrainState()))


# ---------------------------------------------------------------------------------------------- a finished run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, teacher_dir, data_files):
    """A two-step run with a checkpoint at each step: (recipe, output folder)."""
    root = tmp_path_factory.mktemp("ckpt")
    recipe = base_recipe(teacher_dir, data_files, root / "out")
    recipe["train"].update(max_steps=2, save_every=1, keep_checkpoints=5)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result, text = brew("distill", path)
    assert result.exit_code == 0, text
    return path, root / "out"


def copy_of(finished, tmp_path):
    recipe, out = finished
    mine = tmp_path / "out"
    shutil.copytree(out, mine)
    return recipe, mine


def resume(recipe, out):
    return brew("distill", recipe, "--resume", "train.max_steps=4", f"train.output_dir={out}")


class Payload:
    """Code that runs when unpickled: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_pickle_payload_is_never_loaded(finished, tmp_path):
    recipe, out = copy_of(finished, tmp_path)
    torch.save({"optimizer": Payload(tmp_path / "proof")}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert (tmp_path / "proof").exists()  # the payload is real: loading it the old way runs it
    marker, last = tmp_path / "ran", out / "checkpoint-2"
    torch.save({"optimizer": Payload(marker), "trainer": {"step": 2}}, tmp_path / "evil.pt")
    # an old-style checkpoint carrying it: refused with the way to continue
    for f in ("training_state.json", "training_state.safetensors"):
        (last / f).unlink()
    shutil.copyfile(tmp_path / "evil.pt", last / "training_state.pt")
    result, text = resume(recipe, out)
    assert result.exit_code == 2, text
    assert f"--resume: {last} was saved by an older brew (training_state.pt, a pickle" in text
    assert f"`student: {{model: {last}}}` with a new train.output_dir" in text
    assert not marker.exists() and last.is_dir()
    # the same payload under the new file names: not readable as safetensors or JSON, and never run
    recipe, out = copy_of(finished, tmp_path / "again")
    last = out / "checkpoint-2"
    for f in ("training_state.json", "training_state.safetensors"):
        shutil.copyfile(tmp_path / "evil.pt", last / f)
    result, text = resume(recipe, out)
    assert result.exit_code == 2 and f"{last}/training_state.json cannot be read" in text, text
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- damaged files


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def drop_tensor(path, name):
    tensors = load_file(str(path))
    tensors.pop(name if name in tensors else sorted(tensors)[0])
    save_file(tensors, str(path))


def entry(state, index):  # the skeleton of optimizer.state[index]
    return dict(state["optimizer"]["state"]["__items__"])[index]


DAMAGE = {
    "missing": lambda p: shutil.rmtree(p) if p.is_dir() else p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a list": lambda p: p.write_text("[1, 2]"),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
}
FILES = ("config.json", "model.safetensors", "training_state.safetensors", "training_state.json",
         "projections.safetensors", "recipe.yaml")
CASES = [(f, d, DAMAGE[d], None) for f in FILES for d in DAMAGE
         if not (d == "a list" and f.endswith(".safetensors")) and not (f == "recipe.yaml" and d == "truncated")]
CASES += [
    ("model.safetensors", "without a weight", lambda p: drop_tensor(p, "classifier.weight"), "does not fit"),
    ("projections.safetensors", "without a tensor", lambda p: drop_tensor(p, "0.weight"), "holds 7 tensors"),
    ("training_state.safetensors", "without a parameter's moments",
     lambda p: drop_tensor(p, "optimizer/state/3/exp_avg"), "lacks a tensor"),
    ("training_state.json", "without 'optimizer'", lambda p: edit_json(p, lambda s: s.pop("optimizer")),
     "lacks 'optimizer'"),
    ("training_state.json", "without 'rng'", lambda p: edit_json(p, lambda s: s.pop("rng")), "lacks 'rng'"),
    ("training_state.json", "without the torch RNG", lambda p: edit_json(p, lambda s: s["rng"].pop("torch")),
     "'rng' lacks 'torch'"),
    ("training_state.json", "with a broken python RNG",
     lambda p: edit_json(p, lambda s: s["rng"].update(python=[1, 2])), "'rng.python' is not a random state"),
    ("training_state.json", "with a parameter's state lacking a tensor",
     lambda p: edit_json(p, lambda s: entry(s, 3).pop("exp_avg")), "optimizer.state[3] holds"),
    ("training_state.json", "with a param group fewer",
     lambda p: edit_json(p, lambda s: s["optimizer"]["param_groups"].pop()), "holds 2 entries where 3"),
    ("training_state.json", "with a parameter fewer",
     lambda p: edit_json(p, lambda s: s["optimizer"]["param_groups"][0]["params"].pop()), "param_groups[0].params"),
    ("training_state.json", "with a scheduler value of the wrong type",
     lambda p: edit_json(p, lambda s: s["scheduler"].update(last_epoch="2")), "scheduler.last_epoch holds a text"),
    ("training_state.json", "without the trainer's step",
     lambda p: edit_json(p, lambda s: s["trainer"].pop("step")), "'trainer' lacks 'step'"),
    ("training_state.json", "with the optimizer a list",
     lambda p: edit_json(p, lambda s: s.update(optimizer=[])), "as 'optimizer' where a mapping"),
    ("recipe.yaml", "broken YAML", lambda p: p.write_text("train: [unclosed\n"), "cannot be read"),
]


@pytest.mark.parametrize("name,how,damage,says", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_damaged_checkpoint_is_refused_with_one_message(finished, tmp_path, name, how, damage, says):
    recipe, out = copy_of(finished, tmp_path)
    damage(out / "checkpoint-2" / name)
    result, text = resume(recipe, out)
    assert result.exit_code == 2, text
    assert f"error: --resume: {out / 'checkpoint-2' / name} " in text, text
    assert says is None or says in text, text
    assert "to resume from checkpoint-1" in text and "resumed from" not in text, text  # refused before training
    assert (out / "checkpoint-1" / "training_state.json").is_file() and (out / "checkpoint-2").is_dir()
    assert (out / "checkpoint-2" / name).exists() or how == "missing"


def test_resume_from_an_undamaged_copy_continues(finished, tmp_path):
    recipe, out = copy_of(finished, tmp_path)
    result, text = resume(recipe, out)
    assert result.exit_code == 0 and "resumed from" in text and "at step 2/4" in text, text
