"""Per-batch metric math from confusion counts, in pure JAX and numpy.

Counts are summed over pixels (and over batches, for a split), so Dice and IoU
here are pooled over a split, not means of per-image scores.
"""

import jax
import jax.numpy as jnp
import numpy as np


def confusion_counts(predictions: jax.Array, labels: jax.Array,
                     num_classes: int,
                     weights: jax.Array | None = None) -> jax.Array:
  """Counts true positives, false positives and false negatives per class.

  Args:
    predictions: `[n, h, w]` int predicted class ids.
    labels: `[n, h, w]` int true class ids.
    num_classes: number of classes, background included.
    weights: optional `[n, h, w]` 0/1 mask of the pixels to count.

  Returns:
    `[num_classes, 3]` float32 counts (TP, FP, FN) in pixels. Float keeps
    large splits exact up to 2**24 pixels per batch and avoids int overflow
    when summed over many batches.
  """
  if weights is None:
    weights = jnp.ones(labels.shape, jnp.float32)
  weights = weights.astype(jnp.float32)[..., None]
  predicted = jax.nn.one_hot(predictions, num_classes) * weights
  truth = jax.nn.one_hot(labels, num_classes) * weights
  axes = tuple(range(predicted.ndim - 1))
  true_positive = jnp.sum(predicted * truth, axis=axes)
  false_positive = jnp.sum(predicted, axis=axes) - true_positive
  false_negative = jnp.sum(truth, axis=axes) - true_positive
  return jnp.stack([true_positive, false_positive, false_negative], axis=-1)


def scores_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
  """Computes Dice, IoU, precision, recall per class and pixel accuracy.

  A ratio whose denominator is 0 scores 1 when the class is absent from both
  truth and prediction (nothing missed, nothing invented), and 0 otherwise.
  So precision is 0 for a class that is present but never predicted, and
  recall is 0 for a class that is predicted but absent.

  Args:
    counts: `[num_classes, 3]` TP, FP, FN counts.

  Returns:
    `dice`, `iou`, `precision`, `recall`: `[num_classes]` float64 arrays;
    `pixel_accuracy`: a float64 scalar, the fraction of pixels whose class is
    right, background included.
  """
  counts = np.asarray(counts, dtype=np.float64)
  tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]

  absent = (tp + fp + fn) == 0

  def ratio(numerator, denominator):
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe,
                    np.where(absent, 1.0, 0.0))

  total = np.sum(tp + fn)
  return {
      "dice": ratio(2 * tp, 2 * tp + fp + fn),
      "iou": ratio(tp, tp + fp + fn),
      "precision": ratio(tp, tp + fp),
      "recall": ratio(tp, tp + fn),
      "pixel_accuracy": np.float64(np.sum(tp) / total) if total else np.nan,
  }
