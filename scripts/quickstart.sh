#!/usr/bin/env bash
# The offline quickstart: fine-tune all-MiniLM-L6-v2 on BBC News, distill it into a T3 student initialised
# from the teacher's layers, and compare the two. About 10 minutes on 2 CPU cores.
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder, without setup.sh (scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SMOKE:-}" ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
"$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
for run in "$RUNS/bbc-teacher" "$RUNS/bbc-T3"; do
  if [ -d "$run" ]; then echo "note: $run exists from an earlier quickstart; moving it to $run.old"; rm -rf "$run.old"; mv "$run" "$run.old"; fi
done
at bbc bbc-teacher
"$VENV/bin/brew" train recipes/bbc/teacher.yaml "${AT[@]}"
at bbc bbc-T3
"$VENV/bin/brew" distill recipes/bbc/distill-T3.yaml "${AT[@]}"
"$VENV/bin/brew" eval "$RUNS/bbc-T3" "${EVAL_CAPS[@]}"
