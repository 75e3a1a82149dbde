"""The TextBrewer benchmark script runs end to end on tiny models (brew's systems only; nothing is timed)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_model_dir, make_rows

ROOT = Path(__file__).resolve().parent.parent


def test_bench_script_smoke(tmp_path):
    teacher = make_model_dir(tmp_path / "teacher", layers=6)
    data = tmp_path / "data"
    data.mkdir()
    for split, seed, n in (("train", 1, 40), ("test", 2, 12)):
        with open(data / f"{split}.jsonl", "w") as f:
            for r in make_rows(n, seed):
                title = " ".join(r["text"].split()[:2])
                f.write(json.dumps({"text": r["text"] + " the movie was very not", "label": r["label"], "title": title})
                        + "\n")
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_textbrewer.py"), "--teacher", str(teacher),
                           "--data", str(data), "--datasets", "short", "--systems", "brew-live,brew-cold,brew-warm", "--epochs", "1",
                           "--batch-size", "8", "--max-length", "16", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert set(summary["datasets"]) == {"short"}
    for rows in summary["datasets"].values():
        assert set(rows) == {"brew-live", "brew-cold", "brew-warm"}
        for row in rows.values():
            assert row["samples_per_s"] > 0 and 0 <= row["accuracy"] <= 1 and row["peak_rss_mib"] > 0
        # the same job, the same seed: a fp16 cache changes the teacher's values only in their last bits
        assert abs(rows["brew-warm"]["accuracy"] - rows["brew-live"]["accuracy"]) <= 0.25


def test_bench_export_smoke(tmp_path):
    """scripts/bench_export.py on a tiny trained run: three rows, the target line (nothing is timed here)."""
    from typer.testing import CliRunner

    from brewcli.cli import app
    from tests.test_tasks import recipe_for

    r = CliRunner().invoke(app, ["distill", str(recipe_for("classification", tmp_path))])
    assert r.exit_code == 0, r.output
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_export.py"), "--run", str(tmp_path / "out"),
                           "--rounds", "3", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    models = json.loads(out.read_text())["models"]
    assert set(models) == {"pytorch", "onnx-fp32", "onnx-int8"}
    assert models["onnx-fp32"]["accuracy"] == models["pytorch"]["accuracy"]
    assert models["onnx-fp32"]["relative_difference"] < 1e-5 and models["onnx-int8"]["speedup_batch1"] > 0
    assert "target: int8 loses at most 0.5 points" in done.stdout


def test_bench_onpolicy_smoke(tmp_path, monkeypatch):
    """scripts/bench_onpolicy.py on a tiny Llama: both kinds of step run and are reported (nothing is asserted of the
    times)."""
    from tests.test_causal import _recipe

    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_onpolicy.py"), str(path), "--windows", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ordinary" in done.stdout and "on-policy / ordinary:" in done.stdout, done.stdout
