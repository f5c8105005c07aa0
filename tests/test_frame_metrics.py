"""Per-frame metrics and their summaries against cases worked out by hand."""

import itertools
import math

import numpy as np
import pytest

from spleen_jax.evaluation import frame_metrics
from spleen_jax.evaluation import report


def _square(shape, top, left, size):
  mask = np.zeros(shape, bool)
  mask[top:top + size, left:left + size] = True
  return mask


def test_identical_masks_score_perfectly():
  mask = _square((20, 20), 5, 5, 6)
  scores = frame_metrics.binary_metrics(mask, mask)
  assert scores.dice == 1.0
  assert scores.iou == 1.0
  assert scores.hd95 == 0.0
  assert scores.assd == 0.0
  assert scores.pixel_accuracy == 1.0


def test_three_pixel_squares_offset_by_one():
  # Truth: rows 2-4, columns 2-4. Prediction: rows 2-4, columns 3-5.
  # Each surface is the 8-pixel ring around the centre. Four ring pixels of
  # each square lie on the other ring (distance 0); the other four are one
  # column from it, e.g. truth (3, 4) is the prediction's centre, whose ring
  # neighbours (3, 3) and (3, 5) are 1 away.
  truth = _square((7, 8), 2, 2, 3)
  prediction = _square((7, 8), 2, 3, 3)
  scores = frame_metrics.binary_metrics(truth, prediction)

  assert scores.true_positive == 6
  assert scores.false_positive == 3
  assert scores.false_negative == 3
  assert scores.true_negative == 56 - 12
  assert scores.dice == pytest.approx(12 / 18)
  assert scores.iou == pytest.approx(6 / 12)
  assert scores.precision == pytest.approx(6 / 9)
  assert scores.recall == pytest.approx(6 / 9)
  assert scores.specificity == pytest.approx(44 / 47)
  assert scores.pixel_accuracy == pytest.approx(50 / 56)
  assert scores.hd95 == pytest.approx(1.0)
  assert scores.assd == pytest.approx(8 / 16)
  assert scores.area_truth == 9
  assert scores.area_prediction == 9


def test_ten_pixel_squares_offset_by_three():
  # Truth: rows 5-14, columns 5-14; prediction shifted 3 columns right.
  # Distances from the 36 truth ring pixels to the prediction ring:
  #   top and bottom rows: 3, 2, 1 for the first three columns, then 0 (x7);
  #   left column, 8 inner rows: 3 each (the prediction's left column);
  #   right column, 8 inner rows: 1, 2, 3, 3, 3, 3, 2, 1 (to the prediction's
  #   top or bottom row, or its right column 3 away).
  # That is 14 zeros, 4 ones, 4 twos and 14 threes, summing to 54; the
  # prediction's ring mirrors it. HD95 is the 95th percentile of 36 sorted
  # values (position 33.25, among the threes) = 3, ASSD = 108 / 72 = 1.5.
  truth = _square((30, 30), 5, 5, 10)
  prediction = _square((30, 30), 5, 8, 10)
  scores = frame_metrics.binary_metrics(truth, prediction)

  assert scores.dice == pytest.approx(140 / 200)
  assert scores.hd95 == pytest.approx(3.0)
  assert scores.assd == pytest.approx(1.5)


def test_hd95_interpolates_outlier_pixels():
  # Truth: 20 pixels of row 5. Prediction: the same plus columns 30 and 31,
  # 11 and 12 columns beyond the end of the truth. Every pixel of a 1-pixel
  # line is on its surface. From the truth: 20 zeros, P95 = 0. From the
  # prediction: 20 zeros, 11, 12; P95 at position 0.95 * 21 = 19.95 lies
  # between 0 and 11, so 0.95 * 11 = 10.45. ASSD = (11 + 12) / (20 + 22).
  truth = np.zeros((11, 40), bool)
  truth[5, :20] = True
  prediction = truth.copy()
  prediction[5, 30:32] = True
  scores = frame_metrics.binary_metrics(truth, prediction)

  assert scores.hd95 == pytest.approx(10.45)
  assert scores.assd == pytest.approx(23 / 42)
  assert scores.dice == pytest.approx(40 / 42)
  assert scores.recall == 1.0


def test_anisotropic_spacing_scales_each_axis():
  # Single pixels 3 rows and 4 columns apart.
  truth = np.zeros((10, 10), bool)
  prediction = np.zeros((10, 10), bool)
  truth[2, 3] = True
  prediction[5, 7] = True
  scores = frame_metrics.binary_metrics(truth, prediction, spacing=(2.0, 0.5))

  assert scores.hd95 == pytest.approx(5.0)
  assert scores.assd == pytest.approx(5.0)
  assert scores.hd95_mm == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5))
  assert scores.assd_mm == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5))
  assert scores.area_truth_mm2 == pytest.approx(1.0)
  assert scores.dice == 0.0


def test_spacing_picks_nearer_axis():
  # In the 3x3 case above every nonzero distance is one column; with columns
  # of 0.5 mm and rows of 2 mm, the nearest surface pixel stays one column
  # away, so HD95 = 0.5 mm and ASSD = 4 * 0.5 * 2 / 16 = 0.25 mm.
  truth = _square((7, 8), 2, 2, 3)
  prediction = _square((7, 8), 2, 3, 3)
  scores = frame_metrics.binary_metrics(truth, prediction, spacing=(2.0, 0.5))

  assert scores.hd95_mm == pytest.approx(0.5)
  assert scores.assd_mm == pytest.approx(0.25)
  assert scores.area_prediction_mm2 == pytest.approx(9.0)


def test_unknown_spacing_leaves_millimetres_nan():
  truth = _square((7, 8), 2, 2, 3)
  for spacing in (None, ()):
    scores = frame_metrics.binary_metrics(truth, truth, spacing=spacing)
    assert math.isnan(scores.hd95_mm)
    assert math.isnan(scores.assd_mm)
    assert math.isnan(scores.area_truth_mm2)


def test_both_empty_scores_one_and_zero_distance():
  empty = np.zeros((5, 5), bool)
  scores = frame_metrics.binary_metrics(empty, empty, spacing=(1.0, 1.0))
  for name in ("dice", "iou", "precision", "recall", "specificity",
               "pixel_accuracy"):
    assert getattr(scores, name) == 1.0, name
  assert scores.hd95 == 0.0
  assert scores.assd == 0.0
  assert scores.hd95_mm == 0.0


def test_empty_prediction_gives_missing_distance():
  truth = _square((8, 8), 2, 2, 3)
  scores = frame_metrics.binary_metrics(truth, np.zeros_like(truth),
                                        spacing=(1.0, 1.0))
  assert scores.dice == 0.0
  assert scores.iou == 0.0
  assert scores.precision == 0.0
  assert scores.recall == 0.0
  assert scores.specificity == 1.0
  assert math.isnan(scores.hd95)
  assert math.isnan(scores.assd)
  assert math.isnan(scores.hd95_mm)


def test_empty_truth_gives_missing_distance():
  prediction = _square((8, 8), 2, 2, 3)
  scores = frame_metrics.binary_metrics(np.zeros_like(prediction), prediction)
  assert scores.dice == 0.0
  assert scores.precision == 0.0
  assert scores.recall == 0.0
  assert scores.specificity == pytest.approx(55 / 64)
  assert math.isnan(scores.hd95)
  assert math.isnan(scores.assd)


def test_distances_match_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(5):
    truth = rng.random((24, 30)) < 0.3
    prediction = rng.random((24, 30)) < 0.3
    spacing = (0.7, 1.3)
    truth_points = np.argwhere(frame_metrics.surface(truth)) * spacing
    prediction_points = (np.argwhere(frame_metrics.surface(prediction)) *
                         spacing)
    pairwise = np.linalg.norm(
        truth_points[:, None] - prediction_points[None], axis=-1)
    from_truth = pairwise.min(axis=1)
    from_prediction = pairwise.min(axis=0)
    expected_hd95 = max(np.percentile(from_truth, 95),
                        np.percentile(from_prediction, 95))
    expected_assd = np.concatenate([from_truth, from_prediction]).mean()

    hd95, assd = frame_metrics.hd95_and_assd(truth, prediction, spacing)
    assert hd95 == pytest.approx(expected_hd95)
    assert assd == pytest.approx(expected_assd)


def test_surface_includes_image_border():
  mask = np.ones((4, 5), bool)
  surface = frame_metrics.surface(mask)
  assert surface.sum() == 4 * 5 - 2 * 3
  assert not surface[1:3, 1:4].any()


def test_label_map_metrics_per_class():
  truth = np.array([[0, 1, 1], [2, 2, 0]])
  prediction = np.array([[0, 1, 0], [2, 1, 1]])
  scores = frame_metrics.label_map_metrics(truth, prediction, (1, 2))
  assert scores[1].dice == pytest.approx(2 / 5)
  assert scores[2].dice == pytest.approx(2 / 3)
  assert scores[2].pixel_accuracy == pytest.approx(5 / 6)


@pytest.mark.parametrize("spacing", [(1.0,), (0.0, 1.0), (1.0, math.nan)])
def test_invalid_spacing_is_rejected(spacing):
  mask = _square((5, 5), 1, 1, 2)
  with pytest.raises(ValueError, match="Invalid pixel spacing"):
    frame_metrics.binary_metrics(mask, mask, spacing=spacing)


def test_shape_mismatch_is_rejected():
  with pytest.raises(ValueError, match=r"truth \(4, 4\) and prediction "
                     r"\(4, 5\)"):
    frame_metrics.binary_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_ratios_stay_in_unit_interval():
  rng = np.random.default_rng(1)
  for truth_rate, prediction_rate in itertools.product((0.0, 0.1, 0.9),
                                                       repeat=2):
    truth = rng.random((16, 16)) < truth_rate
    prediction = rng.random((16, 16)) < prediction_rate
    scores = frame_metrics.binary_metrics(truth, prediction)
    for name in frame_metrics.RATIO_METRICS:
      assert 0.0 <= getattr(scores, name) <= 1.0, name


def test_describe_statistics_and_missing():
  summary = report.describe([1.0, 2.0, 4.0, math.nan], bootstrap_samples=500,
                            seed=0)
  assert summary["count"] == 3
  assert summary["missing"] == 1
  assert summary["mean"] == pytest.approx(7 / 3)
  assert summary["median"] == 2.0
  assert summary["std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
  assert 1.0 <= summary["ci95_low"] <= summary["mean"]
  assert summary["mean"] <= summary["ci95_high"] <= 4.0


def test_describe_bootstrap_is_seeded():
  values = np.random.default_rng(0).random(30)
  first = report.describe(values, bootstrap_samples=200, seed=3)
  again = report.describe(values, bootstrap_samples=200, seed=3)
  other = report.describe(values, bootstrap_samples=200, seed=4)
  assert first == again
  assert first["ci95_low"] != other["ci95_low"]


def test_describe_without_values():
  summary = report.describe([math.nan, math.nan], bootstrap_samples=10,
                            seed=0)
  assert summary["count"] == 0
  assert summary["missing"] == 2
  assert summary["mean"] is None
  one = report.describe([0.5], bootstrap_samples=10, seed=0)
  assert one["std"] is None
  assert one["ci95_low"] == one["ci95_high"] == 0.5


def test_pooled_scores_sum_counts():
  rows = [{"true_positive": 2, "false_positive": 1, "false_negative": 0},
          {"true_positive": 0, "false_positive": 0, "false_negative": 3}]
  pooled = report.pooled_scores(rows)
  assert pooled["dice"] == pytest.approx(4 / 8)
  assert pooled["precision"] == pytest.approx(2 / 3)
  assert pooled["recall"] == pytest.approx(2 / 5)
  assert report.pooled_scores([{"true_positive": 0, "false_positive": 0,
                                "false_negative": 0}])["dice"] is None


def test_threshold_curve_by_hand():
  # Pixels with probabilities 0.2 (background), 0.6 and 0.9 (target).
  curve = report.ThresholdCurve()
  curve.add(np.array([[0.2, 0.6, 0.9]]), np.array([[False, True, True]]))
  values = curve.compute()
  at = {round(t, 2): i for i, t in enumerate(values["threshold"])}
  assert values["precision"][at[0.1]] == pytest.approx(2 / 3)
  assert values["recall"][at[0.1]] == 1.0
  assert values["dice"][at[0.5]] == 1.0
  assert values["recall"][at[0.7]] == 0.5
  assert values["dice"][at[0.7]] == pytest.approx(2 / 3)
  assert math.isnan(values["precision"][at[0.95]])
  summary = curve.summary()
  assert summary["average_precision"] == pytest.approx(1.0)
  assert 0.21 <= summary["best_threshold"] <= 0.6
  assert summary["dice_at_0.5"] == 1.0


def test_threshold_curve_without_positives_is_none():
  curve = report.ThresholdCurve()
  curve.add(np.array([0.3, 0.7]), np.array([False, False]))
  assert curve.compute() is None
  assert curve.summary() is None
  assert curve.to_csv() == ""


def test_json_writes_nan_as_null():
  text = report.to_json({"a": math.nan, "b": [1.0, math.inf], "c": "x"})
  assert '"a": null' in text
  assert "NaN" not in text
  assert "Infinity" not in text


def test_csv_writes_nan(tmp_path):
  empty = np.zeros((4, 4), bool)
  truth = empty.copy()
  truth[1, 1] = True
  row = {"file_name": "a1.png", "subject": "a", "class": "spleen",
         "class_id": 1,
         **frame_metrics.binary_metrics(truth, empty).as_dict()}
  text = report.rows_to_csv([row])
  header, line = text.strip().split("\n")
  values = dict(zip(header.split(","), line.split(",")))
  assert values["hd95"] == "nan"
  assert values["dice"] == "0"
  assert values["area_truth"] == "1"


def test_write_atomically_replaces_whole_file(tmp_path):
  path = tmp_path / "summary.json"
  report.write_atomically(path, "old")
  report.write_atomically(path, "new")
  assert path.read_text() == "new"
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
