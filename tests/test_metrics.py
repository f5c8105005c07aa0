"""Confusion counts, scores and the clu collection on hand-made masks."""

import jax.numpy as jnp
import numpy as np
import pytest

from spleen_jax import metric_collections
from spleen_jax.core import metrics


def test_confusion_counts_per_class():
  labels = jnp.array([[[0, 1, 1], [2, 2, 0]]])
  predictions = jnp.array([[[0, 1, 0], [2, 1, 1]]])
  counts = metrics.confusion_counts(predictions, labels, 3)
  # Rows: classes 0, 1, 2; columns: TP, FP, FN.
  np.testing.assert_array_equal(counts, [[1, 1, 1], [1, 2, 1], [1, 0, 1]])


def test_confusion_counts_weights_drop_padding():
  labels = jnp.array([[[1, 1]], [[1, 1]]])
  predictions = jnp.array([[[1, 1]], [[0, 0]]])
  weights = jnp.array([[[1.0, 1.0]], [[0.0, 0.0]]])
  counts = metrics.confusion_counts(predictions, labels, 2, weights)
  np.testing.assert_array_equal(counts, [[0, 0, 0], [2, 0, 0]])


def test_scores_from_counts_exact():
  # Class 1: TP 2, FP 1, FN 1.
  scores = metrics.scores_from_counts(np.array([[5, 1, 1], [2, 1, 1]]))
  assert scores["dice"][1] == pytest.approx(4 / 6)
  assert scores["iou"][1] == pytest.approx(2 / 4)
  assert scores["precision"][1] == pytest.approx(2 / 3)
  assert scores["recall"][1] == pytest.approx(2 / 3)
  assert scores["pixel_accuracy"] == pytest.approx(7 / 9)


def test_scores_absent_class_is_one():
  scores = metrics.scores_from_counts(np.array([[4, 0, 0], [0, 0, 0]]))
  for name in ("dice", "iou", "precision", "recall"):
    assert scores[name][1] == 1.0, name


def test_scores_missed_class_is_zero():
  # Present in the truth, never predicted.
  scores = metrics.scores_from_counts(np.array([[4, 2, 0], [0, 0, 2]]))
  for name in ("dice", "iou", "precision", "recall"):
    assert scores[name][1] == 0.0, name


def test_scores_invented_class_is_zero():
  # Predicted, absent from the truth.
  scores = metrics.scores_from_counts(np.array([[4, 0, 2], [0, 2, 0]]))
  for name in ("dice", "iou", "precision", "recall"):
    assert scores[name][1] == 0.0, name


def _outputs(loss, num_examples, counts):
  return {"loss": jnp.float32(loss), "dice_loss": jnp.float32(0.0),
          "cross_entropy": jnp.float32(0.0),
          "num_examples": jnp.float32(num_examples),
          "counts": jnp.asarray(counts, jnp.float32)}


def test_collection_weights_loss_by_examples():
  first = metric_collections.SegmentationMetrics.single_from_model_output(
      **_outputs(2.0, 3, [[1, 0, 0], [1, 0, 0]]))
  second = metric_collections.SegmentationMetrics.single_from_model_output(
      **_outputs(1.0, 1, [[1, 0, 0], [0, 1, 1]]))
  summary = metric_collections.summarize(first.merge(second),
                                         ("background", "spleen"))
  assert summary["loss"] == pytest.approx((2.0 * 3 + 1.0) / 4)
  assert summary["dice_spleen"] == pytest.approx(2 / 4)
  assert summary["mean_dice"] == pytest.approx(2 / 4)
  assert summary["pixel_accuracy"] == pytest.approx(3 / 4)
