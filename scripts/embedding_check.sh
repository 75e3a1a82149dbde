#!/usr/bin/env bash
# The sentence-embedding real check (README): all-MiniLM-L6-v2 distilled into a T3 from its layers on BBC News
# headlines and articles (recipes/bbc-embed/distill-T3.yaml), then `brew eval --json` on the BBC test split
# (headline-to-article retrieval) and on gensim's Lee document pairs (Spearman). About 25 minutes on 2 CPU cores
# alone (3 epochs, 303 steps at about 4.5 s).
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
"$VENV/bin/python" scripts/prepare_embedding.py --out "$DATA" "${LIMIT[@]}"
RUN=("train.output_dir=$RUNS/bbc-embed-T3")
if [ -n "${SMOKE:-}" ]; then
  RUN+=("teacher=$DATA/all-MiniLM-L6-v2" "data.files.train=$DATA/bbc-embed/train.jsonl"
        "data.files.test=$DATA/bbc-embed/test.jsonl" "${CAPS[@]}")
fi
rm -rf "$RUNS/bbc-embed-T3"
"$VENV/bin/brew" distill recipes/bbc-embed/distill-T3.yaml "${RUN[@]}"
"$VENV/bin/brew" eval "$RUNS/bbc-embed-T3" "${EVAL_CAPS[@]}" --json > "$RUNS/bbc-embed-T3-test.json"
"$VENV/bin/brew" eval "$RUNS/bbc-embed-T3" --data "$DATA/lee/pairs.jsonl" "${EVAL_CAPS[@]}" --json > "$RUNS/bbc-embed-T3-lee.json"
