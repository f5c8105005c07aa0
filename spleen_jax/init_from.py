"""Initialises a new run from the best checkpoint of another run.

`--config.init_from=RUN_DIR` copies parameters and BatchNorm statistics from
`RUN_DIR/best/<step>/` into a freshly initialised train state, leaf by leaf:
a leaf with the same path and shape is copied, any other leaf keeps its fresh
initialisation. So a model pretrained on `us_phantom` can be fine-tuned with
other classes, and only its 1x1 output convolution starts afresh. The step,
optimizer state and dropout key stay those of the new run.
"""

import logging
import pathlib
from typing import Any

import flax
from flax import traverse_util
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import run_config
from spleen_jax.core import steps

# Collections of the train state that are copied.
COLLECTIONS = ("params", "batch_stats")
# Config keys that change what the copied weights mean without changing any
# shape; a difference is logged as a warning.
_INPUT_SCALING_KEYS = ("data.normalization",)
# A source run that fills less than this fraction of the new model's parameter
# values is rejected: its model config differs, not only its output classes.
MIN_COPIED_FRACTION = 0.5


def initialize_from_run(state: steps.TrainState,
                        config: ml_collections.ConfigDict) -> steps.TrainState:
  """Copies matching parameters and BatchNorm statistics from `init_from`.

  Does nothing when `config.init_from` is empty, or when `state` is past
  step 0 because it was restored from the run's own checkpoint: a resumed
  run keeps its own weights.

  Args:
    state: the new run's train state.
    config: the new run's config; `init_from` is the workdir of a trained
      run, or "".

  Returns:
    `state` with the copied leaves, placed like the leaves they replace.

  Raises:
    FileNotFoundError: `init_from` does not exist or has no best checkpoint.
    ValueError: the leaves of `init_from` that fit hold less than
      `MIN_COPIED_FRACTION` of the new model's parameter values.
  """
  run_dir = config.get("init_from", "")
  if not run_dir:
    return state
  if int(state.step) != 0:
    logging.info("Ignoring init_from=%s: the run resumed at step %d and keeps "
                 "its own weights.", run_dir, int(state.step))
    return state

  source, step = load_best_variables(run_dir)
  _warn_about_config_changes(pathlib.Path(run_dir), config)
  replacements = {}
  copied = {}
  for collection in COLLECTIONS:
    replacements[collection], copied[collection] = _merge_collection(
        collection, getattr(state, collection), source.get(collection, {}),
        run_dir)
  copied_leaves = sum(len(leaves) for leaves in copied.values())
  copied_values = sum(np.size(leaf) for leaf in copied["params"])
  total_values = sum(np.size(leaf) for leaf in jax.tree.leaves(state.params))
  if copied_values < MIN_COPIED_FRACTION * total_values:
    raise ValueError(
        f"init_from run {run_dir} fills only {copied_values} of the "
        f"{total_values} parameter values of the new model: its model config "
        "(model.depth, model.base_features, model.normalization, "
        "model.upsampling) differs. Use a run with the same model config, or "
        "clear --config.init_from.")
  logging.info("Initialised %d leaves (%d of %d parameter values) from the "
               "best checkpoint of %s at step %d.", copied_leaves,
               copied_values, total_values, run_dir, step)
  return state.replace(**replacements)


def load_best_variables(run_dir: str | pathlib.Path
                        ) -> tuple[dict[str, Any], int]:
  """Reads the train state of a run's best checkpoint without a template.

  Returns:
    The saved state as nested dicts of arrays (`params`, `batch_stats`, ...)
    and the checkpoint's step.

  Raises:
    FileNotFoundError: `run_dir` does not exist or has no best checkpoint.
  """
  run_dir = pathlib.Path(run_dir)
  if not run_dir.is_dir():
    raise FileNotFoundError(
        f"init_from run directory {run_dir} not found. Set "
        "--config.init_from to the workdir of a trained run, or to '' to "
        "start from random weights.")
  best_dir = run_dir / checkpoints_lib.BEST_DIR
  manager = None
  if best_dir.is_dir():
    manager = ocp.CheckpointManager(
        best_dir.absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if manager is not None else None
  if step is None:
    raise FileNotFoundError(
        f"init_from run {run_dir} has no best checkpoint under {best_dir}. "
        "Train that run until it has validated at least once (every "
        "train.eval_every_steps), or pick another run.")
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    manager.close()
  return dict(restored["state"]), step


def _merge_collection(collection: str, fresh: Any, source: Any,
                      run_dir: str) -> tuple[Any, list[Any]]:
  """Copies the leaves of `source` that match `fresh` in path and shape.

  Returns:
    The merged collection, of the same container type as `fresh`, and the
    copied leaves.
  """
  fresh_leaves = traverse_util.flatten_dict(flax.core.unfreeze(fresh),
                                            sep="/")
  source_leaves = traverse_util.flatten_dict(flax.core.unfreeze(source),
                                             sep="/")
  merged = {}
  copied = []
  missing = []
  for path, leaf in fresh_leaves.items():
    value = source_leaves.get(path)
    if value is None:
      missing.append(path)
      merged[path] = leaf
    elif tuple(value.shape) != tuple(leaf.shape):
      logging.warning(
          "init_from: kept the fresh initialisation of %s/%s: shape %s here, "
          "%s in %s.", collection, path, tuple(leaf.shape),
          tuple(value.shape), run_dir)
      merged[path] = leaf
    else:
      merged[path] = jax.device_put(
          np.asarray(value).astype(leaf.dtype), leaf.sharding)
      copied.append(merged[path])

  if missing:
    logging.warning("init_from: %d %s leaves are not in %s and keep their "
                    "fresh initialisation: %s.", len(missing), collection,
                    run_dir, ", ".join(missing))
  unused = sorted(set(source_leaves) - set(fresh_leaves))
  if unused:
    logging.info("init_from: %d %s leaves of %s have no counterpart in the "
                 "new model: %s.", len(unused), collection, run_dir,
                 ", ".join(unused))
  result = traverse_util.unflatten_dict(merged, sep="/")
  if isinstance(fresh, flax.core.FrozenDict):
    result = flax.core.freeze(result)
  return result, copied


def _warn_about_config_changes(run_dir: pathlib.Path,
                               config: ml_collections.ConfigDict) -> None:
  """Logs config values that differ between the runs but keep the shapes."""
  saved = run_config.load_saved_config(run_dir)
  if saved is None:
    return
  current = run_config.flatten(config)
  for key in _INPUT_SCALING_KEYS:
    if saved.get(key) != current.get(key):
      logging.warning("init_from: %s is %r in %s but %r in this run, so the "
                      "copied weights see differently scaled inputs.", key,
                      saved.get(key), run_dir, current.get(key))
