#!/usr/bin/env bash
# Hunt flaky tests: the whole suite, several times back to back, on a clean clone of the committed
# HEAD, while CPU burners keep every core busy; then in a shuffled test order (pytest-randomly).
#
#   tools/stress_tests.sh [BUSY_RUNS [SHUFFLED_RUNS]]        (defaults: 3 and 1)
#
# Environment:
#   PYTHON          the interpreter of a venv that has the project's test dependencies installed
#                   (default: .venv/bin/python of this repository). The clone is put first on
#                   PYTHONPATH and is the working directory, so its code is what runs, also in the
#                   subprocesses the tests start, even where the venv has an editable install of
#                   another checkout.
#   FRESH_VENV=1    instead: a new venv in the temporary folder, installed like .ci/run does
#                   (torch==2.13.0 first, then -e '.[test]'); needs the package index, adds minutes.
#   RUN_TIMEOUT     seconds one suite run may take before it is stopped and counted failed (2400).
#   STRESS_SEED     pytest-randomly's seed for the shuffled runs (default: a random one, printed).
#   LOG_DIR         where the logs and summary.txt go (default: the temporary folder, kept).
#   KEEP=1          keep the temporary clone (default: removed at the end; the logs are kept).
#
# The burners are `nproc` busy loops at the tests' own priority, started before each run and
# stopped right after it by this script (and each bounded by `timeout` in any case). pytest-randomly
# is installed with `pip --target` into the temporary folder and is on PYTHONPATH only for the
# shuffled runs: the venv is not changed. The busy runs pass `-p no:randomly`, so they run in
# the suite's own order even where pytest-randomly happens to be installed.
# Exit status: 0 when every run passed, 1 otherwise. See docs/contributing.md.
set -euo pipefail

BUSY_RUNS=${1:-3}
SHUFFLED_RUNS=${2:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-2400}
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/emodraw-stress.XXXXXX")
LOG_DIR=${LOG_DIR:-$WORK/logs}
mkdir -p "$LOG_DIR"
SUMMARY=$LOG_DIR/summary.txt
BURNERS=()

stop_burners() {
    local pid
    for pid in "${BURNERS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BURNERS=()
}

cleanup() {
    stop_burners
    if [[ "${KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK/clone" "$WORK/venv" "$WORK/plugins"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_burners() {
    local i
    for ((i = 0; i < $(nproc); i++)); do
        timeout "$((RUN_TIMEOUT + 60))" sh -c 'while :; do :; done' &
        BURNERS+=($!)
    done
}

say() { echo "$*" | tee -a "$SUMMARY"; }

if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
    echo "note: uncommitted changes in $REPO are not tested (the clone is of HEAD)" >&2
fi
git clone -q --no-hardlinks "$REPO" "$WORK/clone"
COMMIT=$(git -C "$WORK/clone" rev-parse --short HEAD)

if [[ "${FRESH_VENV:-0}" == 1 ]]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q torch==2.13.0
    (cd "$WORK/clone" && "$WORK/venv/bin/pip" install -q -e '.[test]')
    PYTHON=$WORK/venv/bin/python
    VENV_NOTE="fresh venv $WORK/venv"
else
    PYTHON=${PYTHON:-$REPO/.venv/bin/python}
    VENV_NOTE="existing venv of $PYTHON, clone first on PYTHONPATH"
fi

say "stress run of $COMMIT on $(nproc) cores busy with $(nproc) burners; $VENV_NOTE; $(date -u +%FT%TZ)"
say "clone: $WORK/clone, logs: $LOG_DIR"
FAILED=0

one_run() {  # NAME EXTRA_PYTHONPATH PYTEST_ARGS...
    local name=$1 extra=$2 started rc=0 took result
    shift 2
    start_burners
    started=$(date +%s)
    (cd "$WORK/clone" && PYTHONPATH="$WORK/clone${extra:+:$extra}" \
        timeout "$RUN_TIMEOUT" "$PYTHON" -m pytest -q "$@") >"$LOG_DIR/$name.log" 2>&1 || rc=$?
    took=$(($(date +%s) - started))
    stop_burners
    result=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$LOG_DIR/$name.log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
    say "$name: exit $rc, ${result:-no pytest summary (timed out?)}, wall ${took}s, load after $(cut -d' ' -f1-3 /proc/loadavg)"
    grep -E '^(FAILED|ERROR) ' "$LOG_DIR/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY" || true
    [[ $rc == 0 ]] || FAILED=1
}

for ((n = 1; n <= BUSY_RUNS; n++)); do
    one_run "busy-$n" "" -p no:randomly -p no:cacheprovider
done

if ((SHUFFLED_RUNS > 0)); then
    "$PYTHON" -m pip install -q --no-deps --target "$WORK/plugins" pytest-randomly
    for ((n = 1; n <= SHUFFLED_RUNS; n++)); do
        seed=${STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}
        one_run "shuffled-$n-seed-$seed" "$WORK/plugins" -p randomly -p no:cacheprovider --randomly-seed="$seed"
    done
fi

say "result: $([[ $FAILED == 0 ]] && echo 'every run passed' || echo 'FAILURES (see the logs)')"
exit "$FAILED"
