"""Tests for the `abdomen_us` TFDS builder and its release-folder lookup."""

import logging
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from spleen_jax.data import abdomen_us
from spleen_jax.data import annotation
from spleen_jax.data import legend

RUS = "abdominal_US/RUS"

# Split sizes of the shared copy of the release: the annotated frames of each
# subject, and 404 frames of images/train plus 122 unannotated ones of
# images/test.
EXPECTED_SPLITS = {
    "subject_a": 16,
    "subject_b": 8,
    "subject_h": 26,
    "unlabeled": 526,
}


class _RecordingHandler(logging.Handler):
  """Keeps every log record, to check what the builder logged."""

  def __init__(self):
    super().__init__(level=logging.INFO)
    self.records: list[logging.LogRecord] = []

  def emit(self, record: logging.LogRecord) -> None:
    self.records.append(record)


def _prepare(release_dir, data_dir) -> abdomen_us.Builder:
  builder = abdomen_us.Builder(data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(release_dir)))
  return builder


def _examples(builder, split: str) -> list[dict]:
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  return list(tfds.as_numpy(dataset))


def _copy_pair(shared_data_dir, release_dir, stem: str) -> None:
  """Copies one real frame and its annotation into a fake release."""
  for folder, suffix in (("images/test", ".jpg"), ("annotations/test", ".png")):
    target = release_dir / RUS / folder
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_data_dir / RUS / folder / f"{stem}{suffix}", target)


@pytest.fixture(scope="module")
def built(shared_data_dir, tmp_path_factory):
  """Builds the dataset from the real data once and keeps its absl logs."""
  absl_logger = logging.getLogger("absl")
  handler = _RecordingHandler()
  old_level = absl_logger.level
  absl_logger.addHandler(handler)
  absl_logger.setLevel(logging.INFO)
  try:
    builder = _prepare(shared_data_dir, tmp_path_factory.mktemp("tfds"))
  finally:
    absl_logger.removeHandler(handler)
    absl_logger.setLevel(old_level)
  return builder, handler.records


@pytest.fixture(scope="module")
def labeled_examples(built) -> dict[str, dict]:
  """All annotated examples, keyed by frame file name."""
  builder, _ = built
  split = "+".join(name for name in EXPECTED_SPLITS if name != "unlabeled")
  return {
      example["file_name"].decode(): example
      for example in _examples(builder, split)
  }


def _make_release_dirs(root) -> None:
  (root / RUS / "images" / "test").mkdir(parents=True)


def test_find_root_parent_layout(tmp_path):
  _make_release_dirs(tmp_path)
  assert abdomen_us.find_release_root(tmp_path) == tmp_path / "abdominal_US"


def test_find_root_release_layout(tmp_path):
  _make_release_dirs(tmp_path)
  release = tmp_path / "abdominal_US"
  assert abdomen_us.find_release_root(release) == release


def test_find_root_real_data(shared_data_dir):
  root = abdomen_us.find_release_root(shared_data_dir)
  assert root == shared_data_dir / "abdominal_US"


def test_find_root_wrong_folder(tmp_path):
  (tmp_path / "images").mkdir()
  with pytest.raises(ValueError) as error:
    abdomen_us.find_release_root(tmp_path)
  message = str(error.value)
  assert str(tmp_path) in message
  assert "abdominal_US/RUS/images/" in message
  assert "--config.data.manual_dir=PATH" in message


def test_find_root_missing_path(tmp_path):
  missing = tmp_path / "missing"
  with pytest.raises(FileNotFoundError) as error:
    abdomen_us.find_release_root(missing)
  message = str(error.value)
  assert str(missing) in message
  assert "abdominal_US/RUS/images/" in message
  assert "--config.data.manual_dir=PATH" in message


def test_builder_split_names(built):
  builder, _ = built
  assert sorted(builder.info.splits) == sorted(EXPECTED_SPLITS)


@pytest.mark.parametrize("split, size", sorted(EXPECTED_SPLITS.items()))
def test_builder_split_size(built, split, size):
  builder, _ = built
  assert builder.info.splits[split].num_examples == size


def test_builder_h100_skipped_with_warning(built):
  _, records = built
  warnings = [
      record.getMessage() for record in records
      if record.levelno == logging.WARNING and "h100.png" in record.getMessage()
  ]
  assert len(warnings) == 1
  assert "no frame" in warnings[0]


def test_builder_unmatched_logged(built):
  _, records = built
  messages = [
      record.getMessage() for record in records
      if record.levelno == logging.INFO and "unmatched" in record.getMessage()
  ]
  assert any(message.startswith("h1.png: 3 unmatched") for message in messages)
  # Eight annotations have unmatched pixels, and h100.png is skipped unread.
  assert len(messages) == 7


def test_builder_feature_dtypes(labeled_examples):
  example = labeled_examples["a22.jpg"]
  assert example["image"].dtype == np.uint8
  assert example["image"].shape == (480, 640, 1)
  assert example["label"].dtype == np.uint8
  assert example["label"].shape == (480, 640, 1)
  assert example["labeled"].dtype == np.bool_
  assert example["unmatched_pixels"].dtype == np.int32
  assert example["subject"] == b"a"
  assert example["file_name"] == b"a22.jpg"


def test_builder_label_matches_decode(shared_data_dir, labeled_examples):
  with Image.open(shared_data_dir / RUS / "annotations/test/a22.png") as image:
    expected, _ = annotation.decode_annotation(np.asarray(image))
  np.testing.assert_array_equal(labeled_examples["a22.jpg"]["label"][..., 0],
                                expected)


def test_builder_image_matches_frame(shared_data_dir, labeled_examples):
  with Image.open(shared_data_dir / RUS / "images/test/a22.jpg") as image:
    expected = np.asarray(image)
  np.testing.assert_array_equal(labeled_examples["a22.jpg"]["image"][..., 0],
                                expected)


def test_builder_unmatched_stored(labeled_examples):
  assert labeled_examples["h1.jpg"]["unmatched_pixels"] == 3
  assert labeled_examples["a22.jpg"]["unmatched_pixels"] == 0


@pytest.mark.parametrize("subject", ["a", "b", "h"])
def test_builder_subject_split_content(built, subject):
  builder, _ = built
  examples = _examples(builder, f"subject_{subject}")
  assert {example["subject"].decode() for example in examples} == {subject}
  assert all(example["labeled"] for example in examples)
  assert all(example["label"].any() for example in examples)


def test_builder_unlabeled_content(shared_data_dir, built):
  builder, _ = built
  examples = _examples(builder, "unlabeled")
  names = {example["file_name"].decode() for example in examples}
  train_folder = shared_data_dir / RUS / "images/train"
  annotation_folder = shared_data_dir / RUS / "annotations/test"
  train_names = {path.name for path in train_folder.glob("*.jpg")}
  annotated_stems = {path.stem for path in annotation_folder.glob("*.png")}

  assert train_names <= names
  assert not any(name.rsplit(".", 1)[0] in annotated_stems for name in names)
  assert not any(example["labeled"] for example in examples)
  assert not any(example["label"].any() for example in examples)
  assert all(example["unmatched_pixels"] == 0 for example in examples)


def test_builder_spleen_frames(labeled_examples):
  spleen = legend.CLASS_NAMES.index("spleen")
  frames = sorted(name for name, example in labeled_examples.items()
                  if (example["label"] == spleen).any())
  assert frames == ["a22.jpg", "a25.jpg", "a26.jpg", "a30.jpg", "b26.jpg"]


def test_builder_deterministic(shared_data_dir, tmp_path):
  release = tmp_path / "release"
  _copy_pair(shared_data_dir, release, "a22")
  _copy_pair(shared_data_dir, release, "b26")

  shards = []
  for run in ("first", "second"):
    builder = _prepare(release, tmp_path / run)
    files = sorted(builder.data_path.glob("*.tfrecord*"))
    shards.append({path.name: path.read_bytes() for path in files})
  assert shards[0]
  assert shards[0] == shards[1]


def test_builder_size_mismatch(shared_data_dir, tmp_path):
  release = tmp_path / "release"
  _copy_pair(shared_data_dir, release, "a22")
  annotation_path = release / RUS / "annotations/test/a22.png"
  with Image.open(annotation_path) as image:
    cropped = image.crop((0, 0, 320, 240))
  cropped.save(annotation_path)

  with pytest.raises(ValueError) as error:
    _prepare(release, tmp_path / "tfds")
  message = str(error.value)
  assert str(annotation_path) in message
  assert "a22.jpg" in message
  assert "320x240" in message
  assert "640x480" in message


def test_builder_truncated_frame(shared_data_dir, tmp_path):
  release = tmp_path / "release"
  _copy_pair(shared_data_dir, release, "a22")
  frame_path = release / RUS / "images/test/a22.jpg"
  frame_path.write_bytes(frame_path.read_bytes()[:2000])

  with pytest.raises(ValueError) as error:
    _prepare(release, tmp_path / "tfds")
  message = str(error.value)
  assert str(frame_path) in message
  assert "Unreadable" in message


def test_builder_unreadable_annotation(shared_data_dir, tmp_path):
  release = tmp_path / "release"
  _copy_pair(shared_data_dir, release, "a22")
  annotation_path = release / RUS / "annotations/test/a22.png"
  annotation_path.write_bytes(b"not a png")

  with pytest.raises(ValueError) as error:
    _prepare(release, tmp_path / "tfds")
  message = str(error.value)
  assert str(annotation_path) in message
  assert "Unreadable" in message
