"""Segmentation losses on logits `[n, h, w, c]` and label maps `[n, h, w]`.

Label maps hold training class ids (0 is background). `weights: [n, h, w]`
masks pixels out of a loss (0) or in (1), for example the padding of an
evaluation batch; it defaults to all ones.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

DICE_REDUCTIONS = ("batch", "image")


def _default_weights(labels: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.ones(labels.shape, jnp.float32)
  return weights.astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None,
                  class_weights: Sequence[float] = (),
                  focal_gamma: float = 0.0) -> jax.Array:
  """Returns the weighted mean softmax cross-entropy over pixels, in nats.

  Args:
    logits: `[n, h, w, c]` float.
    labels: `[n, h, w]` int class ids.
    weights: optional `[n, h, w]` pixel weights.
    class_weights: optional `c` weights; a pixel of class k counts
      `class_weights[k]` times, in the sum and in the normaliser.
    focal_gamma: focal loss exponent; each pixel's term is scaled by
      `(1 - p_true) ** focal_gamma`, so 0 is plain cross-entropy.
  """
  weights = _default_weights(labels, weights)
  if class_weights:
    if len(class_weights) != logits.shape[-1]:
      raise ValueError(
          f"loss.class_weights has {len(class_weights)} values but the model "
          f"has {logits.shape[-1]} classes (background first): give one "
          "weight per class, or () for none.")
    weights = weights * jnp.asarray(class_weights, jnp.float32)[labels]
  logits = logits.astype(jnp.float32)
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if focal_gamma:
    true_probability = jnp.exp(-per_pixel)
    per_pixel = (1.0 - true_probability) ** focal_gamma * per_pixel
  return jnp.sum(per_pixel * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def soft_dice_per_class(probabilities: jax.Array, labels: jax.Array,
                        weights: jax.Array | None = None,
                        reduction: str = "batch",
                        smooth: float = 1.0,
                        tversky_alpha: float = 0.5,
                        tversky_beta: float = 0.5) -> jax.Array:
  """Computes the soft Dice (or Tversky) coefficient of each class.

  Tversky = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth) with soft
  TP = sum(p * t), FP = sum(p * (1 - t)), FN = sum((1 - p) * t), where p is
  the predicted probability and t the one-hot truth. With alpha = beta = 0.5
  this is the soft Dice, 2 TP / (sum(p) + sum(t)) up to the smoothing; a beta
  above alpha charges missed pixels more than false alarms, which favours
  recall of small structures. The smoothing term makes a class that is
  absent from the truth and from the prediction score 1, and keeps the
  gradient finite when both sums are 0.

  Args:
    probabilities: `[n, h, w, c]` float, softmax outputs.
    labels: `[n, h, w]` int class ids.
    weights: optional `[n, h, w]` pixel weights.
    reduction: `batch` sums over the whole batch before the ratio; `image`
      computes one ratio per image and averages them.
    smooth: additive smoothing, in pixels.
    tversky_alpha: weight of false positives.
    tversky_beta: weight of false negatives.

  Returns:
    `[c]` float32 Dice (Tversky index) per class.
  """
  if reduction not in DICE_REDUCTIONS:
    raise ValueError(f"Unknown Dice reduction {reduction!r}: "
                     f"choose from {', '.join(DICE_REDUCTIONS)}.")
  weights = _default_weights(labels, weights)[..., None]
  truth = jax.nn.one_hot(labels, probabilities.shape[-1]) * weights
  predicted = probabilities * weights
  axes = (0, 1, 2) if reduction == "batch" else (1, 2)
  true_positive = jnp.sum(predicted * truth, axis=axes)
  predicted_sum = jnp.sum(predicted, axis=axes)
  truth_sum = jnp.sum(truth, axis=axes)
  if tversky_alpha == 0.5 and tversky_beta == 0.5:
    dice = (2.0 * true_positive + smooth) / (predicted_sum + truth_sum + smooth)
  else:
    false_positive = predicted_sum - true_positive
    false_negative = truth_sum - true_positive
    dice = (true_positive + smooth) / (
        true_positive + tversky_alpha * false_positive +
        tversky_beta * false_negative + smooth)
  return dice if reduction == "batch" else jnp.mean(dice, axis=0)


def dice_loss(logits: jax.Array, labels: jax.Array,
              weights: jax.Array | None = None, reduction: str = "batch",
              include_background: bool = False,
              smooth: float = 1.0, tversky_alpha: float = 0.5,
              tversky_beta: float = 0.5) -> jax.Array:
  """Returns 1 minus the mean soft Dice (or Tversky index) over classes.

  The background class counts only with `include_background`.
  """
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  dice = soft_dice_per_class(probabilities, labels, weights, reduction, smooth,
                             tversky_alpha, tversky_beta)
  if not include_background:
    dice = dice[1:]
  return 1.0 - jnp.mean(dice)


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      weights: jax.Array | None = None, *,
                      dice_weight: float = 1.0,
                      cross_entropy_weight: float = 1.0,
                      dice_reduction: str = "batch",
                      dice_include_background: bool = False,
                      dice_smooth: float = 1.0,
                      tversky_alpha: float = 0.5,
                      tversky_beta: float = 0.5,
                      class_weights: Sequence[float] = (),
                      focal_gamma: float = 0.0) -> dict[str, jax.Array]:
  """Computes the weighted sum of soft Dice loss and cross-entropy.

  `tversky_alpha` and `tversky_beta` turn the Dice term into a Tversky term;
  `class_weights` and `focal_gamma` weight the cross-entropy term (see
  `soft_dice_per_class` and `cross_entropy`).

  Returns:
    A dict of scalars: `loss` (the weighted sum), `dice_loss` and
    `cross_entropy`.
  """
  dice_term = dice_loss(logits, labels, weights, dice_reduction,
                        dice_include_background, dice_smooth, tversky_alpha,
                        tversky_beta)
  cross_entropy_term = cross_entropy(logits, labels, weights, class_weights,
                                     focal_gamma)
  total = dice_weight * dice_term + cross_entropy_weight * cross_entropy_term
  return {"loss": total, "dice_loss": dice_term,
          "cross_entropy": cross_entropy_term}
