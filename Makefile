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
