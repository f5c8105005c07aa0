"""Self-supervised pretraining on the unlabelled AbdomenUS frames.

  python -m spleen_jax.main --mode=pretrain --config configs/ssl_pretrain.py \
      --workdir runs/ssl --config.data.manual_dir=PATH
  python -m spleen_jax.main --config configs/base.py --workdir runs/base \
      --config.init_from=runs/ssl --config.data.manual_dir=PATH

Trains the config's U-Net, with one output channel, to reconstruct masked
and noisy frames (see spleen_jax/core/reconstruction.py). The last step is
saved as the run's best checkpoint, which is what `init_from` reads.
"""

import dataclasses
import json
import logging
import pathlib
from typing import Any

from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.core import early_stopping
from spleen_jax.core import model as model_lib
from spleen_jax.core import reconstruction
from spleen_jax.core import sharding
from spleen_jax.core import steps
from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline

SUMMARY_FILE = "pretrain_summary.json"


def create_train_state(config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh) -> steps.TrainState:
  """Builds the U-Net of `config.model` with one output channel."""
  options = config.model.to_dict()
  dtype = jnp.dtype(options.pop("dtype", "float32"))
  model = model_lib.UNet(num_classes=1, dtype=dtype, **options)
  optimizer, _ = train.create_optimizer(config)
  height, width = config.data.image_size
  state = steps.create_train_state(model, jax.random.PRNGKey(config.seed),
                                   (height, width, 1), optimizer)
  return sharding.replicate(state, mesh)


def masking_config(config: ml_collections.ConfigDict
                   ) -> reconstruction.MaskingConfig:
  fields = {f.name for f in dataclasses.fields(reconstruction.MaskingConfig)}
  return reconstruction.MaskingConfig(
      **{k: v for k, v in config.ssl.items() if k in fields})


def pretrain(config: ml_collections.ConfigDict,
             workdir: str | pathlib.Path) -> dict[str, Any]:
  """Pretrains by masked reconstruction; resumes from the latest checkpoint.

  Args:
    config: a config with an `ssl` block (see configs/ssl_pretrain.py).
    workdir: folder of the run.

  Returns:
    The summary: last step, number of frames and the subjects whose frames
    were used.
  """
  workdir = pathlib.Path(workdir)
  if "ssl" not in config:
    raise ValueError(
        "--mode=pretrain needs a config with an `ssl` block: use "
        "--config configs/ssl_pretrain.py.")
  if config.data.get("name", datasets.ABDOMEN_US) != datasets.ABDOMEN_US:
    raise ValueError(
        f"Pretraining reads the unlabelled AbdomenUS frames, but data.name is "
        f"{config.data.name!r}: set --config.data.name=abdomen_us.")
  train.validate_config(config)
  run_config.check_config(workdir, config)

  # Data: unlabelled frames, by default of subjects without annotations only.
  builder = datasets.prepare_builder(config.data)
  frames = datasets.load_unlabeled(
      builder, config.data,
      only_unannotated_subjects=not config.ssl.use_annotated_subjects)
  augmentation = train.augment_config(config)
  if jax.process_index() == 0:
    run_config.write_config(workdir, config)

  # State: fresh, or the latest checkpoint of this workdir.
  mesh = sharding.make_mesh()
  state = create_train_state(config, mesh)
  checkpoints = checkpoints_lib.RunCheckpoints(
      workdir, keep=config.train.keep_checkpoints)
  if checkpoints.latest_step is not None:
    state, _ = checkpoints.restore(state)
  initial_step = int(state.step)
  num_steps = config.train.num_steps
  stopper = early_stopping.EarlyStopping(patience=0)

  images = input_pipeline.unlabeled_dataset(
      frames, batch_size=config.train.batch_size, seed=config.seed,
      start_step=initial_step, normalization=config.data.normalization,
      weak=augmentation, shard_index=jax.process_index(),
      num_shards=jax.process_count()).as_numpy_iterator()
  masking = masking_config(config)
  train_step = jax.jit(
      lambda state, images: reconstruction.train_step(state, images, masking),
      donate_argnums=0)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer)

  losses = []
  with metric_writers.ensure_flushes(writer):
    for step in range(initial_step + 1, num_steps + 1):
      # One step on the clean weak view; the step corrupts it itself.
      batch = sharding.shard_batch({"image": next(images)["weak"]}, mesh)
      state, outputs = train_step(state, batch["image"])
      losses.append(outputs)
      report_progress(step)

      # Mean losses of the interval since the last write.
      if step % config.train.log_every_steps == 0 or step == num_steps:
        scalars = {f"pretrain_{name}": float(jnp.mean(jnp.stack(
            [o[name] for o in losses]))) for name in losses[0]}
        writer.write_scalars(step, scalars)
        losses = []

      # The last step is the best one: there is no validation target.
      if step % config.train.eval_every_steps == 0 or step == num_steps:
        checkpoints.save(step, state, stopper, is_best=step == num_steps)

  checkpoints.wait_until_finished()
  checkpoints.close()
  summary = {"last_step": int(state.step),
             "subjects": sorted(set(frames.subjects)),
             "num_frames": len(frames)}
  if jax.process_index() == 0:
    temporary = workdir / (SUMMARY_FILE + ".tmp")
    temporary.write_text(json.dumps(summary, indent=2))
    temporary.replace(workdir / SUMMARY_FILE)
  logging.info("Pretraining ended at step %d on %d frames.",
               summary["last_step"], len(frames))
  return summary
