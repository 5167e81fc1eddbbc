#!/usr/bin/env bash
# The one GPU command (bench/GPU.md): install the carried wheels, import-check, then every step of
# bench/gpu.py within its time budget, counted from this script's start. Results under OUT:
# gpu-results.json, gpu-results.md (rewritten after every step) and log.txt.
#
#   bash bench/gpu_run.sh OUT [bench/gpu.py options]      # from the repository root, .whl/ beside it
#   bash bench/gpu_run.sh --install-only                  # the first of two calls: installs .whl-first/ and stops
#
# Two calls when the wheels and the tree do not fit in one (bench/gpu_wheels.sh splits them, bench/GPU.md):
# both install into SITE, an ignored folder of the checkout, which the device machine keeps between calls
# while it stays warm; the second checks that everything imports before it measures anything.
#
# Environment: WHEELS (.whl; .whl-first with --install-only), SITE (.site: where the wheels are installed), PY (python3),
# PIP_PY (PY: the interpreter whose pip installs them), WORK (/tmp/emodraw-gpu). bench/gpu_carry_check.sh runs this very script on a CPU.
export EMODRAW_BENCH_T0=${EMODRAW_BENCH_T0:-$(date +%s.%N)}
OUT=${1:?usage: bash bench/gpu_run.sh OUT [bench/gpu.py options], or bash bench/gpu_run.sh --install-only}
shift
SITE=${SITE:-$PWD/.site}
PY=${PY:-python3}
install() {  # install() WHEELS LOG: the wheels into SITE, beside what an earlier call put there
  if ! "${PIP_PY:-$PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$1"/*.whl \
      >"$2" 2>&1; then
    echo "installing the wheels of $1 failed: $(grep -m1 -i error "$2")"
    return 2
  fi
}
if [[ "$OUT" == "--install-only" ]]; then
  WHEELS=${WHEELS:-.whl-first}
  install "$WHEELS" "$SITE.install.txt" || exit 2
  echo "$WHEELS installed in $SITE in $(awk "BEGIN {print $(date +%s.%N) - $EMODRAW_BENCH_T0}")s; now the second call, at once"
  exit 0
fi
WHEELS=${WHEELS:-.whl}
# polars imports without its runtime (a separate wheel, the first call's), so a query proves it is there.
IMPORTS="import prefect, dask.distributed, pydantic, polars as pl; pl.DataFrame({'a': [1]}).lazy().collect()"
mkdir -p "$OUT"
install "$WHEELS" "$OUT/install.txt" | tee "$OUT/log.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || exit 2
if ! PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "$IMPORTS" 2>>"$OUT/install.txt"; then
  echo "a carried package does not import ($(tail -1 "$OUT/install.txt")): if bench/gpu_wheels.sh split the wheels," \
       "the first call's install is gone (a bare machine: it went back between the calls); run both calls again" | tee -a "$OUT/log.txt"
  exit 3
fi
echo "wheels installed in $(awk "BEGIN {print $(date +%s.%N) - $EMODRAW_BENCH_T0}")s" | tee -a "$OUT/log.txt"
# The wheels are installed without their bytecode (faster to install): compile it on every core, beside the first
# steps, so that no measured process compiles Prefect's modules (the first one-row run would pay it, issue 39 item 3).
"$PY" -m compileall -q -j 0 "$SITE" >/dev/null 2>&1 &
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
set -o pipefail
"$PY" bench/gpu.py --out "$OUT" --work "${WORK:-/tmp/emodraw-gpu}" "$@" 2>&1 | tee -a "$OUT/log.txt"
