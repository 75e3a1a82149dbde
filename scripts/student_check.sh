#!/usr/bin/env bash
# The README's checks of the BiGRU student and of BERT-EMD. For each set (bbc: topics, wnut16: NER), a BiGRU
# distilled from the set's teacher (recipes/SET/distill-BiGRU.yaml) and the same BiGRU trained without a teacher
# (recipes/SET/train-BiGRU.yaml); on bbc also T3 and T4-tiny with BERT-EMD in place of their uniform hidden
# matches (recipes/bbc/distill-T3.yaml and distill-T4-tiny.yaml as shipped, then with `distill.emd`). Saves
# `brew eval --json` for each under runs/student-check/. Trains the teachers first where they are missing.
# About 70 minutes on 2 CPU cores. Usage: bash scripts/student_check.sh [bbc] [wnut16]
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (see scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
OUT="$RUNS/student-check"
mkdir -p "$OUT"
run() {  # run COMMAND SET RUN RECIPE [OVERRIDES...]: one run into $RUNS/RUN, then its `brew eval --json`
  local command=$1 set=$2 name=$3 recipe=$4
  shift 4
  rm -rf "$RUNS/$name"
  at "$set" "$name"
  local keep=() a
  for a in ${AT[@]+"${AT[@]}"}; do  # smoke: brew train names no teacher
    [ "$command" = train ] && [[ $a == teacher=* ]] || keep+=("$a")
  done
  "$VENV/bin/brew" "$command" "recipes/$set/$recipe.yaml" "$@" ${keep[@]+"${keep[@]}"} "train.output_dir=$RUNS/$name"
  "$VENV/bin/brew" eval "$RUNS/$name" "${EVAL_CAPS[@]}" --json > "$OUT/$name.json"
}
for s in "${@:-bbc wnut16}"; do
  for set in $s; do
    if [ ! -f "$RUNS/$set-teacher/model.safetensors" ]; then
      [ "$set" = bbc ] || [ -f "$DATA/$set/train.conll" ] || bash scripts/prepare_tasks.sh
      at "$set" "$set-teacher"
      "$VENV/bin/brew" train "recipes/$set/teacher.yaml" "${AT[@]}"
    fi
    alone=(); [ -n "${SMOKE:-}" ] && alone=("student.embeddings=$RUNS/$set-teacher")
    run distill "$set" "$set-BiGRU" distill-BiGRU
    run train "$set" "$set-BiGRU-alone" train-BiGRU "${alone[@]}"
    if [ "$set" = bbc ]; then  # BERT-EMD against the uniform matches, the same epochs
      run distill bbc bbc-T3 distill-T3
      run distill bbc bbc-T3-emd distill-T3 "distill.matches=[]" distill.emd.feature=hidden
      run distill bbc bbc-T4-tiny distill-T4-tiny
      run distill bbc bbc-T4-tiny-emd distill-T4-tiny "distill.matches=[{preset: uniform, feature: hidden, loss: mmd}]" \
        distill.emd.feature=hidden
    fi
  done
done
