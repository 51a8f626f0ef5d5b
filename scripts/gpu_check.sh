#!/usr/bin/env bash
# The GPU check on the lent GPU machine: install the wheels that scripts/gpu_wheels.sh put in .whl/
# (skyrl-train 0.3.1) or .whl040/ (with --skyrl 040: skyrl 0.4.0) into /tmp/site (no network there),
# then run scripts/gpu_check.py on the GPU with the carried tokenizers. Arguments go to gpu_check.py.
# The log and the JSON report go to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
whl=.whl; limit=450  # 031: the check stops starting timings after --budget seconds (300 by default)
prev=""
for arg in "$@"; do
  if [ "$arg" = "--skyrl=040" ] || { [ "$prev" = "--skyrl" ] && [ "$arg" = 040 ]; }; then
    whl=.whl040; limit=170  # 040 runs no timings: the whole check must end within 3 minutes
  fi
  prev=$arg
done
ls "$whl"/*.whl >/dev/null 2>&1 || { echo "no wheels in $whl/: run scripts/gpu_wheels.sh (040 for --skyrl 040) where the package index is reachable, and carry $whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$whl"/*.whl || exit 2
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
log=${OUT:-/tmp}/gpu_check.log
timeout "$limit" python3 scripts/gpu_check.py --tokenizers "$whl/tokenizers" "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
