"""The tf.data pipeline: class selection, seeded stream, evaluation batches."""

import numpy as np
import pytest

from spleen_jax.data import augment
from spleen_jax.data import input_pipeline
from spleen_jax.data import legend


def _frames(count=5, size=32):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8)
  labels = np.zeros((count, size, size), np.uint8)
  for i in range(count):
    labels[i, 4 + i:12 + i, 8:20] = 1
  return input_pipeline.Frames(
      images=images, labels=labels, boxes=np.zeros((count, 8), np.int32),
      file_names=[f"a{i}.jpg" for i in range(count)],
      subjects=["a"] * count)


def _take(dataset, count):
  return list(dataset.take(count).as_numpy_iterator())


def test_class_lookup_maps_selected_organs():
  table = input_pipeline.class_lookup(("liver", "spleen"))
  assert table[legend.legend_id("liver")] == 1
  assert table[legend.legend_id("spleen")] == 2
  assert table[legend.legend_id("kidney")] == 0
  assert table[0] == 0


def test_class_lookup_rejects_unknown_name():
  with pytest.raises(ValueError, match="Unknown class name 'spleem': choose "
                     "from liver, kidney"):
    input_pipeline.class_lookup(("spleem",))


def test_class_lookup_rejects_empty_and_repeated():
  with pytest.raises(ValueError, match="data.classes is empty"):
    input_pipeline.class_lookup(())
  with pytest.raises(ValueError, match=r"lists \['liver'\] more than once"):
    input_pipeline.class_lookup(("liver", "liver"))


def test_train_stream_is_deterministic():
  frames = _frames()
  config = augment.AugmentConfig()
  first = _take(input_pipeline.train_dataset(
      frames, batch_size=2, seed=7, augmentation=config), 3)
  second = _take(input_pipeline.train_dataset(
      frames, batch_size=2, seed=7, augmentation=config), 3)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_train_stream_depends_on_seed():
  frames = _frames()
  first = _take(input_pipeline.train_dataset(frames, batch_size=2, seed=7), 1)
  other = _take(input_pipeline.train_dataset(frames, batch_size=2, seed=8), 1)
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_train_stream_resumes_at_step():
  frames = _frames()
  config = augment.AugmentConfig()
  straight = _take(input_pipeline.train_dataset(
      frames, batch_size=2, seed=7, augmentation=config), 4)
  resumed = _take(input_pipeline.train_dataset(
      frames, batch_size=2, seed=7, start_step=2, augmentation=config), 2)
  np.testing.assert_array_equal(straight[2]["image"], resumed[0]["image"])
  np.testing.assert_array_equal(straight[3]["label"], resumed[1]["label"])


def test_train_stream_visits_each_frame_once_per_epoch():
  frames = _frames(count=6)
  frames.labels[:] = np.arange(6, dtype=np.uint8)[:, None, None]
  batches = _take(input_pipeline.train_dataset(frames, batch_size=3, seed=1,
                                               normalization="unit"), 4)
  epoch_ids = [sorted({int(l[0, 0]) for b in batches[i:i + 2]
                       for l in b["label"]}) for i in (0, 2)]
  assert epoch_ids == [list(range(6)), list(range(6))]


def test_augmentation_keeps_label_ids():
  frames = _frames()
  config = augment.AugmentConfig(rotation_degrees=30, scale=0.2,
                                 translation=0.1, flip_probability=0.5)
  for batch in _take(input_pipeline.train_dataset(
      frames, batch_size=5, seed=3, augmentation=config), 3):
    assert set(np.unique(batch["label"])) <= {0, 1}
    assert batch["image"].dtype == np.float32
    assert batch["image"].shape == (5, 32, 32, 1)


def test_augmentation_moves_labels_with_image():
  # A bright square labelled 1: after rotation and shift, labelled pixels
  # should still be bright.
  size = 64
  image = np.zeros((1, size, size, 1), np.uint8)
  label = np.zeros((1, size, size), np.uint8)
  image[0, 20:44, 16:40] = 255
  label[0, 20:44, 16:40] = 1
  frames = input_pipeline.Frames(image, label, np.zeros((1, 8), np.int32),
                                 ["a0.jpg"], ["a"])
  config = augment.AugmentConfig(brightness=0, contrast=0, gamma=0,
                                 noise_std=0, flip_probability=0.5)
  for batch in _take(input_pipeline.train_dataset(
      frames, batch_size=1, seed=5, normalization="unit",
      augmentation=config), 8):
    inside = batch["image"][0, ..., 0][batch["label"][0] == 1]
    assert inside.size > 300
    assert np.mean(inside > 0.5) > 0.95


def test_eval_batches_pad_last_batch():
  frames = _frames(count=5)
  batches = list(input_pipeline.eval_batches(frames, batch_size=2))
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[2]["valid"], [1.0, 0.0])
  assert batches[2]["image"].shape == (2, 32, 32, 1)
  np.testing.assert_array_equal(batches[2]["label"][0], frames.labels[4])
  assert np.all(batches[2]["image"][1] == 0)


def test_zscore_normalization_statistics():
  frames = _frames(count=1)
  batch = next(input_pipeline.eval_batches(frames, batch_size=1))
  assert float(np.mean(batch["image"])) == pytest.approx(0.0, abs=1e-5)
  assert float(np.std(batch["image"])) == pytest.approx(1.0, abs=1e-4)


def _sparse_frames(count=6, size=32, positive=(1, 4)):
  """Frames where only the indices in `positive` show class 1."""
  frames = _frames(count, size)
  frames.labels[:] = 0
  for i in positive:
    frames.labels[i, 10:14, 10:14] = 1
  return frames


def test_foreground_rows_show_the_class():
  frames = _sparse_frames()
  sampling = input_pipeline.ForegroundSampling(class_id=1, fraction=0.5)
  batches = _take(input_pipeline.train_dataset(
      frames, batch_size=4, seed=3, foreground=sampling), 6)
  for batch in batches:
    # Rows 0 and 1 of each batch come from the 2 frames with the class.
    assert (batch["label"][:2] == 1).any(axis=(1, 2)).all()
  without = _take(input_pipeline.train_dataset(frames, batch_size=4, seed=3),
                  6)
  positive_share = np.mean(
      [(b["label"] == 1).any(axis=(1, 2)).mean() for b in without])
  # Plain sampling shows the class in about 2 of 6 rows.
  assert positive_share < 0.5


def test_foreground_stream_resumes_at_step():
  frames = _sparse_frames()
  sampling = input_pipeline.ForegroundSampling(
      class_id=1, fraction=0.5, crop_probability=0.5)
  straight = _take(input_pipeline.train_dataset(
      frames, batch_size=4, seed=3, foreground=sampling,
      augmentation=augment.AugmentConfig()), 4)
  resumed = _take(input_pipeline.train_dataset(
      frames, batch_size=4, seed=3, foreground=sampling, start_step=2,
      augmentation=augment.AugmentConfig()), 2)
  for a, b in zip(straight[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_foreground_sampling_without_class_is_rejected():
  frames = _sparse_frames(positive=())
  sampling = input_pipeline.ForegroundSampling(class_id=1, fraction=0.5)
  with pytest.raises(ValueError, match="show class id 1, but none of the 6 train frames"):
    input_pipeline.train_dataset(frames, batch_size=4, seed=0,
                                 foreground=sampling)


def test_foreground_crop_zooms_around_class():
  label = np.zeros((32, 32), np.int32)
  label[20:24, 4:8] = 1
  image = label[..., None].astype(np.float32)
  zoomed_image, zoomed_label = augment.foreground_crop(
      image, label, 1, np.array([0, 1]), 0.5)
  zoomed_label = np.asarray(zoomed_label)
  # A 16x16 window around a 4x4 organ, zoomed 2x: the organ covers 8x8.
  assert zoomed_label.shape == (32, 32)
  assert int((zoomed_label == 1).sum()) == 64
  assert np.asarray(zoomed_image).shape == (32, 32, 1)


def test_foreground_crop_leaves_frame_without_class():
  label = np.zeros((16, 16), np.int32)
  image = np.arange(256, dtype=np.float32).reshape(16, 16, 1)
  zoomed_image, zoomed_label = augment.foreground_crop(
      image, label, 1, np.array([0, 1]), 0.5)
  np.testing.assert_array_equal(np.asarray(zoomed_image), image)
  np.testing.assert_array_equal(np.asarray(zoomed_label), label)


def test_unlabeled_views_share_geometry():
  frames = _frames(count=3)
  weak = augment.AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0,
                               noise_std=0.0)
  # Gamma alone keeps 0 at 0, so the warp's zero padding stays visible.
  strong = augment.AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.4,
                                 noise_std=0.0)
  batch = _take(input_pipeline.unlabeled_dataset(
      frames, batch_size=2, seed=1, weak=weak, strong=strong,
      normalization="unit"), 1)[0]
  assert batch["weak"].shape == (2, 32, 32, 1)
  # Same geometry: the zero padding moved in by the warp is at the same
  # pixels in both views, while the intensities differ.
  assert not np.allclose(batch["weak"], batch["strong"])
  np.testing.assert_array_equal(batch["weak"] == 0, batch["strong"] == 0)
