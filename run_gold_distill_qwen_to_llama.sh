#!/usr/bin/env bash
# GOLD on-policy distillation: Qwen2.5-7B-Instruct teacher -> Llama-3.2-1B-Instruct student on DAPO
# math (prepare it with skyrl-train's examples/algorithms/dapo/prepare_dapo_data.sh), env `aime`.
#
#   bash run_gold_distill_qwen_to_llama.sh [overrides...]
#   STUDENT=meta-llama/Llama-3.1-8B-Instruct NUM_GPUS=8 bash run_gold_distill_qwen_to_llama.sh gold.mode=loss
#   bash run_gold_distill_qwen_to_llama.sh --cfg job     # print the resolved config (no GPU needed)
#
# Every default below can be set by environment variable; trailing arguments are config overrides
# (key=value, in the names of the installed SkyRL). Runs on skyrl-train 0.3.1 and skyrl 0.4.0 (see README).
set -euo pipefail
export TEACHER="${TEACHER:-Qwen/Qwen2.5-7B-Instruct}"
export STUDENT="${STUDENT:-meta-llama/Llama-3.2-1B-Instruct}"
exec bash "$(dirname "$0")/scripts/launch_gold.sh" "$@"
