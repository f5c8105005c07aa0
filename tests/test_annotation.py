"""Tests for decoding colour-coded annotations into legend-id label maps."""

import itertools
import time

import numpy as np
from PIL import Image
import pytest

from spleen_jax.data import annotation
from spleen_jax.data import legend

LIVER = legend.CLASS_NAMES.index("liver")
KIDNEY = legend.CLASS_NAMES.index("kidney")
SPLEEN = legend.CLASS_NAMES.index("spleen")

# Unmatched pixels at DEFAULT_TOLERANCE in the real annotations, counted when
# the tolerance was chosen. Every other annotation has none.
REAL_UNMATCHED = {
    "a25.png": 1,
    "a26.png": 1,
    "h1.png": 3,
    "h100.png": 4,
    "h20.png": 1,
    "h27.png": 1,
    "h32.png": 1,
    "h33.png": 1,
}


def _row(*colours: tuple[int, ...]) -> np.ndarray:
  """Returns a uint8 [1, N, C] image with the given pixel values."""
  return np.array([colours], dtype=np.uint8)


def _read_annotation(data_dir, name: str) -> np.ndarray:
  path = data_dir / "abdominal_US/RUS/annotations/test" / name
  with Image.open(path) as image:
    return np.asarray(image)


def test_default_tolerance_below_half_legend_gap():
  colours = legend.COLOURS.astype(np.float64)
  min_gap = min(
      np.linalg.norm(colours[i] - colours[j])
      for i, j in itertools.combinations(range(len(colours)), 2))
  assert annotation.DEFAULT_TOLERANCE < min_gap / 2


def test_decode_each_legend_colour():
  rgb = _row(*legend.LEGEND.values())
  label_map, unmatched = annotation.decode_annotation(rgb, tolerance=0.0)
  np.testing.assert_array_equal(label_map, [np.arange(len(legend.LEGEND))])
  assert unmatched == 0


def test_decode_output_dtype_and_shape():
  rgb = np.zeros((3, 5, 3), dtype=np.uint8)
  label_map, _ = annotation.decode_annotation(rgb)
  assert label_map.dtype == np.uint8
  assert label_map.shape == (3, 5)


def test_decode_snaps_within_tolerance():
  # (52, 0, 52) is 67.9 from liver and 73.5 from black.
  rgb = _row((100, 0, 99), (6, 0, 6), (250, 250, 5), (52, 0, 52))
  label_map, unmatched = annotation.decode_annotation(rgb)
  np.testing.assert_array_equal(label_map, [[LIVER, 0, KIDNEY, LIVER]])
  assert unmatched == 0


def test_decode_unmatched_beyond_tolerance():
  # (169, 169, 0) is 121.6 from kidney, its nearest legend colour, and 239
  # from black.
  rgb = _row((169, 169, 0), (100, 0, 100), (169, 169, 0))
  label_map, unmatched = annotation.decode_annotation(rgb)
  np.testing.assert_array_equal(label_map, [[0, LIVER, 0]])
  assert unmatched == 2


def test_decode_zero_tolerance_counts_off_palette():
  rgb = _row((100, 0, 99), (255, 0, 255), (10, 0, 10))
  label_map, unmatched = annotation.decode_annotation(rgb, tolerance=0.0)
  np.testing.assert_array_equal(label_map, [[0, SPLEEN, 0]])
  assert unmatched == 2


def test_decode_rgba_ignores_alpha():
  rgba = _row((255, 0, 255, 0), (100, 0, 99, 227), (169, 169, 0, 255))
  label_map, unmatched = annotation.decode_annotation(rgba)
  np.testing.assert_array_equal(label_map, [[SPLEEN, LIVER, 0]])
  assert unmatched == 1


@pytest.mark.parametrize(
    "rgb",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 2), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.float32),
    ],
    ids=["2d", "two_channels", "float32"],
)
def test_decode_rejects_invalid_array(rgb):
  with pytest.raises(ValueError, match="annotation"):
    annotation.decode_annotation(rgb)


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_decode_rejects_invalid_tolerance(tolerance):
  rgb = np.zeros((2, 2, 3), dtype=np.uint8)
  with pytest.raises(ValueError, match="tolerance"):
    annotation.decode_annotation(rgb, tolerance=tolerance)


@pytest.mark.parametrize(
    "file_name, subject",
    [
        ("a22.jpg", "a"),
        ("h100.png", "h"),
        ("ab7.png", "ab"),
        ("images/test/b3.jpg", "b"),
    ],
)
def test_subject_of_leading_letters(file_name, subject):
  assert annotation.subject_of(file_name) == subject


def test_subject_of_rejects_digit_start():
  with pytest.raises(ValueError, match="22.jpg"):
    annotation.subject_of("22.jpg")


def test_real_a2_background_is_zero(shared_data_dir):
  rgba = _read_annotation(shared_data_dir, "a2.png")
  label_map, unmatched = annotation.decode_annotation(rgba)

  # a2.png paints its background (10, 0, 10), plus one (12, 0, 12) pixel.
  near_black = rgba[..., :3].max(axis=-1) <= 12
  assert unmatched == 0
  assert np.count_nonzero(near_black) == 290955
  np.testing.assert_array_equal(label_map == 0, near_black)


def test_real_antialiased_edge_snaps(shared_data_dir):
  rgba = _read_annotation(shared_data_dir, "h23.png")
  label_map, _ = annotation.decode_annotation(rgba)
  rgb = rgba[..., :3]

  liver_edge = np.all(rgb == (100, 0, 99), axis=-1)
  dark_edge = np.all(rgb == (6, 0, 6), axis=-1)
  assert np.count_nonzero(liver_edge) == 21
  assert np.all(label_map[liver_edge] == LIVER)
  assert np.count_nonzero(dark_edge) == 1
  assert np.all(label_map[dark_edge] == 0)


def test_real_a22_spleen_fraction(shared_data_dir):
  label_map, _ = annotation.decode_annotation(
      _read_annotation(shared_data_dir, "a22.png"))
  spleen_fraction = np.mean(label_map == SPLEEN)
  assert 0.025 <= spleen_fraction <= 0.045


def test_real_unmatched_counts(shared_data_dir):
  folder = shared_data_dir / "abdominal_US/RUS/annotations/test"
  counts = {}
  for path in sorted(folder.glob("*.png")):
    _, unmatched = annotation.decode_annotation(
        _read_annotation(shared_data_dir, path.name))
    if unmatched:
      counts[path.name] = unmatched
  assert counts == REAL_UNMATCHED


def test_real_decode_under_100ms(shared_data_dir):
  rgba = _read_annotation(shared_data_dir, "a2.png")
  annotation.decode_annotation(rgba)  # Warm-up: one-time costs are not timed.
  durations = []
  for _ in range(5):
    start = time.perf_counter()
    annotation.decode_annotation(rgba)
    durations.append(time.perf_counter() - start)
  assert min(durations) < 0.1
