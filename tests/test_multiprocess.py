"""Two processes on the CPU (torchrun, gloo): data is sharded, one process logs and saves."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import base_recipe


def test_two_process_distill(tmp_path, teacher_dir, data_files, monkeypatch):
    recipe = base_recipe(teacher_dir, data_files, tmp_path / "out")
    recipe["train"]["device"] = "cpu"
    recipe["distill"]["teacher_cache"] = "disk"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BREW_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "brewcli",
                           "distill", str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("brew plan") == 1
    assert "6 steps (3/epoch), batch 8 x 2 processes" in " ".join(done.stderr.split())  # the plan's count is the run's
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # 36 train rows split over 2 processes -> 18 each -> 3 batches of 8 per epoch -> 6 steps in 2 epochs
    assert metrics["steps"] == 6 and [h["step"] for h in metrics["history"]] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    # each process filled its share of one cache entry: it holds what a single process stores
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert (entry / "manifest.json").exists()
    from brewcli.plan import build_plan
    from brewcli.recipe import load_recipe
    from brewcli.train import build_cache

    monkeypatch.setenv("BREW_CACHE", str(tmp_path / "single"))
    build_cache(build_plan(load_recipe(path)))
    for f in entry.glob("*.npy"):
        a, b = np.load(f), np.load(tmp_path / "single" / entry.name / f.name)
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-2), f.name


def _worker(parent: int, rank: int) -> int:
    """The pid of the torchrun worker of that rank (read from /proc)."""
    for _ in range(600):
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path, teacher_dir, data_files):
    """SIGTERM reaches only rank 1: the flag is agreed at the step boundary, so both processes stop after the
    same step, process 0 saves it, and a two-process --resume finishes the run."""
    recipe = base_recipe(teacher_dir, data_files, tmp_path / "out")
    recipe["train"].update(device="cpu", epochs=4, log_every=1, keep_checkpoints=20)  # 12 steps, 3 per epoch
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BREW_CACHE": str(tmp_path / "cache")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "brewcli", "distill",
              str(path)]
    child = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("step 2/12"):
            os.kill(_worker(child.pid, 1), signal.SIGTERM)
    child.wait(timeout=300)
    text = " ".join("".join(lines).split())
    assert "SIGTERM: stopped after step " in text and "exitcode : 143" in text, text[-3000:]
    step = int(text.split("SIGTERM: stopped after step ")[1].split()[0])
    assert 2 <= step < 12 and f"step {step + 1}/12" not in text
    assert (tmp_path / "out" / f"checkpoint-{step}" / "training_state.json").exists()
    done = subprocess.run(launch + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {step}/12" in done.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"] == 12
