"""Test-time augmentation: average softmax probabilities over flips and scales."""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def predict_probabilities(logits_fn: Callable[[jax.Array], jax.Array],
                          images: jax.Array, *, flip: bool = False,
                          scales: Sequence[float] = (1.0,),
                          multiple: int = 16) -> jax.Array:
  """Returns softmax probabilities averaged over the augmented views.

  Args:
    logits_fn: maps `[n, h, w, 1]` images to `[n, h, w, classes]` logits.
    images: `[n, h, w, 1]` float32 normalised images.
    flip: also predict on the left-right mirrored images.
    scales: zoom factors; each view is resized by the factor (rounded to a
      multiple of `multiple` pixels), predicted, and resized back. `(1.0,)`
      is the plain prediction, and a factor of 1 never resizes.
    multiple: the size divisor the model needs, `2**depth` for the U-Net.

  Returns:
    `[n, h, w, classes]` float32 probabilities.
  """
  n, height, width, channels = images.shape
  total = None
  count = 0
  for scale in scales:
    size = (height, width)
    if scale != 1.0:
      size = (max(multiple, round(height * scale / multiple) * multiple),
              max(multiple, round(width * scale / multiple) * multiple))
    view = images
    if size != (height, width):
      view = jax.image.resize(images, (n, *size, channels), method="linear")
    for mirrored in ((False, True) if flip else (False,)):
      x = jnp.flip(view, axis=2) if mirrored else view
      probabilities = jax.nn.softmax(logits_fn(x), axis=-1)
      if mirrored:
        probabilities = jnp.flip(probabilities, axis=2)
      if size != (height, width):
        probabilities = jax.image.resize(
            probabilities, (n, height, width, probabilities.shape[-1]),
            method="linear")
      total = probabilities if total is None else total + probabilities
      count += 1
  return total / count
