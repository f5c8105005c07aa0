"""Per-frame segmentation metrics of one class, on boolean masks.

Masks are `[height, width]` arrays at the frame's original resolution, `truth`
from the annotation and `prediction` from the model. Every metric compares one
class against the rest of the frame.

Empty masks:
  * Truth and prediction both empty: Dice, IoU, precision and recall are 1,
    and both distances are 0, because nothing was missed and nothing invented.
  * Exactly one empty: Dice and IoU are 0, precision (empty prediction) or
    recall (empty truth) is 0, and both distances are undefined and returned
    as NaN. Reports count these frames as `missing_distance` next to every
    mean of a distance, so a mean over fewer frames is never silent.
  * Specificity with no background in the truth is 1 when nothing is predicted
    there, else 0.

Distances are Euclidean, between pixel centres, in pixels and, when the pixel
spacing is known, in millimetres. The surface of a mask is the set of its
pixels with a 4-neighbour outside the mask. Pixels beyond the image border
count as outside, so a mask that touches the border has a surface there.
For the surfaces S_T of the truth and S_P of the prediction, d(x, S) is the
distance from pixel x to the nearest pixel of S, and
  HD95 = max(P95{d(t, S_P) : t in S_T}, P95{d(p, S_T) : p in S_P}),
the larger of the two directed 95th percentiles (numpy's linear
interpolation), and
  ASSD = (sum d(t, S_P) + sum d(p, S_T)) / (|S_T| + |S_P|),
the mean over the pooled distances of both surfaces.
"""

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

# Distance columns that are NaN when exactly one of the two masks is empty.
DISTANCE_METRICS = ("hd95", "assd", "hd95_mm", "assd_mm")
RATIO_METRICS = ("dice", "iou", "precision", "recall", "specificity",
                 "pixel_accuracy")

_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclasses.dataclass(frozen=True)
class FrameMetrics:
  """Scores of one class on one frame.

  Attributes:
    dice, iou, precision, recall, specificity: ratios in [0, 1].
    pixel_accuracy: fraction of pixels whose membership of the class is
      right, (TP + TN) / all pixels. With one foreground class this equals the
      multi-class pixel accuracy of the frame.
    hd95, assd: surface distances in pixels; NaN when exactly one mask is
      empty.
    hd95_mm, assd_mm: the same in millimetres; NaN also when the spacing is
      unknown.
    true_positive, false_positive, false_negative, true_negative: pixel
      counts, so that reports can pool frames.
    area_truth, area_prediction: areas in pixels.
    area_truth_mm2, area_prediction_mm2: areas in square millimetres; NaN
      when the spacing is unknown.
  """

  dice: float
  iou: float
  precision: float
  recall: float
  specificity: float
  pixel_accuracy: float
  hd95: float
  assd: float
  hd95_mm: float
  assd_mm: float
  true_positive: int
  false_positive: int
  false_negative: int
  true_negative: int
  area_truth: int
  area_prediction: int
  area_truth_mm2: float
  area_prediction_mm2: float

  def as_dict(self) -> dict[str, float | int]:
    return dataclasses.asdict(self)


def _ratio(numerator: int, denominator: int, if_empty: float) -> float:
  return numerator / denominator if denominator else if_empty


def _check_spacing(spacing: Sequence[float] | None
                   ) -> tuple[float, float] | None:
  if spacing is None or len(spacing) == 0:
    return None
  if len(spacing) != 2 or not all(
      math.isfinite(s) and s > 0 for s in spacing):
    raise ValueError(
        f"Invalid pixel spacing {tuple(spacing)}: expected two positive "
        "millimetre values (row, column), or none if unknown.")
  return float(spacing[0]), float(spacing[1])


def surface(mask: np.ndarray) -> np.ndarray:
  """Returns the pixels of `mask` that have a 4-neighbour outside it."""
  mask = np.asarray(mask, bool)
  return mask & ~ndimage.binary_erosion(mask, _CROSS, border_value=0)


def surface_distances(truth: np.ndarray, prediction: np.ndarray,
                      spacing: Sequence[float] = (1.0, 1.0)
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Computes the distances from each surface pixel to the other surface.

  Args:
    truth, prediction: `[h, w]` boolean masks, both non-empty.
    spacing: size of a pixel along rows and columns, in the output unit.

  Returns:
    `d(t, S_P)` for each surface pixel t of the truth, and `d(p, S_T)` for
    each surface pixel p of the prediction, as float64 arrays.
  """
  truth_surface = surface(truth)
  prediction_surface = surface(prediction)
  if not truth_surface.any() or not prediction_surface.any():
    raise ValueError("Surface distances need two non-empty masks.")
  # Both surfaces lie inside the bounding box of their union, so the
  # distance transforms over that box are exact and much smaller than the
  # frame.
  rows, columns = np.nonzero(truth_surface | prediction_surface)
  box = np.s_[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
  truth_surface = truth_surface[box]
  prediction_surface = prediction_surface[box]
  # The distance transform of the complement gives, at every pixel, the
  # distance to the nearest surface pixel.
  to_prediction = ndimage.distance_transform_edt(
      ~prediction_surface, sampling=spacing)
  to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)
  return to_prediction[truth_surface], to_truth[prediction_surface]


def hd95_and_assd(truth: np.ndarray, prediction: np.ndarray,
                  spacing: Sequence[float] = (1.0, 1.0)
                  ) -> tuple[float, float]:
  """Returns HD95 and ASSD, with the empty-mask policy of this module."""
  truth_empty = not np.any(truth)
  prediction_empty = not np.any(prediction)
  if truth_empty and prediction_empty:
    return 0.0, 0.0
  if truth_empty or prediction_empty:
    return math.nan, math.nan
  from_truth, from_prediction = surface_distances(truth, prediction, spacing)
  hd95 = max(np.percentile(from_truth, 95), np.percentile(from_prediction, 95))
  assd = ((from_truth.sum() + from_prediction.sum()) /
          (from_truth.size + from_prediction.size))
  return float(hd95), float(assd)


def binary_metrics(truth: np.ndarray, prediction: np.ndarray,
                   spacing: Sequence[float] | None = None) -> FrameMetrics:
  """Scores a predicted mask against the true mask of one class.

  Args:
    truth, prediction: `[h, w]` masks of the same shape; nonzero is the class.
    spacing: pixel size `(row, column)` in millimetres, or None (or empty)
      when unknown.

  Returns:
    The metrics of `FrameMetrics`, with the empty-mask policy of this module.

  Raises:
    ValueError: the shapes differ or the spacing is not two positive numbers.
  """
  truth = np.asarray(truth, bool)
  prediction = np.asarray(prediction, bool)
  if truth.shape != prediction.shape or truth.ndim != 2:
    raise ValueError(
        f"Expected two [height, width] masks of one shape, got truth "
        f"{truth.shape} and prediction {prediction.shape}.")
  spacing_mm = _check_spacing(spacing)

  tp = int(np.count_nonzero(truth & prediction))
  fp = int(np.count_nonzero(~truth & prediction))
  fn = int(np.count_nonzero(truth & ~prediction))
  tn = truth.size - tp - fp - fn
  both_empty = tp + fp + fn == 0

  hd95, assd = hd95_and_assd(truth, prediction)
  hd95_mm = assd_mm = math.nan
  area_truth_mm2 = area_prediction_mm2 = math.nan
  if spacing_mm is not None:
    if not math.isnan(hd95):
      hd95_mm, assd_mm = hd95_and_assd(truth, prediction, spacing_mm)
    pixel_area = spacing_mm[0] * spacing_mm[1]
    area_truth_mm2 = (tp + fn) * pixel_area
    area_prediction_mm2 = (tp + fp) * pixel_area

  empty_score = 1.0 if both_empty else 0.0
  return FrameMetrics(
      dice=_ratio(2 * tp, 2 * tp + fp + fn, empty_score),
      iou=_ratio(tp, tp + fp + fn, empty_score),
      precision=_ratio(tp, tp + fp, empty_score),
      recall=_ratio(tp, tp + fn, empty_score),
      specificity=_ratio(tn, tn + fp, 1.0 if fp == 0 else 0.0),
      pixel_accuracy=(tp + tn) / truth.size,
      hd95=hd95, assd=assd, hd95_mm=hd95_mm, assd_mm=assd_mm,
      true_positive=tp, false_positive=fp, false_negative=fn,
      true_negative=tn, area_truth=tp + fn, area_prediction=tp + fp,
      area_truth_mm2=area_truth_mm2, area_prediction_mm2=area_prediction_mm2)


def label_map_metrics(truth: np.ndarray, prediction: np.ndarray,
                      class_ids: Sequence[int],
                      spacing: Sequence[float] | None = None
                      ) -> dict[int, FrameMetrics]:
  """Scores each class of `class_ids` on a pair of `[h, w]` label maps."""
  return {class_id: binary_metrics(truth == class_id, prediction == class_id,
                                   spacing)
          for class_id in class_ids}
