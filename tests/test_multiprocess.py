"""Two processes on the CPU (torchrun, gloo): data is sharded, one process logs and saves."""

import json
import os
import subprocess
import sys

import numpy as np
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
