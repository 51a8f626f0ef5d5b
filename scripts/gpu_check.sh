#!/usr/bin/env bash
# The GPU check on the lent GPU machine: install the wheels that scripts/gpu_wheels.sh put in .whl/
# into /tmp/site (no network there), then run scripts/gpu_check.py on the GPU with the carried
# tokenizers. Arguments go to gpu_check.py. The log and the JSON report go to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run scripts/gpu_wheels.sh where the package index is reachable, and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
log=${OUT:-/tmp}/gpu_check.log
# The check stops starting timings after --budget seconds (300 by default); 450 s is the hard stop.
timeout 450 python3 scripts/gpu_check.py --tokenizers .whl/tokenizers "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
