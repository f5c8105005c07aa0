"""Masked reconstruction: corruption, loss values and one real step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spleen_jax.core import model as model_lib
from spleen_jax.core import reconstruction
from spleen_jax.core import steps


def test_corrupt_blanks_whole_patches():
  images = jnp.ones((2, 8, 8, 1))
  config = reconstruction.MaskingConfig(patch_size=4, mask_ratio=0.5,
                                        noise_std=0.0)
  corrupted, mask = reconstruction.corrupt(images, jax.random.PRNGKey(1),
                                           config)
  mask = np.asarray(mask)
  # Each 4x4 patch is entirely blanked or entirely kept.
  patches = mask.reshape(2, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4)
  assert set(np.unique(patches.reshape(2, 2, 2, 16).mean(-1))) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(corrupted)[..., 0], 1.0 - mask)


def test_corrupt_rejects_indivisible_size():
  with pytest.raises(ValueError, match="patch_size 16 does not divide"):
    reconstruction.corrupt(jnp.ones((1, 24, 24, 1)), jax.random.PRNGKey(0),
                           reconstruction.MaskingConfig(patch_size=16))


def test_reconstruction_loss_weights_visible_pixels():
  predicted = jnp.array([[[[1.0], [3.0]]]])
  target = jnp.zeros((1, 1, 2, 1))
  mask = jnp.array([[[1.0, 0.0]]])
  # Blanked pixel error 1 (weight 1), visible pixel error 9 (weight 0.1).
  loss = reconstruction.reconstruction_loss(predicted, target, mask, 0.1)
  assert float(loss) == pytest.approx((1.0 + 0.9) / 1.1)
  masked_only = reconstruction.reconstruction_loss(predicted, target, mask,
                                                   0.0)
  assert float(masked_only) == pytest.approx(1.0)


def test_train_steps_lower_reconstruction_loss():
  model = model_lib.UNet(num_classes=1, depth=2, base_features=4,
                         dropout_rate=0.0)
  state = steps.create_train_state(
      model, jax.random.PRNGKey(0), (16, 16, 1),
      steps.make_optimizer(steps.make_learning_rate_schedule(
          "constant", 1e-2, 10)))
  yy, xx = np.mgrid[:16, :16]
  images = jnp.asarray(np.sin(xx / 3.0)[None, ..., None].repeat(2, 0),
                       jnp.float32)
  config = reconstruction.MaskingConfig(patch_size=4)
  step = jax.jit(lambda s, x: reconstruction.train_step(s, x, config))
  losses = []
  for _ in range(8):
    state, outputs = step(state, images)
    losses.append(float(outputs["loss"]))
  assert losses[-1] < losses[0]
  assert int(state.step) == 8
