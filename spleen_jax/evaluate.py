"""Evaluation of a trained run in a new process: restore, score, report."""

import json
import logging
import pathlib
from typing import Any

import ml_collections

from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.data import datasets

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"


def evaluate(config: ml_collections.ConfigDict,
             workdir: str) -> dict[str, Any]:
  """Restores the best (or `eval.step`) checkpoint and scores `eval.split`.

  Writes `WORKDIR/eval/<split>/metrics.json` through a temporary file, so an
  interrupted evaluation leaves the previous report intact.

  Raises:
    FileNotFoundError: the workdir contains no checkpoint.
    ValueError: the config does not fit the saved run, or the split is empty.
  """
  workdir = pathlib.Path(workdir)
  train.validate_config(config)
  if run_config.load_saved_config(workdir) is None:
    raise FileNotFoundError(
        f"No trained run in {workdir}: {run_config.CONFIG_FILE} is missing. "
        "Train first with --mode=train, or point --workdir at a trained run.")
  run_config.check_config(workdir, config)
  split = config.eval.split
  if split not in ("train", "validation", "test"):
    raise ValueError(f"Unknown eval.split {split!r}: choose from train, "
                     "validation, test.")

  # Restore the checkpoint.
  checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
  step = None if config.eval.step < 0 else config.eval.step
  state, _ = checkpoints.restore(train.create_train_state(config), step=step,
                                 best=step is None)
  checkpoints.close()

  # Score the split.
  builder = datasets.prepare_builder(config.data)
  subjects = datasets.assign_subjects(builder, config.data)
  frames = datasets.load_split(builder, config.data, split, subjects[split])
  scores = train.evaluate_frames(train.make_eval_step(config), state, frames,
                                 config)
  report = {
      "split": split,
      "subjects": list(subjects[split]),
      "num_frames": len(frames),
      "step": int(state.step),
      "metrics": scores,
  }

  # Write the report atomically.
  out_dir = workdir / EVAL_DIR / split
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / METRICS_FILE
  temporary = path.with_suffix(".json.tmp")
  temporary.write_text(json.dumps(report, indent=2, sort_keys=True))
  temporary.replace(path)
  logging.info("Wrote %s.", path)
  return report
