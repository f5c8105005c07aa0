"""Letterbox geometry and its inverse, in numpy/JAX and in the TF pipeline."""

import numpy as np
import pytest

from spleen_jax.core import letterbox
from spleen_jax.data import input_pipeline


def test_geometry_of_real_frame_size():
  box = letterbox.letterbox_geometry(480, 640, 256, 256)
  assert (box.resized_height, box.resized_width) == (192, 256)
  assert (box.top, box.left) == (32, 0)


def test_geometry_of_tall_frame():
  box = letterbox.letterbox_geometry(300, 100, 64, 64)
  assert (box.resized_height, box.resized_width) == (64, 21)
  assert (box.top, box.left) == (0, 21)


@pytest.mark.parametrize("height,width", [(1, 1), (7, 1000), (1000, 7),
                                          (255, 257), (64, 64)])
def test_geometry_fits_target(height, width):
  box = letterbox.letterbox_geometry(height, width, 64, 48)
  assert 1 <= box.resized_height <= 64
  assert 1 <= box.resized_width <= 48
  assert box.top + box.resized_height <= 64
  assert box.left + box.resized_width <= 48
  assert box.resized_height == 64 or box.resized_width == 48


def test_geometry_rejects_empty_frame():
  with pytest.raises(ValueError, match="every size must be at least 1"):
    letterbox.letterbox_geometry(0, 10, 64, 64)


def test_geometry_array_round_trip():
  box = letterbox.letterbox_geometry(480, 640, 256, 256)
  assert letterbox.Letterbox.from_array(box.as_array()) == box


def test_letterbox_pads_with_black():
  image = np.full((480, 640, 1), 200, np.uint8)
  padded, _, box = input_pipeline.letterbox_frame(image, None, (256, 256))
  assert padded.shape == (256, 256, 1)
  assert np.all(padded[:box.top] == 0)
  assert np.all(padded[box.top + box.resized_height:] == 0)
  assert np.all(padded[box.top:box.top + box.resized_height] == 200)


def test_invert_letterbox_restores_label_map():
  label = np.zeros((480, 640), np.uint8)
  label[100:300, 200:500] = 5
  image = np.zeros((480, 640, 1), np.uint8)
  _, padded_label, box = input_pipeline.letterbox_frame(image, label,
                                                        (256, 256))
  restored = np.asarray(letterbox.invert_letterbox(padded_label, box,
                                                   method="nearest"))
  assert restored.shape == (480, 640)
  # Nearest-neighbour resampling at scale 0.4 moves edges by at most 2 pixels.
  assert np.all(restored[102:298, 202:498] == 5)
  assert np.all(restored[:98] == 0)
  assert np.all(restored[:, :198] == 0)
  assert set(np.unique(restored)) == {0, 5}


def test_invert_letterbox_rejects_wrong_shape():
  box = letterbox.letterbox_geometry(480, 640, 256, 256)
  with pytest.raises(ValueError, match="Expected an array of 256x256"):
    letterbox.invert_letterbox(np.zeros((128, 128)), box)
