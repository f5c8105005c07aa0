#!/usr/bin/env bash
# Train data-parallel on every GPU of this machine: JAX takes all visible
# devices, and the global batch (train.batch_size) is split over them, so it
# must be a multiple of the GPU count. Usage:
#   launch/train_node.sh WORKDIR MANUAL_DIR [--config.FIELD=VALUE ...]
set -euo pipefail
workdir=${1:?usage: launch/train_node.sh WORKDIR MANUAL_DIR [overrides]}
manual_dir=${2:?usage: launch/train_node.sh WORKDIR MANUAL_DIR [overrides]}
shift 2
num_gpus=$(nvidia-smi --list-gpus | wc -l)
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec python -m spleen_jax.main --config configs/base.py --workdir "$workdir" \
    --config.data.manual_dir="$manual_dir" \
    --config.train.batch_size=$((8 * num_gpus)) \
    --config.eval.batch_size=$((8 * num_gpus)) "$@"
