"""Tests for the `folder_us` builder: layouts, mask conventions, splits, checks.

Every folder is built under tmp_path from real AbdomenUS frames, with masks
derived from the real annotations.
"""

import json
import logging
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import dicom_builder
from configs import folder as folder_config_file
from spleen_jax import train
from spleen_jax.data import annotation
from spleen_jax.data import datasets
from spleen_jax.data import legend
from spleen_jax.data.folder_us import folder_us_dataset_builder as builder_lib

RUS = "abdominal_US/RUS"
STEMS = ("a22", "a25", "b26", "h1")
SPLEEN = legend.CLASS_NAMES.index("spleen")
KIDNEY = legend.CLASS_NAMES.index("kidney")
VESSELS = legend.CLASS_NAMES.index("vessels")


class _RecordingHandler(logging.Handler):
  """Keeps every log record, to check what the builder logged."""

  def __init__(self):
    super().__init__(level=logging.INFO)
    self.records: list[logging.LogRecord] = []

  def emit(self, record: logging.LogRecord) -> None:
    self.records.append(record)

  def messages(self, level: int) -> list[str]:
    return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def absl_records():
  absl_logger = logging.getLogger("absl")
  handler = _RecordingHandler()
  old_level = absl_logger.level
  absl_logger.addHandler(handler)
  absl_logger.setLevel(logging.INFO)
  yield handler
  absl_logger.removeHandler(handler)
  absl_logger.setLevel(old_level)


@pytest.fixture(scope="module")
def real(shared_data_dir):
  """Frame path and legend-id label map [H, W] of each stem in STEMS."""
  result = {}
  for stem in STEMS:
    frame = shared_data_dir / RUS / "images/test" / f"{stem}.jpg"
    with Image.open(shared_data_dir / RUS / "annotations/test" /
                    f"{stem}.png") as image:
      labels, _ = annotation.decode_annotation(np.asarray(image))
    result[stem] = (frame, labels)
  return result


def _frame_pixels(path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("L"))


def _save(array: np.ndarray, path, **kwargs) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _copy(source, target) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy(source, target)


def _data_config(root, tfds_dir, **folder_fields):
  config = folder_config_file.get_config()
  config.data.tfds_data_dir = str(tfds_dir)
  config.data.folder.root = str(root)
  for key, value in folder_fields.items():
    config.data.folder[key] = value
  return config.data


def _prepare(root, tfds_dir, **folder_fields):
  data_config = _data_config(root, tfds_dir, **folder_fields)
  return datasets.prepare_builder(data_config), data_config


def _examples(builder) -> dict[str, dict]:
  dataset = builder.as_dataset(split=builder_lib.SPLIT, shuffle_files=False)
  return {e["file_name"].decode(): e for e in tfds.as_numpy(dataset)}


def _binary(labels: np.ndarray, high: int) -> np.ndarray:
  return np.where(labels == SPLEEN, high, 0).astype(np.uint8)


def _images_masks_binary(real, root, high=255) -> None:
  for stem, (frame, labels) in real.items():
    _copy(frame, root / "images" / f"{stem}.jpg")
    _save(_binary(labels, high), root / "masks" / f"{stem}.png")


# Layouts and conventions.


def test_images_masks_binary_255(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  builder, _ = _prepare(root, tmp_path / "tfds")
  examples = _examples(builder)

  assert sorted(examples) == [f"images/{s}.jpg" for s in sorted(STEMS)]
  assert builder.info.metadata["layout"] == "images_masks"
  assert builder.info.metadata["mask_convention"] == "binary"
  for stem, (frame, labels) in real.items():
    example = examples[f"images/{stem}.jpg"]
    expected = np.where(labels == SPLEEN, SPLEEN, 0)
    np.testing.assert_array_equal(example["label"][..., 0], expected)
    np.testing.assert_array_equal(example["image"][..., 0],
                                  _frame_pixels(frame))
    assert example["subject"].decode() == stem
    assert example["mask_file"].decode() == f"masks/{stem}.png"


def test_per_frame_folders_binary_01(real, tmp_path, absl_records):
  root = tmp_path / "spleenex"
  for index, (stem, (frame, labels)) in enumerate(sorted(real.items())):
    _copy(frame, root / "images" / str(index) / f"{index}.jpg")
    _save(_binary(labels, 1), root / "masks" / str(index) / f"{index}.png")
  builder, _ = _prepare(root, tmp_path / "tfds")
  examples = _examples(builder)

  assert builder.info.metadata["layout"] == "per_frame_folders"
  for index, stem in enumerate(sorted(real)):
    example = examples[f"images/{index}/{index}.jpg"]
    expected = np.where(real[stem][1] == SPLEEN, SPLEEN, 0)
    np.testing.assert_array_equal(example["label"][..., 0], expected)
    assert example["subject"].decode() == str(index)
  logged = " ".join(absl_records.messages(logging.INFO))
  assert "per_frame_folders layout" in logged
  assert "Mask convention" in logged


def test_side_by_side_class_ids(real, tmp_path):
  root = tmp_path / "pairs"
  custom = {SPLEEN: 2, KIDNEY: 7, VESSELS: 3}
  for stem, (frame, labels) in real.items():
    _copy(frame, root / f"{stem}.jpg")
    ids = np.zeros_like(labels)
    for legend_value, custom_id in custom.items():
      ids[labels == legend_value] = custom_id
    _save(ids, root / f"{stem}_mask.png")
  builder, _ = _prepare(root, tmp_path / "tfds",
                        class_ids="2=spleen,7=kidney,3=vessels")
  examples = _examples(builder)

  assert builder.info.metadata["layout"] == "side_by_side"
  assert builder.info.metadata["mask_convention"] == "class_ids"
  for stem, (_, labels) in real.items():
    expected = np.where(np.isin(labels, list(custom)), labels, 0)
    np.testing.assert_array_equal(examples[f"{stem}.jpg"]["label"][..., 0],
                                  expected)


def test_colour_masks_with_legend_file(real, tmp_path):
  root = tmp_path / "colour"
  colours = {"spleen": (10, 200, 30), "kidney": (200, 40, 40)}
  for stem, (frame, labels) in real.items():
    _copy(frame, root / "images" / f"{stem}.jpg")
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[labels == SPLEEN] = colours["spleen"]
    rgb[labels == KIDNEY] = colours["kidney"]
    # Off-palette edge pixels within the tolerance snap to the organ.
    rows, columns = np.nonzero(labels == KIDNEY)
    rgb[rows[:10], columns[:10]] = (190, 45, 40)
    _save(rgb, root / "masks" / f"{stem}.png")
  (root / "legend.json").write_text(json.dumps(colours))
  builder, _ = _prepare(root, tmp_path / "tfds")
  examples = _examples(builder)

  assert builder.info.metadata["mask_convention"] == "colour"
  for stem, (_, labels) in real.items():
    expected = np.where(np.isin(labels, [SPLEEN, KIDNEY]), labels, 0)
    np.testing.assert_array_equal(
        examples[f"images/{stem}.jpg"]["label"][..., 0], expected)


def test_colour_masks_default_legend(shared_data_dir, real, tmp_path):
  root = tmp_path / "release_colours"
  for stem, (frame, labels) in real.items():
    _copy(frame, root / "images" / f"{stem}.jpg")
    _copy(shared_data_dir / RUS / "annotations/test" / f"{stem}.png",
          root / "masks" / f"{stem}.png")
  builder, _ = _prepare(root, tmp_path / "tfds")
  examples = _examples(builder)

  for stem, (_, labels) in real.items():
    np.testing.assert_array_equal(
        examples[f"images/{stem}.jpg"]["label"][..., 0], labels)
  # h1.png has 3 off-palette pixels, stored as background and counted.
  assert examples["images/h1.jpg"]["unmatched_pixels"] == 3


def test_jpeg_mask_thresholded_with_warning(real, tmp_path, absl_records):
  root = tmp_path / "jpeg"
  stem = "a22"
  frame, labels = real[stem]
  _copy(frame, root / "images" / f"{stem}.jpg")
  mask_path = root / "masks" / f"{stem}.jpg"
  _save(_binary(labels, 255), mask_path, quality=75)
  decoded = _frame_pixels(mask_path)
  changed = int(np.count_nonzero((decoded != 0) & (decoded != 255)))
  assert changed > 0

  builder, _ = _prepare(root, tmp_path / "tfds")
  example = _examples(builder)[f"images/{stem}.jpg"]

  expected = np.where(decoded >= 128, SPLEEN, 0)
  np.testing.assert_array_equal(example["label"][..., 0], expected)
  assert example["unmatched_pixels"] == changed
  warnings = [m for m in absl_records.messages(logging.WARNING)
              if str(mask_path) in m]
  assert len(warnings) == 1
  assert f"{changed} pixels" in warnings[0]


def test_pixel_spacing_sources(real, tmp_path):
  root = tmp_path / "spacing"
  pixels = {}
  for stem in ("a22", "a25", "b26"):
    frame, labels = real[stem]
    pixels[stem] = _frame_pixels(frame)
    _save(_binary(labels, 255), root / "masks" / f"{stem}.png")
  (root / "images").mkdir(parents=True)
  dicom_builder.write_dicom(root / "images" / "a22.dcm", [pixels["a22"]],
                            pixel_spacing=(0.25, 0.3))
  _copy(real["a25"][0], root / "images" / "a25.jpg")
  _copy(real["b26"][0], root / "images" / "b26.jpg")
  (root / "spacing.csv").write_text("file,row_mm,col_mm\na25.jpg,0.5,0.4\n")
  builder, _ = _prepare(root, tmp_path / "tfds")
  examples = _examples(builder)

  dicom = examples["images/a22.dcm"]
  np.testing.assert_allclose(dicom["pixel_spacing_mm"], [0.25, 0.3])
  assert dicom["spacing_source"] == b"pixel_spacing"
  np.testing.assert_array_equal(dicom["image"][..., 0], pixels["a22"])
  csv_row = examples["images/a25.jpg"]
  np.testing.assert_allclose(csv_row["pixel_spacing_mm"], [0.5, 0.4])
  assert csv_row["spacing_source"] == b"spacing_csv"
  unknown = examples["images/b26.jpg"]
  assert np.isnan(unknown["pixel_spacing_mm"]).all()
  assert unknown["spacing_source"] == b"none"


# Subjects and splits.


def test_subject_pattern_groups_split(real, tmp_path):
  root = tmp_path / "subjects"
  _images_masks_binary(real, root)
  for stem in ("a25", "b26"):
    frame, labels = real[stem]
    _copy(frame, root / "images" / f"{stem}x.jpg")
    _save(_binary(labels, 255), root / "masks" / f"{stem}x.png")
  builder, data_config = _prepare(root, tmp_path / "tfds",
                                  subject_pattern=r"^(?P<subject>[a-z]+)")
  # ceil(0.3 * 3 subjects) = 1 subject each for validation and test.
  data_config.validation_fraction = 0.3
  data_config.test_fraction = 0.3
  subjects = datasets.assign_subjects(builder, data_config)

  assert sorted(sum(subjects.values(), ())) == ["a", "b", "h"]
  assert all(len(names) == 1 for names in subjects.values())
  frames = datasets.load_split(builder, data_config, "train",
                               subjects["train"])
  assert set(frames.subjects) == set(subjects["train"])
  expected = {"a": 3, "b": 2, "h": 1}[subjects["train"][0]]
  assert len(frames) == expected


def test_splits_csv_fixes_splits(real, tmp_path):
  root = tmp_path / "fixed"
  _images_masks_binary(real, root)
  (root / "splits.csv").write_text(
      "file,subject,split\n"
      "a22.jpg,p1,train\nimages/a25.jpg,p1,train\n"
      "b26,p2,validation\nh1.jpg,p3,test\n")
  builder, data_config = _prepare(root, tmp_path / "tfds")
  subjects = datasets.assign_subjects(builder, data_config)

  assert subjects == {"train": ("p1",), "validation": ("p2",),
                      "test": ("p3",)}
  frames = datasets.load_split(builder, data_config, "validation",
                               subjects["validation"])
  assert frames.file_names == ["images/b26.jpg"]


# TFDS cache keying.


def test_cache_separates_two_folders(real, tmp_path):
  first, second = tmp_path / "one" / "data", tmp_path / "two" / "data"
  _images_masks_binary(real, first)
  _images_masks_binary({"h1": real["h1"]}, second)
  builder_one, _ = _prepare(first, tmp_path / "tfds")
  builder_two, _ = _prepare(second, tmp_path / "tfds")

  assert builder_one.data_path != builder_two.data_path
  assert builder_one.info.splits[builder_lib.SPLIT].num_examples == 4
  assert builder_two.info.splits[builder_lib.SPLIT].num_examples == 1


def test_changed_folder_is_prepared_again(real, tmp_path, absl_records):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  builder, _ = _prepare(root, tmp_path / "tfds")
  assert _examples(builder)["images/a22.jpg"]["label"].any()

  mask_path = root / "masks" / "a22.png"
  _save(np.zeros_like(real["a22"][1]), mask_path)
  later = os.stat(mask_path).st_mtime_ns + 5_000_000_000
  os.utime(mask_path, ns=(later, later))
  rebuilt, _ = _prepare(root, tmp_path / "tfds")

  assert rebuilt.data_path == builder.data_path
  assert not _examples(rebuilt)["images/a22.jpg"]["label"].any()
  warnings = [m for m in absl_records.messages(logging.WARNING)
              if "changed since" in m]
  assert len(warnings) == 1
  assert str(root) in warnings[0]


def test_unchanged_folder_is_reused(real, tmp_path, absl_records):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  _prepare(root, tmp_path / "tfds")
  absl_records.records.clear()
  _prepare(root, tmp_path / "tfds")
  assert any(m.startswith("Reusing")
             for m in absl_records.messages(logging.INFO))
  assert not any("Mask convention" in m
                 for m in absl_records.messages(logging.INFO))


# Training.


def test_spleenex_layout_trains_one_step(real, tmp_path):
  root = tmp_path / "spleenex"
  for index, (stem, (frame, labels)) in enumerate(sorted(real.items())):
    _copy(frame, root / "images" / str(index) / f"{index}.png")
    _save(_binary(labels, 255), root / "masks" / str(index) / f"{index}.png")
  config = folder_config_file.get_config()
  config.data.folder.root = str(root)
  config.data.tfds_data_dir = str(tmp_path / "tfds")
  config.data.image_size = (64, 64)
  config.data.validation_fraction = 0.25
  config.data.test_fraction = 0.25
  config.model.depth = 2
  config.model.base_features = 4
  config.train.batch_size = 2
  config.eval.batch_size = 2
  config.train.num_steps = 1
  config.train.warmup_steps = 1
  config.train.eval_every_steps = 1
  config.train.log_every_steps = 1

  summary = train.train_and_evaluate(config, str(tmp_path / "run"))

  assert summary["last_step"] == 1
  assert len(summary["subjects"]["train"]) == 2
  assert (tmp_path / "run" / "checkpoints" / "1").exists()


# Bad input.


def test_unpaired_files_stop_the_run(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  (root / "masks" / "b26.png").unlink()
  _copy(real["h1"][0], root / "masks" / "h7.png")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert "b26.jpg" in message
  assert "h7.png" in message
  assert "allow_unpaired=True" in message


def test_unpaired_files_skipped_when_allowed(real, tmp_path, absl_records):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  (root / "masks" / "b26.png").unlink()
  builder, _ = _prepare(root, tmp_path / "tfds", allow_unpaired=True)

  assert "images/b26.jpg" not in _examples(builder)
  assert len(_examples(builder)) == 3
  assert any("b26.jpg" in m for m in absl_records.messages(logging.WARNING))


def test_size_mismatch_names_both_files(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  mask_path = root / "masks" / "a25.png"
  _save(_binary(real["a25"][1], 255)[:240, :320], mask_path)
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert str(mask_path) in message
  assert "a25.jpg" in message
  assert "320x240" in message
  assert "640x480" in message


def test_mask_values_fit_no_convention(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  odd = _binary(real["b26"][1], 255)
  odd[:10, :10] = 7
  _save(odd, root / "masks" / "b26.png")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert "masks/b26.png" in message
  assert "0, 7, 255" in message
  assert "a22.png" not in message
  assert "class_ids" in message


def test_empty_folder_is_rejected(tmp_path):
  root = tmp_path / "empty"
  root.mkdir()
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert str(root) in message
  assert "X_mask.png" in message


def test_empty_images_folder_is_rejected(tmp_path):
  root = tmp_path / "data"
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  assert "No frame has a mask" in str(error.value)
  assert str(root) in str(error.value)


def test_missing_root_is_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    _prepare(tmp_path / "nowhere", tmp_path / "tfds")


def test_two_files_with_one_name(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  _save(_frame_pixels(real["a22"][0]), root / "images" / "a22.png")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert "images/a22.jpg" in message
  assert "images/a22.png" in message
  assert "Rename or remove" in message


def test_unknown_organ_lists_choices(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds", organ="spleem")
  message = str(error.value)
  assert "'spleem'" in message
  assert "data.folder.organ" in message
  assert "spleen" in message.split("choose from")[1]


def test_unknown_class_id_names_file(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root, high=1)
  ids = _binary(real["h1"][1], 1)
  ids[:5, :5] = 4
  _save(ids, root / "masks" / "h1.png")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds", class_ids="1=spleen")
  message = str(error.value)
  assert "masks/h1.png" in message
  assert "ids 4" in message


def test_subject_in_two_splits(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  (root / "splits.csv").write_text(
      "file,subject,split\na22,p1,train\na25,p1,test\nb26,p2,train\n"
      "h1,p3,validation\n")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert "p1: test, train" in message
  assert "splits.csv" in message


def test_splits_csv_invalid_split(real, tmp_path):
  root = tmp_path / "data"
  _images_masks_binary(real, root)
  (root / "splits.csv").write_text(
      "file,subject,split\na22,p1,train\na25,p1,training\nb26,p2,train\n"
      "h1,p3,validation\n")
  with pytest.raises(ValueError) as error:
    _prepare(root, tmp_path / "tfds")
  message = str(error.value)
  assert "line 3" in message
  assert "'training'" in message
