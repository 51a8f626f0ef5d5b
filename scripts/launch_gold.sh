#!/usr/bin/env bash
# Shared body of the run_gold_distill_*.sh scripts: defaults (each overridable by environment
# variable) turned into config overrides, followed by the caller's own overrides ("$@").
# Where this folder sits decides how it runs:
#   skyrl-train 0.3.1 checkout, at skyrl-train/examples/gold_distillation:
#     uv run --isolated --extra vllm -m examples.gold_distillation.main_gold_distill
#   skyrl 0.4.0 checkout (SkyRL of today), at examples/train/gold_distillation:
#     uv run --isolated --extra fsdp -m examples.train.gold_distillation.main_gold_distill
#   anywhere else: the installed package gold_distillation, through $PYTHON, on the SkyRL it finds.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
parent="$(dirname "$here")"

: "${TEACHER:?set TEACHER}" "${STUDENT:?set STUDENT}"
: "${DATA_DIR:=$HOME/data/dapo}"
: "${NUM_GPUS:=4}"
: "${GOLD_MODE:=reward}"
: "${LOGGER:=wandb}"
: "${RUN_NAME:=gold_$(basename "$STUDENT")_from_$(basename "$TEACHER")}"
# Each run resumes (trainer.resume_mode=latest) and exports in folders of its own.
: "${CKPT_DIR:=$HOME/ckpts/$RUN_NAME}"
: "${EXPORT_DIR:=$HOME/exports/$RUN_NAME}"
: "${PYTHON:=python}"

if [[ "$(basename "$parent")" == "examples" && -f "$parent/../pyproject.toml" ]]; then
  cd "$parent/.."
  skyrl=skyrl031
  launcher=(uv run --isolated --extra vllm -m examples.gold_distillation.main_gold_distill)
elif [[ "$(basename "$parent")" == "train" && "$(basename "$(dirname "$parent")")" == "examples" && -f "$parent/../../pyproject.toml" ]]; then
  cd "$parent/../.."
  skyrl=skyrl040
  launcher=(uv run --isolated --extra fsdp -m examples.train.gold_distillation.main_gold_distill)
else
  skyrl="$("$PYTHON" -c 'from gold_distillation.adapters import require_skyrl; print(require_skyrl())')"
  launcher=("$PYTHON" -m gold_distillation.main_gold_distill)
fi

# The settings below use skyrl-train 0.3.1's key names; skyrl 0.4.0 renamed a few
# (adapters/skyrl040/config.py RENAMED_KEYS; tests/test_launch.py checks the two lists agree)
# and calls fsdp2 fsdp.
declare -A RENAMED_040=(
  [trainer.use_sample_packing]=trainer.remove_microbatch_padding
  [generator.num_inference_engines]=generator.inference_engine.num_engines
  [generator.inference_engine_tensor_parallel_size]=generator.inference_engine.tensor_parallel_size
  [generator.backend]=generator.inference_engine.backend
  [generator.run_engines_locally]=generator.inference_engine.run_engines_locally
)

settings=(
  data.train_data="['$DATA_DIR/dapo-math-17k-cleaned.parquet']"
  data.val_data="['$DATA_DIR/aime-2024-cleaned.parquet']"
  environment.env_class=aime
  trainer.policy.model.path="$STUDENT"
  trainer.ref.model.path="$TEACHER"
  gold.mode="$GOLD_MODE"
  trainer.placement.colocate_all=true
  trainer.strategy=fsdp2
  trainer.placement.policy_num_gpus_per_node="$NUM_GPUS"
  trainer.placement.ref_num_gpus_per_node="$NUM_GPUS"
  generator.num_inference_engines="$NUM_GPUS"
  generator.inference_engine_tensor_parallel_size=1
  generator.backend=vllm
  generator.run_engines_locally=true
  generator.n_samples_per_prompt=8
  generator.sampling_params.max_generate_length=4096
  generator.sampling_params.temperature=1.0
  generator.eval_sampling_params.temperature=0.6
  generator.eval_n_samples_per_prompt=8
  trainer.max_prompt_length=1024
  trainer.epochs=5
  trainer.train_batch_size=64
  trainer.policy_mini_batch_size=64
  trainer.micro_forward_batch_size_per_gpu=2
  trainer.micro_train_batch_size_per_gpu=2
  trainer.policy.optimizer_config.lr=1e-6
  trainer.eval_interval=10
  trainer.eval_before_train=true
  trainer.ckpt_interval=20
  trainer.logger="$LOGGER"
  trainer.project_name=gold_distillation
  trainer.run_name="$RUN_NAME"
  trainer.ckpt_path="$CKPT_DIR"
  trainer.export_path="$EXPORT_DIR"
)
if [[ "$skyrl" == skyrl040 ]]; then
  for i in "${!settings[@]}"; do
    key="${settings[$i]%%=*}" value="${settings[$i]#*=}"
    [[ -n "${RENAMED_040[$key]:-}" ]] && settings[$i]="${RENAMED_040[$key]}=$value"
    [[ "$key" == trainer.strategy && "$value" == fsdp2 ]] && settings[$i]="trainer.strategy=fsdp"
  done
fi

exec "${launcher[@]}" "${settings[@]}" "$@"
