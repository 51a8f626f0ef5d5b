#!/usr/bin/env bash
# bench/gpu_bench.py on the lent GPU machine: install the wheels of .whl/ (bench/gpu_bench_wheels.sh:
# the GPU check's wheels plus TRL's) into /tmp/site (no network there), then run with the carried
# tokenizers. Arguments go to gpu_bench.py; the log and the JSON report go to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
ls .whl/trl-*.whl >/dev/null 2>&1 || { echo "no TRL wheel in .whl/: run bench/gpu_bench_wheels.sh where the package index is reachable, and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
log=${OUT:-/tmp}/gpu_bench.log
# New cases stop starting after --budget seconds (300 by default); 390 s is the hard stop.
timeout 390 python3 bench/gpu_bench.py --tokenizers .whl/tokenizers "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
