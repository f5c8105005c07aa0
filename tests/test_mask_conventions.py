"""Tests for the pure-numpy mask conventions of user folders."""

import numpy as np
import pytest

from spleen_jax.data import legend
from spleen_jax.data import mask_conventions as mc

SPLEEN = legend.CLASS_NAMES.index("spleen")
LIVER = legend.CLASS_NAMES.index("liver")


def test_parse_class_ids_maps_to_legend():
  table = mc.parse_class_ids("1=spleen, 2=liver,3=background", "f")
  assert table == {0: 0, 1: SPLEEN, 2: LIVER, 3: 0}


@pytest.mark.parametrize("text, fragment", [
    ("1:spleen", "Invalid entry '1:spleen'"),
    ("x=spleen", "Invalid entry 'x=spleen'"),
    ("1=spleen,1=liver", "Class id 1 appears twice"),
    ("", "is empty"),
])
def test_parse_class_ids_rejects(text, fragment):
  with pytest.raises(ValueError, match=fragment):
    mc.parse_class_ids(text, "data.folder.class_ids")


def test_unknown_organ_lists_choices():
  with pytest.raises(ValueError) as error:
    mc.parse_class_ids("1=spleem", "data.folder.class_ids")
  assert "'spleem'" in str(error.value)
  assert ", ".join(legend.ORGAN_NAMES) in str(error.value)


@pytest.mark.parametrize("high", [1, 255])
def test_binary_lossless(high):
  mask = np.array([[0, high], [high, 0]], np.uint8)
  labels, changed = mc.binary_to_labels(mask, SPLEEN, lossy=False)
  np.testing.assert_array_equal(labels, [[0, SPLEEN], [SPLEEN, 0]])
  assert changed == 0


def test_binary_lossless_rejects_other_values():
  mask = np.array([[0, 255], [128, 0]], np.uint8)
  with pytest.raises(mc.MaskValueError, match="128"):
    mc.binary_to_labels(mask, SPLEEN, lossy=False)


def test_binary_lossy_thresholds_and_counts():
  mask = np.zeros((10, 10), np.uint8)
  mask[:, 5:] = 255
  mask[0, 0], mask[0, 9], mask[1, 9] = 12, 250, 130
  labels, changed = mc.binary_to_labels(mask, SPLEEN, lossy=True)
  expected = np.where(mask >= 128, SPLEEN, 0)
  np.testing.assert_array_equal(labels, expected)
  assert changed == 3


def test_binary_lossy_rejects_gray_image():
  mask = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (25, 1))
  with pytest.raises(mc.MaskValueError, match="lie between"):
    mc.binary_to_labels(mask, SPLEEN, lossy=True)


def test_class_ids_to_labels():
  table = {0: 0, 1: SPLEEN, 4: LIVER}
  mask = np.array([[0, 1], [4, 1]], np.uint16)
  np.testing.assert_array_equal(mc.class_ids_to_labels(mask, table),
                                [[0, SPLEEN], [LIVER, SPLEEN]])


def test_class_ids_rejects_unknown_id():
  with pytest.raises(mc.MaskValueError, match=r"ids \[3\]"):
    mc.class_ids_to_labels(np.array([[0, 3]]), {0: 0, 1: SPLEEN})


def test_colour_snaps_and_counts_unmatched():
  colours, ids = mc.parse_colour_legend({"spleen": [255, 0, 255]}, "test")
  rgb = np.array([[[0, 0, 0], [250, 5, 250]],
                  [[255, 0, 255], [120, 120, 0]]], np.uint8)
  labels, unmatched, examples = mc.colour_to_labels(rgb, colours, ids, 70.0)
  np.testing.assert_array_equal(labels, [[0, SPLEEN], [SPLEEN, 0]])
  assert unmatched == 1
  assert examples == [(120, 120, 0)]


def test_colour_legend_rejects_shared_colour():
  with pytest.raises(ValueError, match="share the colour"):
    mc.parse_colour_legend({"spleen": [1, 2, 3], "liver": [1, 2, 3]}, "x")


def test_colour_legend_rejects_bad_colour():
  with pytest.raises(ValueError, match="Invalid colour"):
    mc.parse_colour_legend({"spleen": [1, 2]}, "x")


def test_tolerance_must_separate_colours():
  colours, _ = mc.parse_colour_legend({"spleen": [100, 0, 0]}, "x")
  mc.check_tolerance(colours, 49.0, "tol")
  with pytest.raises(ValueError, match="below 50.0"):
    mc.check_tolerance(colours, 50.0, "tol")


def test_detect_convention():
  gray = mc.MaskStats(colour=False, values=frozenset({0, 255}), lossy=False)
  colour = mc.MaskStats(colour=True, values=frozenset(), lossy=False)
  assert mc.detect_convention({"a": gray}, False)[0] == mc.BINARY
  assert mc.detect_convention({"a": gray}, True)[0] == mc.CLASS_IDS
  assert mc.detect_convention({"a": gray, "b": colour}, True)[0] == mc.COLOUR


def test_find_invalid_lists_each_file():
  stats = {
      "ok.png": mc.MaskStats(False, frozenset({0, 1}), False),
      "odd.png": mc.MaskStats(False, frozenset({0, 3, 255}), False),
      "lossy.jpg": mc.MaskStats(False, frozenset({0, 3, 128, 255}), True),
  }
  assert mc.find_invalid(stats, mc.BINARY) == ["odd.png: values 0, 3, 255"]
  problems = mc.find_invalid(stats, mc.CLASS_IDS, {0: 0, 1: SPLEEN})
  assert problems == [
      "lossy.jpg: a JPEG file, whose compression alters class ids",
      "odd.png: ids 3, 255 are not in the class-id map"]
