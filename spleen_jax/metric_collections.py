"""clu metric collections for training and validation, and their summaries."""

import flax
from clu import metrics as clu_metrics
import jax
import numpy as np

from spleen_jax.core import metrics as metric_math


def _example_average(name: str) -> type[clu_metrics.Average]:
  """Makes an `Average` of output `name`, weighted by each batch's examples.

  Evaluation pads its last batch, so a plain mean over batches would give the
  padded batch as much weight as a full one.
  """

  @flax.struct.dataclass
  class ExampleAverage(clu_metrics.Average):

    @classmethod
    def from_model_output(cls, **outputs) -> clu_metrics.Average:
      return cls(total=outputs[name] * outputs["num_examples"],
                 count=outputs["num_examples"])

  return ExampleAverage


@flax.struct.dataclass
class ConfusionCounts(clu_metrics.Metric):
  """Pixel TP, FP and FN per class, `[classes, 3]`, summed over batches."""

  counts: jax.Array

  @classmethod
  def from_model_output(cls, counts: jax.Array, **_) -> "ConfusionCounts":
    return cls(counts=counts)

  def merge(self, other: "ConfusionCounts") -> "ConfusionCounts":
    return type(self)(counts=self.counts + other.counts)

  def compute(self) -> np.ndarray:
    return np.asarray(self.counts)


@flax.struct.dataclass
class SegmentationMetrics(clu_metrics.Collection):
  loss: _example_average("loss")
  dice_loss: _example_average("dice_loss")
  cross_entropy: _example_average("cross_entropy")
  confusion: ConfusionCounts


@flax.struct.dataclass
class SemiSupervisedMetrics(clu_metrics.Collection):
  """`SegmentationMetrics` plus the terms of mean-teacher training.

  clu collects the fields of the class itself only, so the shared ones are
  listed again.
  """

  loss: _example_average("loss")
  dice_loss: _example_average("dice_loss")
  cross_entropy: _example_average("cross_entropy")
  confusion: ConfusionCounts
  supervised_loss: _example_average("supervised_loss")
  unlabeled_loss: _example_average("unlabeled_loss")
  unlabeled_weight: _example_average("unlabeled_weight")
  confident_fraction: _example_average("confident_fraction")


def summarize(metrics: SegmentationMetrics,
              class_names: tuple[str, ...]) -> dict[str, float]:
  """Flattens a collection into scalars for writers and early stopping.

  Args:
    metrics: the merged collection of a split or a logging interval.
    class_names: names of the training classes, background first.

  Returns:
    `loss`, `dice_loss`, `cross_entropy`, `pixel_accuracy`, `mean_dice`
    (over the foreground classes) and, for each foreground class `c`,
    `dice_c`, `iou_c`, `precision_c` and `recall_c`. Dice and IoU are pooled
    over all pixels of the split.
  """
  values = metrics.compute()
  scores = metric_math.scores_from_counts(values.pop("confusion"))
  summary = {name: float(value) for name, value in values.items()}
  summary["pixel_accuracy"] = float(scores["pixel_accuracy"])
  summary["mean_dice"] = float(np.mean(scores["dice"][1:]))
  for class_id, name in enumerate(class_names[1:], start=1):
    for score in ("dice", "iou", "precision", "recall"):
      summary[f"{score}_{name}"] = float(scores[score][class_id])
  return summary
