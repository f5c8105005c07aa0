"""Evaluation figures as PNG bytes, drawn with matplotlib's Agg canvas.

Functions return the encoded PNG instead of writing it, so that the caller can
write every file of a report only after all of them were made.
"""

import dataclasses
import io
import pathlib
from typing import Sequence

from matplotlib.backends import backend_agg
from matplotlib import figure as figure_lib
from matplotlib import lines
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from spleen_jax.data import legend

TRUTH_COLOUR = "#00e5ff"
PREDICTION_COLOUR = "#ffd400"


def _read_event_file(path: pathlib.Path) -> dict[str, tuple[list, list]]:
  """Reads the scalar summaries of one event file: tag -> (steps, values)."""
  accumulator = event_accumulator.EventAccumulator(
      str(path), size_guidance={event_accumulator.TENSORS: 0,
                                event_accumulator.SCALARS: 0})
  accumulator.Reload()
  tags = accumulator.Tags()
  scalars = {}
  # clu writes scalars as tensor summaries; older writers use simple values.
  for tag in tags.get(event_accumulator.TENSORS, []):
    events = accumulator.Tensors(tag)
    values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
    if not values or any(v.size != 1 for v in values):
      continue  # not a scalar, e.g. the hparams session record
    scalars[tag] = ([e.step for e in events], [float(v) for v in values])
  for tag in tags.get(event_accumulator.SCALARS, []):
    events = accumulator.Scalars(tag)
    scalars[tag] = ([e.step for e in events], [e.value for e in events])
  return scalars


def read_scalars(workdir: str | pathlib.Path
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads the scalars that clu wrote to the run's TensorBoard event files.

  Each process of a run writes its own event file, named after its start
  time in seconds, so name order is start order. A resumed process replaces
  the values of each tag from its first step on, because those came from a
  process that stopped after its last checkpoint.

  Returns:
    Tag -> (steps, values), sorted by step. Empty when the folder has no
    event file.
  """
  merged: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
    for tag, (steps, values) in _read_event_file(path).items():
      first = min(steps)
      earlier = [item for item in merged.get(tag, []) if item[0] < first]
      merged[tag] = earlier + sorted(zip(steps, values))
  return {tag: (np.array([s for s, _ in items]),
                np.array([v for _, v in items]))
          for tag, items in merged.items() if items}


def _new_figure(width: float, height: float) -> figure_lib.Figure:
  figure = figure_lib.Figure(figsize=(width, height), dpi=100,
                             layout="constrained")
  backend_agg.FigureCanvasAgg(figure)
  return figure


def _png(figure: figure_lib.Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  return buffer.getvalue()


def training_curves(scalars: dict[str, tuple[np.ndarray, np.ndarray]],
                    target_class: str) -> bytes | None:
  """Plots training and validation loss, target Dice and pixel accuracy.

  Returns:
    PNG bytes, or None when `scalars` has none of the curves.
  """
  panels = (("Loss", "loss"), (f"Dice of {target_class}",
                               f"dice_{target_class}"),
            ("Pixel accuracy", "pixel_accuracy"))
  if not any(f"{split}_{name}" in scalars for _, name in panels
             for split in ("train", "validation")):
    return None
  figure = _new_figure(12, 3.6)
  axes = figure.subplots(1, 3)
  for ax, (title, name) in zip(axes, panels):
    for split, marker in (("train", "."), ("validation", "o")):
      tag = f"{split}_{name}"
      if tag in scalars:
        steps, values = scalars[tag]
        ax.plot(steps, values, marker=marker, markersize=3, label=split)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.has_data():
      ax.legend()
  # A loss that falls by more than a factor of 10 reads better on a log axis.
  losses = [v for split in ("train", "validation")
            for v in scalars.get(f"{split}_loss", ((), ()))[1]]
  if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
    axes[0].set_yscale("log")
  for ax in axes[1:]:
    ax.set_ylim(-0.02, 1.02)
  return _png(figure)


@dataclasses.dataclass
class FrameView:
  """One frame to draw: the original frame, label maps and a caption."""

  image: np.ndarray
  truth: np.ndarray
  prediction: np.ndarray
  caption: str


def _colour_table(class_names: Sequence[str]) -> np.ndarray:
  """`[classes, 4]` RGBA in [0, 1]: legend colours, transparent background."""
  table = np.zeros((len(class_names), 4))
  for class_id, name in enumerate(class_names[1:], start=1):
    table[class_id, :3] = np.asarray(legend.LEGEND[name]) / 255.0
    table[class_id, 3] = 1.0
  return table


def _outline(ax, label_map: np.ndarray, num_classes: int, colour: str,
             style: str) -> None:
  for class_id in range(1, num_classes):
    mask = label_map == class_id
    if mask.any():
      ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour],
                 linewidths=1.2, linestyles=style)


def frame_grid(views: Sequence[FrameView], class_names: Sequence[str],
               title: str) -> bytes:
  """Draws one row per frame: frame, truth, prediction and their outlines.

  Label maps are painted in the organ colours of the AbdomenUS legend, at
  60% opacity over the frame. The last column outlines the truth (solid cyan)
  and the prediction (dashed yellow) on the frame.
  """
  colours = _colour_table(class_names)
  height, width = views[0].image.shape
  panel_width = 3.2
  panel_height = panel_width * height / width
  figure = _new_figure(4 * panel_width, len(views) * panel_height + 0.8)
  axes = figure.subplots(len(views), 4, squeeze=False)
  headers = ("frame", "truth", "prediction", "outlines")
  for row, view in enumerate(views):
    painted = []
    for label_map in (view.truth, view.prediction):
      rgba = colours[label_map]
      rgba[..., 3] *= 0.6
      painted.append(rgba)
    row_axes = axes[row]
    for ax in row_axes:
      ax.imshow(view.image, cmap="gray", vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
    # Nearest-neighbour sampling keeps the label edges crisp.
    row_axes[1].imshow(painted[0], interpolation="nearest")
    row_axes[2].imshow(painted[1], interpolation="nearest")
    _outline(row_axes[3], view.truth, len(class_names), TRUTH_COLOUR, "solid")
    _outline(row_axes[3], view.prediction, len(class_names),
             PREDICTION_COLOUR, "dashed")
    row_axes[0].set_ylabel(view.caption, fontsize=9)
    if row == 0:
      for ax, header in zip(row_axes, headers):
        ax.set_title(header)

  handles = [lines.Line2D([], [], color=TRUTH_COLOUR, label="truth"),
             lines.Line2D([], [], color=PREDICTION_COLOUR, linestyle="--",
                          label="prediction")]
  handles += [lines.Line2D([], [], color=colours[i, :3], linewidth=6,
                           label=name)
              for i, name in enumerate(class_names) if i > 0]
  figure.legend(handles=handles, loc="outside lower center",
                ncol=len(handles), fontsize=9)
  figure.suptitle(title)
  return _png(figure)


def threshold_curves(curve: dict[str, np.ndarray], summary: dict[str, float],
                     target_class: str) -> bytes:
  """Plots the precision-recall curve and pooled Dice over the threshold."""
  figure = _new_figure(10, 4)
  pr_axes, dice_axes = figure.subplots(1, 2)
  pr_axes.plot(curve["recall"], curve["precision"], "-")
  pr_axes.set_xlabel("recall")
  pr_axes.set_ylabel("precision")
  pr_axes.set_title(f"{target_class}: precision-recall over pixels "
                    f"(AP {summary['average_precision']:.3f})")
  dice_axes.plot(curve["threshold"], curve["dice"], "-")
  dice_axes.axvline(summary["best_threshold"], color="grey", linestyle="--",
                    label=f"best {summary['best_threshold']:.2f} "
                    f"(Dice {summary['best_dice']:.3f})")
  dice_axes.set_xlabel(f"threshold on P({target_class})")
  dice_axes.set_ylabel("pooled Dice")
  dice_axes.set_title(f"{target_class}: Dice over probability threshold")
  dice_axes.legend()
  for ax in (pr_axes, dice_axes):
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  return _png(figure)
