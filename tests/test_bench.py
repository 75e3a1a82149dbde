"""The benchmark scripts run end to end on tiny models (nothing is timed); bench_textbrewer.sh runs in
tests/test_scripts_smoke.py."""

import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


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
