#!/usr/bin/env bash
# Train on one GPU of this machine. Usage:
#   launch/train_gpu.sh WORKDIR MANUAL_DIR [--config.FIELD=VALUE ...]
# Needs a CUDA build of jaxlib: pip install -e . && pip install "jax[cuda12]==0.10.2"
set -euo pipefail
workdir=${1:?usage: launch/train_gpu.sh WORKDIR MANUAL_DIR [overrides]}
manual_dir=${2:?usage: launch/train_gpu.sh WORKDIR MANUAL_DIR [overrides]}
shift 2
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
# Let JAX allocate on demand instead of taking 75% of the GPU memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec python -m spleen_jax.main --config configs/base.py --workdir "$workdir" \
    --config.data.manual_dir="$manual_dir" "$@"
