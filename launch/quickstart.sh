#!/usr/bin/env bash
# Train, evaluate and predict end to end on the simulated us_phantom frames:
# no data folder needed, a few minutes on 2 CPU cores. Usage:
#   launch/quickstart.sh [RUN_DIR]      (default: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/quickstart}
python=.venv/bin/python
[ -x "$python" ] || python=python3
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
mkdir -p "$(dirname "$run")"

# 1. Simulate the phantom dataset (first run only), train, and evaluate the
#    best checkpoint on the validation frames.
"$python" -m spleen_jax.main --config configs/phantom.py --workdir "$run" \
    --mode=train_and_evaluate > "$run.log" 2>&1 || {
  echo "Training failed; the log is $run.log" >&2; tail -20 "$run.log" >&2
  exit 1
}

# 2. Simulate four new frames (seeds no split uses) as PNG files, with their
#    true spleen length, to play the part of a user's scans.
scans="$run/scans"
if [ ! -d "$scans" ]; then
  "$python" - "$scans" <<'PYTHON'
import pathlib, sys
from PIL import Image
from spleen_jax.data import phantom

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True)
lines = ["file,spleen_length_mm,pixel_spacing_mm"]
for seed in range(900_000, 900_004):
  frame = phantom.simulate_frame(seed)
  name = f"scan_{seed}.png"
  Image.fromarray(frame.image).save(out / name)
  lines.append(f"{name},{frame.spleen_length_mm:.1f},"
               f"{frame.pixel_spacing_mm[0]:.4f}")
(out / "truth.csv").write_text("\n".join(lines) + "\n")
PYTHON
fi

# 3. Predict masks, overlays and spleen size on those frames.
"$python" -m spleen_jax.predict --workdir "$run" --input "$scans"/*.png \
    --output "$run/predictions" --overwrite

echo
echo "Training log:        $run.log (TensorBoard: tensorboard --logdir $run)"
echo "Evaluation report:   $run/eval/"
echo "Predictions:         $run/predictions/ (measurements.csv, masks/, overlays/)"
echo "True spleen lengths: $scans/truth.csv"
