"""TFDS builder `abdomen_us` for the real frames of the AbdomenUS release."""

from spleen_jax.data.abdomen_us import abdomen_us_dataset_builder

Builder = abdomen_us_dataset_builder.Builder
find_release_root = abdomen_us_dataset_builder.find_release_root

__all__ = ["Builder", "find_release_root"]
