#!/usr/bin/env bash
# The real checks behind the README's task tables: for NER (WNUT-16), multi-label (BBC entity types) and
# extractive QA (BBC questions), fine-tune all-MiniLM-L6-v2 as the teacher, distill a T3 (teacher layers) and a
# T4-tiny (random init) student, and save `brew eval --json` for each student under runs/real-checks/.
# About an hour on 2 CPU cores. Usage: bash scripts/real_checks.sh [wnut16] [bbc-multilabel] [bbc-qa]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -f data/wnut16/train.conll ] && [ -f data/bbc-qa/train.json ] || bash scripts/prepare_tasks.sh
mkdir -p runs/real-checks
for set in "${@:-wnut16 bbc-multilabel bbc-qa}"; do
  for s in $set; do
    rm -rf "runs/$s-teacher" "runs/$s-T3" "runs/$s-T4-tiny"
    .venv/bin/brew train "recipes/$s/teacher.yaml"
    whole=(); [ "$s" = bbc-qa ] && whole=(--data data/bbc-qa/test.json)  # all 1,926 questions, not the recipe's 600
    for student in T3 T4-tiny; do
      .venv/bin/brew distill "recipes/$s/distill-$student.yaml"
      .venv/bin/brew eval "runs/$s-$student" "${whole[@]}" --json > "runs/real-checks/$s-$student.json"
    done
  done
done
