# Entry points. Each target sets up the CPU environment (.venv) first; the set-up is idempotent.
PY := .venv/bin/python

.PHONY: env test demo config

env:
	bash scripts/setup_env.sh

# The whole test suite (this is what .ci/run calls).
test: env
	$(PY) -m pytest -q tests

# Tiny cross-tokenizer GOLD distillation on CPU (the embedded default; see README).
demo: env
	$(PY) -m gold_distillation.cpu_demo $(ARGS)

# Benchmarks against TRL's GOLD (bench/README.md): creates the TRL peer venvs on first use, then
# prints JSON lines and a summary table and writes them to bench/results/ (about 15 min on 2 cores).
.PHONY: bench
bench: env
	bash bench/setup_peers.sh
	$(PY) bench/run.py $(ARGS)

# Learning benchmark (bench/learning.py, real Qwen2.5 / Llama 3.1 tokenizers from ../shared/tokenizers):
# every method on multi-digit addition, three seeds; a table and curves in bench/results/learning/.
.PHONY: learn
learn: env
	$(PY) bench/learning.py $(ARGS)
