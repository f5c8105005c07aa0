"""Training loop: data, model, optimizer, validation, early stopping, checkpoints.

Reads top-down: helpers that turn the config into core objects, the jitted
steps with their metric collections, then `train_and_evaluate`.
"""

import dataclasses
import functools
import json
import logging
import pathlib
from typing import Any

from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import init_from as init_from_lib
from spleen_jax import metric_collections
from spleen_jax import run_config
from spleen_jax.core import early_stopping
from spleen_jax.core import model as model_lib
from spleen_jax.core import semi_supervised
from spleen_jax.core import sharding
from spleen_jax.core import steps
from spleen_jax.data import augment
from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline
from spleen_jax.data import sources as sources_lib

SUMMARY_FILE = "train_summary.json"


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Training class names, background first."""
  return ("background", *config.data.classes)


def target_metric(config: ml_collections.ConfigDict) -> str:
  """Name of the validation score that early stopping follows.

  `train.target_class` names one of `data.classes`, or is `mean` for the mean
  Dice over all foreground classes.
  """
  target = config.train.target_class
  if target == "mean":
    return "mean_dice"
  if target not in config.data.classes:
    raise ValueError(
        f"train.target_class {target!r} is not in data.classes "
        f"{tuple(config.data.classes)}: set --config.train.target_class to one "
        "of them, or to mean.")
  return f"dice_{target}"


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks values that would otherwise fail deep inside a run.

  Raises:
    ValueError: naming the config key, the value and the fix.
  """
  input_pipeline.class_lookup(config.data.classes)
  target_metric(config)
  if config.data.normalization not in input_pipeline.NORMALIZATIONS:
    raise ValueError(
        f"Unknown data.normalization {config.data.normalization!r}: choose "
        f"from {', '.join(input_pipeline.NORMALIZATIONS)}.")
  multiple = 2**config.model.depth
  height, width = config.data.image_size
  if height % multiple or width % multiple:
    raise ValueError(
        f"data.image_size {height}x{width} is not divisible by 2**model.depth "
        f"= {multiple}: change one of them.")
  for key in ("batch_size", "num_steps", "eval_every_steps",
              "log_every_steps"):
    if config.train[key] < 1:
      raise ValueError(f"train.{key} must be at least 1, got "
                       f"{config.train[key]}.")
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
  sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  if config.model.get("dtype", "float32") not in ("float32", "bfloat16"):
    raise ValueError(f"Unknown model.dtype {config.model.dtype!r}: choose "
                     "float32 or bfloat16.")
  foreground_class_id(config)
  if not 0.0 <= config.data.get("foreground_fraction", 0.0) <= 1.0:
    raise ValueError("data.foreground_fraction must lie in [0, 1], got "
                     f"{config.data.foreground_fraction}.")
  fraction = config.data.get("foreground_fraction", 0.0)
  sampling = input_pipeline.ForegroundSampling(fraction=fraction)
  if fraction > 0 and sampling.rows(config.train.batch_size) == 0:
    raise ValueError(
        f"data.foreground_fraction {fraction} of train.batch_size "
        f"{config.train.batch_size} rounds to no row: raise it to at least "
        f"{0.5 / config.train.batch_size:.3g}, or set 0 to turn it off.")
  if not 0.0 <= config.data.get("foreground_crop_probability", 0.0) <= 1.0:
    raise ValueError("data.foreground_crop_probability must lie in [0, 1], "
                     f"got {config.data.foreground_crop_probability}.")
  alpha = config.loss.get("tversky_alpha", 0.5)
  beta = config.loss.get("tversky_beta", 0.5)
  if alpha < 0 or beta < 0 or alpha + beta == 0:
    raise ValueError(
        f"loss.tversky_alpha {alpha} and loss.tversky_beta {beta} must be "
        "non-negative and not both 0; 0.5 and 0.5 is the soft Dice.")
  if not 0.0 < config.data.get("foreground_crop_scale", 0.5) <= 1.0:
    raise ValueError("data.foreground_crop_scale must lie in (0, 1], got "
                     f"{config.data.foreground_crop_scale}.")
  class_weights = config.loss.get("class_weights", ())
  if class_weights and len(class_weights) != len(class_names(config)):
    raise ValueError(
        f"loss.class_weights has {len(class_weights)} values for the "
        f"{len(class_names(config))} classes {class_names(config)}: give one "
        "weight per class, background first, or ().")
  if semi_enabled(config):
    if config.data.get("name", datasets.ABDOMEN_US) != datasets.ABDOMEN_US:
      raise ValueError(
          f"semi.enabled needs the unlabelled AbdomenUS frames, but "
          f"data.name is {config.data.name!r}: set --config.semi.enabled="
          "False, or train on abdomen_us.")
    if config.semi.loss not in semi_supervised.UNLABELED_LOSSES:
      raise ValueError(
          f"Unknown semi.loss {config.semi.loss!r}: choose from "
          f"{', '.join(semi_supervised.UNLABELED_LOSSES)}.")
    sharding.check_batch_size(config.semi.batch_size, mesh, "semi.batch_size")
    if sources_lib.has_sources(config.data):
      raise ValueError(
          "semi.enabled does not support several data.sources yet: set "
          "--config.semi.enabled=False or train on one source.")
  if sources_lib.has_sources(config.data):
    sources_lib.source_configs(config.data)
    foreground_rows = round(config.data.get("foreground_fraction", 0.0) *
                            config.train.batch_size)
    input_pipeline.allocate_rows(sources_lib.sampling_weights(config.data),
                                 config.train.batch_size - foreground_rows)


def semi_enabled(config: ml_collections.ConfigDict) -> bool:
  return "semi" in config and bool(config.semi.enabled)


def foreground_class_id(config: ml_collections.ConfigDict) -> int:
  """Training class id that foreground sampling and collapse checks follow.

  `data.foreground_class`, else `train.target_class`, else (for `mean`) the
  first class.
  """
  name = config.data.get("foreground_class", "") or config.train.target_class
  if name == "mean":
    name = config.data.classes[0]
  if name not in config.data.classes:
    raise ValueError(
        f"data.foreground_class {name!r} is not in data.classes "
        f"{tuple(config.data.classes)}: pick one of them, or '' for "
        "train.target_class.")
  return 1 + tuple(config.data.classes).index(name)


def create_model(config: ml_collections.ConfigDict) -> model_lib.UNet:
  """Builds the U-Net; `model.dtype` names the computation dtype."""
  options = config.model.to_dict()
  dtype = jnp.dtype(options.pop("dtype", "float32"))
  return model_lib.UNet(num_classes=len(class_names(config)), dtype=dtype,
                        **options)


def create_optimizer(config: ml_collections.ConfigDict):
  """Returns the optimizer and its learning-rate schedule."""
  schedule = steps.make_learning_rate_schedule(
      config.train.schedule, config.train.learning_rate,
      config.train.num_steps, config.train.warmup_steps)
  optimizer = steps.make_optimizer(
      schedule, weight_decay=config.train.weight_decay,
      gradient_clip_norm=config.train.gradient_clip_norm)
  return optimizer, schedule


def create_train_state(config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh | None = None
                       ) -> steps.TrainState:
  """Builds a freshly initialised train state, replicated over the mesh."""
  optimizer, _ = create_optimizer(config)
  height, width = config.data.image_size
  state = steps.create_train_state(
      create_model(config), jax.random.PRNGKey(config.seed),
      (height, width, 1), optimizer)
  if semi_enabled(config):
    state = semi_supervised.attach_teacher(state)
  return sharding.replicate(state, mesh or sharding.make_mesh())


def loss_config(config: ml_collections.ConfigDict) -> steps.LossConfig:
  options = config.loss.to_dict()
  options["class_weights"] = tuple(options.get("class_weights", ()))
  return steps.LossConfig(**options)


def semi_config(config: ml_collections.ConfigDict
                ) -> semi_supervised.SemiConfig:
  fields = {f.name for f in dataclasses.fields(semi_supervised.SemiConfig)}
  return semi_supervised.SemiConfig(
      **{k: v for k, v in config.semi.items() if k in fields})


def foreground_sampling(config: ml_collections.ConfigDict
                        ) -> input_pipeline.ForegroundSampling | None:
  if not config.data.get("foreground_fraction", 0.0):
    return None
  return input_pipeline.ForegroundSampling(
      class_id=foreground_class_id(config),
      fraction=config.data.foreground_fraction,
      crop_probability=config.data.foreground_crop_probability,
      crop_scale=config.data.foreground_crop_scale,
      class_name=config.data.classes[foreground_class_id(config) - 1])


def unlabeled_views(config: ml_collections.ConfigDict
                    ) -> tuple[augment.AugmentConfig, augment.AugmentConfig]:
  """Augmentation of the teacher's (weak) and student's (strong) views.

  The weak view keeps the geometry of `augment` and no intensity change; the
  strong view scales the intensity changes and noise by `semi.strong_scale`.
  """
  base = augment_config(config) or augment.AugmentConfig(
      rotation_degrees=0.0, scale=0.0, translation=0.0, flip_probability=0.0)
  weak = dataclasses.replace(base, brightness=0.0, contrast=0.0, gamma=0.0,
                             noise_std=0.0)
  factor = config.semi.strong_scale
  strong = dataclasses.replace(
      base, brightness=base.brightness * factor,
      contrast=min(base.contrast * factor, 0.9), gamma=base.gamma * factor,
      noise_std=base.noise_std * factor)
  return weak, strong


def augment_config(config: ml_collections.ConfigDict
                   ) -> augment.AugmentConfig | None:
  if not config.augment.enabled:
    return None
  fields = {f.name for f in dataclasses.fields(augment.AugmentConfig)}
  return augment.AugmentConfig(
      **{k: v for k, v in config.augment.items() if k in fields})


def make_train_step(config: ml_collections.ConfigDict):
  """Jits one optimizer step that also returns its metric collection."""
  losses = loss_config(config)

  def train_step(state, batch):
    state, outputs = steps.train_step(state, batch, losses)
    return state, metric_collections.SegmentationMetrics.single_from_model_output(
        **outputs)

  return jax.jit(train_step, donate_argnums=0)


def make_semi_supervised_train_step(config: ml_collections.ConfigDict):
  """Jits one mean-teacher step on a labelled and an unlabelled batch."""
  losses = loss_config(config)
  semi = semi_config(config)

  def train_step(state, batch, unlabeled):
    state, outputs = semi_supervised.train_step(state, batch, unlabeled,
                                                losses, semi)
    return state, (metric_collections.SemiSupervisedMetrics
                   .single_from_model_output(**outputs))

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(config: ml_collections.ConfigDict):
  """Jits the validation step: metric collection and per-frame pixel counts."""
  losses = loss_config(config)

  def eval_step(state, batch):
    outputs = steps.eval_step(state, batch, losses)
    return (metric_collections.SegmentationMetrics.single_from_model_output(
        **outputs), outputs["frame_pixels"])

  return jax.jit(eval_step)


def collapse_scores(frame_pixels, frames: input_pipeline.Frames,
                    config: ml_collections.ConfigDict) -> dict[str, float]:
  """Finds frames of each class whose prediction is empty or spurious.

  Logs a warning naming the frames that contain a class while the model
  predicts no pixel of it: the collapse to background that few labelled
  frames invite.

  Args:
    frame_pixels: `[n, classes, 3]` predicted, true and overlapping pixel
      counts per frame (see `steps.frame_pixel_counts`), padding removed.
    frames: the frames, for their names.
    config: the run's config, for the class names.

  Returns:
    For each foreground class `c`:
      `empty_on_positive_c`: the fraction of frames with `c` whose
        prediction has none of it, NaN when no frame shows `c`.
      `positive_frames_c`: the number of frames with `c`.
      `false_positive_frames_c`: the number of frames without `c` whose
        prediction has some.
  """
  scores = {}
  for class_id, name in enumerate(config.data.classes, start=1):
    predicted = frame_pixels[:, class_id, 0]
    present = frame_pixels[:, class_id, 1] > 0
    empty = present & (predicted == 0)
    scores[f"positive_frames_{name}"] = int(present.sum())
    scores[f"empty_on_positive_{name}"] = (
        float(empty.sum() / present.sum()) if present.any() else float("nan"))
    scores[f"false_positive_frames_{name}"] = int(
        ((~present) & (predicted > 0)).sum())
    if empty.any():
      logging.warning(
          "Collapse: no %s pixel predicted on %d of %d validation frames that "
          "show it: %s.", name, empty.sum(), present.sum(),
          ", ".join(f for f, e in zip(frames.file_names, empty) if e))
  return scores


def evaluate_frames(eval_step, state: steps.TrainState,
                    frames: input_pipeline.Frames,
                    config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh | None = None
                    ) -> dict[str, float]:
  """Scores every frame of a split and returns the summary scalars.

  The scalars are those of `metric_collections.summarize` and of
  `collapse_scores`.
  """
  mesh = mesh or sharding.make_mesh()
  merged = None
  frame_pixels = []
  for batch in input_pipeline.eval_batches(
      frames, batch_size=config.eval.batch_size,
      normalization=config.data.normalization):
    valid = batch["valid"] > 0
    batch = sharding.shard_batch(sharding.local_rows(batch), mesh)
    update, pixels = eval_step(state, batch)
    merged = update if merged is None else merged.merge(update)
    pixels = multihost_utils.process_allgather(pixels, tiled=True)
    frame_pixels.append(np.asarray(pixels)[valid])
  frame_pixels = np.concatenate(frame_pixels)
  scores = metric_collections.summarize(merged, class_names(config))
  scores.update(collapse_scores(frame_pixels, frames, config))
  scores.update(source_scores(frame_pixels, frames, config))
  return scores


def source_scores(frame_pixels: np.ndarray, frames: input_pipeline.Frames,
                  config: ml_collections.ConfigDict) -> dict[str, float]:
  """Scores each data source of `frames` on its own.

  Returns:
    Nothing when the frames come from one source. Otherwise, for each
    source, `<source>/frames` and `<source>/dice_<class>`. The Dice pools
    the pixels of the source's frames, and is 1 when the class is absent
    from both truth and prediction.
  """
  if frames.sources is None or len(set(frames.sources)) < 2:
    return {}
  sources = np.asarray(frames.sources)
  scores = {}
  for source in sorted(set(frames.sources)):
    counts = frame_pixels[sources == source].sum(axis=0)
    scores[f"{source}/frames"] = int((sources == source).sum())
    for class_id, name in enumerate(config.data.classes, start=1):
      predicted, true, overlap = (int(v) for v in counts[class_id])
      total = predicted + true
      scores[f"{source}/dice_{name}"] = (2.0 * overlap / total if total
                                         else 1.0)
  return scores


def _write_json(path: pathlib.Path, content: dict[str, Any]) -> None:
  """Writes `content` atomically, with NaN scores as null (strict JSON)."""

  def strict(value):
    if isinstance(value, float) and not np.isfinite(value):
      return None
    if isinstance(value, dict):
      return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [strict(v) for v in value]
    return value

  temporary = path.with_suffix(path.suffix + ".tmp")
  temporary.write_text(json.dumps(strict(content), indent=2, sort_keys=True,
                                  allow_nan=False))
  temporary.replace(path)


def _warn_if_target_absent(frames: input_pipeline.Frames,
                           config: ml_collections.ConfigDict) -> None:
  """Warns when no validation frame shows the class early stopping follows."""
  class_id = foreground_class_id(config)
  if not (frames.labels == class_id).any():
    logging.warning(
        "No validation frame shows %s, so its validation Dice measures only "
        "false positives and cannot guide early stopping. Move a subject "
        "with it into the validation split (data.validation_subjects).",
        config.data.classes[class_id - 1])


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains until `train.num_steps` or early stopping; resumes if possible.

  Args:
    config: the run's config (see configs/base.py).
    workdir: folder of the run: config.json, checkpoints, best checkpoint,
      TensorBoard events and `train_summary.json`.

  Returns:
    The training summary: best step, best validation scores, last step and
    whether early stopping fired.
  """
  workdir = pathlib.Path(workdir)
  validate_config(config)
  target = target_metric(config)
  run_config.check_config(workdir, config)
  is_chief = jax.process_index() == 0

  # Data: subjects per split of each source, then the letterboxed frames in
  # memory, all sources together.
  source_subjects, split_frames = sources_lib.load_splits(
      config.data, ("train", "validation"))
  subjects = (source_subjects if sources_lib.has_sources(config.data)
              else next(iter(source_subjects.values())))
  logging.info("Subjects per split: %s", subjects)
  train_frames = input_pipeline.concatenate_frames(split_frames["train"])
  validation_frames = input_pipeline.concatenate_frames(
      split_frames["validation"])
  _warn_if_target_absent(validation_frames, config)

  # State: fresh and replicated over the devices, then replaced by the latest
  # checkpoint if there is one, else by the weights of `init_from` if set.
  mesh = sharding.make_mesh()
  state = create_train_state(config, mesh)
  checkpoints = checkpoints_lib.RunCheckpoints(
      workdir, keep=config.train.keep_checkpoints)
  stopper = early_stopping.EarlyStopping(
      patience=config.train.early_stopping_patience,
      min_delta=config.train.early_stopping_min_delta)
  stopped_early = False
  if checkpoints.latest_step is not None:
    state, progress = checkpoints.restore(state)
    stopper = dataclasses.replace(
        early_stopping.EarlyStopping.from_state_dict(
            progress["early_stopping"]),
        patience=config.train.early_stopping_patience,
        min_delta=config.train.early_stopping_min_delta)
    stopped_early = bool(progress.get("stopped_early", False))
  state = init_from_lib.initialize_from_run(state, config)
  initial_step = int(state.step)
  if semi_enabled(config) and initial_step == 0:
    # The teacher starts from the student's initial (or init_from) weights.
    state = semi_supervised.attach_teacher(state)

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if initial_step == 0:
    writer.write_hparams(run_config.flatten(config))
    parameter_overview.log_parameter_overview(state.params)

  summary = {"subjects": subjects, "target": target}
  if stopped_early or initial_step >= config.train.num_steps:
    logging.info("Nothing to train: the run in %s ended at step %d%s.",
                 workdir, initial_step,
                 " by early stopping" if stopped_early else "")
    checkpoints.close()
    if (workdir / SUMMARY_FILE).exists():
      return json.loads((workdir / SUMMARY_FILE).read_text())
    return {**summary, "best_step": stopper.best_step,
            "best_score": stopper.best_score, "last_step": initial_step,
            "stopped_early": stopped_early}

  _, schedule = create_optimizer(config)
  eval_step = make_eval_step(config)
  train_iterator = input_pipeline.train_dataset(
      train_frames, batch_size=config.train.batch_size, seed=config.seed,
      start_step=initial_step, normalization=config.data.normalization,
      augmentation=augment_config(config),
      foreground=foreground_sampling(config),
      source_weights=sources_lib.sampling_weights(config.data),
      shard_index=jax.process_index(),
      num_shards=jax.process_count()).as_numpy_iterator()
  if semi_enabled(config):
    # Unlabelled frames of held-out subjects never reach training.
    unlabeled_frames = datasets.load_unlabeled(
        datasets.prepare_builder(config.data), config.data,
        exclude_subjects=subjects["validation"] + subjects["test"])
    weak, strong = unlabeled_views(config)
    unlabeled_iterator = input_pipeline.unlabeled_dataset(
        unlabeled_frames, batch_size=config.semi.batch_size,
        seed=config.seed, start_step=initial_step,
        normalization=config.data.normalization, weak=weak, strong=strong,
        shard_index=jax.process_index(),
        num_shards=jax.process_count()).as_numpy_iterator()
    semi_step = make_semi_supervised_train_step(config)
    train_step = lambda state, batch: semi_step(
        state, batch, sharding.shard_batch(next(unlabeled_iterator), mesh))
  else:
    train_step = make_train_step(config)
  # The config is saved once its data and checkpoints loaded, so that a run
  # that fails on its input leaves nothing that blocks the corrected command.
  if is_chief:
    run_config.write_config(workdir, config)

  last_step = config.train.num_steps
  if config.train.max_steps_per_run > 0:
    last_step = min(last_step, initial_step + config.train.max_steps_per_run)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.train.num_steps, writer=writer)
  train_metrics = None
  logging.info("Training from step %d to %d.", initial_step, last_step)

  with metric_writers.ensure_flushes(writer):
    for step in range(initial_step + 1, last_step + 1):
      # One optimizer step; `step` counts completed steps.
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = sharding.shard_batch(next(train_iterator), mesh)
        state, update = train_step(state, batch)
        train_metrics = (update if train_metrics is None
                         else train_metrics.merge(update))
      report_progress(step)

      # Training metrics of the interval since the last write.
      if step % config.train.log_every_steps == 0 or step == last_step:
        scalars = metric_collections.summarize(train_metrics,
                                               class_names(config))
        scalars["learning_rate"] = float(schedule(step - 1))
        writer.write_scalars(step, {f"train_{k}": v for k, v in
                                    scalars.items()})
        train_metrics = None

      # A process limit that falls between validations saves a checkpoint
      # without validating, so early stopping counts the same validations as
      # in an uninterrupted run.
      is_eval_step = (step % config.train.eval_every_steps == 0 or
                      step == config.train.num_steps)
      if step == last_step and not is_eval_step:
        checkpoints.save(step, state, stopper, is_best=False,
                         extra={"stopped_early": False})

      # Validation, early stopping and checkpoints.
      if is_eval_step:
        with report_progress.timed("eval"):
          scores = evaluate_frames(eval_step, state, validation_frames, config,
                                   mesh)
        writer.write_scalars(step, {f"validation_{k}": v for k, v in
                                    scores.items()})
        is_best = stopper.update(step, scores[target])
        stopped_early = stopper.should_stop
        logging.info("Step %d: validation %s = %.4f (best %.4f at step %d).",
                     step, target, scores[target], stopper.best_score,
                     stopper.best_step)
        if is_best:
          summary["best_validation"] = scores
        summary["last_validation"] = {"step": step, **scores}
        checkpoints.save(step, state, stopper, is_best,
                         extra={"stopped_early": stopped_early,
                                "validation": scores})
        if stopped_early:
          logging.info("Early stopping at step %d: no gain above %g in %d "
                       "validations.", step, stopper.min_delta,
                       stopper.patience)
          break

  checkpoints.wait_until_finished()
  checkpoints.close()

  # The summary keeps the best scores across resumed runs.
  previous = {}
  if (workdir / SUMMARY_FILE).exists():
    previous = json.loads((workdir / SUMMARY_FILE).read_text())
  summary.update({
      "best_step": stopper.best_step,
      "best_score": stopper.best_score,
      "last_step": int(state.step),
      "stopped_early": stopped_early,
  })
  for key in ("best_validation", "last_validation"):
    if key not in summary and key in previous:
      summary[key] = previous[key]
  if is_chief:
    _write_json(workdir / SUMMARY_FILE, summary)
  logging.info("Training ended at step %d; best validation %s = %.4f at step "
               "%d.", summary["last_step"], target, stopper.best_score,
               stopper.best_step)
  return summary
