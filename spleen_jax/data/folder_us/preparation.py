"""Preparation and loading of a `folder_us` dataset for training.

The TFDS cache contains one data directory per folder and conversion options:
`<data_dir>/folder_us/<config name>/1.0.0`, where the config name is the
folder's base name plus a hash of its resolved root and options. The build
stores a fingerprint of the folder's file names, sizes and modification
times in its metadata. `prepare` compares it with the folder on every run
and rebuilds through TFDS (`REUSE_CACHE_IF_EXISTS`, which replaces the old
build) when it differs.
"""

from typing import Iterator

from absl import logging
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from spleen_jax.data import splits as splits_lib
from spleen_jax.data.folder_us import fingerprint
from spleen_jax.data.folder_us import folder_config
from spleen_jax.data.folder_us import folder_us_dataset_builder as builder_lib

NAME = "folder_us"


def prepare(data_config: ml_collections.ConfigDict,
            data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Builds the folder of `data.folder` unless an up-to-date build exists.

  Raises:
    ValueError / FileNotFoundError: the settings are invalid, the root is
      missing, or the folder's files fail a check (the message names them).
  """
  config = folder_config.from_data_config(data_config)
  builder = builder_lib.Builder(config=config, data_dir=data_dir)
  current = fingerprint.folder_fingerprint(config)
  if not builder.is_prepared():
    logging.info("Preparing folder %s into %s.", config.root, builder.data_dir)
    builder.download_and_prepare()
  elif builder.info.metadata.get(builder_lib.FINGERPRINT_KEY) != current:
    logging.warning(
        "Files in %s changed since %s was prepared: preparing it again.",
        config.root, builder.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  else:
    logging.info("Reusing %s, prepared from %s.", builder.data_dir,
                 config.root)
    return builder
  # A new instance reads the info that the build wrote.
  return builder_lib.Builder(config=config, data_dir=data_dir)


def _subjects_and_splits(builder: tfds.core.DatasetBuilder
                         ) -> dict[str, str]:
  """Reads subject -> fixed split ("" when splits.csv is absent)."""
  skip = tfds.decode.SkipDecoding()
  dataset = builder.as_dataset(split=builder_lib.SPLIT, shuffle_files=False,
                               decoders={"image": skip, "label": skip})
  return {example["subject"].decode(): example["split"].decode()
          for example in tfds.as_numpy(dataset)}


def assign_subjects(builder: tfds.core.DatasetBuilder,
                    data_config: ml_collections.ConfigDict
                    ) -> dict[str, tuple[str, ...]]:
  """Maps train, validation and test to subjects of the folder.

  With splits.csv, its splits are used; with `data.num_folds`, its train and
  validation subjects are dealt into folds and its test split stays. Without
  splits.csv, `splits.assign_subjects` draws them from the config's subject
  settings and seed.

  Raises:
    ValueError: splits.csv is used together with data.*_subjects.
  """
  subjects = _subjects_and_splits(builder)
  if not any(subjects.values()):
    return splits_lib.assign_from_config(sorted(subjects), data_config)

  listed = [f"data.{s}_subjects" for s in splits_lib.SPLITS
            if data_config.get(f"{s}_subjects")]
  if listed:
    raise ValueError(
        f"The folder's splits.csv assigns the splits, but {', '.join(listed)} "
        "is also set: pass "
        + " ".join(f"--config.{name}=()" for name in listed)
        + ", or remove splits.csv (data.folder.splits_file).")
  fixed = {split: tuple(sorted(s for s, value in subjects.items()
                               if value == split))
           for split in splits_lib.SPLITS}
  num_folds = data_config.get("num_folds", 0)
  if num_folds:
    return splits_lib.assign_subjects(
        fixed["train"] + fixed["validation"] + fixed["test"],
        test_subjects=fixed["test"], test_fraction=0.0,
        seed=data_config.split_seed, num_folds=num_folds,
        fold=data_config.get("fold", 0))
  logging.info("Splits from splits.csv: %s.",
               {split: len(names) for split, names in fixed.items()})
  return fixed


def examples(builder: tfds.core.DatasetBuilder,
             subjects: tuple[str, ...]) -> Iterator[dict]:
  """Yields the decoded examples (numpy dicts) of `subjects`.

  The frames and label maps of other subjects are skipped before decoding.
  """
  skip = tfds.decode.SkipDecoding()
  features = builder.info.features
  dataset = builder.as_dataset(split=builder_lib.SPLIT, shuffle_files=False,
                               decoders={"image": skip, "label": skip})
  selected = tf.constant(sorted(subjects) or [""], tf.string)
  dataset = dataset.filter(
      lambda example: tf.reduce_any(tf.equal(example["subject"], selected)))

  def decode(example):
    return {**example,
            "image": features["image"].decode_example(example["image"]),
            "label": features["label"].decode_example(example["label"])}

  return tfds.as_numpy(dataset.map(decode))
