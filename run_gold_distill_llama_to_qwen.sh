#!/usr/bin/env bash
# GOLD on-policy distillation: Llama-3.1-8B-Instruct teacher -> Qwen2.5-1.5B-Instruct student on DAPO
# math (prepare it with skyrl-train's examples/algorithms/dapo/prepare_dapo_data.sh), env `aime`.
#
#   bash run_gold_distill_llama_to_qwen.sh [overrides...]
#   GOLD_MODE=loss bash run_gold_distill_llama_to_qwen.sh gold.hybrid=true
#   bash run_gold_distill_llama_to_qwen.sh --cfg job     # print the resolved config (no GPU needed)
#
# Every default below can be set by environment variable; trailing arguments are config overrides
# (key=value, in the names of the installed SkyRL). Runs on skyrl-train 0.3.1 and skyrl 0.4.0 (see README).
set -euo pipefail
export TEACHER="${TEACHER:-meta-llama/Llama-3.1-8B-Instruct}"
export STUDENT="${STUDENT:-Qwen/Qwen2.5-1.5B-Instruct}"
exec bash "$(dirname "$0")/scripts/launch_gold.sh" "$@"
