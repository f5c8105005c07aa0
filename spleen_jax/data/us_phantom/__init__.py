"""TFDS builder `us_phantom`: simulated spleen ultrasound frames."""

from spleen_jax.data.us_phantom import us_phantom_dataset_builder

Builder = us_phantom_dataset_builder.Builder
PhantomConfig = us_phantom_dataset_builder.PhantomConfig

__all__ = ["Builder", "PhantomConfig"]
