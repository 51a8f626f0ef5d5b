#!/usr/bin/env bash
# Prepare .whl/ (git-ignored) for scripts/gpu_check.py on the lent GPU machine: Python 3.12 wheels of
# the distributions named in scripts/gpu_wheels.txt, each at the version the CPU environment has
# (.venv: what CI tests), and a copy of the two real tokenizers the check uses.
# Run here (needs the package index and `make env`), in the repository the device tool sends, then
# `run` with carry [".whl"] (the command is in the header of scripts/gpu_check.py). It must stay under
# 60 MB: the device tool carries at most 64 MiB per call, repository included.
#   bash scripts/gpu_wheels.sh [TOKENIZERS_DIR]   # default ../shared/tokenizers
#   CPU_PYTHON=/path/to/.venv/bin/python bash scripts/gpu_wheels.sh   # another CPU environment
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENIZERS_DIR=${1:-${GOLD_TOKENIZERS_DIR:-../shared/tokenizers}}
CPU_PYTHON=${CPU_PYTHON:-.venv/bin/python}
PY=${PYTHON:-python3}
[ -x "$CPU_PYTHON" ] || { echo "no CPU environment at $CPU_PYTHON: run make env, or set CPU_PYTHON" >&2; exit 1; }

# name==version of each listed distribution, as installed in the CPU environment.
pins=$("$CPU_PYTHON" - scripts/gpu_wheels.txt <<'PYEOF'
import sys
from importlib import metadata

for line in open(sys.argv[1]):
    name = line.split("#")[0].strip()
    if name:
        print(f"{name}=={metadata.version(name)}")
PYEOF
)
rm -rf .whl && mkdir -p .whl/tokenizers
binary=$(echo "$pins" | grep -v '^antlr4-python3-runtime==')
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d .whl $binary
# antlr4-python3-runtime exists only as a source archive; its wheel is pure Python, so building it here is exact.
$PY -m pip wheel -q --no-deps --no-binary=:all: -w .whl "$(echo "$pins" | grep '^antlr4-python3-runtime==')"

# Tokenizer folders, JSON re-serialized without indentation (same content; Llama 3.1: 17 MB -> 7 MB).
for name in qwen2.5-instruct llama3.1-instruct; do
  src="$TOKENIZERS_DIR/$name"
  [ -f "$src/tokenizer.json" ] || { echo "missing tokenizer $src (pass the tokenizers folder as the first argument)" >&2; exit 1; }
  mkdir -p ".whl/tokenizers/$name"
  for f in "$src"/*; do
    case "$f" in
      *.json) $PY -c 'import json,sys; json.dump(json.load(open(sys.argv[1], encoding="utf-8")), open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False, separators=(",", ":"))' "$f" ".whl/tokenizers/$name/$(basename "$f")" ;;
      *) cp "$f" ".whl/tokenizers/$name/" ;;
    esac
  done
done

echo "$pins" | tr '\n' ' ' | sed 's/^/carried: /'; echo
echo "wheels: $(ls -1 .whl/*.whl | wc -l)   total: $(du -sh .whl | cut -f1)"
total=$(du -sk .whl | cut -f1)
if [ "$total" -gt 61440 ]; then
  echo "error: .whl is ${total} KiB, over the 60 MB budget" >&2
  exit 1
fi
