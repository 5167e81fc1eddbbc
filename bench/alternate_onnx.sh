#!/bin/bash
# emodraw-batch run (defaults) and bench/onnx_baseline.py (fp32) alternated ROUNDS times on one corpus.
#   CORPUS=corpus-400.parquet MODEL=DIR [ONNX_CACHE=DIR] [ROUNDS=3] [EMODRAW_CMD="python -m emodraw_batch.cli"] bench/alternate_onnx.sh
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
read -r -a EMODRAW <<< "${EMODRAW_CMD:-emodraw-batch}"
cat /proc/loadavg
for i in $(seq "${ROUNDS:-3}"); do
  s=$(date +%s.%N)
  "${EMODRAW[@]}" run "$CORPUS" -o "$OUT/e" --model "$MODEL" --device cpu --overwrite --json --no-progress > /dev/null 2>&1
  e=$(date +%s.%N)
  $PY "$HERE/onnx_baseline.py" "$CORPUS" "$OUT/o.parquet" --model "$MODEL" ${ONNX_CACHE:+--cache "$ONNX_CACHE"} --threads "$OMP_NUM_THREADS" > /dev/null 2>&1
  o=$(date +%s.%N)
  echo "round $i: emodraw-batch run $(echo "$e - $s" | bc) s, onnx_baseline.py fp32 $(echo "$o - $e" | bc) s"
done
cat /proc/loadavg
rm -rf "$OUT"
