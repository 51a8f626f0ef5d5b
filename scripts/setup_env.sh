#!/usr/bin/env bash
# Creates (or refreshes) one of the project's two CPU environments:
#   scripts/setup_env.sh            .venv: Python 3.11, torch 2.13.0 CPU build, skyrl-train 0.3.1, transformers 4.57.6
#   scripts/setup_env.sh skyrl040   .venv-skyrl040: Python 3.12, torch 2.13.0 default build (no CPU wheel for
#                                   3.12 in the reachable index; it runs on CPU), skyrl 0.4.0, transformers 5.16.1
# SkyRL is installed alone (--no-deps): its declared dependencies and extras pull vllm, flash-attn, jax and
# CUDA pins; the packages its modules import on CPU come from the requirement file.
# Idempotent: a stamp with the hash of the files that define the environment skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-skyrl031}" in
  skyrl031)
    PYTHON=${PYTHON:-python3.11}; VENV=${VENV:-.venv}
    requirements=requirements/dev.txt; constraints=requirements/constraints.txt
    # skyrl-train declares Requires-Python ==3.12.*; it runs on 3.11, where the CPU torch wheel exists.
    skyrl=(--ignore-requires-python skyrl-train==0.3.1) ;;
  skyrl040)
    PYTHON=${PYTHON040:-python3.12}; VENV=${VENV040:-.venv-skyrl040}
    requirements=requirements/skyrl040.txt; constraints=requirements/constraints-skyrl040.txt
    skyrl=(skyrl==0.4.0) ;;
  *) echo "usage: $0 [skyrl031|skyrl040]" >&2; exit 2 ;;
esac

stamp="$VENV/.gold-env-stamp"
want=$(cat "$requirements" "$constraints" scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

# A pyenv shim answers only for the versions pyenv has selected; fall back to the newest installed
# pyenv version with that name (e.g. python3.12 -> 3.12.x).
if ! "$PYTHON" --version >/dev/null 2>&1 && command -v pyenv >/dev/null; then
  version=$(pyenv versions --bare | grep -E "^${PYTHON#python}(\.|$)" | sort -V | tail -1 || true)
  [[ -n "$version" ]] && PYTHON=$(pyenv root)/versions/$version/bin/$PYTHON
fi

echo "[setup] creating $VENV with $($PYTHON --version)"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints")
"${pip[@]}" -r "$requirements"
"${pip[@]}" --no-deps "${skyrl[@]}"
"${pip[@]}" --no-deps -e .
echo "$want" > "$stamp"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
