"""Several data sources trained together, each with its own data settings.

`config.data.sources` maps a source name to the data settings that differ
from `config.data` for that source, plus its sampling `weight`:

  config.data.sources = ml_collections.ConfigDict({
      "abdomen_us": {"name": "abdomen_us", "weight": 1.0},
      "spleenex": {"name": "folder", "weight": 1.0,
                   "folder": {"root": "/data/spleenex"}},
      "phantom": {"name": "us_phantom", "weight": 0.5},
  })

Every source shares `data.classes`, `data.image_size` and
`data.normalization`, which a source may not override. An empty
`data.sources` means the single source that `config.data` describes.
"""

import copy
import logging

import ml_collections

from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline

# Settings that must be equal across sources because the frames of all
# sources go through one model.
SHARED_KEYS = ("classes", "image_size", "normalization")
WEIGHT_KEY = "weight"


def has_sources(data_config: ml_collections.ConfigDict) -> bool:
  return bool(data_config.get("sources"))


def source_configs(data_config: ml_collections.ConfigDict
                   ) -> dict[str, ml_collections.ConfigDict]:
  """Returns the data config of each source, by source name.

  Raises:
    ValueError: a source overrides a shared setting or names a setting that
      `config.data` does not have.
  """
  if not has_sources(data_config):
    return {data_config.get("name", datasets.ABDOMEN_US): data_config}
  base = copy.deepcopy(data_config.to_dict())
  base.pop("sources")
  configs = {}
  for name, overrides in data_config.sources.items():
    overrides = dict(overrides)
    overrides.pop(WEIGHT_KEY, None)
    shared = sorted(set(overrides) & set(SHARED_KEYS))
    if shared:
      raise ValueError(
          f"data.sources.{name} sets {shared}, which all sources share: set "
          "them once in config.data instead.")
    merged = copy.deepcopy(base)
    _update(merged, overrides, f"data.sources.{name}")
    configs[name] = ml_collections.ConfigDict(merged)
  return configs


def _update(target: dict, overrides: dict, where: str) -> None:
  """Applies nested `overrides` to `target`; unknown keys are an error."""
  for key, value in overrides.items():
    if key not in target:
      raise ValueError(
          f"{where}.{key} is not a data setting: choose from "
          f"{', '.join(sorted(target))}.")
    if isinstance(target[key], dict):
      _update(target[key], dict(value), f"{where}.{key}")
    else:
      target[key] = value


def sampling_weights(data_config: ml_collections.ConfigDict
                     ) -> dict[str, float] | None:
  """Returns the sampling weight of each source, or None for one source."""
  if not has_sources(data_config):
    return None
  return {name: float(source.get(WEIGHT_KEY, 1.0))
          for name, source in data_config.sources.items()}


def load_splits(data_config: ml_collections.ConfigDict,
                splits: tuple[str, ...]
                ) -> tuple[dict[str, dict[str, tuple[str, ...]]],
                           dict[str, dict[str, input_pipeline.Frames]]]:
  """Prepares every source and loads the requested splits of each.

  Returns:
    The subjects of every split by source, and the frames of each requested
    split by source. A source whose split has no subject is left out of
    that split (a source may serve training only), but every split needs at
    least one source.

  Raises:
    ValueError: no source has frames for one of `splits`.
  """
  subjects, frames = {}, {split: {} for split in splits}
  multiple = has_sources(data_config)
  for name, config in source_configs(data_config).items():
    builder = datasets.prepare_builder(config)
    subjects[name] = datasets.assign_subjects(builder, config)
    for split in splits:
      if multiple and not subjects[name][split]:
        logging.info("Source %s has no %s subjects.", name, split)
        continue
      frames[split][name] = datasets.load_split(builder, config, split,
                                                subjects[name][split])
  for split in splits:
    if not frames[split]:
      raise ValueError(
          f"No data source has a {split} split: assign {split} subjects in "
          "at least one of data.sources.")
  return subjects, frames
