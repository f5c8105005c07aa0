"""Segmentation losses on logits `[n, h, w, c]` and label maps `[n, h, w]`.

Label maps hold training class ids (0 is background). `weights: [n, h, w]`
masks pixels out of a loss (0) or in (1), for example the padding of an
evaluation batch; it defaults to all ones.
"""

import jax
import jax.numpy as jnp
import optax

DICE_REDUCTIONS = ("batch", "image")


def _default_weights(labels: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.ones(labels.shape, jnp.float32)
  return weights.astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Returns the mean softmax cross-entropy over weighted pixels, in nats."""
  weights = _default_weights(labels, weights)
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(per_pixel * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def soft_dice_per_class(probabilities: jax.Array, labels: jax.Array,
                        weights: jax.Array | None = None,
                        reduction: str = "batch",
                        smooth: float = 1.0) -> jax.Array:
  """Computes the soft Dice coefficient of each class.

  Dice = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth), where p is the
  predicted probability and t the one-hot truth. The smoothing term makes a
  class that is absent from the truth and from the prediction score 1, and
  keeps the gradient finite when both sums are 0.

  Args:
    probabilities: `[n, h, w, c]` float, softmax outputs.
    labels: `[n, h, w]` int class ids.
    weights: optional `[n, h, w]` pixel weights.
    reduction: `batch` sums over the whole batch before the ratio; `image`
      computes one ratio per image and averages them.
    smooth: additive smoothing, in pixels.

  Returns:
    `[c]` float32 Dice per class.
  """
  if reduction not in DICE_REDUCTIONS:
    raise ValueError(f"Unknown Dice reduction {reduction!r}: "
                     f"choose from {', '.join(DICE_REDUCTIONS)}.")
  weights = _default_weights(labels, weights)[..., None]
  truth = jax.nn.one_hot(labels, probabilities.shape[-1]) * weights
  predicted = probabilities * weights
  axes = (0, 1, 2) if reduction == "batch" else (1, 2)
  intersection = jnp.sum(predicted * truth, axis=axes)
  denominator = jnp.sum(predicted, axis=axes) + jnp.sum(truth, axis=axes)
  dice = (2.0 * intersection + smooth) / (denominator + smooth)
  return dice if reduction == "batch" else jnp.mean(dice, axis=0)


def dice_loss(logits: jax.Array, labels: jax.Array,
              weights: jax.Array | None = None, reduction: str = "batch",
              include_background: bool = False,
              smooth: float = 1.0) -> jax.Array:
  """Returns 1 minus the mean soft Dice over classes (background optional)."""
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  dice = soft_dice_per_class(probabilities, labels, weights, reduction, smooth)
  if not include_background:
    dice = dice[1:]
  return 1.0 - jnp.mean(dice)


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      weights: jax.Array | None = None, *,
                      dice_weight: float = 1.0,
                      cross_entropy_weight: float = 1.0,
                      dice_reduction: str = "batch",
                      dice_include_background: bool = False,
                      dice_smooth: float = 1.0) -> dict[str, jax.Array]:
  """Computes the weighted sum of soft Dice loss and cross-entropy.

  Returns:
    A dict of scalars: `loss` (the weighted sum), `dice_loss` and
    `cross_entropy`.
  """
  dice_term = dice_loss(logits, labels, weights, dice_reduction,
                        dice_include_background, dice_smooth)
  cross_entropy_term = cross_entropy(logits, labels, weights)
  total = dice_weight * dice_term + cross_entropy_weight * cross_entropy_term
  return {"loss": total, "dice_loss": dice_term,
          "cross_entropy": cross_entropy_term}
