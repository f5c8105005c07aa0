"""Predicts organ masks on new scans, measures them and draws overlays.

  python -m spleen_jax.predict --workdir runs/base \
      --input scans/ 'more/*.dcm' frame.png --output predictions/

Restores the best checkpoint of a trained run (or `--step`) and letterboxes
each frame as training did. Fixed-size batches go through one jitted
function, and the probabilities are mapped back onto the frame's own pixels.
The outputs are masks, overlays and `measurements.csv` / `.json` (see
`predict_outputs`). Files that cannot be read are reported and skipped, and
the exit status is then 1.
"""

import argparse
import dataclasses
import functools
import logging
import os
import pathlib
import sys
import time
from typing import Callable, Iterable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=g-import-not-at-top
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import predict_outputs
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.core import letterbox
from spleen_jax.core import measure
from spleen_jax.core import postprocess
from spleen_jax.core import tta
from spleen_jax.data import imaging_io
from spleen_jax.data import input_pipeline
# pylint: enable=g-import-not-at-top

# A mask within this fraction of the frame's larger side (at least
# MIN_EDGE_MARGIN_PX) of the sector's edge touches it: about 6 px on a
# 640x480 frame, which absorbs the boundary error of a mask predicted at
# 256x256 and mapped back.
EDGE_MARGIN_FRACTION = 0.01
MIN_EDGE_MARGIN_PX = 2.0
SPLEEN = "spleen"
PROGRESS_INTERVAL_S = 5.0

# Maps `[n, h, w, 1]` normalised images to `[n, h, w, classes]` probabilities.
ProbabilitiesFn = Callable[[np.ndarray], jax.Array]


@dataclasses.dataclass(frozen=True)
class Settings:
  """Post-processing and measurement options of one prediction run."""

  largest_component: bool = False
  fill_holes: bool = False
  pixel_spacing_mm: tuple[float, float] | None = None
  splenomegaly_mm: float = 130.0
  save_probabilities: bool = False


@dataclasses.dataclass(frozen=True)
class Failure:
  """An input that produced no output, and why."""

  source: str
  error: str
  frame: int | None = None

  def as_dict(self) -> dict[str, object]:
    return {"file": self.source, "frame": self.frame, "error": self.error}

  def __str__(self) -> str:
    where = f" (frame {self.frame})" if self.frame is not None else ""
    return f"{self.source}{where}: {self.error}"


# The model.


class Predictor:
  """Turns frames into model inputs and model outputs back into frames.

  Attributes:
    config: the run's config.
    class_names: training class names, background first.
    batch_size: frames per call of `probabilities_fn`.
    step: the restored checkpoint's step, if known.
    tta: the test-time augmentation settings, for the report.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               probabilities_fn: ProbabilitiesFn, batch_size: int,
               step: int | None = None, tta_settings: dict | None = None):
    self.config = config
    self.class_names = train.class_names(config)
    self.batch_size = batch_size
    self.step = step
    self.tta = tta_settings or {}
    self._image_size = tuple(config.data.image_size)
    self._normalization = config.data.normalization
    self._probabilities_fn = probabilities_fn
    self._invert = jax.jit(
        functools.partial(letterbox.invert_letterbox, method="linear"),
        static_argnums=1)

  @classmethod
  def from_workdir(cls, workdir: pathlib.Path, *, step: int | None,
                   batch_size: int | None, flip: bool | None,
                   scales: Sequence[float] | None) -> "Predictor":
    """Restores a trained run; None options take the run's `eval` settings.

    Raises:
      FileNotFoundError: the workdir contains no run or no such checkpoint.
      ValueError: the checkpoint does not fit the saved config.
    """
    config = run_config.load_run_config(workdir)
    train.validate_config(config)
    # An abstract template (shapes only) restores the checkpoint without
    # initialising the model and optimizer, which compiles dozens of small
    # functions: about 0.7 s instead of 28 s for the smoke config on a busy
    # 2-core machine.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    template = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=device),
        jax.eval_shape(lambda: train.create_train_state(config)))
    checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
    try:
      state, _ = checkpoints.restore(template, step=step, best=step is None)
    finally:
      checkpoints.close()

    if flip is None:
      flip = bool(config_value(config, "eval.tta_flip", False))
    if scales is None:
      scales = tuple(config_value(config, "eval.tta_scales", (1.0,)))
    if batch_size is None:
      batch_size = int(config.eval.batch_size)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    apply_fn = state.apply_fn
    multiple = 2**config.model.depth

    @jax.jit
    def probabilities(variables, images):
      logits_fn = lambda x: apply_fn(variables, x, train=False)
      return tta.predict_probabilities(logits_fn, images, flip=flip,
                                       scales=tuple(scales),
                                       multiple=multiple)

    return cls(config, functools.partial(probabilities, variables),
               batch_size, step=int(state.step),
               tta_settings={"flip": flip, "scales": list(scales)})

  def prepare(self, pixels: np.ndarray
              ) -> tuple[np.ndarray, letterbox.Letterbox]:
    """Letterboxes and normalises a `[h, w]` uint8 frame as training did."""
    image, _, box = input_pipeline.letterbox_frame(
        pixels[..., None], None, self._image_size)
    scaled = tf.constant(image, tf.float32) / 255.0
    normalized = input_pipeline.normalize(scaled, self._normalization)
    return normalized.numpy(), box

  def predict(self, images: np.ndarray) -> jax.Array:
    """Starts the model on a `[batch_size, h, w, 1]` batch; returns at once."""
    return self._probabilities_fn(images)

  def restore(self, probabilities: jax.Array,
              box: letterbox.Letterbox) -> np.ndarray:
    """Maps `[h, w, classes]` model-size probabilities onto the frame."""
    return np.asarray(self._invert(probabilities, box))


def config_value(config: ml_collections.ConfigDict, key: str, default):
  """Reads a dotted config key, or returns `default` if the run lacks it."""
  node = config
  for part in key.split("."):
    if part not in node:
      return default
    node = node[part]
  return node


# Measuring one frame.


def measure_frame(frame: imaging_io.Frame, name: str, label_map: np.ndarray,
                  probabilities: np.ndarray, class_names: Sequence[str],
                  settings: Settings) -> predict_outputs.FrameResult:
  """Measures every foreground class of a frame's label map."""
  height, width = label_map.shape
  sector = None
  margin = max(MIN_EDGE_MARGIN_PX, EDGE_MARGIN_FRACTION * max(height, width))
  classes = []
  for class_id, class_name in enumerate(class_names):
    if class_id == 0:
      continue
    mask = label_map == class_id
    spacing = imaging_io.resolve_spacing(frame, mask,
                                         settings.pixel_spacing_mm)
    pixels = measure.measure_mask(mask)
    physical = None
    if spacing.known:
      physical = measure.measure_mask(mask, (spacing.row_mm,
                                             spacing.column_mm))
    found = pixels.num_pixels > 0
    if found and sector is None:
      sector = measure.sector_mask(frame.pixels)
    splenomegaly = None
    if class_name == SPLEEN and found and physical is not None:
      splenomegaly = physical.length > settings.splenomegaly_mm
    classes.append(predict_outputs.ClassResult(
        name=class_name, class_id=class_id, spacing=spacing,
        physical=physical, pixels=pixels,
        mean_probability=(float(probabilities[..., class_id][mask].mean())
                          if found else None),
        touches_edge=found and measure.touches_edge(mask, sector, margin),
        splenomegaly=splenomegaly))
  return predict_outputs.FrameResult(
      path=frame.path, index=frame.index, num_frames=frame.num_frames,
      name=name, height=height, width=width, conversion=frame.conversion,
      classes=tuple(classes))


# The prediction loop.


class _NameAllocator:
  """Hands out output names, adding `-2`, `-3`, ... to repeated ones."""

  def __init__(self):
    self._used: set[str] = set()

  def allocate(self, name: str) -> str:
    candidate, count = name, 1
    while candidate in self._used:
      count += 1
      candidate = f"{name}-{count}"
    self._used.add(candidate)
    return candidate


def _read_inputs(files: Sequence[pathlib.Path], failures: list[Failure]
                 ) -> Iterator[tuple[imaging_io.Frame, str]]:
  """Yields `(frame, output name)`; records each unreadable file and goes on."""
  names = _NameAllocator()
  for path in files:
    stem = names.allocate(path.stem)
    try:
      for frame in imaging_io.read_frames(path):
        name = stem
        if frame.num_frames > 1:
          name = names.allocate(f"{stem}_f{frame.index}")
        yield frame, name
    except imaging_io.ImageReadError as error:
      failures.append(Failure(str(path), str(error)))
      logging.error("Skipped %s: %s", path, error)
    # One broken input must not stop a long batch: the error is logged with
    # its traceback and listed in the summary.
    except Exception as error:  # pylint: disable=broad-except
      failures.append(Failure(str(path), f"unexpected error: {error!r}"))
      logging.exception("Skipped %s after an unexpected error.", path)


def _batches(items: Iterable[tuple[imaging_io.Frame, str]],
             predictor: Predictor
             ) -> Iterator[list[tuple[imaging_io.Frame, str, np.ndarray,
                                      letterbox.Letterbox]]]:
  batch = []
  for frame, name in items:
    image, box = predictor.prepare(frame.pixels)
    batch.append((frame, name, image, box))
    if len(batch) == predictor.batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def _stack_padded(batch, batch_size: int) -> np.ndarray:
  """Stacks a batch's images and pads it with zero images to `batch_size`."""
  images = np.stack([image for _, _, image, _ in batch])
  padding = batch_size - len(images)
  return np.pad(images, [[0, padding], [0, 0], [0, 0], [0, 0]])


class _Progress:
  """Logs frames done and frames per second at most every few seconds."""

  def __init__(self, num_files: int):
    self._num_files = num_files
    self._start = time.monotonic()
    self._last = self._start
    self._logged_frames = -1
    self.frames = 0

  @property
  def frames_per_second(self) -> float:
    elapsed = time.monotonic() - self._start
    return self.frames / elapsed if elapsed > 0 else 0.0

  def update(self, frames: int, failures: int, final: bool = False) -> None:
    self.frames += frames
    now = time.monotonic()
    due = now - self._last >= PROGRESS_INTERVAL_S
    if (due or final) and self.frames != self._logged_frames:
      self._last = now
      self._logged_frames = self.frames
      logging.info("Predicted %d frames (%.1f frames/s) from %d input files; "
                   "%d failures so far.", self.frames,
                   self.frames_per_second, self._num_files, failures)


def predict_files(files: Sequence[pathlib.Path], predictor: Predictor,
                  output_dir: pathlib.Path, settings: Settings,
                  failures: list[Failure] | None = None,
                  run_info: dict | None = None) -> dict[str, object]:
  """Predicts, measures and writes every frame of `files`.

  Frames stream through: at most two batches of frames are in memory, and
  the next batch runs on the device while the previous one is measured and
  written. The caller checks for existing outputs first.

  Args:
    files: input files.
    predictor: the restored model.
    output_dir: the output folder.
    settings: post-processing and measurement options.
    failures: failures found before reading (e.g. patterns without a
      match); the list is extended in place.
    run_info: extra entries for the header of `measurements.json`.

  Returns:
    The summary also written to `measurements.json`.
  """
  failures = failures if failures is not None else []
  predict_outputs.make_output_dirs(output_dir, settings.save_probabilities)
  class_names = predictor.class_names
  target = config_value(predictor.config, "train.target_class", SPLEEN)
  target_id = list(class_names).index(target) if target in class_names else 1
  header = {
      "classes": list(class_names),
      "settings": {**dataclasses.asdict(settings),
                   "edge_margin_fraction": EDGE_MARGIN_FRACTION},
      **(run_info or {}),
  }
  tables = predict_outputs.MeasurementFiles(output_dir, header)
  progress = _Progress(len(files))

  def finish(batch, probabilities: jax.Array) -> None:
    done = 0
    for position, (frame, name, _, box) in enumerate(batch):
      try:
        full = predictor.restore(probabilities[position], box)
        label_map = np.argmax(full, axis=-1).astype(np.uint8)
        label_map = postprocess.postprocess_label_map(
            label_map, len(class_names),
            largest_component=settings.largest_component,
            holes=settings.fill_holes)
        result = measure_frame(frame, name, label_map, full, class_names,
                               settings)
        predict_outputs.write_frame_images(
            output_dir, name, label_map, frame.pixels, result,
            full[..., target_id] if settings.save_probabilities else None)
        tables.add(result)
        done += 1
      except OSError as error:
        failures.append(Failure(str(frame.path), f"cannot write the "
                                f"outputs: {error}", frame.index))
        logging.error("Cannot write the outputs of %s frame %d: %s",
                      frame.path, frame.index, error)
      # As for reading: one frame must not stop a long batch.
      except Exception as error:  # pylint: disable=broad-except
        failures.append(Failure(str(frame.path),
                                f"unexpected error: {error!r}", frame.index))
        logging.exception("Failed on %s frame %d.", frame.path, frame.index)
    progress.update(done, len(failures))

  interrupted = False
  try:
    pending = None
    for batch in _batches(_read_inputs(files, failures), predictor):
      probabilities = predictor.predict(
          _stack_padded(batch, predictor.batch_size))
      if pending is not None:
        finish(*pending)
      pending = (batch, probabilities)
    if pending is not None:
      finish(*pending)
  except KeyboardInterrupt:
    interrupted = True
    failures.append(Failure("", "interrupted before all inputs were read"))
    logging.error("Interrupted; writing the measurements done so far.")

  progress.update(0, len(failures), final=True)
  summary = {
      "num_files": len(files),
      "num_frames": progress.frames,
      "num_failures": len(failures),
      "frames_per_second": round(progress.frames_per_second, 2),
      "interrupted": interrupted,
  }
  tables.close(summary, [failure.as_dict() for failure in failures])
  return summary


# Command line.


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m spleen_jax.predict",
      description="Predict organ masks on ultrasound frames with a trained "
      "run, measure them and draw overlays.")

  # Inputs, outputs and the model.
  parser.add_argument("--workdir", required=True, type=pathlib.Path,
                      help="Folder of a trained run (config.json, best/).")
  parser.add_argument(
      "--input", required=True, nargs="+", metavar="PATH",
      help="Input files, folders (searched recursively) or glob patterns: "
      "PNG, JPEG, BMP, TIFF (8 or 16 bit) or DICOM.")
  parser.add_argument("--output", required=True, type=pathlib.Path,
                      help="Output folder for masks/, overlays/, "
                      "probabilities/ and measurements.csv/.json.")
  parser.add_argument("--overwrite", action="store_true",
                      help="Replace outputs of an earlier prediction in "
                      "--output. Without it, the run stops before writing "
                      "if --output contains any.")

  parser.add_argument("--step", type=int, default=None,
                      help="Checkpoint step under checkpoints/ to use; "
                      "default: the best checkpoint.")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="Frames per model call; default: the run's "
                      "eval.batch_size.")

  # Measurements.
  parser.add_argument(
      "--pixel_spacing", type=float, nargs="+", default=None, metavar="MM",
      help="Pixel spacing in mm for inputs that carry none: one value, or "
      "two as row column. DICOM ultrasound regions and Pixel Spacing take "
      "precedence.")
  parser.add_argument("--splenomegaly_mm", type=float, default=130.0,
                      help="Spleen length in mm above which a frame is "
                      "flagged for splenomegaly (default 130, the adult "
                      "upper limit of 13 cm).")
  parser.add_argument("--save_probabilities", action="store_true",
                      help="Also write probabilities/<name>.png: the target "
                      "class's probability as 16-bit PNG (p * 65535).")

  # Post-processing and test-time augmentation.
  for name, text in (
      ("largest_component", "keep only the largest component of each class"),
      ("fill_holes", "fill holes inside each class"),
      ("tta_flip", "average the prediction with that of the mirrored "
       "frame")):
    parser.add_argument(
        f"--{name}", action=argparse.BooleanOptionalAction, default=None,
        help=f"{text[0].upper()}{text[1:]}; default: the run's eval.{name} "
        "if set, else off.")
  return parser


def _check_args(parser: argparse.ArgumentParser,
                args: argparse.Namespace) -> None:
  if args.pixel_spacing is not None:
    if len(args.pixel_spacing) not in (1, 2) or min(args.pixel_spacing) <= 0:
      parser.error(f"--pixel_spacing takes one or two positive values in mm, "
                   f"got {args.pixel_spacing}.")
    if len(args.pixel_spacing) == 1:
      args.pixel_spacing = args.pixel_spacing * 2
  if args.batch_size is not None and args.batch_size < 1:
    parser.error(f"--batch_size must be at least 1, got {args.batch_size}.")
  if args.splenomegaly_mm <= 0:
    parser.error(f"--splenomegaly_mm must be positive, got "
                 f"{args.splenomegaly_mm}.")


def _print_summary(summary: dict[str, object], failures: Sequence[Failure],
                   output_dir: pathlib.Path) -> None:
  print(f"Predicted {summary['num_frames']} frames from "
        f"{summary['num_files']} input files into {output_dir} "
        f"({summary['frames_per_second']} frames/s).")
  if failures:
    print(f"{len(failures)} failures:")
    for failure in failures:
      print(f"  {failure}")


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status (1 if anything failed)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  _check_args(parser, args)

  try:
    config = run_config.load_run_config(args.workdir)
  except FileNotFoundError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1

  # Nothing is written before these checks pass.
  files, problems = imaging_io.find_inputs(args.input, exclude=args.output)
  failures = [Failure(pattern, reason) for pattern, reason in problems]
  for failure in failures:
    logging.error("Input %s", failure)
  if not files:
    print("error: no input files. Check the --input paths.", file=sys.stderr)
    _print_summary({"num_frames": 0, "num_files": 0,
                    "frames_per_second": 0.0}, failures, args.output)
    return 1
  if args.output.exists() and not args.output.is_dir():
    print(f"error: --output {args.output} is a file; name a folder.",
          file=sys.stderr)
    return 1
  existing = predict_outputs.existing_outputs(args.output)
  if existing and not args.overwrite:
    listed = ", ".join(str(p) for p in existing[:3])
    more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
    print(f"error: {args.output} already contains outputs ({listed}{more}). "
          "Pass --overwrite to replace them, or choose another --output.",
          file=sys.stderr)
    return 1

  settings = Settings(
      largest_component=(
          args.largest_component if args.largest_component is not None
          else bool(config_value(config, "eval.largest_component", False))),
      fill_holes=(args.fill_holes if args.fill_holes is not None
                  else bool(config_value(config, "eval.fill_holes", False))),
      pixel_spacing_mm=(tuple(args.pixel_spacing)
                        if args.pixel_spacing else None),
      splenomegaly_mm=args.splenomegaly_mm,
      save_probabilities=args.save_probabilities)
  try:
    predictor = Predictor.from_workdir(
        args.workdir, step=args.step, batch_size=args.batch_size,
        flip=args.tta_flip, scales=None)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1

  logging.info("Predicting %d input files with batches of %d; %s.",
               len(files), predictor.batch_size, settings)
  run_info = {"workdir": str(args.workdir), "step": predictor.step,
              "tta": predictor.tta}
  summary = predict_files(files, predictor, args.output, settings, failures,
                          run_info)
  _print_summary(summary, failures, args.output)
  return 1 if failures else 0


def _configure_process() -> None:
  """Sets up logging and devices when the module runs as a program."""
  # Keep TensorFlow off accelerators: it only resizes frames.
  tf.config.set_visible_devices([], "GPU")
  # Importing orbax installs a root handler, which `force` replaces.
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(message)s")
  # Orbax logs through absl: every file it opens at INFO, and warnings about
  # the read-only checkpoint folders that prediction uses on purpose.
  logging.getLogger("absl").setLevel(logging.ERROR)
  # JAX logs at INFO each accelerator backend it does not find.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


if __name__ == "__main__":
  _configure_process()
  sys.exit(main())
