#!/usr/bin/env bash
# Creates (or refreshes) the project's CPU environment in .venv: Python 3.11, torch pinned to the
# CPU build, skyrl-train 0.3.1 without its GPU dependencies, and the packages its modules need.
# Idempotent: a stamp with the hash of the requirement files skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
stamp="$VENV/.gold-env-stamp"
want=$(cat requirements/*.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "[setup] creating $VENV with $($PYTHON --version)"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt)
"${pip[@]}" -r requirements/dev.txt
# skyrl-train declares Requires-Python ==3.12.* and GPU-only dependencies; on the 3.11 CPU
# environment it is installed alone, its CPU-importable dependencies come from dev.txt.
"${pip[@]}" --no-deps --ignore-requires-python skyrl-train==0.3.1
"${pip[@]}" --no-deps -e .
echo "$want" > "$stamp"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
