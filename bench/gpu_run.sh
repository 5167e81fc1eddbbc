#!/usr/bin/env bash
# The one GPU command (bench/GPU.md): install the carried wheels, import-check, then every step of
# bench/gpu.py within its time budget, counted from this script's start. Results under OUT:
# gpu-results.json, gpu-results.md (rewritten after every step) and log.txt.
#
#   bash bench/gpu_run.sh OUT [bench/gpu.py options]      # from the repository root, .whl/ beside it
#
# Environment: WHEELS (.whl), SITE (/tmp/site: where the wheels are installed), PY (python3),
# PIP_PY (PY: the interpreter whose pip installs them), WORK (/tmp/emodraw-gpu). bench/gpu_carry_check.sh runs this very script on a CPU.
export EMODRAW_BENCH_T0=${EMODRAW_BENCH_T0:-$(date +%s.%N)}
OUT=${1:?usage: bash bench/gpu_run.sh OUT [bench/gpu.py options]}
shift
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
mkdir -p "$OUT"
if ! "${PIP_PY:-$PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    >"$OUT/install.txt" 2>&1; then
  echo "installing the wheels of $WHEELS failed: $(grep -m1 -i error "$OUT/install.txt")" | tee "$OUT/log.txt"
  exit 2
fi
echo "wheels installed in $(awk "BEGIN {print $(date +%s.%N) - $EMODRAW_BENCH_T0}")s" | tee "$OUT/log.txt"
# The wheels are installed without their bytecode (faster to install): compile it on every core, beside the first
# steps, so that no measured process compiles Prefect's modules (the first one-row run would pay it, issue 39 item 3).
"$PY" -m compileall -q -j 0 "$SITE" >/dev/null 2>&1 &
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
set -o pipefail
"$PY" bench/gpu.py --out "$OUT" --work "${WORK:-/tmp/emodraw-gpu}" "$@" 2>&1 | tee -a "$OUT/log.txt"
