#!/usr/bin/env bash
# The offline quickstart: fine-tune all-MiniLM-L6-v2 on BBC News, distill it into a T3 student initialised
# from the teacher's layers, and compare the two. About 10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python scripts/prepare_bbc.py
for run in runs/bbc-teacher runs/bbc-T3; do
  if [ -d "$run" ]; then echo "note: $run exists from an earlier quickstart; moving it to $run.old"; rm -rf "$run.old"; mv "$run" "$run.old"; fi
done
.venv/bin/brew train recipes/bbc/teacher.yaml
.venv/bin/brew distill recipes/bbc/distill-T3.yaml
.venv/bin/brew eval runs/bbc-T3
