"""TFDS builder `folder_us`: a user's folder of ultrasound frames and masks.

Each builder config (`folder_config.FolderConfig`) names one folder and its
conversion options. All frames go into the single split `frames`.
`preparation.py` forms subject-wise train, validation and test sets from the
`subject` and `split` features at load time, so a new split seed needs no
rebuild.
README.md next to this file describes the layouts and conventions.
"""

import collections
import dataclasses
import io
import pathlib
from typing import Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from spleen_jax.data import imaging_io
from spleen_jax.data import legend
from spleen_jax.data.folder_us import fingerprint
from spleen_jax.data.folder_us import folder_config
from spleen_jax.data.folder_us import masks
from spleen_jax.data.folder_us import pairing
from spleen_jax.data.folder_us import side_files

SPLIT = "frames"
FINGERPRINT_KEY = "fingerprint"
SPACING_CSV = "spacing_csv"

# zlib level of the stored PNGs, as in the abdomen_us builder.
_PNG_COMPRESS_LEVEL = 3
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class _Item:
  """A pair with its subject, fixed split ("" if none) and CSV spacing."""

  pair: pairing.Pair
  subject: str
  split: str
  csv_spacing_mm: tuple[float, float] | None


class Builder(tfds.core.GeneratorBasedBuilder):
  """Frames and masks of a user folder, as legend-id label maps."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": ("Initial release: three folder layouts, binary, class-id and "
                "colour-coded masks, subjects, splits and pixel spacing."),
  }

  def _info(self) -> tfds.core.DatasetInfo:
    legend_text = ", ".join(
        f"{index}={name}" for index, name in enumerate(legend.CLASS_NAMES))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc="Frame, 8-bit grayscale as imaging_io reads it."),
            "label": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc=f"Legend id of each pixel ({legend_text})."),
            "labeled": tfds.features.Scalar(
                dtype=np.bool_, doc="Always true: every frame has a mask."),
            "subject": tfds.features.Text(
                doc="Subject id from splits.csv, subjects.csv or the name."),
            "split": tfds.features.Text(
                doc="train, validation or test from splits.csv, else empty."),
            "file_name": tfds.features.Text(
                doc="Frame path relative to the folder root."),
            "mask_file": tfds.features.Text(
                doc="Mask path relative to the folder root."),
            "unmatched_pixels": tfds.features.Scalar(
                dtype=np.int32,
                doc=("Mask pixels that JPEG thresholding changed, or colours "
                     "that matched no legend colour and became background.")),
            "pixel_spacing_mm": tfds.features.Tensor(
                shape=(2,), dtype=np.float32,
                doc="Row and column pixel spacing in mm; NaN when unknown."),
            "spacing_source": tfds.features.Text(
                doc=("ultrasound_regions, pixel_spacing (DICOM), spacing_csv "
                     "or none.")),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The folder is read in place.
    config = self.builder_config
    self.info.metadata[FINGERPRINT_KEY] = fingerprint.folder_fingerprint(config)
    self.info.metadata["root"] = config.root

    layout, reason = pairing.detect_layout(config)
    pairs = pairing.find_pairs(config, layout)
    logging.info("Folder %s: %s layout (%s), %d frame/mask pairs.",
                 config.root, layout, reason, len(pairs))
    items = _index(config, pairs)
    converter = masks.plan_conversion(config, pairs)
    self.info.metadata["layout"] = layout
    self.info.metadata["mask_convention"] = converter.convention
    return {SPLIT: self._generate_examples(items, converter)}

  def _generate_examples(self, items: Sequence[_Item],
                         converter: masks.MaskConverter):
    root = pathlib.Path(self.builder_config.root)
    altered = []
    sources = collections.Counter()
    for item in items:
      example = _make_example(root, item, converter)
      if example["unmatched_pixels"]:
        altered.append(example["unmatched_pixels"])
      sources[example["spacing_source"]] += 1
      yield item.pair.name, example
    if altered:
      logging.warning(
          "%d of %d masks had pixels changed (%d in all), listed above.",
          len(altered), len(items), sum(altered))
    logging.info("Pixel spacing sources: %s.", dict(sorted(sources.items())))


def _index(config: folder_config.FolderConfig,
           pairs: Sequence[pairing.Pair]) -> list[_Item]:
  """Gives each pair its subject, its fixed split and its CSV spacing.

  Raises:
    ValueError: a name does not match the subject pattern, or a subject has
      frames in two splits of splits.csv.
  """
  root = pathlib.Path(config.root)
  lookup = side_files.FrameLookup(root, pairs)
  names = [pair.name for pair in pairs]
  fixed = side_files.read_splits(config.splits_file, lookup, names)
  listed_subjects = side_files.read_subjects(config.subjects_file, lookup)
  spacing = side_files.read_spacing(config.spacing_file, lookup)

  items, unmatched = [], []
  for pair in pairs:
    split, subject = fixed.get(pair.name, ("", "")) if fixed else ("", "")
    subject = subject or listed_subjects.get(pair.name) or (
        side_files.subject_from_pattern(pair.name, config.subject_pattern))
    if not subject:
      unmatched.append(pair.name)
      continue
    items.append(_Item(pair, subject, split, spacing.get(pair.name)))
  if unmatched:
    raise ValueError(
        f"data.folder.subject_pattern {config.subject_pattern!r} finds no "
        f"subject in {len(unmatched)} frame names: "
        f"{', '.join(unmatched[:_MAX_LISTED])}. Fix the pattern, or list the "
        "subjects in subjects.csv (file,subject).")

  if fixed:
    _check_subject_splits(items, config.splits_file)
  source = ("splits.csv" if fixed and any(s for s, _ in fixed.values())
            else "subjects.csv" if listed_subjects else
            f"pattern {config.subject_pattern!r}" if config.subject_pattern
            else "the frame name (one subject per frame)")
  logging.info("%d subjects from %s; splits %s; %d frames with spacing.csv "
               "rows.", len({i.subject for i in items}), source,
               "from splits.csv" if fixed else "drawn when loading",
               len(spacing))
  return items


def _check_subject_splits(items: Sequence[_Item], path: str) -> None:
  """Raises ValueError if splits.csv puts one subject into two splits."""
  splits_of = collections.defaultdict(set)
  for item in items:
    splits_of[item.subject].add(item.split)
  mixed = {s: sorted(v) for s, v in sorted(splits_of.items()) if len(v) > 1}
  if mixed:
    summary = "; ".join(f"{s}: {', '.join(v)}" for s, v in
                      list(mixed.items())[:_MAX_LISTED])
    raise ValueError(
        f"{path} puts subjects into several splits ({summary}), so frames of "
        "one subject would be in training and evaluation. Give all frames "
        "of a subject the same split.")


def _read_frame(path: pathlib.Path) -> imaging_io.Frame:
  """Reads the single frame of an image or DICOM file.

  Raises:
    ValueError: naming the file, if it is unreadable or has several frames.
  """
  try:
    frames = list(imaging_io.read_frames(path))
  except imaging_io.ImageReadError as error:
    raise ValueError(
        f"Unreadable frame file {path}: {error}. Replace it with an intact "
        "file or remove the pair.") from error
  if len(frames) != 1:
    raise ValueError(
        f"Frame file {path} contains {len(frames)} frames, but a mask "
        "annotates one frame: export the annotated frame as a single-frame "
        "file.")
  return frames[0]


def _make_example(root: pathlib.Path, item: _Item,
                  converter: masks.MaskConverter) -> dict[str, object]:
  """Reads a pair into a feature dict.

  Raises:
    ValueError: naming both files when the mask's size differs from the
      frame's, or naming the file that cannot be read or converted.
  """
  pair = item.pair
  frame = _read_frame(pair.frame)
  label_map, altered = converter.convert(pair.mask)
  if label_map.shape != frame.pixels.shape:
    raise ValueError(
        f"Mask {pair.mask} is {label_map.shape[1]}x{label_map.shape[0]} "
        f"pixels but its frame {pair.frame} is {frame.pixels.shape[1]}x"
        f"{frame.pixels.shape[0]}: a mask must have its frame's size. "
        "Re-export the mask at the frame's size, or remove the pair.")
  spacing = imaging_io.resolve_spacing(frame, label_map > 0,
                                       item.csv_spacing_mm)
  known = spacing.known
  return {
      "image": _encode_png(frame.pixels),
      "label": _encode_png(label_map),
      "labeled": True,
      "subject": item.subject,
      "split": item.split,
      "file_name": pair.frame.relative_to(root).as_posix(),
      "mask_file": pair.mask.relative_to(root).as_posix(),
      "unmatched_pixels": altered,
      "pixel_spacing_mm": np.array(
          [spacing.row_mm, spacing.column_mm] if known else [np.nan, np.nan],
          np.float32),
      "spacing_source": SPACING_CSV if spacing.source == "option" else (
          spacing.source),
  }


def _encode_png(pixels: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] array as a grayscale PNG."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG",
                               compress_level=_PNG_COMPRESS_LEVEL)
  return buffer.getvalue()
