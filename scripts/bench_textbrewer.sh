#!/usr/bin/env bash
# brew vs TextBrewer 0.2.1 on the quickstart's job (see scripts/bench_textbrewer.py). TextBrewer goes into
# .bench-lib, a folder of its own on PYTHONPATH for the benchmark alone: brew's .venv and tests never see it.
# Needs the quickstart's teacher (runs/bbc-teacher). Arguments go to the script, e.g. --epochs 2 --rounds 2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -d .bench-lib/textbrewer ] || .venv/bin/python -m pip install -q --no-deps --target .bench-lib textbrewer==0.2.1.post1
[ -f data/bbc/train.jsonl ] || .venv/bin/python scripts/prepare_bbc.py
[ -f runs/bbc-teacher/config.json ] || .venv/bin/brew train recipes/bbc/teacher.yaml
.venv/bin/python scripts/bench_textbrewer.py "$@"
