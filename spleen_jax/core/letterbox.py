"""Aspect-preserving resize with padding ("letterbox") and its inverse.

A frame of `height x width` pixels is scaled by one factor so that it fits
`target_height x target_width`, then centred and padded. The geometry uses
integer arithmetic only, so the TensorFlow pipeline, numpy and JAX code agree
to the pixel on where the frame lies inside the padded image.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Letterbox:
  """Placement of a `height x width` frame inside a `target` image, in pixels."""

  height: int
  width: int
  target_height: int
  target_width: int
  resized_height: int
  resized_width: int
  top: int
  left: int

  def as_array(self) -> np.ndarray:
    """Returns the eight fields as an int32 vector, in declaration order."""
    return np.array(dataclasses.astuple(self), np.int32)

  @classmethod
  def from_array(cls, values) -> "Letterbox":
    return cls(*(int(v) for v in values))


def _round_ratio(numerator: int, denominator: int) -> int:
  """Rounds `numerator / denominator` half up, in integers."""
  return (2 * numerator + denominator) // (2 * denominator)


def letterbox_geometry(height: int, width: int, target_height: int,
                       target_width: int) -> Letterbox:
  """Computes the scale and padding that fit a frame into the target size."""
  if min(height, width, target_height, target_width) < 1:
    raise ValueError(
        f"Cannot letterbox a {height}x{width} frame into "
        f"{target_height}x{target_width}: every size must be at least 1.")

  # The side that fills the target decides the scale: compare the ratios
  # target_height / height and target_width / width without division.
  if target_height * width <= target_width * height:
    resized_height = target_height
    resized_width = _round_ratio(width * target_height, height)
  else:
    resized_width = target_width
    resized_height = _round_ratio(height * target_width, width)
  resized_height = min(max(resized_height, 1), target_height)
  resized_width = min(max(resized_width, 1), target_width)

  return Letterbox(
      height=height, width=width,
      target_height=target_height, target_width=target_width,
      resized_height=resized_height, resized_width=resized_width,
      top=(target_height - resized_height) // 2,
      left=(target_width - resized_width) // 2)


def invert_letterbox(values: jax.Array, box: Letterbox,
                     method: str = "linear") -> jax.Array:
  """Maps a `[target_height, target_width, ...]` array back onto the frame.

  Crops the padding away and resizes to `[height, width, ...]`. Use `linear`
  for logits or probabilities (then take the arg-max) and `nearest` for label
  maps.
  """
  if values.shape[:2] != (box.target_height, box.target_width):
    raise ValueError(
        f"Expected an array of {box.target_height}x{box.target_width} "
        f"pixels, got shape {values.shape}.")
  cropped = values[box.top:box.top + box.resized_height,
                   box.left:box.left + box.resized_width]
  shape = (box.height, box.width, *values.shape[2:])
  return jax.image.resize(jnp.asarray(cropped), shape, method=method)
