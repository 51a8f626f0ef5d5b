#!/usr/bin/env bash
# GOLD on-policy distillation: Qwen2.5-7B-Instruct teacher -> Llama-3.2-1B-Instruct student on DAPO
# math (prepare it with skyrl-train's examples/algorithms/dapo/prepare_dapo_data.sh), env `aime`.
#
#   bash run_gold_distill_qwen_to_llama.sh [hydra overrides...]
#   STUDENT=meta-llama/Llama-3.1-8B-Instruct NUM_GPUS=8 bash run_gold_distill_qwen_to_llama.sh gold.mode=loss
#   bash run_gold_distill_qwen_to_llama.sh --cfg job     # print the resolved config (no GPU needed)
#
# Every default below can be set by environment variable; trailing arguments are hydra overrides.
set -euo pipefail
export TEACHER="${TEACHER:-Qwen/Qwen2.5-7B-Instruct}"
export STUDENT="${STUDENT:-meta-llama/Llama-3.2-1B-Instruct}"
exec bash "$(dirname "$0")/scripts/launch_gold.sh" "$@"
