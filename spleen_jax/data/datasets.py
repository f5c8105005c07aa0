"""Prepares the TFDS dataset of a config and loads its splits as `Frames`."""

import logging

import ml_collections
import tensorflow_datasets as tfds

from spleen_jax.data import input_pipeline
from spleen_jax.data import splits as splits_lib
from spleen_jax.data.abdomen_us import abdomen_us_dataset_builder

SUBJECT_PREFIX = "subject_"


def prepare_builder(data_config: ml_collections.ConfigDict
                    ) -> tfds.core.DatasetBuilder:
  """Builds the AbdomenUS dataset from `data.manual_dir` unless prepared.

  Raises:
    ValueError / FileNotFoundError: `data.manual_dir` is unset while the
      dataset is not prepared yet, or does not hold the release's layout.
  """
  data_dir = data_config.tfds_data_dir or None
  builder = abdomen_us_dataset_builder.Builder(data_dir=data_dir)
  manual_dir = data_config.manual_dir
  if manual_dir:
    # Check the folder even when the dataset is prepared, so that a wrong
    # path is reported instead of silently training on older data.
    root = abdomen_us_dataset_builder.find_release_root(manual_dir)
    manual_dir = str(root.parent)
  elif not builder.is_prepared():
    raise ValueError(
        "data.manual_dir is not set and the AbdomenUS dataset is not prepared "
        f"under {builder.data_dir}: pass --config.data.manual_dir=PATH, the "
        "folder that contains abdominal_US/.")

  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  return builder


def annotated_subjects(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Lists the subjects with annotated frames, from the split names."""
  return sorted(name[len(SUBJECT_PREFIX):] for name in builder.info.splits
                if name.startswith(SUBJECT_PREFIX))


def assign_subjects(builder: tfds.core.DatasetBuilder,
                    data_config: ml_collections.ConfigDict
                    ) -> dict[str, tuple[str, ...]]:
  """Maps `train`, `validation` and `test` to subjects, as the config says."""
  return splits_lib.assign_subjects(
      annotated_subjects(builder),
      train_subjects=data_config.train_subjects,
      validation_subjects=data_config.validation_subjects,
      test_subjects=data_config.test_subjects,
      validation_fraction=data_config.validation_fraction,
      test_fraction=data_config.test_fraction,
      seed=data_config.split_seed)


def load_split(builder: tfds.core.DatasetBuilder,
               data_config: ml_collections.ConfigDict, split: str,
               subjects: tuple[str, ...]) -> input_pipeline.Frames:
  """Loads the annotated frames of `subjects` as letterboxed `Frames`.

  Raises:
    ValueError: the split has no subject, so no frames.
  """
  if not subjects:
    raise ValueError(
        f"The {split} split is empty: no subject is assigned to it. Set "
        f"--config.data.{split}_subjects or data.{split}_fraction (annotated "
        f"subjects: {annotated_subjects(builder)}).")
  expression = "+".join(f"{SUBJECT_PREFIX}{s}" for s in subjects)
  dataset = builder.as_dataset(split=expression, shuffle_files=False)
  frames = input_pipeline.load_frames(
      tfds.as_numpy(dataset), data_config.classes,
      tuple(data_config.image_size))
  logging.info("Loaded %d frames of the %s split (subjects %s).", len(frames),
               split, ", ".join(subjects))
  return frames

