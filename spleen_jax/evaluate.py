"""Evaluation of a trained run in a new process: restore, score, report.

Scores `eval.split` (or the frames of `eval.folder`) with the best checkpoint
(or `eval.step`) and writes under `WORKDIR/eval/<source>/`, where `<source>`
is the split name or `folder_<folder name>`:
  metrics.json: scores pooled over all pixels of the letterboxed frames, as
    validation during training computes them, loss included.
  per_image.csv: one row per frame and foreground class, scored at the
    frame's original resolution after the configured post-processing and
    test-time augmentation (`evaluation/frame_metrics.py` defines the
    metrics and the policy for empty masks).
  summary.json: per class, the mean, standard deviation, median and bootstrap
    95% interval of each metric, with frame counts. It also compares the
    target class's mean Dice and HD95 across post-processing variants on the
    same frames, and gives the threshold curve's average precision and best
    threshold.
  threshold_curve.csv: pooled precision, recall and Dice of the target class
    per probability threshold.
  figures/*.png: training curves, example frames, the worst frames by Dice,
    and the threshold curves.
Everything is computed before the first file is written, and each file is
replaced through a temporary file and a rename, so an interrupted evaluation
leaves the previous report intact.
"""

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.core import postprocess
from spleen_jax.core import sharding
from spleen_jax.core import steps
from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline
from spleen_jax.data import sources as sources_lib
from spleen_jax.evaluation import figures
from spleen_jax.evaluation import folder as folder_lib
from spleen_jax.evaluation import frame_metrics
from spleen_jax.evaluation import inference
from spleen_jax.evaluation import report as report_lib

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
THRESHOLD_FILE = "threshold_curve.csv"
FIGURES_DIR = "figures"
SPLITS = ("train", "validation", "test")
CONFIGURED = "configured"
SPLEEN = "spleen"


@dataclasses.dataclass(frozen=True)
class Variant:
  """Test-time augmentation and post-processing of one prediction variant."""

  tta_flip: bool = False
  tta_scales: tuple[float, ...] = (1.0,)
  largest_component: bool = False
  fill_holes: bool = False

  @property
  def tta_key(self) -> tuple[bool, tuple[float, ...]]:
    return self.tta_flip, self.tta_scales


@dataclasses.dataclass
class Source:
  """The frames under evaluation and where they came from."""

  name: str
  frames: input_pipeline.Frames
  location: str
  split: str | None = None
  subjects: tuple[str, ...] = ()


def variants(config: ml_collections.ConfigDict) -> dict[str, Variant]:
  """Lists the variants that summary.json compares, plus the configured one.

  `all` combines the mirror, the configured zoom factors and both
  post-processing steps; `tta_scales` appears only when zoom factors other
  than (1.0,) are configured.
  """
  scales = tuple(float(s) for s in config.eval.tta_scales)
  result = {
      "plain": Variant(),
      "largest_component": Variant(largest_component=True),
      "fill_holes": Variant(fill_holes=True),
      "tta_flip": Variant(tta_flip=True),
  }
  if scales != (1.0,):
    result["tta_scales"] = Variant(tta_scales=scales)
  result["all"] = Variant(True, scales, True, True)
  result[CONFIGURED] = Variant(
      bool(config.eval.tta_flip), scales, bool(config.eval.largest_component),
      bool(config.eval.fill_holes))
  return result


def target_class(config: ml_collections.ConfigDict) -> str:
  """Names the class of the variant comparison, threshold curve and figures.

  `eval.target_class` if set, else `train.target_class`. When training
  follows the mean Dice (`train.target_class=mean`), it is the spleen if
  `data.classes` contains it, else the first class.

  Raises:
    ValueError: `eval.target_class` is not one of `data.classes`.
  """
  classes = tuple(config.data.classes)
  target = config.eval.get("target_class", "") or config.train.target_class
  if target == "mean":
    return SPLEEN if SPLEEN in classes else classes[0]
  if target not in classes:
    raise ValueError(
        f"eval.target_class {target!r} is not in data.classes {classes}: set "
        "--config.eval.target_class to one of them.")
  return target


def _check_eval_config(config: ml_collections.ConfigDict) -> None:
  if not config.eval.folder and config.eval.split not in SPLITS:
    raise ValueError(f"Unknown eval.split {config.eval.split!r}: choose from "
                     f"{', '.join(SPLITS)}, or set eval.folder.")
  scales = tuple(config.eval.tta_scales)
  if not scales or any(s <= 0 for s in scales):
    raise ValueError(f"eval.tta_scales {scales} must list positive zoom "
                     "factors, e.g. (1.0,) for none or (0.75, 1.0, 1.25).")


def check_checkpoint(config: ml_collections.ConfigDict,
                     workdir: pathlib.Path) -> None:
  """Raises FileNotFoundError early if the run has no checkpoint to evaluate.

  `RunCheckpoints.restore` checks the exact step later. This check runs before
  the frames are loaded, so a run without checkpoints fails at once.
  """
  checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
  try:
    best_step, latest_step = checkpoints.best_step, checkpoints.latest_step
  finally:
    checkpoints.close()
  if best_step is not None or config.eval.step >= 0:
    return
  if latest_step is None:
    raise FileNotFoundError(
        f"No checkpoint in {workdir}: {workdir / checkpoints_lib.BEST_DIR} "
        f"and {workdir / checkpoints_lib.LATEST_DIR} are empty or missing "
        "(available steps: none). Train first with --mode=train, or point "
        "--workdir at a trained run.")
  raise FileNotFoundError(
      f"No best checkpoint under {workdir / checkpoints_lib.BEST_DIR}: the "
      f"run saved checkpoints (latest at step {latest_step}) but has not "
      f"validated yet. Pass --config.eval.step={latest_step}, or train past "
      "the first validation.")


def restore_state(config: ml_collections.ConfigDict,
                  workdir: pathlib.Path) -> steps.TrainState:
  """Restores the best checkpoint, or the one at `eval.step`.

  A step that is the best one is read from `best/`, any other from
  `checkpoints/`.

  Raises:
    FileNotFoundError: no such checkpoint, naming the folder and the steps
      that exist.
    ValueError: the checkpoint does not fit the config's model.
  """
  # An abstract template (shapes and dtypes only) skips compiling and running
  # the parameter initialisers. They took 28-31 s of a 52 s smoke evaluation
  # on a 2-core machine that was also training other runs.
  template = jax.eval_shape(lambda: train.create_train_state(config))
  checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
  try:
    step = None if config.eval.step < 0 else int(config.eval.step)
    best = step is None or step == checkpoints.best_step
    state, _ = checkpoints.restore(template, step=step, best=best)
  finally:
    checkpoints.close()
  # The validation code of train.py feeds batches split over all devices.
  return sharding.replicate(state, sharding.make_mesh())


def load_source(config: ml_collections.ConfigDict) -> Source:
  """Loads the frames of `eval.folder`, or else of `eval.split`."""
  if config.eval.folder:
    path = pathlib.Path(config.eval.folder)
    frames = folder_lib.load_folder(path, train.class_names(config),
                                    tuple(config.data.image_size))
    return Source(name=f"folder_{path.resolve().name}", frames=frames,
                  location=str(path))
  split = config.eval.split
  if sources_lib.has_sources(config.data):
    return _load_sources_split(config, split)
  builder = datasets.prepare_builder(config.data)
  subjects = datasets.assign_subjects(builder, config.data)
  frames = datasets.load_split(builder, config.data, split, subjects[split],
                               keep_originals=True)
  return Source(name=split, frames=frames, location=str(builder.data_dir),
                split=split, subjects=tuple(subjects[split]))


def _load_sources_split(config: ml_collections.ConfigDict,
                        split: str) -> Source:
  """Loads `split` of every data source, or of `eval.source` if set.

  Subjects are named `<source>:<subject>` so that equal ids of two sources
  stay apart in the report.
  """
  configs = sources_lib.source_configs(config.data)
  chosen = config.eval.get("source", "")
  if chosen and chosen not in configs:
    raise ValueError(f"eval.source {chosen!r} is not one of data.sources "
                     f"{sorted(configs)}.")
  parts, locations = {}, []
  for name, data_config in configs.items():
    if chosen and name != chosen:
      continue
    builder = datasets.prepare_builder(data_config)
    subjects = datasets.assign_subjects(builder, data_config)[split]
    if not subjects:
      continue
    frames = datasets.load_split(builder, data_config, split, subjects,
                                 keep_originals=True)
    frames.subjects = [f"{name}:{s}" for s in frames.subjects]
    parts[name] = frames
    locations.append(str(builder.data_dir))
  if not parts:
    raise ValueError(f"No data source has a {split} split: set eval.split "
                     "or the sources' subjects.")
  frames = input_pipeline.concatenate_frames(parts)
  return Source(name=f"{split}_{chosen}" if chosen else split, frames=frames, location=", ".join(locations),
                split=split, subjects=tuple(sorted(set(frames.subjects))))


def check_target_present(source: Source,
                         config: ml_collections.ConfigDict) -> None:
  """Raises ValueError if no frame of the source shows the target class."""
  target = target_class(config)
  target_id = train.class_names(config).index(target)
  if any(np.any(label == target_id)
         for label in source.frames.original_labels):
    return
  if config.eval.allow_absent_target:
    logging.warning("No frame of %s shows the target class %r: its target "
                    "scores only measure false positives.", source.name,
                    target)
    return
  allow = ("or pass --config.eval.allow_absent_target=True to score it "
           "anyway.")
  if source.split is None:
    raise ValueError(
        f"No mask in {source.location} ({len(source.frames)} frames) "
        f"contains the target class {target!r} (class id {target_id}), so "
        "its Dice and distances would only measure false positives. Check "
        "that the masks use class ids in data.classes order, "
        f"{allow}")
  raise ValueError(
      f"The {source.split} split (subjects {', '.join(source.subjects)}; "
      f"{len(source.frames)} frames from {source.location}) has no pixel of "
      f"the target class {target!r}, so its Dice and distances would only "
      "measure false positives. Choose a split whose subjects show it with "
      f"--config.eval.split, assign such subjects with "
      f"--config.data.{source.split}_subjects, pick another class with "
      f"--config.eval.target_class, {allow}")


def _spacing(config: ml_collections.ConfigDict) -> tuple[float, ...] | None:
  spacing = tuple(float(s) for s in config.eval.pixel_spacing_mm)
  return spacing or None


@dataclasses.dataclass
class Scores:
  """Everything scored on the frames, before it is written."""

  rows: list[dict[str, Any]]
  variant_rows: dict[str, list[dict[str, Any]]]
  predictions: list[np.ndarray]
  curve: report_lib.ThresholdCurve


def score_frames(state: steps.TrainState, frames: input_pipeline.Frames,
                 config: ml_collections.ConfigDict) -> Scores:
  """Predicts every variant and scores each frame at its original resolution.

  Returns:
    The configured variant's rows (every foreground class) and predicted
    label maps, the target class's rows of every variant, and the threshold
    curve of the configured variant's target probabilities.
  """
  class_names = train.class_names(config)
  target_id = class_names.index(target_class(config))
  spacing = _spacing(config)
  all_variants = variants(config)

  # One prediction pass per distinct test-time augmentation.
  # NOTE: every pass keeps the whole split's letterboxed probabilities in
  # memory, n * height * width * classes * 4 bytes (0.5 GB for 1000 frames
  # of 256x256 with 2 classes), up to four passes at once.
  probabilities = {}
  for variant in all_variants.values():
    if variant.tta_key not in probabilities:
      probabilities[variant.tta_key] = inference.letterboxed_probabilities(
          state, frames, batch_size=config.eval.batch_size,
          normalization=config.data.normalization,
          model_depth=config.model.depth, flip=variant.tta_flip,
          scales=variant.tta_scales)

  scores = Scores(rows=[], variant_rows={name: [] for name in all_variants},
                  predictions=[], curve=report_lib.ThresholdCurve())
  for index in range(len(frames)):
    truth = frames.original_labels[index]
    frame_fields = {"file_name": frames.file_names[index],
                    "subject": frames.subjects[index]}
    original = {
        key: inference.original_probabilities(values[index],
                                              frames.boxes[index])
        for key, values in probabilities.items()}
    for name, variant in all_variants.items():
      label_map = np.argmax(original[variant.tta_key], axis=-1).astype(
          np.uint8)
      label_map = postprocess.postprocess_label_map(
          label_map, len(class_names),
          largest_component=variant.largest_component,
          holes=variant.fill_holes)
      if name == CONFIGURED:
        scores.predictions.append(label_map)
        for class_id, metrics in frame_metrics.label_map_metrics(
            truth, label_map, range(1, len(class_names)), spacing).items():
          scores.rows.append({**frame_fields, "class": class_names[class_id],
                              "class_id": class_id, **metrics.as_dict()})
      target = frame_metrics.binary_metrics(
          truth == target_id, label_map == target_id, spacing)
      scores.variant_rows[name].append({**frame_fields,
                                        **target.as_dict()})
    configured = original[all_variants[CONFIGURED].tta_key]
    scores.curve.add(configured[..., target_id], truth == target_id)
  return scores


def build_summary(source: Source, step: int, scores: Scores,
                  config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Collects the statistics of summary.json."""
  class_names = train.class_names(config)
  spacing = _spacing(config)
  classes = {}
  for name in class_names[1:]:
    rows = [r for r in scores.rows if r["class"] == name]
    classes[name] = report_lib.class_summary(
        rows, spacing_known=spacing is not None,
        bootstrap_samples=config.eval.bootstrap_samples,
        seed=config.eval.bootstrap_seed)
  return {
      "source": source.name,
      "split": source.split,
      "folder": config.eval.folder or None,
      "subjects": list(source.subjects),
      "num_frames": len(source.frames),
      "step": step,
      "target_class": target_class(config),
      "resolution": "original frame size",
      "settings": {
          "largest_component": bool(config.eval.largest_component),
          "fill_holes": bool(config.eval.fill_holes),
          "tta_flip": bool(config.eval.tta_flip),
          "tta_scales": list(config.eval.tta_scales),
          "pixel_spacing_mm": list(spacing) if spacing else None,
          "bootstrap_samples": int(config.eval.bootstrap_samples),
          "bootstrap_seed": int(config.eval.bootstrap_seed),
      },
      "empty_masks": (
          "Truth and prediction both empty: Dice, IoU, precision, recall 1 "
          "and distances 0. Exactly one empty: Dice and IoU 0 and distances "
          "missing (NaN in per_image.csv), left out of the distance "
          "statistics and counted in missing_distance and each statistic's "
          "missing."),
      "classes": classes,
      "variants": {
          name: {**dataclasses.asdict(variant),
                 **report_lib.variant_summary(scores.variant_rows[name])}
          for name, variant in variants(config).items()},
      "threshold_curve": scores.curve.summary(),
  }


def render_figures(workdir: pathlib.Path, source: Source, scores: Scores,
                   config: ml_collections.ConfigDict) -> dict[str, bytes]:
  """Draws the report's figures; returns file name -> PNG bytes."""
  class_names = train.class_names(config)
  target = target_class(config)
  frames = source.frames
  count = config.eval.num_figure_frames
  target_rows = [r for r in scores.rows if r["class"] == target]
  pngs = {}

  curves = figures.training_curves(figures.read_scalars(workdir), target)
  if curves is not None:
    pngs["training_curves.png"] = curves

  def caption(i):
    row = target_rows[i]
    absent = "" if row["area_truth"] else f", no {target} in truth"
    return f"{frames.file_names[i]}\nDice {row['dice']:.3f}{absent}"

  def views(indices):
    return [figures.FrameView(
        image=frames.original_images[i], truth=frames.original_labels[i],
        prediction=scores.predictions[i], caption=caption(i))
            for i in indices]

  # Examples: frames that show the target first, then the others.
  order = sorted(range(len(frames)),
                 key=lambda i: (target_rows[i]["area_truth"] == 0, i))
  if order and count > 0:
    pngs["examples.png"] = figures.frame_grid(
        views(order[:count]), class_names,
        f"{source.name}: examples (Dice of {target})")

  # Worst frames: lowest target Dice, leaving out correctly empty frames.
  scored = [i for i in range(len(frames))
            if target_rows[i]["area_truth"] or target_rows[i][
                "area_prediction"]]
  worst = sorted(scored, key=lambda i: (target_rows[i]["dice"], i))[:count]
  if worst:
    pngs["worst_frames.png"] = figures.frame_grid(
        views(worst), class_names,
        f"{source.name}: lowest Dice of {target}")

  curve = scores.curve.compute()
  if curve is not None:
    pngs["threshold_curves.png"] = figures.threshold_curves(
        curve, scores.curve.summary(), target)
  return pngs


def evaluate(config: ml_collections.ConfigDict,
             workdir: str) -> dict[str, Any]:
  """Restores the best (or `eval.step`) checkpoint and scores its source.

  Returns:
    The content of metrics.json.

  Raises:
    FileNotFoundError: the workdir contains no trained run or no such
      checkpoint, or `eval.folder` is missing or incomplete.
    ValueError: the config does not fit the saved run, the split is empty or
      has no pixel of the target class, or a mask of `eval.folder` is
      invalid.
  """
  workdir = pathlib.Path(workdir)
  train.validate_config(config)
  _check_eval_config(config)
  target_class(config)
  if run_config.load_saved_config(workdir) is None:
    raise FileNotFoundError(
        f"No trained run in {workdir}: {run_config.CONFIG_FILE} is missing. "
        "Train first with --mode=train, or point --workdir at a trained run.")
  run_config.check_config(workdir, config)
  check_checkpoint(config, workdir)
  source = load_source(config)
  check_target_present(source, config)
  state = restore_state(config, workdir)
  step = int(state.step)

  # Score everything in memory first.
  pooled = train.evaluate_frames(train.make_eval_step(config), state,
                                 source.frames, config)
  scores = score_frames(state, source.frames, config)
  metrics = {
      "source": source.name,
      "split": source.split or source.name,
      "subjects": list(source.subjects),
      "num_frames": len(source.frames),
      "step": step,
      "metrics": pooled,
  }
  summary = build_summary(source, step, scores, config)
  pngs = (render_figures(workdir, source, scores, config)
          if config.eval.figures else {})

  # Then write, the summary last.
  out_dir = workdir / EVAL_DIR / source.name
  (out_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
  report_lib.write_atomically(out_dir / PER_IMAGE_FILE,
                              report_lib.rows_to_csv(scores.rows))
  if scores.curve.compute() is not None:
    report_lib.write_atomically(out_dir / THRESHOLD_FILE,
                                scores.curve.to_csv())
  for name, png in pngs.items():
    report_lib.write_atomically(out_dir / FIGURES_DIR / name, png)
  report_lib.write_atomically(out_dir / METRICS_FILE,
                              report_lib.to_json(metrics))
  report_lib.write_atomically(out_dir / SUMMARY_FILE,
                              report_lib.to_json(summary))
  _log_summary(summary, out_dir)
  return metrics


def _log_summary(summary: dict[str, Any], out_dir: pathlib.Path) -> None:
  target = summary["target_class"]
  dice = summary["classes"][target]["metrics"]["dice"]
  logging.info("%s: mean Dice of %s over %d frames = %s (95%% interval %s to "
               "%s).", summary["source"], target, summary["num_frames"],
               dice["mean"], dice["ci95_low"], dice["ci95_high"])
  for name, variant in summary["variants"].items():
    logging.info("  %-17s mean Dice %.4f, mean HD95 %s px (%d missing)",
                 name, variant["dice_mean"], variant["hd95_mean"],
                 variant["hd95_missing"])
  logging.info("Wrote the report to %s.", out_dir)
