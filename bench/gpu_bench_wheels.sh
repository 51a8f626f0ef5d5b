#!/usr/bin/env bash
# .whl/ for bench/gpu_bench.sh: the GPU check's wheels and tokenizers (scripts/gpu_wheels.sh) plus
# the TRL wheel the GPU rows compare against (pure Python, no dependencies added: what
# trl.experimental.gold imports at module level is in the GPU image or in .whl/ already).
set -euo pipefail
cd "$(dirname "$0")/.."
TRL_NEW=${TRL_NEW:-1.16.0}
bash scripts/gpu_wheels.sh "$@"
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: -d .whl "trl==$TRL_NEW"
du -sh .whl
