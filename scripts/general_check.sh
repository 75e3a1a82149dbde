#!/usr/bin/env bash
# The README's general-distillation check: general-distil a random T4-tiny from all-MiniLM-L6-v2 on the unlabelled
# corpus (recipes/general/T4-tiny.yaml), then task-distil it on BBC topics, WNUT-16 NER and BBC QA
# (recipes/SET/distill-T4-tiny-general.yaml, and TinyBERT's two task stages, recipes/SET/tinybert-T4-tiny.yaml,
# where a set has one; on WNUT-16 also with MiniLM v2's and CKD's relations in place of TinyBERT's in the first
# task stage), and the same task recipes from a random T4-tiny (task-only), saving `brew eval --json` for
# each under runs/general-check/. Trains the task teachers first where they are missing.
# About 2 hours on 2 CPU cores (the general run about 45 minutes). Usage: bash scripts/general_check.sh [SET...]
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (see scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
[ -f "$DATA/general/train.txt" ] && [ -f "$DATA/wnut16/train.conll" ] && [ -f "$DATA/bbc-qa/train.json" ] ||
  bash scripts/prepare_tasks.sh
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
mkdir -p "$RUNS/general-check"
GENERAL=()  # smoke: the general run's own data and teacher
if [ -n "${SMOKE:-}" ]; then
  GENERAL=("data.files.train=$DATA/general/train.txt" "data.files.validation=$DATA/general/validation.txt"
           "teacher=$DATA/all-MiniLM-L6-v2" "train.output_dir=$RUNS/general-T4-tiny" "${CAPS[@]}")
fi
[ -f "$RUNS/general-T4-tiny/metrics.json" ] || "$VENV/bin/brew" distill recipes/general/T4-tiny.yaml "${GENERAL[@]}"
"$VENV/bin/brew" eval "$RUNS/general-T4-tiny" "${EVAL_CAPS[@]}" --json > "$RUNS/general-check/general-T4-tiny.json"
for s in "${@:-bbc wnut16 bbc-qa}"; do
  for set in $s; do
    if [ ! -f "$RUNS/$set-teacher/model.safetensors" ]; then
      at "$set" "$set-teacher"
      "$VENV/bin/brew" train "recipes/$set/teacher.yaml" "${AT[@]}"
    fi
    # all 1,926 questions (smoke mode: the run's own capped test split, a few rows)
    whole=(); [ "$set" = bbc-qa ] && [ -z "${SMOKE:-}" ] && whole=(--data "$DATA/bbc-qa/test.json")
    # TinyBERT's two task stages, the layers then the predictions
    rm -rf "$RUNS/$set-tinybert-T4-tiny"
    at "$set" "$set-tinybert-T4-tiny"
    "$VENV/bin/brew" distill "recipes/$set/tinybert-T4-tiny.yaml" "student.model=$RUNS/general-T4-tiny" "${AT[@]}"
    "$VENV/bin/brew" eval "$RUNS/$set-tinybert-T4-tiny" "${whole[@]}" "${EVAL_CAPS[@]}" --json > "$RUNS/general-check/$set-tinybert-T4-tiny.json"
    if [ "$set" = wnut16 ]; then  # the loss families compared (README): MiniLM v2's and CKD's relations in stage 1
      for fam in minilm-v2 ckd; do
        rm -rf "$RUNS/$set-$fam-T4-tiny"
        at "$set" "$set-$fam-T4-tiny"
        "$VENV/bin/brew" distill "recipes/$set/tinybert-T4-tiny.yaml" "student.model=$RUNS/general-T4-tiny" \
          "stages.0.distill.matches=[$fam]" "${AT[@]}" "train.output_dir=$RUNS/$set-$fam-T4-tiny"
        "$VENV/bin/brew" eval "$RUNS/$set-$fam-T4-tiny" "${EVAL_CAPS[@]}" --json > "$RUNS/general-check/$set-$fam-T4-tiny.json"
      done
    fi
    for init in general taskonly; do
      rm -rf "$RUNS/$set-T4-tiny-$init"
      at "$set" "$set-T4-tiny-$init"
      from=("student.model=$RUNS/general-T4-tiny")
      [ "$init" = taskonly ] && from=("student.model=null" "student.preset=T4-tiny" "student.init=random")
      "$VENV/bin/brew" distill "recipes/$set/distill-T4-tiny-general.yaml" "${from[@]}" "${AT[@]}" \
        "train.output_dir=$RUNS/$set-T4-tiny-$init"
      "$VENV/bin/brew" eval "$RUNS/$set-T4-tiny-$init" "${whole[@]}" "${EVAL_CAPS[@]}" --json > "$RUNS/general-check/$set-T4-tiny-$init.json"
    done
  done
done
