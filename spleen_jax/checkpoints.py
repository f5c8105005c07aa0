"""Orbax checkpoints of a run: the latest ones for resuming, the best one.

Layout under the workdir:
  `checkpoints/<step>/`: the latest `keep` checkpoints, to resume from.
  `best/<step>/`: the checkpoint with the best validation score.
Each checkpoint contains the train state (step, parameters, BatchNorm statistics,
optimizer state, dropout RNG key) and a JSON item `progress` with the
early-stopping state. Orbax writes into a temporary folder and renames it when
complete, so an interrupted save leaves no half-written checkpoint behind.
"""

import logging
import pathlib
from typing import Any

import flax
import orbax.checkpoint as ocp

from spleen_jax.core import early_stopping
from spleen_jax.core import steps

LATEST_DIR = "checkpoints"
BEST_DIR = "best"


def _manager(directory: pathlib.Path, keep: int,
             read_only: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class RunCheckpoints:
  """Saves and restores the checkpoints of one workdir."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2,
               read_only: bool = False):
    workdir = pathlib.Path(workdir)
    self._latest = _manager(workdir / LATEST_DIR, keep, read_only)
    self._best = _manager(workdir / BEST_DIR, 1, read_only)

  @property
  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  @property
  def best_step(self) -> int | None:
    return self._best.latest_step()

  def save(self, step: int, state: steps.TrainState,
           stopper: early_stopping.EarlyStopping, is_best: bool,
           extra: dict[str, Any] | None = None) -> None:
    """Saves a resumable checkpoint, and a copy under `best/` if `is_best`."""
    progress = {"early_stopping": stopper.state_dict(), **(extra or {})}
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
        progress=ocp.args.JsonSave(progress))
    self._latest.save(step, args=args)
    if is_best:
      self._best.save(step, args=args)

  def restore(self, template: steps.TrainState, step: int | None = None,
              best: bool = False
              ) -> tuple[steps.TrainState, dict[str, Any]]:
    """Restores a train state shaped like `template`, and its progress.

    Args:
      template: a freshly created state of the same model and optimizer.
      step: the step to restore; None takes the latest (or the best).
      best: restore from `best/` instead of `checkpoints/`.

    Raises:
      FileNotFoundError: there is no such checkpoint.
      ValueError: the checkpoint does not fit the template, typically because
        the model config changed.
    """
    manager = self._best if best else self._latest
    available = manager.all_steps()
    if step is None:
      step = manager.latest_step()
    if step is None or step not in available:
      raise FileNotFoundError(
          f"No checkpoint {'at step ' + str(step) if step is not None else ''}"
          f" under {manager.directory}; available steps: "
          f"{sorted(available) or 'none'}. Train first, or pick one of the "
          "available steps.")

    target = flax.serialization.to_state_dict(template)
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        progress=ocp.args.JsonRestore())
    try:
      restored = manager.restore(step, args=args)
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(
          f"Checkpoint {manager.directory}/{step} does not fit the current "
          f"model config ({error}). Use the config the run was trained with, "
          "or train a new run in another workdir.") from error
    state = flax.serialization.from_state_dict(template, restored["state"])
    logging.info("Restored %s checkpoint at step %d from %s.",
                 "best" if best else "latest", step, manager.directory)
    return state, dict(restored["progress"])

  def wait_until_finished(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()
