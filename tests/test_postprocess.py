"""Post-processing of label maps and test-time augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spleen_jax.core import postprocess
from spleen_jax.core import tta


def test_largest_component_keeps_biggest():
  mask = np.zeros((10, 10), bool)
  mask[1:3, 1:3] = True
  mask[5:9, 5:9] = True
  kept = postprocess.keep_largest_component(mask)
  assert kept.sum() == 16
  assert not kept[1:3, 1:3].any()


def test_largest_component_joins_diagonal_neighbours():
  mask = np.eye(4, dtype=bool)
  mask[0, 3] = True
  kept = postprocess.keep_largest_component(mask)
  np.testing.assert_array_equal(kept, np.eye(4, dtype=bool))


def test_largest_component_of_empty_mask_is_empty():
  kept = postprocess.keep_largest_component(np.zeros((3, 3), bool))
  assert kept.dtype == bool
  assert not kept.any()


def test_fill_holes_fills_enclosed_background_only():
  mask = np.zeros((7, 7), bool)
  mask[1:6, 1:6] = True
  mask[3, 3] = False  # enclosed hole
  mask[1, 3] = False  # notch open to the outside
  filled = postprocess.fill_holes(mask)
  assert filled[3, 3]
  assert not filled[1, 3]


def test_postprocess_removes_small_component_to_background():
  label_map = np.zeros((10, 10), np.uint8)
  label_map[0:2, 0:2] = 1
  label_map[4:9, 4:9] = 1
  result = postprocess.postprocess_label_map(label_map, 2,
                                             largest_component=True)
  assert result.dtype == np.uint8
  assert (result[0:2, 0:2] == 0).all()
  assert (result[4:9, 4:9] == 1).all()


def test_postprocess_fills_hole_over_other_class():
  label_map = np.zeros((7, 7), np.uint8)
  label_map[1:6, 1:6] = 1
  label_map[3, 3] = 2
  result = postprocess.postprocess_label_map(label_map, 3, holes=True)
  assert result[3, 3] == 1


def test_postprocess_keeps_hole_filled_by_earlier_class():
  # Class 1 encloses a pixel of class 2; class 2 also has a bigger blob.
  # Filling class 1 takes the enclosed pixel, and class 2's largest-component
  # step must not reset that pixel to background.
  label_map = np.zeros((12, 20), np.uint8)
  label_map[1:6, 1:6] = 1
  label_map[3, 3] = 2
  label_map[7:11, 10:18] = 2
  result = postprocess.postprocess_label_map(
      label_map, 3, largest_component=True, holes=True)
  assert (result[1:6, 1:6] == 1).all()
  assert (result[7:11, 10:18] == 2).all()


def test_postprocess_without_steps_is_identity():
  rng = np.random.default_rng(0)
  label_map = rng.integers(0, 3, (8, 8)).astype(np.uint8)
  result = postprocess.postprocess_label_map(label_map, 3)
  np.testing.assert_array_equal(result, label_map)
  assert result is not label_map


def _two_class_logits(images):
  """Pointwise logits: class 1 wins where the image is positive."""
  return jnp.concatenate([jnp.zeros_like(images), images], axis=-1)


def test_tta_plain_is_softmax():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 32, 1))
  result = tta.predict_probabilities(_two_class_logits, images)
  expected = jax.nn.softmax(_two_class_logits(images), axis=-1)
  np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_tta_flip_averages_mirrored_prediction():
  # Logits that depend on the column: the mirrored view predicts with the
  # ramp reversed, so the average mixes both ramps.
  images = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 16, 1))
  ramp = jnp.arange(16, dtype=jnp.float32)[None, None, :, None]

  def logits_fn(x):
    return jnp.concatenate([jnp.zeros_like(x), x * ramp], axis=-1)

  result = tta.predict_probabilities(logits_fn, images, flip=True)
  plain = jax.nn.softmax(logits_fn(images), axis=-1)
  mirrored = jax.nn.softmax(
      jnp.concatenate([jnp.zeros_like(images), images * ramp[:, :, ::-1]],
                      axis=-1), axis=-1)
  np.testing.assert_allclose(result, (plain + mirrored) / 2, rtol=1e-5,
                             atol=1e-6)


def test_tta_flip_of_equivariant_model_changes_nothing():
  images = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 1))
  plain = tta.predict_probabilities(_two_class_logits, images)
  flipped = tta.predict_probabilities(_two_class_logits, images, flip=True)
  np.testing.assert_allclose(flipped, plain, rtol=1e-6)


def test_tta_scales_use_model_multiple():
  shapes = []

  def logits_fn(x):
    shapes.append(x.shape)
    return _two_class_logits(x)

  images = jnp.ones((1, 32, 48, 1))
  result = tta.predict_probabilities(logits_fn, images, scales=(0.5, 1.0, 1.3),
                                     multiple=16)
  assert result.shape == (1, 32, 48, 2)
  assert shapes == [(1, 16, 32, 1), (1, 32, 48, 1), (1, 48, 64, 1)]
  # A constant image gives the same probabilities at every scale.
  np.testing.assert_allclose(result, jax.nn.softmax(
      _two_class_logits(images), axis=-1), rtol=1e-5)


def test_tta_probabilities_sum_to_one():
  images = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 1))
  result = tta.predict_probabilities(_two_class_logits, images, flip=True,
                                     scales=(0.75, 1.0, 1.25), multiple=8)
  np.testing.assert_allclose(jnp.sum(result, axis=-1), 1.0, rtol=1e-5)
  assert float(result.min()) >= 0.0


@pytest.mark.parametrize("scale", [0.1, 0.0])
def test_tta_tiny_scale_keeps_one_multiple(scale):
  shapes = []

  def logits_fn(x):
    shapes.append(x.shape)
    return _two_class_logits(x)

  tta.predict_probabilities(logits_fn, jnp.ones((1, 32, 32, 1)),
                            scales=(scale,), multiple=16)
  assert shapes == [(1, 16, 16, 1)]


def test_tta_unit_scale_never_resizes():
  # 8 rows is not a multiple of 16; scale 1 must still pass the image as is.
  shapes = []

  def logits_fn(x):
    shapes.append(x.shape)
    return _two_class_logits(x)

  tta.predict_probabilities(logits_fn, jnp.ones((1, 8, 16, 1)), flip=True,
                            multiple=16)
  assert shapes == [(1, 8, 16, 1), (1, 8, 16, 1)]
