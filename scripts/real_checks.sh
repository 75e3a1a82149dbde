#!/usr/bin/env bash
# The real checks behind the README's task tables: for NER (WNUT-16), multi-label (BBC entity types) and
# extractive QA (BBC questions), fine-tune all-MiniLM-L6-v2 as the teacher, distill a T3 (teacher layers) and a
# T4-tiny (random init) student, and save `brew eval --json` for each student under runs/real-checks/.
# About an hour on 2 CPU cores. Usage: bash scripts/real_checks.sh [wnut16] [bbc-multilabel] [bbc-qa]
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (see scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -f "$DATA/wnut16/train.conll" ] && [ -f "$DATA/bbc-qa/train.json" ] || bash scripts/prepare_tasks.sh
mkdir -p "$RUNS/real-checks"
for set in "${@:-wnut16 bbc-multilabel bbc-qa}"; do
  for s in $set; do
    rm -rf "$RUNS/$s-teacher" "$RUNS/$s-T3" "$RUNS/$s-T4-tiny"
    at "$s" "$s-teacher"
    "$VENV/bin/brew" train "recipes/$s/teacher.yaml" "${AT[@]}"
    # all 1,926 questions, not the recipe's 600 (smoke mode: the run's own capped test split, a few rows)
    whole=(); [ "$s" = bbc-qa ] && [ -z "${SMOKE:-}" ] && whole=(--data "$DATA/bbc-qa/test.json")
    for student in T3 T4-tiny; do
      at "$s" "$s-$student"
      "$VENV/bin/brew" distill "recipes/$s/distill-$student.yaml" "${AT[@]}"
      "$VENV/bin/brew" eval "$RUNS/$s-$student" "${whole[@]}" "${EVAL_CAPS[@]}" --json > "$RUNS/real-checks/$s-$student.json"
    done
  done
done
