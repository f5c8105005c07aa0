"""Area, Feret length, thickness and sector edge on shapes of known size."""

import numpy as np
from PIL import Image
import pytest
from skimage import measure as skimage_measure

from spleen_jax.core import measure
from spleen_jax.data import annotation
from spleen_jax.data import legend


def _ellipse(semi_major, semi_minor, angle_degrees, shape=(400, 400),
             centre=(200.3, 199.8)):
  """Rasterises an ellipse: pixels whose centre lies inside it."""
  rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
  angle = np.deg2rad(angle_degrees)
  dx, dy = columns - centre[0], rows - centre[1]
  u = dx * np.cos(angle) + dy * np.sin(angle)
  v = -dx * np.sin(angle) + dy * np.cos(angle)
  return (u / semi_major)**2 + (v / semi_minor)**2 <= 1.0


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 133])
def test_ellipse_length_is_major_axis(angle):
  result = measure.measure_mask(_ellipse(120, 45, angle))
  assert abs(result.length - 240) <= 1.0


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 133])
def test_ellipse_thickness_is_minor_axis(angle):
  result = measure.measure_mask(_ellipse(120, 45, angle))
  assert abs(result.thickness - 90) <= 1.0


def test_ellipse_length_endpoints_at_tips():
  result = measure.measure_mask(_ellipse(120, 45, 30))
  angle = np.deg2rad(30)
  tips = [(200.3 + s * 120 * np.cos(angle), 199.8 + s * 120 * np.sin(angle))
          for s in (-1, 1)]
  ends = sorted(result.length_endpoints)
  for end, tip in zip(ends, sorted(tips)):
    assert np.hypot(end[0] - tip[0], end[1] - tip[1]) <= 1.5


def test_straight_run_length_is_pixel_count():
  mask = np.zeros((20, 100), bool)
  mask[10, 10:47] = True
  length, endpoints = measure.feret_diameter(mask)
  assert length == pytest.approx(37.0)
  assert sorted(endpoints) == [(9.5, 10.0), (46.5, 10.0)]


def test_rectangle_thickness_perpendicular_to_diagonal():
  # The length axis of a rectangle is its diagonal d, and the longest chord
  # perpendicular to it has length h * d / w.
  mask = np.zeros((100, 300), bool)
  mask[40:60, 50:250] = True
  result = measure.measure_mask(mask)
  diagonal = np.hypot(200, 20)
  assert abs(result.length - diagonal) <= 1.0
  assert abs(result.thickness - 20 * diagonal / 200) <= 1.0
  assert result.num_pixels == 4000
  assert result.area == 4000


def test_thickness_takes_longest_run_on_a_line():
  # Each perpendicular line crosses both bars, 10 px each, with a 30 px gap.
  mask = np.zeros((70, 100), bool)
  mask[10:20, :] = True
  mask[50:60, :] = True
  thickness, chord = measure.perpendicular_thickness(
      mask, ((0.0, 35.0), (99.0, 35.0)))
  assert abs(thickness - 10) <= 0.5
  assert all(5 <= y <= 25 for _, y in chord) or all(
      45 <= y <= 65 for _, y in chord)


def test_isotropic_spacing_scales_sizes():
  mask = _ellipse(100, 40, 20)
  in_pixels = measure.measure_mask(mask)
  in_mm = measure.measure_mask(mask, (0.3, 0.3))
  assert in_mm.length == pytest.approx(0.3 * in_pixels.length)
  assert in_mm.thickness == pytest.approx(0.3 * in_pixels.thickness, abs=0.2)
  assert in_mm.area == pytest.approx(0.09 * in_pixels.num_pixels)


def test_anisotropic_spacing_matches_square_pixels():
  # 100 x 100 pixels of 2 mm x 1 mm (row x column) cover 200 mm x 100 mm, as
  # 200 x 100 square pixels of 1 mm do.
  tall_pixels = np.zeros((120, 120), bool)
  tall_pixels[10:110, 10:110] = True
  square_pixels = np.zeros((240, 120), bool)
  square_pixels[20:220, 10:110] = True
  anisotropic = measure.measure_mask(tall_pixels, (2.0, 1.0))
  isotropic = measure.measure_mask(square_pixels, (1.0, 1.0))
  assert anisotropic.area == pytest.approx(20000.0)
  assert abs(anisotropic.length - np.hypot(200, 100)) <= 1.5
  assert abs(anisotropic.length - isotropic.length) <= 1.5
  assert abs(anisotropic.thickness - isotropic.thickness) <= 2.0


def test_anisotropic_spacing_changes_length_axis():
  # 20 rows x 200 columns of 0.5 mm x 0.25 mm pixels: 10 mm x 50 mm.
  mask = np.zeros((40, 240), bool)
  mask[10:30, 20:220] = True
  result = measure.measure_mask(mask, (0.5, 0.25))
  assert result.area == pytest.approx(4000 * 0.125)
  assert abs(result.length - np.hypot(50, 10)) <= 0.5
  assert abs(result.thickness - 10 * np.hypot(50, 10) / 50) <= 0.5


def test_empty_mask_measures_zero():
  result = measure.measure_mask(np.zeros((32, 32), bool), (0.2, 0.2))
  assert result.num_pixels == 0
  assert result.area == 0.0
  assert result.length == 0.0
  assert result.length_endpoints is None
  assert result.thickness_endpoints is None


def test_invalid_spacing_rejected():
  with pytest.raises(ValueError, match="Invalid pixel spacing"):
    measure.measure_mask(np.ones((4, 4), bool), (0.0, 1.0))


def test_length_agrees_with_scikit_image_on_real_masks(shared_data_dir):
  annotations = shared_data_dir / "abdominal_US/RUS/annotations/test"
  for stem in ("a22", "a25", "b26"):
    with Image.open(annotations / f"{stem}.png") as image:
      label_map, _ = annotation.decode_annotation(
          np.asarray(image.convert("RGB")))
    spleen = label_map == legend.legend_id("spleen")
    expected = skimage_measure.regionprops(
        spleen.astype(np.uint8))[0].feret_diameter_max
    length, _ = measure.feret_diameter(spleen)
    assert abs(length - expected) <= 1.5, stem


def _synthetic_sector(shape=(480, 640)):
  """A convex-probe fan with speckle, and a dark shadow that reaches its edge.

  Returns the frame and the fan as a mask.
  """
  rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
  apex_x, apex_y = 320.0, -150.0
  radius = np.hypot(columns - apex_x, rows - apex_y)
  angle = np.degrees(np.arctan2(columns - apex_x, rows - apex_y))
  fan = (radius >= 190) & (radius <= 560) & (np.abs(angle) <= 30)
  rng = np.random.default_rng(0)
  frame = np.where(fan, rng.integers(30, 200, shape), 0).astype(np.uint8)
  shadow = fan & (angle < -15) & (radius > 330) & (radius < 450)
  frame[shadow] = rng.integers(0, 3, int(shadow.sum()))
  return frame, fan


def test_sector_matches_fan_with_shadow():
  frame, fan = _synthetic_sector()
  sector = measure.sector_mask(frame)
  overlap = np.sum(sector & fan) / np.sum(sector | fan)
  assert overlap > 0.98
  # The dark shadow at the fan's edge is inside, the gap above the concave
  # top arc is outside.
  assert frame[194, 137] <= 2
  assert sector[194, 137]
  assert not sector[25, 320]


def test_sector_of_real_frame_contains_spleen(shared_data_dir):
  root = shared_data_dir / "abdominal_US/RUS"
  with Image.open(root / "images/test/a25.jpg") as image:
    frame = np.asarray(image.convert("L"))
  with Image.open(root / "annotations/test/a25.png") as image:
    label_map, _ = annotation.decode_annotation(
        np.asarray(image.convert("RGB")))
  spleen = label_map == legend.legend_id("spleen")
  sector = measure.sector_mask(frame)
  assert np.all(sector[spleen])
  assert 0.25 < sector.mean() < 0.6
  assert not measure.touches_edge(spleen, sector, margin=6)


def test_touches_edge_of_sector_and_border():
  frame, fan = _synthetic_sector()
  sector = measure.sector_mask(frame)
  inside = np.zeros(fan.shape, bool)
  inside[250:300, 300:340] = True
  assert not measure.touches_edge(inside, sector, margin=6)

  # A blob that reaches the fan's right edge at row 300.
  edge_column = np.flatnonzero(fan[300])[-1]
  at_edge = np.zeros(fan.shape, bool)
  at_edge[280:320, edge_column - 40:edge_column - 2] = True
  assert measure.touches_edge(at_edge, sector, margin=6)

  whole = np.ones((64, 64), bool)
  at_border = np.zeros((64, 64), bool)
  at_border[0:10, 20:30] = True
  assert measure.touches_edge(at_border, whole, margin=2)
  assert not measure.touches_edge(np.zeros((64, 64), bool), whole, margin=2)
