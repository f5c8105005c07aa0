"""TFDS builder `abdomen_us`: real ultrasound frames of the AbdomenUS release.

Reads the real-ultrasound part (`abdominal_US/RUS`) of the public release of
Vitale et al., "Improving realism in patient-specific abdominal ultrasound
simulation using CycleGANs", IJCARS 15(2):183-192 (2020). Each annotated
subject gets its own split, `subject_<id>`, so train, validation and test sets
that keep subjects apart are TFDS split sums such as `subject_a+subject_h`.
Frames without an annotation go to the split `unlabeled`. README.md next to
this file describes the folder layout, legend and known defects.
"""

import collections
import dataclasses
import io
import os
import pathlib

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from spleen_jax.data import annotation
from spleen_jax.data import legend

RELEASE_FOLDER = "abdominal_US"
UNLABELED_SPLIT = "unlabeled"

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# zlib level of the stored PNGs. Generating the 576 frames of the RUS folder
# took 4.5 s at level 3 and 12 s with the tfds Image encoder (TensorFlow's
# encode_png), and took 37 MB on disk instead of 31 MB. Measured on a 2-core
# x86 machine with tensorflow-datasets 4.9.10 and Pillow 13.
_PNG_COMPRESS_LEVEL = 3
_ANNOTATION_SUFFIX = ".png"
_EXPECTED_LAYOUT = (
    f"{RELEASE_FOLDER}/RUS/images/<split>/*.jpg and "
    f"{RELEASE_FOLDER}/RUS/annotations/<split>/*.png")
_MANUAL_DIR_FIX = (
    f"Pass the folder that contains {RELEASE_FOLDER}/, or {RELEASE_FOLDER}/ "
    "itself, with --config.data.manual_dir=PATH.")

_CITATION = """\
@article{vitale2020improving,
  title = {Improving realism in patient-specific abdominal ultrasound
           simulation using {CycleGANs}},
  author = {Vitale, S. and Orlando, J. I. and Iarussi, E. and Larrabide, I.},
  journal = {International Journal of Computer Assisted Radiology and Surgery},
  volume = {15},
  number = {2},
  pages = {183--192},
  year = {2020},
  doi = {10.1007/s11548-019-02046-5},
}
"""


def find_release_root(manual_dir: str | os.PathLike[str]) -> pathlib.Path:
  """Returns the `abdominal_US` folder of the release inside `manual_dir`.

  Args:
    manual_dir: the folder that contains `abdominal_US/`, or `abdominal_US/`
      itself.

  Raises:
    FileNotFoundError: if `manual_dir` does not exist.
    ValueError: if `manual_dir` has neither layout.
  """
  path = pathlib.Path(manual_dir)
  if not path.exists():
    raise FileNotFoundError(
        f"Manual directory {path} not found: expected a folder with "
        f"{_EXPECTED_LAYOUT}. {_MANUAL_DIR_FIX}")

  for root in (path / RELEASE_FOLDER, path):
    if (root / "RUS" / "images").is_dir():
      return root

  raise ValueError(
      f"Manual directory {path} does not contain the AbdomenUS release: "
      f"expected {path}/{_EXPECTED_LAYOUT}. {_MANUAL_DIR_FIX}")


def split_name(subject: str) -> str:
  """Returns the split name for the annotated frames of `subject`."""
  return f"subject_{subject}"


@dataclasses.dataclass(frozen=True)
class _Frame:
  """A frame of the release and its annotation (None for an unlabeled frame)."""

  frame_path: pathlib.Path
  annotation_path: pathlib.Path | None


class Builder(tfds.core.GeneratorBasedBuilder):
  """Real AbdomenUS frames with organ label maps, one split per subject."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": ("Initial release: RUS frames with legend-id label maps, one "
                "split per annotated subject and an unlabeled split."),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the Kaggle dataset "US simulation & segmentation"
(ignaciorlando/ussimandsegm) and extract it. Then pass the folder that
contains {RELEASE_FOLDER}/, or {RELEASE_FOLDER}/ itself, as the manual
directory: --config.data.manual_dir=PATH in the training script, or
tfds.download.DownloadConfig(manual_dir=PATH) from Python. The builder reads
{_EXPECTED_LAYOUT} and ignores the other folders of the release.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    legend_text = ", ".join(
        f"{index}={name}" for index, name in enumerate(legend.CLASS_NAMES))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc="B-mode frame, 8-bit grayscale."),
            "label": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc=(f"Legend id of each pixel ({legend_text}). "
                     "All zeros for unlabeled frames.")),
            "labeled": tfds.features.Scalar(
                dtype=np.bool_,
                doc="Whether the frame has an annotation."),
            "subject": tfds.features.Text(
                doc="Volunteer id: the leading letters of the file name."),
            "file_name": tfds.features.Text(
                doc="File name of the frame in the release, e.g. a22.jpg."),
            "unmatched_pixels": tfds.features.Scalar(
                dtype=np.int32,
                doc=("Annotation pixels farther than "
                     f"{annotation.DEFAULT_TOLERANCE} (RGB distance) from "
                     "every legend colour, stored as background.")),
        }),
        homepage="https://www.kaggle.com/datasets/ignaciorlando/ussimandsegm",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_release_root(dl_manager.manual_dir)
    return {
        name: self._generate_examples(frames)
        for name, frames in _index_release(root).items()
    }

  def _generate_examples(self, frames: list[_Frame]):
    for frame in frames:
      yield frame.frame_path.name, _make_example(frame)


def _index_release(root: pathlib.Path) -> dict[str, list[_Frame]]:
  """Pairs frames with annotations and groups them into splits.

  Returns:
    Split name -> frames sorted by file name: `subject_<id>` for each subject
    with at least one annotated frame, and `unlabeled` for all frames without
    an annotation, if there are any.
  """
  frame_paths = _paths_by_stem(root / "RUS" / "images", _FRAME_SUFFIXES)
  annotation_paths = _paths_by_stem(
      root / "RUS" / "annotations", (_ANNOTATION_SUFFIX,))
  if not frame_paths:
    raise ValueError(
        f"No frames found in {root}: expected {_EXPECTED_LAYOUT}. "
        f"{_MANUAL_DIR_FIX}")

  splits = collections.defaultdict(list)
  for stem, annotation_path in sorted(annotation_paths.items()):
    if stem not in frame_paths:
      logging.warning(
          "Skipping annotation %s: no frame named %s%s in %s.",
          annotation_path, stem, "|".join(_FRAME_SUFFIXES),
          root / "RUS" / "images")
      continue
    frame_path = frame_paths[stem]
    subject = annotation.subject_of(frame_path.name)
    splits[split_name(subject)].append(_Frame(frame_path, annotation_path))

  for stem, frame_path in sorted(frame_paths.items()):
    if stem not in annotation_paths:
      splits[UNLABELED_SPLIT].append(_Frame(frame_path, None))

  return {name: splits[name] for name in sorted(splits)}


def _paths_by_stem(
    folder: pathlib.Path, suffixes: tuple[str, ...]
) -> dict[str, pathlib.Path]:
  """Maps file stem -> path for the images in the subfolders of `folder`.

  Raises:
    ValueError: if two subfolders contain the same stem. Examples are keyed by
      file name, and an annotation would match either file.
  """
  paths = {}
  if not folder.is_dir():
    return paths
  for path in sorted(folder.glob("*/*")):
    if path.suffix.lower() not in suffixes:
      continue
    if path.stem in paths:
      raise ValueError(
          f"Duplicate file name {path.stem!r}: {paths[path.stem]} and {path}. "
          "Remove or rename one of them.")
    paths[path.stem] = path
  return paths


def _make_example(frame: _Frame) -> dict[str, object]:
  """Reads a frame and its annotation into a feature dict."""
  with _open_image(frame.frame_path) as frame_image:
    frame_size = frame_image.size
    if frame_image.mode != "L":
      frame_image = frame_image.convert("L")
    pixels = np.asarray(frame_image, dtype=np.uint8)[..., None]

  if frame.annotation_path is None:
    label_map = np.zeros_like(pixels)
    unmatched = 0
  else:
    label_map, unmatched = _read_label_map(frame, frame_size)

  return {
      "image": _encode_png(pixels),
      "label": _encode_png(label_map),
      "labeled": frame.annotation_path is not None,
      "subject": annotation.subject_of(frame.frame_path.name),
      "file_name": frame.frame_path.name,
      "unmatched_pixels": unmatched,
  }


def _read_label_map(
    frame: _Frame, frame_size: tuple[int, int]
) -> tuple[np.ndarray, int]:
  """Decodes the annotation of `frame` into a uint8 [H, W, 1] label map.

  Returns:
    The label map and its number of unmatched pixels.

  Raises:
    ValueError: if the annotation's size differs from `frame_size`, which is
      PIL's (width, height) of the frame.
  """
  annotation_path = frame.annotation_path
  with _open_image(annotation_path) as annotation_image:
    if annotation_image.size != frame_size:
      raise ValueError(
          f"Annotation {annotation_path} is "
          f"{annotation_image.size[0]}x{annotation_image.size[1]} pixels but "
          f"its frame {frame.frame_path} is {frame_size[0]}x{frame_size[1]}: "
          "the sizes must match. Replace or remove the annotation.")
    if annotation_image.mode not in ("RGB", "RGBA"):
      annotation_image = annotation_image.convert("RGB")
    rgb = np.asarray(annotation_image, dtype=np.uint8)

  label_map, unmatched = annotation.decode_annotation(rgb)
  if unmatched:
    logging.info(
        "%s: %d unmatched pixels (%.4f%% of the frame) set to background.",
        annotation_path.name, unmatched, 100.0 * unmatched / label_map.size)
  return label_map[..., None], unmatched


def _encode_png(pixels: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W, 1] array as a grayscale PNG."""
  buffer = io.BytesIO()
  Image.fromarray(pixels[..., 0]).save(
      buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
  return buffer.getvalue()


def _open_image(path: pathlib.Path) -> Image.Image:
  """Opens and fully decodes an image, naming the file if that fails.

  Raises:
    ValueError: if PIL cannot identify or decode the file, e.g. a truncated
      JPEG or PNG.
  """
  image = None
  try:
    image = Image.open(path)
    image.load()
  except (OSError, SyntaxError) as error:
    if image is not None:
      image.close()
    raise ValueError(
        f"Unreadable image file {path}: {error}. Replace it with an intact "
        "copy from the release, or remove it.") from error
  return image
