"""Figures of an evaluation report, drawn from synthetic data."""

import io

from clu import metric_writers
import numpy as np
from PIL import Image
import pytest

from spleen_jax.evaluation import figures
from spleen_jax.evaluation import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _size(png):
  with Image.open(io.BytesIO(png)) as image:
    return image.size


def _write_events(workdir, steps, scalars):
  writer = metric_writers.create_default_writer(str(workdir))
  for step in steps:
    writer.write_scalars(step, {name: value(step)
                                for name, value in scalars.items()})
  writer.flush()
  writer.close()


def test_read_scalars_sorts_by_step(tmp_path):
  _write_events(tmp_path, [2, 4, 6], {"train_loss": lambda s: 1.0 / s,
                                      "validation_dice_spleen": float})
  scalars = figures.read_scalars(tmp_path)
  steps, values = scalars["train_loss"]
  np.testing.assert_array_equal(steps, [2, 4, 6])
  np.testing.assert_allclose(values, [0.5, 0.25, 1 / 6], rtol=1e-6)
  np.testing.assert_allclose(scalars["validation_dice_spleen"][1], [2, 4, 6])


def test_read_scalars_resumed_run_replaces_later_steps(tmp_path):
  # A process logged steps 1-4, stopped, and its successor resumed from the
  # checkpoint at step 2, logging steps 3-5 again.
  _write_events(tmp_path, [1, 2, 3, 4], {"train_loss": lambda s: 1.0})
  _write_events(tmp_path, [3, 4, 5], {"train_loss": lambda s: 2.0})
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
  steps, values = figures.read_scalars(tmp_path)["train_loss"]
  np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])
  np.testing.assert_array_equal(values, [1, 1, 2, 2, 2])


def test_read_scalars_without_events_is_empty(tmp_path):
  assert figures.read_scalars(tmp_path) == {}


def test_training_curves_png(tmp_path):
  _write_events(tmp_path, range(1, 21), {
      "train_loss": lambda s: 2.0 / s,
      "train_dice_spleen": lambda s: s / 20,
      "train_pixel_accuracy": lambda s: 0.9,
  })
  _write_events(tmp_path, [10, 20], {
      "validation_loss": lambda s: 1.0 / s,
      "validation_dice_spleen": lambda s: s / 40,
      "validation_pixel_accuracy": lambda s: 0.8,
  })
  png = figures.training_curves(figures.read_scalars(tmp_path), "spleen")
  assert png.startswith(PNG_SIGNATURE)
  assert _size(png) == (1200, 360)


def test_training_curves_without_scalars_is_none():
  assert figures.training_curves({}, "spleen") is None
  assert figures.training_curves(
      {"steps_per_sec": (np.array([1]), np.array([3.0]))}, "spleen") is None


def _views(count, height=120, width=160):
  rng = np.random.default_rng(0)
  views = []
  for i in range(count):
    truth = np.zeros((height, width), np.uint8)
    truth[30:70, 40 + i:100 + i] = 1
    prediction = np.roll(truth, 5, axis=1)
    prediction[80:90, 10:20] = 2
    views.append(figures.FrameView(
        image=rng.integers(0, 256, (height, width), dtype=np.uint8),
        truth=truth, prediction=prediction, caption=f"f{i}.png\nDice 0.5"))
  return views


def test_frame_grid_has_row_per_frame():
  png = figures.frame_grid(_views(3), ("background", "spleen", "liver"),
                           "validation: examples")
  assert png.startswith(PNG_SIGNATURE)
  width, height = _size(png)
  assert width == 1280
  # Three rows of 320x240-pixel panels, plus the title and legend.
  assert 3 * 240 < height < 3 * 240 + 120


def test_frame_grid_draws_empty_label_maps():
  views = _views(1)
  views[0].truth[:] = 0
  views[0].prediction[:] = 0
  png = figures.frame_grid(views, ("background", "spleen"), "empty")
  assert png.startswith(PNG_SIGNATURE)


def test_threshold_curves_png():
  rng = np.random.default_rng(0)
  truth = rng.random((50, 50)) < 0.3
  probabilities = np.clip(truth * 0.6 + rng.random((50, 50)) * 0.5, 0, 1)
  curve = report.ThresholdCurve()
  curve.add(probabilities, truth)
  png = figures.threshold_curves(curve.compute(), curve.summary(), "spleen")
  assert png.startswith(PNG_SIGNATURE)
  assert _size(png) == (1000, 400)


@pytest.mark.parametrize("count", [1, 4])
def test_frame_grid_accepts_any_row_count(count):
  png = figures.frame_grid(_views(count), ("background", "spleen", "liver"),
                           "rows")
  assert png.startswith(PNG_SIGNATURE)
