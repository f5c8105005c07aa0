"""Tests for the ultrasound phantom, its TFDS builder and the data dispatch."""

import math
import time

import numpy as np
import pytest
from scipy import ndimage
import tensorflow_datasets as tfds

from configs import phantom as phantom_config
from spleen_jax.data import abdomen_us
from spleen_jax.data import datasets
from spleen_jax.data import legend
from spleen_jax.data import phantom
from spleen_jax.data import us_phantom

# Seeds of frames that the geometry tests check; together they cover
# children, adults and splenomegaly (lengths printed on failure).
SEEDS = [(0, index) for index in range(8)]
# Organs that the phantom draws, as legend ids.
DRAWN_IDS = {0, legend.legend_id("liver"), legend.legend_id("kidney"),
             legend.legend_id("vessels"), legend.legend_id("spleen"),
             legend.legend_id("bones")}


@pytest.fixture(scope="module")
def frames():
  return [phantom.simulate_frame(seed) for seed in SEEDS]


def _brute_force_length_mm(mask: np.ndarray, spacing: np.ndarray) -> float:
  """Returns the maximum distance between two mask pixel centres, in mm.

  Compares every pair of boundary pixels, which contain the farthest pair.
  """
  boundary = mask & ~ndimage.binary_erosion(mask)
  rows, cols = np.nonzero(boundary)
  points = np.stack([rows * spacing[0], cols * spacing[1]], axis=1)
  best = 0.0
  for start in range(0, len(points), 512):
    chunk = points[start:start + 512]
    distances = np.sqrt(((chunk[:, None] - points[None]) ** 2).sum(-1))
    best = max(best, float(distances.max()))
  return best


def test_same_seed_gives_same_frame():
  first = phantom.simulate_frame((5, 3))
  second = phantom.simulate_frame((5, 3))
  np.testing.assert_array_equal(first.image, second.image)
  np.testing.assert_array_equal(first.label, second.label)
  assert first.spleen_length_mm == second.spleen_length_mm


def test_different_seeds_give_different_frames():
  first = phantom.simulate_frame((5, 3))
  second = phantom.simulate_frame((5, 4))
  other_base_seed = phantom.simulate_frame((6, 3))
  assert not np.array_equal(first.image, second.image)
  assert not np.array_equal(first.label, second.label)
  assert not np.array_equal(first.image, other_base_seed.image)


def test_frame_size_and_types(frames):
  for frame in frames:
    assert frame.image.shape == (480, 640)
    assert frame.image.dtype == np.uint8
    assert frame.label.shape == (480, 640)
    assert frame.label.dtype == np.uint8
    assert frame.pixel_spacing_mm.dtype == np.float32
    assert set(np.unique(frame.label)) <= DRAWN_IDS


def test_custom_frame_size():
  frame = phantom.simulate_frame((1, 1), height=240, width=320)
  assert frame.image.shape == (240, 320)
  assert frame.label.shape == (240, 320)


def test_masks_lie_inside_sector(frames):
  for frame in frames:
    geometry = frame.geometry
    # The apex lies above the frame, and the fan inside it.
    assert geometry.apex_row < 0
    rows, cols = np.nonzero(frame.sector)
    assert rows.min() > 0
    assert rows.max() < geometry.height - 1
    assert cols.min() > 0
    assert cols.max() < geometry.width - 1

    assert not np.any(frame.label[~frame.sector])
    assert not np.any(frame.image[~frame.sector])
    # Recompute the fan from the geometry at the labelled pixels.
    rows, cols = np.nonzero(frame.label)
    x = (cols - geometry.apex_col) * geometry.spacing_mm
    y = (rows - geometry.apex_row) * geometry.spacing_mm
    radius = np.hypot(x, y)
    assert radius.min() >= geometry.probe_radius_mm
    assert radius.max() <= geometry.probe_radius_mm + geometry.depth_mm
    assert np.abs(np.arctan2(x, y)).max() <= geometry.half_angle


def test_fan_is_bright_inside_and_black_outside(frames):
  for frame in frames:
    assert 10 < frame.image[frame.sector].mean() < 150
    assert frame.image[~frame.sector].max() == 0


def test_spleen_length_matches_mask(frames):
  lengths = []
  for frame in frames:
    spacing = frame.pixel_spacing_mm
    mask = frame.label == phantom.SPLEEN
    assert mask.sum() > 100
    measured = _brute_force_length_mm(mask, spacing)
    lengths.append(round(measured))
    assert abs(measured - frame.spleen_length_mm) <= spacing.max(), lengths
    # The whole drawn outline is in the mask: no other organ or the fan's
    # edge cut it short.
    assert frame.spleen_length_mm <= frame.spleen_outline_length_mm + 1e-6
    assert (frame.spleen_outline_length_mm - frame.spleen_length_mm
            <= 2 * math.sqrt(2) * spacing.max()), lengths


def test_spleen_lengths_cover_children_and_adults():
  rng = np.random.default_rng(0)
  lengths = np.array([phantom.sample_spleen_length_mm(rng)
                      for _ in range(4000)])
  assert lengths.min() >= 45.0
  assert lengths.max() <= 190.0
  # Expected fractions: 25% children, of whom 43/55 are below 88 mm; 60%
  # normal adults plus the children from 88 mm; 15% splenomegaly.
  assert np.mean(lengths < 88.0) == pytest.approx(0.25 * 43 / 55, abs=0.03)
  assert np.mean((lengths >= 88.0) & (lengths <= 135.0)) == pytest.approx(
      0.6 + 0.25 * 12 / 55, abs=0.03)
  assert np.mean(lengths > 135.0) == pytest.approx(0.15, abs=0.03)


def test_feret_diameter_of_known_shapes():
  mask = np.zeros((50, 60), bool)
  mask[10, 5] = mask[40, 45] = True
  assert phantom.feret_diameter_mm(mask, (1.0, 1.0)) == pytest.approx(50.0)
  assert phantom.feret_diameter_mm(mask, (0.5, 2.0)) == pytest.approx(
      math.hypot(15.0, 80.0))
  line = np.zeros((5, 30), bool)
  line[2, 3:20] = True  # Collinear pixels.
  assert phantom.feret_diameter_mm(line, (1.0, 1.0)) == pytest.approx(16.0)
  assert phantom.feret_diameter_mm(np.zeros((4, 4), bool), (1, 1)) == 0.0


def test_fill_polygon_fills_pixel_centres():
  # A square from 1.5 to 4.5 covers the centres 2, 3 and 4 in each direction.
  rows = np.array([1.5, 1.5, 4.5, 4.5])
  cols = np.array([1.5, 4.5, 4.5, 1.5])
  filled = np.zeros((8, 8), bool)
  filled[phantom.fill_polygon(rows, cols, (8, 8))] = True
  expected = np.zeros((8, 8), bool)
  expected[2:5, 2:5] = True
  np.testing.assert_array_equal(filled, expected)
  # Parts outside the frame are dropped.
  rows, cols = phantom.fill_polygon(rows - 3.0, cols + 5.0, (8, 8))
  assert set(zip(rows.tolist(), cols.tolist())) == {(0, 7), (1, 7)}


def test_speckle_envelope_is_rayleigh():
  rng = np.random.default_rng(0)
  psf = phantom.PointSpreadFunction(axial_sigma=1.5, lateral_sigma=3.0)
  envelope = phantom.speckle_envelope(rng, np.ones((600, 600), np.float32),
                                      psf)
  # Drop the borders, where the convolution reads zero padding.
  patch = envelope[50:-50, 50:-50]
  snr = patch.mean() / patch.std()
  assert snr == pytest.approx(phantom.RAYLEIGH_SNR, rel=0.05)


def test_sparse_scatterers_are_not_fully_developed():
  # Few scatterers per resolution cell give a non-Rayleigh envelope, so the
  # SNR check above can tell fully developed speckle from other statistics.
  rng = np.random.default_rng(0)
  psf = phantom.PointSpreadFunction(axial_sigma=0.3, lateral_sigma=0.3)
  envelope = phantom.speckle_envelope(rng, np.ones((600, 600), np.float32),
                                      psf, scatterers_per_sample=0.05)
  patch = envelope[50:-50, 50:-50]
  assert patch.mean() / patch.std() < 0.9 * phantom.RAYLEIGH_SNR


@pytest.fixture(scope="module")
def tiny_builder(phantom_tfds_dir):
  builder = us_phantom.Builder(config="tiny", data_dir=str(phantom_tfds_dir))
  assert builder.is_prepared()
  return builder


def test_tiny_config_split_sizes(tiny_builder):
  assert tiny_builder.name == "us_phantom"
  assert {name: split.num_examples
          for name, split in tiny_builder.info.splits.items()} == {
              "train": 8, "validation": 4, "test": 4}


def test_features_match_abdomen_us(tiny_builder, tmp_path):
  phantom_features = tiny_builder.info.features
  real_features = abdomen_us.Builder(data_dir=str(tmp_path)).info.features
  for name, feature in real_features.items():
    assert type(phantom_features[name]) is type(feature), name
    assert phantom_features[name].dtype == feature.dtype, name
    assert phantom_features[name].shape == feature.shape, name
  assert phantom_features["pixel_spacing_mm"].shape == (2,)
  assert phantom_features["pixel_spacing_mm"].dtype == np.float32
  assert phantom_features["spleen_length_mm"].dtype == np.float32


def test_tiny_examples_are_consistent(tiny_builder):
  subjects = []
  for split in ("train", "validation", "test"):
    dataset = tiny_builder.as_dataset(split=split, shuffle_files=False)
    for example in tfds.as_numpy(dataset):
      subject = example["subject"].decode()
      subjects.append(subject)
      assert example["file_name"].decode() == f"{subject}.png"
      assert example["labeled"]
      assert example["unmatched_pixels"] == 0
      assert example["image"].shape == (480, 640, 1)
      assert set(np.unique(example["label"])) <= DRAWN_IDS
      spacing = example["pixel_spacing_mm"]
      length = phantom.feret_diameter_mm(
          example["label"][..., 0] == phantom.SPLEEN, spacing)
      assert example["spleen_length_mm"] == pytest.approx(length, rel=1e-5)
  assert sorted(subjects) == [f"p{index:04d}" for index in range(16)]


def test_builder_frames_match_simulation(tiny_builder):
  config = tiny_builder.builder_config
  dataset = tiny_builder.as_dataset(split="validation", shuffle_files=False)
  example = next(iter(tfds.as_numpy(dataset)))
  index = int(example["subject"].decode()[1:])
  assert config.num_train <= index < config.num_train + config.num_validation
  frame = phantom.simulate_frame((config.seed, index), config.height,
                                 config.width)
  np.testing.assert_array_equal(example["image"][..., 0], frame.image)
  np.testing.assert_array_equal(example["label"][..., 0], frame.label)


def _phantom_data_config(phantom_tfds_dir):
  config = phantom_config.get_config()
  config.data.phantom_config = "tiny"
  config.data.tfds_data_dir = str(phantom_tfds_dir)
  return config.data


def test_datasets_load_phantom_splits(phantom_tfds_dir):
  data_config = _phantom_data_config(phantom_tfds_dir)
  builder = datasets.prepare_builder(data_config)
  subjects = datasets.assign_subjects(builder, data_config)
  assert subjects["train"] == tuple(f"p{i:04d}" for i in range(8))
  assert subjects["validation"] == tuple(f"p{i:04d}" for i in range(8, 12))
  assert subjects["test"] == tuple(f"p{i:04d}" for i in range(12, 16))
  frames = datasets.load_split(builder, data_config, "test",
                               subjects["test"])
  assert len(frames) == 4
  assert frames.images.shape == (4, 128, 128, 1)
  assert sorted(frames.subjects) == list(subjects["test"])
  # Training class 1 is the spleen, which every phantom frame shows.
  assert all(np.any(labels == 1) for labels in frames.labels)


def test_unknown_dataset_names_are_rejected(phantom_tfds_dir):
  data_config = _phantom_data_config(phantom_tfds_dir)
  data_config.phantom_config = "huge"
  with pytest.raises(ValueError, match="Unknown data.phantom_config 'huge'"):
    datasets.prepare_builder(data_config)
  data_config.name = "abdomen_uss"
  with pytest.raises(ValueError, match="Unknown data.name 'abdomen_uss'"):
    datasets.prepare_builder(data_config)


def test_generation_is_fast():
  phantom.simulate_frame((9, 0))
  start = time.process_time()
  for index in range(5):
    phantom.simulate_frame((9, index))
  seconds_per_frame = (time.process_time() - start) / 5
  # The budget is 0.5 s of CPU time per 480x640 frame; this leaves room for
  # slow CI machines.
  assert seconds_per_frame < 0.5
