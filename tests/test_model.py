"""Tests for the U-Net: shapes, dtypes, options and input checks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spleen_jax.core import model


@pytest.mark.parametrize(
    "normalization,upsampling",
    list(itertools.product(model.NORMALIZATIONS, model.UPSAMPLINGS)))
def test_unet_logits_shape_and_dtype(normalization, upsampling):
  net = model.UNet(num_classes=3, depth=2, base_features=4,
                   normalization=normalization, upsampling=upsampling,
                   dropout_rate=0.2)
  images = jnp.ones((2, 32, 48, 1), jnp.float32)
  variables = net.init(jax.random.PRNGKey(0), images)
  logits = net.apply(variables, images)
  assert logits.shape == (2, 32, 48, 3)
  assert logits.dtype == jnp.float32


def test_unet_bfloat16_returns_float32_logits():
  net = model.UNet(num_classes=2, depth=1, base_features=4, dtype=jnp.bfloat16)
  images = jnp.ones((1, 16, 16, 1))
  variables = net.init(jax.random.PRNGKey(0), images)
  params = jax.tree_util.tree_leaves(variables["params"])
  assert all(p.dtype == jnp.float32 for p in params)
  assert net.apply(variables, images).dtype == jnp.float32


def test_unet_batch_norm_updates_statistics_in_training():
  net = model.UNet(num_classes=2, depth=1, base_features=4)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 1))
  variables = net.init(jax.random.PRNGKey(0), images)
  _, updates = net.apply(variables, images, train=True,
                         mutable=["batch_stats"])
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_unet_depth_sets_parameter_count():
  images = jnp.ones((1, 16, 16, 1))
  shallow = model.UNet(num_classes=2, depth=1, base_features=4).init(
      jax.random.PRNGKey(0), images)
  deep = model.UNet(num_classes=2, depth=2, base_features=4).init(
      jax.random.PRNGKey(0), images)
  count = lambda v: sum(x.size for x in jax.tree_util.tree_leaves(v["params"]))
  assert count(deep) > count(shallow)


def test_unet_rejects_indivisible_size():
  net = model.UNet(num_classes=2, depth=3, base_features=4)
  with pytest.raises(ValueError, match=r"30x32 is not divisible by 2\*\*depth = 8"):
    net.init(jax.random.PRNGKey(0), jnp.ones((1, 30, 32, 1)))


def test_unet_rejects_unknown_normalization():
  net = model.UNet(num_classes=2, depth=1, normalization="layer")
  with pytest.raises(ValueError, match="Unknown normalization 'layer'"):
    net.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 1)))


def test_depth_to_space_moves_channels_to_pixels():
  x = jnp.arange(8.0).reshape(1, 1, 2, 4)  # two pixels, 4 channels each
  y = model.depth_to_space(x, 2)
  assert y.shape == (1, 2, 4, 1)
  np.testing.assert_array_equal(
      y[0, ..., 0], [[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]])


def test_pixel_shuffle_equals_transposed_conv():
  # flax's 2x2 stride-2 ConvTranspose with kernel K[a, b, c, f] writes input
  # pixel (i, j) to output (2i + 1 - a, 2j + 1 - b). So it equals a 1x1
  # convolution with the spatially flipped kernel and channels ordered
  # (a, b, f), followed by depth-to-space.
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 5))
  transpose = model.UpSample(features=2, method="transpose")
  shuffle = model.UpSample(features=2, method="pixel_shuffle")
  t_vars = transpose.init(jax.random.PRNGKey(1), x)
  kernel = t_vars["params"]["ConvTranspose_0"]["kernel"]  # [2, 2, 5, 2]
  bias = t_vars["params"]["ConvTranspose_0"]["bias"]
  flipped = kernel[::-1, ::-1]
  s_kernel = jnp.transpose(flipped, (2, 0, 1, 3)).reshape(1, 1, 5, 8)
  s_vars = {"params": {"Conv_0": {"kernel": s_kernel,
                                  "bias": jnp.tile(bias, 4)}}}
  np.testing.assert_allclose(shuffle.apply(s_vars, x),
                             transpose.apply(t_vars, x), atol=1e-5)
