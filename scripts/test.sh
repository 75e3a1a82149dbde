#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Both cores (pytest-xdist; pass -n 0 to run in one process), the tests handed out one at a time as workers free up:
# the minutes-long ones go first (tests/conftest.py) and spread over both workers.
.venv/bin/python -m pytest -q -n 2 --maxschedchunk 1 "$@"
