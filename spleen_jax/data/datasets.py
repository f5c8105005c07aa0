"""Prepares the TFDS dataset of a config and loads its splits as `Frames`."""

import logging

import ml_collections
import tensorflow_datasets as tfds

from spleen_jax.data import folder_us
from spleen_jax.data import input_pipeline
from spleen_jax.data import splits as splits_lib
from spleen_jax.data.abdomen_us import abdomen_us_dataset_builder
from spleen_jax.data.us_phantom import us_phantom_dataset_builder

SUBJECT_PREFIX = "subject_"
# Values of `data.name`.
ABDOMEN_US = "abdomen_us"
US_PHANTOM = "us_phantom"
FOLDER = "folder"
DATASET_NAMES = (ABDOMEN_US, US_PHANTOM, FOLDER)


def prepare_builder(data_config: ml_collections.ConfigDict
                    ) -> tfds.core.DatasetBuilder:
  """Builds the dataset named by `data.name` unless it is prepared.

  `abdomen_us` reads the release in `data.manual_dir`; `us_phantom`
  simulates the frames of the builder config `data.phantom_config`;
  `folder` converts the folder of `data.folder.root`, again whenever its
  files change (see `folder_us.preparation`).

  Raises:
    ValueError / FileNotFoundError: `data.name` is unknown, or
      `data.manual_dir` is unset while the AbdomenUS dataset is not prepared
      yet, or does not hold the release's layout.
  """
  name = data_config.get("name", ABDOMEN_US)
  if name not in DATASET_NAMES:
    raise ValueError(f"Unknown data.name {name!r}: choose from "
                     f"{', '.join(DATASET_NAMES)}.")
  data_dir = data_config.tfds_data_dir or None
  if name == US_PHANTOM:
    return _prepare_phantom(data_config, data_dir)
  if name == FOLDER:
    return folder_us.prepare(data_config, data_dir)
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


def _prepare_phantom(data_config: ml_collections.ConfigDict,
                     data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Simulates the `us_phantom` frames of `data.phantom_config` once."""
  config_name = data_config.get("phantom_config",
                                us_phantom_dataset_builder.DEFAULT_CONFIG)
  choices = [c.name for c in us_phantom_dataset_builder.Builder.BUILDER_CONFIGS]
  if config_name not in choices:
    raise ValueError(f"Unknown data.phantom_config {config_name!r}: choose "
                     f"from {', '.join(choices)}.")
  builder = us_phantom_dataset_builder.Builder(config=config_name,
                                               data_dir=data_dir)
  builder.download_and_prepare()
  return builder


def _is_phantom(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.name == US_PHANTOM


def _is_folder(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.name == folder_us.NAME


def _phantom_subjects(builder: tfds.core.DatasetBuilder
                      ) -> dict[str, tuple[str, ...]]:
  """Reads the subject ids of each phantom split; every frame is a subject."""
  skip = tfds.decode.SkipDecoding()
  subjects = {}
  for split in us_phantom_dataset_builder.SPLITS:
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={"image": skip, "label": skip})
    subjects[split] = tuple(sorted(
        example["subject"].decode("utf-8")
        for example in tfds.as_numpy(dataset)))
  return subjects


def annotated_subjects(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Lists the subjects with annotated frames, from the split names."""
  return sorted(name[len(SUBJECT_PREFIX):] for name in builder.info.splits
                if name.startswith(SUBJECT_PREFIX))


def assign_subjects(builder: tfds.core.DatasetBuilder,
                    data_config: ml_collections.ConfigDict
                    ) -> dict[str, tuple[str, ...]]:
  """Maps `train`, `validation` and `test` to subjects as set in the config.

  The phantom's splits are fixed by its builder config, so for `us_phantom`
  this returns the subjects of each split and ignores the subject settings.
  A folder's splits.csv, if it has one, fixes its splits.
  """
  if _is_phantom(builder):
    return _phantom_subjects(builder)
  if _is_folder(builder):
    return folder_us.assign_subjects(builder, data_config)
  return splits_lib.assign_from_config(annotated_subjects(builder),
                                       data_config)


def load_split(builder: tfds.core.DatasetBuilder,
               data_config: ml_collections.ConfigDict, split: str,
               subjects: tuple[str, ...],
               keep_originals: bool = False) -> input_pipeline.Frames:
  """Loads the annotated frames of `subjects` as letterboxed `Frames`.

  `keep_originals` also keeps the frames and label maps at their original
  resolution (see `input_pipeline.load_frames`).

  Raises:
    ValueError: the split has no subject, so no frames.
  """
  if _is_folder(builder):
    if not subjects:
      raise ValueError(
          f"The {split} split of the folder is empty: raise "
          f"data.{split}_fraction, list subjects in data.{split}_subjects, "
          "or give frames that split in the folder's splits.csv.")
    examples = folder_us.examples(builder, subjects)
  elif _is_phantom(builder):
    # Each phantom split is a TFDS split of the same name.
    examples = tfds.as_numpy(builder.as_dataset(split=split,
                                                shuffle_files=False))
  elif not subjects:
    raise ValueError(
        f"The {split} split is empty: no subject is assigned to it. Set "
        f"--config.data.{split}_subjects or data.{split}_fraction (annotated "
        f"subjects: {annotated_subjects(builder)}).")
  else:
    expression = "+".join(f"{SUBJECT_PREFIX}{s}" for s in subjects)
    examples = tfds.as_numpy(builder.as_dataset(split=expression,
                                                shuffle_files=False))
  frames = input_pipeline.load_frames(
      examples, data_config.classes,
      tuple(data_config.image_size), keep_originals=keep_originals)
  logging.info("Loaded %d frames of the %s split (subjects %s).", len(frames),
               split, ", ".join(subjects))
  return frames


def load_unlabeled(builder: tfds.core.DatasetBuilder,
                   data_config: ml_collections.ConfigDict,
                   exclude_subjects: tuple[str, ...] = (),
                   only_unannotated_subjects: bool = False
                   ) -> input_pipeline.Frames:
  """Loads the frames of the `unlabeled` split as letterboxed `Frames`.

  Args:
    builder: a prepared AbdomenUS builder.
    data_config: `config.data`.
    exclude_subjects: subjects whose frames are left out, typically the
      validation and test subjects, so that no frame of a held-out subject
      is ever trained on.
    only_unannotated_subjects: also leave out every subject that has an
      annotated frame, so that one pretrained model fits every
      cross-validation fold.

  Returns:
    Frames whose label maps are all background.

  Raises:
    ValueError: the dataset has no `unlabeled` split.
  """
  unlabeled = abdomen_us_dataset_builder.UNLABELED_SPLIT
  if unlabeled not in builder.info.splits:
    raise ValueError(
        f"Dataset {builder.name} has no {unlabeled!r} split: semi-supervised "
        "and self-supervised training need the unlabelled AbdomenUS frames. "
        "Set --config.data.name=abdomen_us, or turn them off.")
  excluded = set(exclude_subjects)
  if only_unannotated_subjects:
    excluded |= set(annotated_subjects(builder))
  dataset = builder.as_dataset(split=unlabeled, shuffle_files=False)
  examples = (example for example in tfds.as_numpy(dataset)
              if example["subject"].decode("utf-8") not in excluded)
  frames = input_pipeline.load_frames(
      examples, data_config.classes, tuple(data_config.image_size))
  logging.info("Loaded %d unlabelled frames of subjects %s (left out: %s).",
               len(frames), ", ".join(sorted(set(frames.subjects))),
               ", ".join(sorted(excluded)) or "none")
  return frames
