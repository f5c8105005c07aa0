"""TFDS builder `folder_us` for a user's folder of frames and masks."""

from spleen_jax.data.folder_us import folder_config
from spleen_jax.data.folder_us import folder_us_dataset_builder
from spleen_jax.data.folder_us import preparation

Builder = folder_us_dataset_builder.Builder
FolderConfig = folder_config.FolderConfig
NAME = preparation.NAME
assign_subjects = preparation.assign_subjects
examples = preparation.examples
prepare = preparation.prepare

__all__ = ["Builder", "FolderConfig", "NAME", "assign_subjects", "examples",
           "prepare"]
