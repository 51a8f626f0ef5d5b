# Entry points. Each target sets up the CPU environments it needs first; the set-up is idempotent.
PY := .venv/bin/python
PY040 := .venv-skyrl040/bin/python

.PHONY: env env040 test demo config

env:
	bash scripts/setup_env.sh

env040:
	bash scripts/setup_env.sh skyrl040

# The whole test suite in both environments: skyrl-train 0.3.1 + transformers 4 (.venv), then
# skyrl 0.4.0 + transformers 5 (.venv-skyrl040). Both always run; either failing fails the target
# (this is what .ci/run calls).
test: env env040
	@status=0; \
	echo "== tests: skyrl-train 0.3.1, transformers 4 (.venv)"; $(PY) -m pytest -q tests || status=1; \
	echo "== tests: skyrl 0.4.0, transformers 5 (.venv-skyrl040)"; $(PY040) -m pytest -q tests || status=1; \
	exit $$status

# Tiny cross-tokenizer GOLD distillation on CPU (the embedded default; see README).
demo: env
	$(PY) -m gold_distillation.cpu_demo $(ARGS)

# Benchmarks against TRL's GOLD (bench/README.md): creates the TRL peer venvs on first use, then
# prints JSON lines and a summary table and writes them to bench/results/ (about 15 min on 2 cores).
.PHONY: bench
bench: env
	bash bench/setup_peers.sh
	$(PY) bench/run.py $(ARGS)
