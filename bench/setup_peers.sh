#!/usr/bin/env bash
# Creates the peer environments for the benchmarks: one Python 3.11 venv per TRL release under
# bench/.venvs/, with torch pinned to the local CPU wheel (an unpinned torch resolves to a CUDA build
# of several GB). TRL 0.25.1 is the last release whose GOLD alignment decodes every prefix; the
# newest release with trl.experimental.gold walks byte offsets. Idempotent (stamp per venv).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
TRL_OLD=${TRL_OLD:-0.25.1}
TRL_NEW=${TRL_NEW:-1.16.0}

make_peer() {
  local version=$1 venv=.venvs/trl-$1
  shift
  # Extra requirements: trl.experimental.gold imports requests (vLLM client) without declaring it.
  if [[ -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$version" ]]; then
    return 0
  fi
  echo "[bench] creating $venv (trl==$version)"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0+cpu" "trl==$version" "$@" \
    2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import trl.experimental.gold, trl, torch, transformers; print('[bench] trl', trl.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "$version" > "$venv/.stamp"
}

# 0.25.1 with the transformers of its time (the project's pin); the newest TRL with the newest.
make_peer "$TRL_OLD" "transformers==4.57.6" requests
make_peer "$TRL_NEW" requests
