# Sourced by the real-check and benchmark scripts. SMOKE=1 runs a script's own commands on a few rows, one or two
# steps each, with everything (data, runs, teacher cache) under a temp folder (SMOKE_DIR, made if unset), never
# under the user's data/ and runs/. tests/test_scripts_smoke.py runs the scripts this way.
#   VENV     the environment whose bin/brew and bin/python the scripts run (default .venv)
#   DATA     where the data is read and written (data/; smoke: $SMOKE_DIR/data)
#   RUNS     where the runs go (runs/; smoke: $SMOKE_DIR/runs)
#   LIMIT    arguments for the prepare_*.py scripts (smoke: --limit 40, the first rows of each split)
#   CAPS     overrides appended to each brew command (smoke: 2 steps of 4 rows, 4 rows scored, 2 timing rounds)
#   EVAL_CAPS  options appended to each brew eval (smoke: 2 timing rounds, not 20: the speed of 2 steps means nothing)
export VENV=${VENV:-.venv}
if [ -n "${SMOKE:-}" ]; then
  export SMOKE_DIR=${SMOKE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/brew-smoke.XXXXXX")}
  DATA=$SMOKE_DIR/data RUNS=$SMOKE_DIR/runs
  export BREW_CACHE=$SMOKE_DIR/cache
  LIMIT=(--limit 40)
  CAPS=(train.max_steps=2 train.batch_size=4 train.eval_batch_size=8 data.max_train_samples=8 data.max_eval_samples=4
        train.timing_rounds=2)
  EVAL_CAPS=(--timing-rounds 2)
  [ -n "${SMOKE_SAID:-}" ] || echo "smoke mode: a few rows and 2 steps per run, all under $SMOKE_DIR"
  export SMOKE_SAID=1  # once, not again in the scripts this one runs
else
  DATA=data RUNS=runs LIMIT=() CAPS=() EVAL_CAPS=()
fi

# at SET RUN: the overrides that point recipes/SET/*.yaml at $DATA/SET/* and $RUNS/RUN (smoke mode only; a full run
# uses the recipe's own paths), then CAPS. A teacher recipe's model is $DATA/all-MiniLM-L6-v2; a distill recipe's
# teacher is $RUNS/SET-teacher. Sets AT.
at() {
  AT=()
  [ -n "${SMOKE:-}" ] || return 0
  AT=("train.output_dir=$RUNS/$2")
  local f name
  for f in "$DATA/$1"/*.*; do name=${f##*/}; AT+=("data.files.${name%.*}=$f"); done
  if [ "$2" = "$1-teacher" ]; then AT+=("student.model=$DATA/all-MiniLM-L6-v2"); else AT+=("teacher=$RUNS/$1-teacher"); fi
  AT+=("${CAPS[@]}")
}
