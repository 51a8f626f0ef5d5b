#!/usr/bin/env bash
# Prepare the wheel folder (git-ignored) for scripts/gpu_check.py on the lent GPU machine: Python 3.12
# wheels of the distributions a list names, each at the version a CPU environment has (what CI tests),
# and a copy of the two real tokenizers the check uses.
#   031 (default): scripts/gpu_wheels.txt    at .venv's versions (skyrl-train 0.3.1)  -> .whl/
#   040:           scripts/gpu_wheels040.txt at .venv-skyrl040's versions (skyrl 0.4.0) -> .whl040/
# Run here (needs the package index and `make env`), in the repository the device tool sends, then
# `run` with carry [".whl"] or [".whl040"] (the commands are in the header of scripts/gpu_check.py).
# It must stay under 60 MB: the device tool carries at most 64 MiB per call, repository included.
#   bash scripts/gpu_wheels.sh [031|040] [TOKENIZERS_DIR]   # default ../shared/tokenizers
#   CPU_PYTHON=/path/to/venv/bin/python bash scripts/gpu_wheels.sh 040   # another CPU environment
set -euo pipefail
cd "$(dirname "$0")/.."
SKYRL=031
case "${1:-}" in 031|040) SKYRL=$1; shift ;; esac
if [ "$SKYRL" = 040 ]; then
  LIST=scripts/gpu_wheels040.txt; WHL=.whl040; CPU_PYTHON=${CPU_PYTHON:-.venv-skyrl040/bin/python}
else
  LIST=scripts/gpu_wheels.txt; WHL=.whl; CPU_PYTHON=${CPU_PYTHON:-.venv/bin/python}
fi
TOKENIZERS_DIR=${1:-${GOLD_TOKENIZERS_DIR:-../shared/tokenizers}}
PY=${PYTHON:-python3}
[ -x "$CPU_PYTHON" ] || { echo "no CPU environment at $CPU_PYTHON: run scripts/setup_env.sh (skyrl040 for 040), or set CPU_PYTHON" >&2; exit 1; }

# name==version of each listed distribution, as installed in the CPU environment.
pins=$("$CPU_PYTHON" - "$LIST" <<'PYEOF'
import sys
from importlib import metadata

for line in open(sys.argv[1]):
    name = line.split("#")[0].strip()
    if name:
        print(f"{name}=={metadata.version(name)}")
PYEOF
)
rm -rf "$WHL" && mkdir -p "$WHL/tokenizers"
binary=$(echo "$pins" | grep -v '^antlr4-python3-runtime==')
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d "$WHL" $binary
# antlr4-python3-runtime exists only as a source archive; its wheel is pure Python, so building it here is exact.
antlr=$(echo "$pins" | grep '^antlr4-python3-runtime==' || true)
[ -z "$antlr" ] || $PY -m pip wheel -q --no-deps --no-binary=:all: -w "$WHL" "$antlr"

# Tokenizer folders, JSON re-serialized without indentation (same content; Llama 3.1: 17 MB -> 7 MB).
for name in qwen2.5-instruct llama3.1-instruct; do
  src="$TOKENIZERS_DIR/$name"
  [ -f "$src/tokenizer.json" ] || { echo "missing tokenizer $src (pass the tokenizers folder as the first argument)" >&2; exit 1; }
  mkdir -p "$WHL/tokenizers/$name"
  for f in "$src"/*; do
    case "$f" in
      *.json) $PY -c 'import json,sys; json.dump(json.load(open(sys.argv[1], encoding="utf-8")), open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False, separators=(",", ":"))' "$f" "$WHL/tokenizers/$name/$(basename "$f")" ;;
      *) cp "$f" "$WHL/tokenizers/$name/" ;;
    esac
  done
done

echo "$pins" | tr '\n' ' ' | sed 's/^/carried: /'; echo
echo "wheels: $(ls -1 "$WHL"/*.whl | wc -l)   total: $(du -sh "$WHL" | cut -f1)"
total=$(du -sk "$WHL" | cut -f1)
if [ "$total" -gt 61440 ]; then
  echo "error: $WHL is ${total} KiB, over the 60 MB budget" >&2
  exit 1
fi
