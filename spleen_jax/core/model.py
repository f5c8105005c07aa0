"""U-Net for 2-D segmentation, in flax.linen.

Shapes follow the NHWC convention of `flax.linen.Conv`: images are
`[batch, height, width, channels]` and logits `[batch, height, width,
num_classes]`, where class 0 is background.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMALIZATIONS = ("batch", "group", "none")
UPSAMPLINGS = ("transpose", "pixel_shuffle", "resize")


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """Rearranges `[n, h, w, c * block**2]` into `[n, h * block, w * block, c]`."""
  n, h, w, c = x.shape
  channels = c // (block * block)
  x = x.reshape(n, h, w, block, block, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * block, w * block, channels)


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, each followed by normalisation and ReLU."""

  features: int
  normalization: str = "batch"
  num_groups: int = 8
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    use_bias = self.normalization == "none"
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), use_bias=use_bias, dtype=self.dtype)(x)
      x = self._normalize(x, train)
      x = nn.relu(x)
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x

  def _normalize(self, x: jax.Array, train: bool) -> jax.Array:
    if self.normalization == "batch":
      return nn.BatchNorm(
          use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    if self.normalization == "group":
      return nn.GroupNorm(
          num_groups=min(self.num_groups, self.features), dtype=self.dtype)(x)
    return x


class UpSample(nn.Module):
  """Doubles height and width and sets the channel count to `features`.

  `transpose` and `pixel_shuffle` compute the same function: a 2x2, stride-2
  transposed convolution has no overlapping windows, so it equals a 1x1
  convolution to `4 * features` channels followed by depth-to-space. The
  second form trains about twice as fast on CPU (see docs/benchmarks.md).
  `resize` is bilinear up-sampling followed by a 3x3 convolution.
  """

  features: int
  method: str = "pixel_shuffle"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.method == "transpose":
      return nn.ConvTranspose(
          self.features, (2, 2), strides=(2, 2), dtype=self.dtype)(x)
    if self.method == "pixel_shuffle":
      x = nn.Conv(4 * self.features, (1, 1), dtype=self.dtype)(x)
      return depth_to_space(x, 2)
    n, h, w, c = x.shape
    x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="bilinear")
    return nn.Conv(self.features, (3, 3), dtype=self.dtype)(x)


class UNet(nn.Module):
  """U-Net (Ronneberger et al., MICCAI 2015) with configurable depth and width.

  Attributes:
    num_classes: output channels, background included.
    depth: number of 2x down-sampling steps; height and width of the input must
      be divisible by `2**depth`.
    base_features: channels of the first level; each level doubles them.
    normalization: `batch`, `group` or `none`.
    dropout_rate: dropout after the bottleneck block and each decoder block.
    upsampling: `transpose`, `pixel_shuffle` or `resize` (see `UpSample`).
    dtype: computation dtype; parameters stay float32 and logits are float32.
  """

  num_classes: int
  depth: int = 4
  base_features: int = 32
  normalization: str = "batch"
  num_groups: int = 8
  dropout_rate: float = 0.0
  upsampling: str = "pixel_shuffle"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Maps `images: [n, h, w, c] float32` to `logits: [n, h, w, num_classes]`."""
    self._check_input(images)
    block = functools.partial(
        ConvBlock, normalization=self.normalization, num_groups=self.num_groups,
        dtype=self.dtype)

    # Encoder: keep each level's output for the skip connection.
    x = images.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = block(self.base_features * 2**level)(x, train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))

    x = block(self.base_features * 2**self.depth,
              dropout_rate=self.dropout_rate)(x, train)

    # Decoder: up-sample, concatenate the skip, convolve.
    for level in reversed(range(self.depth)):
      features = self.base_features * 2**level
      x = UpSample(features, self.upsampling, dtype=self.dtype)(x)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = block(features, dropout_rate=self.dropout_rate)(x, train)

    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x)
    return logits.astype(jnp.float32)

  def _check_input(self, images: jax.Array) -> None:
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"Unknown normalization {self.normalization!r}: "
                       f"choose from {', '.join(NORMALIZATIONS)}.")
    if self.upsampling not in UPSAMPLINGS:
      raise ValueError(f"Unknown upsampling {self.upsampling!r}: "
                       f"choose from {', '.join(UPSAMPLINGS)}.")
    if images.ndim != 4:
      raise ValueError(
          f"UNet expects images of shape [batch, height, width, channels], "
          f"got shape {images.shape}.")
    multiple = 2**self.depth
    height, width = images.shape[1:3]
    if height % multiple or width % multiple:
      raise ValueError(
          f"Image size {height}x{width} is not divisible by 2**depth = "
          f"{multiple}: change data.image_size or model.depth.")
