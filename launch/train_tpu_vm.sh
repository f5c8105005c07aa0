#!/usr/bin/env bash
# Train on a Cloud TPU VM or pod slice: runs the same command on every worker
# of the TPU; jax.distributed.initialize() (--distributed) finds the other
# workers on its own. Run from a machine with gcloud set up, with the repository
# and the data copied to every worker (same paths), e.g.:
#
#   launch/train_tpu_vm.sh my-tpu us-central2-b gs://bucket/runs/base /data/abdominal_us
#
set -euo pipefail
tpu=${1:?usage: launch/train_tpu_vm.sh TPU_NAME ZONE WORKDIR MANUAL_DIR [overrides]}
zone=${2:?usage: launch/train_tpu_vm.sh TPU_NAME ZONE WORKDIR MANUAL_DIR [overrides]}
workdir=${3:?usage: launch/train_tpu_vm.sh TPU_NAME ZONE WORKDIR MANUAL_DIR [overrides]}
manual_dir=${4:?usage: launch/train_tpu_vm.sh TPU_NAME ZONE WORKDIR MANUAL_DIR [overrides]}
shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  cd ~/spleen_jax &&
  python -m spleen_jax.main --distributed --config configs/base.py \
      --workdir $workdir --config.data.manual_dir=$manual_dir \
      --config.model.dtype=bfloat16 $*"
