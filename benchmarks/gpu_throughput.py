"""Training and inference throughput of the U-Net on one accelerator.

Needs only jax, flax, optax and numpy (no TensorFlow), so it runs on a bare
GPU machine. Reports images/s and model FLOP utilisation (MFU): the FLOPs of
one step as counted by XLA's cost analysis, times steps/s, over the chip's
peak. Example on an H200:

  python benchmarks/gpu_throughput.py --dtype=bfloat16 --batch_size=64
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from spleen_jax.core import model as model_lib  # pylint: disable=g-import-not-at-top
from spleen_jax.core import steps  # pylint: disable=g-import-not-at-top


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def _median_seconds(function, args, num_steps: int) -> float:
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--depth", type=int, default=4)
  parser.add_argument("--base_features", type=int, default=16)
  parser.add_argument("--upsampling", default="pixel_shuffle",
                      choices=model_lib.UPSAMPLINGS)
  parser.add_argument("--dtype", default="bfloat16",
                      choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=50,
                      help="timed steps after 3 warm-up steps")
  parser.add_argument("--peak_tflops", type=float, default=989.0,
                      help="chip peak in TFLOP/s for the MFU; 989 is the "
                      "H100/H200 SXM dense bf16 figure of NVIDIA's data sheet")
  args = parser.parse_args()

  net = model_lib.UNet(num_classes=2, depth=args.depth,
                       base_features=args.base_features,
                       upsampling=args.upsampling, dropout_rate=0.1,
                       dtype=jnp.dtype(args.dtype))
  size = args.image_size
  optimizer = steps.make_optimizer(
      steps.make_learning_rate_schedule("constant", 1e-3, 1),
      gradient_clip_norm=1.0)
  state = steps.create_train_state(net, jax.random.PRNGKey(0),
                                   (size, size, 1), optimizer)
  rng = np.random.default_rng(0)
  batch = {
      "image": jnp.asarray(rng.normal(size=(args.batch_size, size, size, 1)),
                           jnp.float32),
      "label": jnp.asarray(rng.random((args.batch_size, size, size)) > 0.95,
                           jnp.int32),
  }

  train_step = jax.jit(steps.train_step, donate_argnums=0)
  infer_step = jax.jit(steps.predict_logits)
  start = time.perf_counter()
  train_compiled = train_step.lower(state, batch).compile()
  infer_compiled = infer_step.lower(state, batch["image"]).compile()
  compile_seconds = time.perf_counter() - start

  # Warm up, then time. The train step donates its state, so feed it back.
  for _ in range(3):
    state, _ = train_step(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(args.steps):
    begin = time.perf_counter()
    state, outputs = train_step(state, batch)
    jax.block_until_ready(outputs)
    times.append(time.perf_counter() - begin)
  train_seconds = statistics.median(times)
  infer_seconds = _median_seconds(infer_step, (state, batch["image"]),
                                  args.steps)

  train_flops = _flops(train_compiled)
  infer_flops = _flops(infer_compiled)
  peak = args.peak_tflops * 1e12
  result = {
      "device": str(jax.devices()[0].device_kind),
      "dtype": args.dtype,
      "batch_size": args.batch_size,
      "image_size": size,
      "compile_seconds": round(compile_seconds, 1),
      "train_images_per_second": round(args.batch_size / train_seconds, 1),
      "infer_images_per_second": round(args.batch_size / infer_seconds, 1),
      "train_gflops_per_step": round(train_flops / 1e9, 2),
      "train_mfu": round(train_flops / train_seconds / peak, 4),
      "infer_mfu": round(infer_flops / infer_seconds / peak, 4),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
