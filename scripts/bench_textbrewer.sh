#!/usr/bin/env bash
# brew vs TextBrewer 0.2.1 on the quickstart's job (see scripts/bench_textbrewer.py). TextBrewer goes into
# .bench-lib, a folder of its own on PYTHONPATH for the benchmark alone: brew's .venv and tests never see it.
# Needs the quickstart's teacher (runs/bbc-teacher). Arguments go to the script, e.g. --epochs 2 --rounds 2.
# SMOKE=1: without setup.sh, on a few rows and short texts, under a temp folder (scripts/smoke.sh); a SMOKE_DIR
# the quickstart's smoke run filled lends its data and teacher.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SMOKE:-}" ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -d .bench-lib/textbrewer ] || "$VENV/bin/python" -m pip install -q --no-deps --target .bench-lib textbrewer==0.2.1.post1
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
at bbc bbc-teacher
[ -f "$RUNS/bbc-teacher/config.json" ] || "$VENV/bin/brew" train recipes/bbc/teacher.yaml "${AT[@]}"
BENCH=(); if [ -n "${SMOKE:-}" ]; then BENCH=(--teacher "$RUNS/bbc-teacher" --data "$DATA/bbc" --datasets short
  --max-train-samples 8 --batch-size 4 --max-length 16); fi
"$VENV/bin/python" scripts/bench_textbrewer.py "${BENCH[@]}" "$@"
