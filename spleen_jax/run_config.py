"""The config saved in a workdir, and the check that a new config fits it.

Resuming is exact only if everything that shapes the model, the data stream
and the optimizer is unchanged, so a workdir whose saved config differs in any
other key than those in `COMPATIBLE_KEYS` is rejected.
"""

import datetime
import json
import logging
import pathlib
import shutil

import ml_collections

CONFIG_FILE = "config.json"
ARCHIVE_DIR = "archive"

# Keys that may change between runs in one workdir: paths, logging and
# evaluation settings, and the step budget. `init_from` only acts at step 0,
# so a resumed run ignores it.
COMPATIBLE_KEYS = (
    "data.manual_dir", "data.tfds_data_dir", "eval.", "train.num_steps",
    "train.max_steps_per_run", "train.log_every_steps",
    "train.early_stopping_patience", "train.early_stopping_min_delta",
    "init_from",
)

# Keys added to the configs after runs were saved without them, and the value
# that such a run implicitly used: those runs had no cross-validation, no
# init_from, no foreground sampling, Tversky, class weights, focal term or
# semi-supervised training, and trained on the AbdomenUS frames in float32.
IMPLIED_VALUES = {"data.num_folds": 0, "data.fold": 0,
                  "data.name": "abdomen_us", "data.phantom_config": "default",
                  "model.dtype": "float32", "init_from": "",
                  "data.foreground_fraction": 0.0,
                  "data.foreground_class": "",
                  "data.foreground_crop_probability": 0.0,
                  "data.foreground_crop_scale": 0.5,
                  "loss.tversky_alpha": 0.5, "loss.tversky_beta": 0.5,
                  "loss.class_weights": [], "loss.focal_gamma": 0.0,
                  "semi.enabled": False, "semi.batch_size": 8,
                  "semi.weight": 1.0, "semi.rampup_steps": 100,
                  "semi.ema_decay": 0.99, "semi.loss": "pseudo_label",
                  "semi.confidence": 0.9, "semi.strong_scale": 2.0}


def flatten(config: ml_collections.ConfigDict | dict,
            prefix: str = "") -> dict[str, object]:
  """Flattens nested dicts into `{"a.b": value}`; tuples become lists."""
  flat = {}
  for key, value in dict(config).items():
    name = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f"{name}."))
    else:
      flat[name] = list(value) if isinstance(value, tuple) else value
  return flat


def incompatible_keys(saved: dict[str, object],
                      config: ml_collections.ConfigDict) -> list[str]:
  """Lists the keys whose values differ and that resuming cannot accept."""
  saved = {**IMPLIED_VALUES, **saved}
  current = {**IMPLIED_VALUES, **flatten(config)}
  differing = sorted(
      key for key in set(saved) | set(current)
      if saved.get(key) != current.get(key))
  return [key for key in differing
          if not any(key == c or (c.endswith(".") and key.startswith(c))
                     for c in COMPATIBLE_KEYS)]


def load_saved_config(workdir: pathlib.Path) -> dict[str, object] | None:
  path = workdir / CONFIG_FILE
  if not path.exists():
    return None
  return json.loads(path.read_text())


def load_run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """Rebuilds the ConfigDict a run was trained with from its config.json.

  Raises:
    FileNotFoundError: the workdir contains no trained run.
  """
  saved = load_saved_config(pathlib.Path(workdir))
  if saved is None:
    raise FileNotFoundError(
        f"No trained run in {workdir}: {CONFIG_FILE} is missing. Point "
        "--workdir at the folder a training run wrote.")
  nested: dict = {}
  for key, value in saved.items():
    node = nested
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return ml_collections.ConfigDict(nested)


def has_checkpoints(workdir: pathlib.Path) -> bool:
  """Tells whether `workdir` contains any saved training step."""
  return any(path.is_dir() and any(path.iterdir())
             for path in (pathlib.Path(workdir) / "checkpoints",
                          pathlib.Path(workdir) / "best"))


def check_config(workdir: pathlib.Path,
                 config: ml_collections.ConfigDict) -> None:
  """Raises ValueError if the workdir contains a run of an incompatible config."""
  saved = load_saved_config(workdir)
  if saved is None:
    return
  keys = incompatible_keys(saved, config)
  if keys and not has_checkpoints(workdir):
    # A run that failed before its first checkpoint has nothing to resume,
    # so a corrected config replaces the saved one.
    logging.info("Workdir %s has no checkpoint yet; its saved config is "
                 "replaced (%s changed).", workdir, ", ".join(keys))
    return
  if keys:
    current = flatten(config)
    changes = "; ".join(
        f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
        for key in keys)
    raise ValueError(
        f"Workdir {workdir} contains a run with an incompatible config "
        f"({changes}). "
        "Use the saved config, pick a new --workdir, or pass --restart to "
        f"move the old run into {workdir / ARCHIVE_DIR} and start over.")


def write_config(workdir: pathlib.Path,
                 config: ml_collections.ConfigDict) -> None:
  """Writes the config as JSON, through a temporary file and a rename."""
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / CONFIG_FILE
  temporary = path.with_suffix(".json.tmp")
  temporary.write_text(json.dumps(flatten(config), indent=2, sort_keys=True))
  temporary.replace(path)


def archive_run(workdir: pathlib.Path) -> pathlib.Path | None:
  """Moves a previous run's files into `archive/<UTC time>/`; deletes nothing."""
  entries = [p for p in workdir.iterdir() if p.name != ARCHIVE_DIR] if (
      workdir.exists()) else []
  if not entries:
    return None
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y%m%dT%H%M%SZ")
  destination = workdir / ARCHIVE_DIR / stamp
  destination.mkdir(parents=True)
  for entry in entries:
    shutil.move(str(entry), str(destination / entry.name))
  logging.warning("Moved the previous run in %s to %s.", workdir, destination)
  return destination
