"""Per-frame rows, their summary statistics, the threshold curve and files.

Statistics of a metric are taken over frames (each frame counts once), with a
percentile bootstrap of the mean over frames for the 95% interval. NaN values
(distances undefined because exactly one mask is empty, see
`frame_metrics`) are left out of every statistic and counted as `missing`
beside it.
"""

import csv
import dataclasses
import io
import json
import math
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

from spleen_jax.evaluation import frame_metrics

# Metrics summarised per class; the millimetre ones only with a known spacing.
SUMMARY_METRICS = ("dice", "iou", "precision", "recall", "specificity",
                   "pixel_accuracy", "hd95", "assd", "area_truth",
                   "area_prediction")
MILLIMETRE_METRICS = ("hd95_mm", "assd_mm", "area_truth_mm2",
                      "area_prediction_mm2")
CSV_FIELDS = ("file_name", "subject", "class", "class_id",
              *(f.name for f in dataclasses.fields(frame_metrics.FrameMetrics)))
# Thresholds on the target class's probability for the precision-recall and
# Dice curves: 0, 0.01, ..., 0.99.
NUM_THRESHOLDS = 100


def describe(values: Iterable[float], *, bootstrap_samples: int,
             seed: int) -> dict[str, float | int | None]:
  """Summarises one metric over frames.

  Returns:
    `count` (frames with a value), `missing` (NaN values), `mean`, `std`
    (sample standard deviation, None below 2 values), `median`, and
    `ci95_low`/`ci95_high`. The interval bounds are the 2.5th and 97.5th
    percentiles of the means of `bootstrap_samples` resamples of the frames
    with replacement. numpy's default generator, seeded by `seed`, draws the
    resamples. Undefined values are None.
  """
  values = np.asarray(list(values), np.float64)
  finite = values[~np.isnan(values)]
  summary = {"count": int(finite.size),
             "missing": int(values.size - finite.size),
             "mean": None, "std": None, "median": None, "ci95_low": None,
             "ci95_high": None}
  if finite.size == 0:
    return summary
  summary["mean"] = float(finite.mean())
  summary["median"] = float(np.median(finite))
  if finite.size > 1:
    summary["std"] = float(finite.std(ddof=1))
  if bootstrap_samples > 0:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, finite.size, (bootstrap_samples, finite.size))
    means = finite[indices].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    summary["ci95_low"] = float(low)
    summary["ci95_high"] = float(high)
  return summary


def pooled_scores(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
  """Computes Dice, IoU, precision and recall from the summed pixel counts.

  None where the denominator is 0, that is, where no frame has the class in
  its truth or prediction.
  """
  tp = sum(r["true_positive"] for r in rows)
  fp = sum(r["false_positive"] for r in rows)
  fn = sum(r["false_negative"] for r in rows)

  def ratio(numerator, denominator):
    return numerator / denominator if denominator else None

  return {"dice": ratio(2 * tp, 2 * tp + fp + fn),
          "iou": ratio(tp, tp + fp + fn),
          "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def class_summary(rows: Sequence[dict[str, Any]], *, spacing_known: bool,
                  bootstrap_samples: int, seed: int) -> dict[str, Any]:
  """Summarises the rows of one class: counts, statistics, pooled scores.

  `metrics` describes every frame; `metrics_with_class` only the frames whose
  truth contains the class, where Dice is not inflated by frames that are
  correctly empty.
  """
  names = SUMMARY_METRICS + (MILLIMETRE_METRICS if spacing_known else ())
  with_class = [r for r in rows if r["area_truth"] > 0]

  def describe_all(subset):
    return {name: describe((r[name] for r in subset),
                           bootstrap_samples=bootstrap_samples, seed=seed)
            for name in names}

  return {
      "frames": len(rows),
      "frames_with_class": len(with_class),
      "frames_predicted": sum(1 for r in rows if r["area_prediction"] > 0),
      "missing_distance": sum(1 for r in rows if math.isnan(r["hd95"])),
      "metrics": describe_all(rows),
      "metrics_with_class": describe_all(with_class),
      "pooled": pooled_scores(rows),
  }


def variant_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Mean Dice and HD95 of one post-processing variant, target class only."""
  dice = np.array([r["dice"] for r in rows], np.float64)
  hd95 = np.array([r["hd95"] for r in rows], np.float64)
  present = np.array([r["area_truth"] > 0 for r in rows])
  finite = hd95[~np.isnan(hd95)]
  return {
      "frames": len(rows),
      "dice_mean": float(dice.mean()) if dice.size else None,
      "dice_mean_with_class": (float(dice[present].mean()) if present.any()
                               else None),
      "hd95_mean": float(finite.mean()) if finite.size else None,
      "hd95_missing": int(hd95.size - finite.size),
      "pooled_dice": pooled_scores(rows)["dice"],
  }


class ThresholdCurve:
  """Pixel counts of the target class over probability thresholds.

  A pixel is predicted positive at threshold t when its probability of the
  target class is at least t (one class against the rest, unlike the arg-max
  over classes that the other metrics use).
  """

  def __init__(self, num_thresholds: int = NUM_THRESHOLDS):
    self.edges = np.linspace(0.0, 1.0, num_thresholds + 1)
    self.positives = np.zeros(num_thresholds, np.int64)
    self.negatives = np.zeros(num_thresholds, np.int64)

  @property
  def thresholds(self) -> np.ndarray:
    return self.edges[:-1]

  def add(self, probabilities: np.ndarray, truth: np.ndarray) -> None:
    """Adds a frame: `[h, w]` target probabilities and the boolean truth."""
    self.positives += np.histogram(probabilities[truth], self.edges)[0]
    self.negatives += np.histogram(probabilities[~truth], self.edges)[0]

  def compute(self) -> dict[str, np.ndarray] | None:
    """Returns precision, recall and Dice per threshold.

    Precision is NaN at thresholds where no pixel is predicted. Returns None
    when no pixel of the truth has the class.
    """
    total_positive = self.positives.sum()
    if total_positive == 0:
      return None
    # Pixels at or above each threshold: reversed cumulative sums.
    tp = np.cumsum(self.positives[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(self.negatives[::-1])[::-1].astype(np.float64)
    fn = total_positive - tp
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.full_like(tp, np.nan),
                          where=predicted > 0)
    return {"threshold": self.thresholds, "precision": precision,
            "recall": tp / total_positive,
            "dice": 2 * tp / (2 * tp + fp + fn)}

  def summary(self) -> dict[str, float] | None:
    """Average precision and the threshold of best pooled Dice."""
    curve = self.compute()
    if curve is None:
      return None
    recall = np.append(curve["recall"], 0.0)
    # Step-wise area under the precision-recall curve over the thresholds.
    # Where precision is NaN, nothing is predicted, so recall does not change
    # and the step adds nothing.
    average_precision = float(np.nansum((recall[:-1] - recall[1:]) *
                                        curve["precision"]))
    best = int(np.argmax(curve["dice"]))
    half = int(np.searchsorted(self.thresholds, 0.5))
    return {"average_precision": average_precision,
            "best_threshold": float(self.thresholds[best]),
            "best_dice": float(curve["dice"][best]),
            "dice_at_0.5": float(curve["dice"][half])}

  def to_csv(self) -> str:
    curve = self.compute()
    if curve is None:
      return ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(curve))
    for values in zip(*curve.values()):
      writer.writerow([f"{v:.6g}" for v in values])
    return buffer.getvalue()


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
  """Formats the per-frame rows as CSV; NaN is written as `nan`."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({key: f"{value:.6g}" if isinstance(value, float) else value
                     for key, value in row.items()})
  return buffer.getvalue()


def to_json(content: Any) -> str:
  """Serialises `content` as strict JSON: NaN and infinities become null."""

  def clean(value):
    if isinstance(value, float) and not math.isfinite(value):
      return None
    if isinstance(value, dict):
      return {key: clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
      return [clean(item) for item in value]
    return value

  return json.dumps(clean(content), indent=2, sort_keys=True,
                    allow_nan=False)


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
  """Writes a file through a temporary file in its folder and a rename."""
  temporary = path.with_name(f".{path.name}.tmp")
  if isinstance(content, bytes):
    temporary.write_bytes(content)
  else:
    temporary.write_text(content)
  temporary.replace(path)
