"""Exact values of the Dice and cross-entropy losses on hand-made masks."""

import math

import jax
import jax.numpy as jnp
import pytest

from spleen_jax.core import losses


def _probabilities(foreground):
  """Two-class probabilities `[n, h, w, 2]` from foreground probabilities."""
  foreground = jnp.asarray(foreground, jnp.float32)
  return jnp.stack([1.0 - foreground, foreground], axis=-1)


def test_soft_dice_partial_overlap():
  # One true pixel at (0, 0); prediction 0.8 there and 0.2 beside it.
  labels = jnp.array([[[1, 0], [0, 0]]])
  probabilities = _probabilities([[[0.8, 0.2], [0.0, 0.0]]])
  dice = losses.soft_dice_per_class(probabilities, labels, smooth=0.0)
  assert float(dice[1]) == pytest.approx(2 * 0.8 / (1.0 + 1.0))
  # Background: truth has 3 pixels, prediction sums to 0.2 + 0.8 + 1 + 1.
  assert float(dice[0]) == pytest.approx(2 * 2.8 / (3.0 + 3.0))


def test_soft_dice_smoothing_value():
  labels = jnp.array([[[1, 0], [0, 0]]])
  probabilities = _probabilities([[[0.8, 0.2], [0.0, 0.0]]])
  dice = losses.soft_dice_per_class(probabilities, labels, smooth=1.0)
  assert float(dice[1]) == pytest.approx((1.6 + 1.0) / (2.0 + 1.0))


def test_soft_dice_absent_class_predicted_empty_is_one():
  labels = jnp.zeros((1, 2, 2), jnp.int32)
  probabilities = _probabilities(jnp.zeros((1, 2, 2)))
  dice = losses.soft_dice_per_class(probabilities, labels)
  assert float(dice[1]) == 1.0


def test_soft_dice_absent_class_false_positive():
  labels = jnp.zeros((1, 2, 2), jnp.int32)
  probabilities = _probabilities([[[0.5, 0.0], [0.0, 0.0]]])
  dice = losses.soft_dice_per_class(probabilities, labels)
  assert float(dice[1]) == pytest.approx(1.0 / 1.5)


def test_soft_dice_absent_class_gradient_is_finite():
  labels = jnp.zeros((1, 2, 2), jnp.int32)
  grad = jax.grad(lambda l: losses.dice_loss(l, labels, smooth=1.0))(
      jnp.zeros((1, 2, 2, 2)))
  assert bool(jnp.all(jnp.isfinite(grad)))


def test_soft_dice_image_reduction_averages_frames():
  # Frame 0 matches exactly (Dice 1); frame 1 has truth but no prediction.
  labels = jnp.array([[[1, 0]], [[1, 0]]])
  probabilities = _probabilities([[[1.0, 0.0]], [[0.0, 0.0]]])
  per_image = losses.soft_dice_per_class(probabilities, labels,
                                         reduction="image", smooth=0.0)
  pooled = losses.soft_dice_per_class(probabilities, labels,
                                      reduction="batch", smooth=0.0)
  assert float(per_image[1]) == pytest.approx((1.0 + 0.0) / 2)
  assert float(pooled[1]) == pytest.approx(2 * 1.0 / (1.0 + 2.0))


def test_soft_dice_weights_mask_pixels():
  labels = jnp.array([[[1, 1]]])
  probabilities = _probabilities([[[1.0, 0.0]]])
  weights = jnp.array([[[1.0, 0.0]]])
  dice = losses.soft_dice_per_class(probabilities, labels, weights, smooth=0.0)
  assert float(dice[1]) == pytest.approx(1.0)


def test_soft_dice_rejects_unknown_reduction():
  with pytest.raises(ValueError, match="Unknown Dice reduction 'pixel'"):
    losses.soft_dice_per_class(_probabilities(jnp.zeros((1, 1, 1))),
                               jnp.zeros((1, 1, 1), jnp.int32),
                               reduction="pixel")


def test_cross_entropy_exact_value():
  # Logits (0, log 3) give p = (1/4, 3/4).
  logits = jnp.array([[[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]]])
  labels = jnp.array([[[1, 0]]])
  expected = (-math.log(0.75) - math.log(0.25)) / 2
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(
      expected, rel=1e-6)


def test_cross_entropy_ignores_zero_weight_pixels():
  logits = jnp.array([[[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]]])
  labels = jnp.array([[[1, 0]]])
  weights = jnp.array([[[1.0, 0.0]]])
  assert float(losses.cross_entropy(logits, labels, weights)) == pytest.approx(
      -math.log(0.75), rel=1e-6)


def test_segmentation_loss_weighted_sum():
  logits = jnp.array([[[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]]])
  labels = jnp.array([[[1, 0]]])
  terms = losses.segmentation_loss(logits, labels, dice_weight=0.5,
                                   cross_entropy_weight=2.0, dice_smooth=0.0)
  # Foreground Dice: p1 = 3/4 on both pixels, one true pixel.
  dice = 2 * 0.75 / (1.5 + 1.0)
  cross_entropy = (-math.log(0.75) - math.log(0.25)) / 2
  assert float(terms["dice_loss"]) == pytest.approx(1 - dice, rel=1e-6)
  assert float(terms["cross_entropy"]) == pytest.approx(cross_entropy, rel=1e-6)
  assert float(terms["loss"]) == pytest.approx(
      0.5 * (1 - dice) + 2.0 * cross_entropy, rel=1e-6)


def test_dice_loss_background_option():
  # p = 0.5 for both classes on three pixels; one foreground pixel.
  labels = jnp.array([[[1, 0, 0]]])
  logits = jnp.zeros((1, 1, 3, 2))
  foreground = 2 * 0.5 / (1.5 + 1.0)
  background = 2 * 1.0 / (1.5 + 2.0)
  without = losses.dice_loss(logits, labels, smooth=0.0)
  with_background = losses.dice_loss(logits, labels, include_background=True,
                                     smooth=0.0)
  assert float(without) == pytest.approx(1 - foreground)
  assert float(with_background) == pytest.approx(
      1 - (foreground + background) / 2)


def test_tversky_weights_misses_and_false_alarms():
  # Truth: 2 pixels; prediction: 1.0 on one of them and 1.0 on a background
  # pixel, so soft TP = 1, FP = 1, FN = 1.
  labels = jnp.array([[[1, 1], [0, 0]]])
  probabilities = _probabilities([[[1.0, 0.0], [1.0, 0.0]]])
  tversky = losses.soft_dice_per_class(probabilities, labels, smooth=0.0,
                                       tversky_alpha=0.3, tversky_beta=0.7)
  assert float(tversky[1]) == pytest.approx(1.0 / (1.0 + 0.3 + 0.7))
  recall_heavy = losses.soft_dice_per_class(
      _probabilities([[[1.0, 1.0], [1.0, 0.0]]]), labels, smooth=0.0,
      tversky_alpha=0.3, tversky_beta=0.7)
  # TP = 2, FP = 1, FN = 0: the false alarm costs only alpha.
  assert float(recall_heavy[1]) == pytest.approx(2.0 / (2.0 + 0.3))


def test_tversky_at_half_equals_dice():
  labels = jnp.array([[[1, 0], [0, 0]]])
  probabilities = _probabilities([[[0.8, 0.2], [0.0, 0.0]]])
  dice = losses.soft_dice_per_class(probabilities, labels, smooth=0.0)
  tversky = losses.soft_dice_per_class(probabilities, labels, smooth=0.0,
                                       tversky_alpha=0.5001,
                                       tversky_beta=0.4999)
  assert float(tversky[1]) == pytest.approx(float(dice[1]), abs=1e-4)


def test_class_weights_scale_cross_entropy():
  # Logits 0 give p = 0.5 for each of 2 classes, so each pixel costs ln 2
  # whatever its class; weights change only the normaliser's mix.
  logits = jnp.stack([jnp.zeros((1, 1, 2)), jnp.array([[[0.0, 0.0]]])], -1)
  labels = jnp.array([[[1, 0]]])
  plain = losses.cross_entropy(logits, labels)
  weighted = losses.cross_entropy(logits, labels, class_weights=(1.0, 3.0))
  assert float(plain) == pytest.approx(math.log(2.0))
  assert float(weighted) == pytest.approx(math.log(2.0))
  # A confident, correct background pixel next to a 50/50 spleen pixel: the
  # spleen weight 3 moves the mean towards the spleen pixel's ln 2.
  logits = jnp.array([[[[0.0, 0.0], [10.0, 0.0]]]])
  background_cost = float(jax.nn.logsumexp(jnp.array([10.0, 0.0])) - 10.0)
  weighted = losses.cross_entropy(logits, labels, class_weights=(1.0, 3.0))
  assert float(weighted) == pytest.approx(
      (3.0 * math.log(2.0) + background_cost) / 4.0, rel=1e-5)


def test_class_weights_length_is_checked():
  logits = jnp.zeros((1, 1, 2, 2))
  with pytest.raises(ValueError, match="3 values but the model has 2"):
    losses.cross_entropy(logits, jnp.array([[[1, 0]]]),
                         class_weights=(1.0, 2.0, 3.0))


def test_focal_term_down_weights_easy_pixels():
  # p_true = 0.5 on each pixel: focal factor (1 - 0.5)^2 = 0.25.
  logits = jnp.zeros((1, 1, 2, 2))
  labels = jnp.array([[[1, 0]]])
  focal = losses.cross_entropy(logits, labels, focal_gamma=2.0)
  assert float(focal) == pytest.approx(0.25 * math.log(2.0))
