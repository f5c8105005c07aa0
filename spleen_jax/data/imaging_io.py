"""Reading of scans for prediction: PNG, JPEG, BMP, TIFF and DICOM frames.

Every frame becomes a `[height, width]` uint8 grayscale array, converted the
way the training frames were:
  * 8-bit images of any mode (grayscale, RGB, RGBA, palette, ...) through
    PIL's `convert("L")`, which takes the ITU-R 601-2 luma of the colour and
    ignores alpha.
  * 16-bit and deeper images (PNG, TIFF, DICOM) are scaled linearly from the
    frame's own minimum..maximum to 0..255 and rounded. A constant frame
    becomes 0.
  * DICOM YBR_FULL and YBR_FULL_422 frames are converted to RGB with
    pydicom's `convert_color_space`, PALETTE COLOR frames with
    `apply_color_lut`, and then to grayscale like an RGB image. MONOCHROME1
    is inverted, so that black stays black.

Frames are read one at a time, so memory stays bounded by one file.
"""

import dataclasses
import glob
import logging
import pathlib
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import pydicom
from pydicom import errors as pydicom_errors
from pydicom import pixels as pydicom_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
# PIL format names of the accepted image files. MPO is the multi-picture
# JPEG variant that some cameras write.
PIL_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")

# Frames outside these sizes are rejected: smaller ones carry too little
# anatomy to segment, and larger ones are most likely not ultrasound frames
# and would need gigabytes to process.
MIN_SIDE = 16
MAX_SIDE = 8192

# Value of Physical Units X/Y Direction (0018,6024/6026) for centimetres.
_UNITS_CM = 3


class ImageReadError(Exception):
  """A file, or a frame of it, that cannot be used as a prediction input."""


@dataclasses.dataclass(frozen=True)
class UltrasoundRegion:
  """A region of the DICOM Sequence of Ultrasound Regions with cm units.

  Bounds are inclusive pixel positions, as in Region Location Min/Max.
  """

  min_x: int
  min_y: int
  max_x: int
  max_y: int
  delta_x_mm: float
  delta_y_mm: float

  @property
  def area(self) -> int:
    return (self.max_x - self.min_x + 1) * (self.max_y - self.min_y + 1)


@dataclasses.dataclass(frozen=True)
class Spacing:
  """Pixel spacing of a measurement, in mm, and where it came from.

  `source` is `ultrasound_regions`, `pixel_spacing` (DICOM Pixel Spacing),
  `option` (given on the command line) or `none`, and then `row_mm` and
  `column_mm` are None.
  """

  row_mm: float | None
  column_mm: float | None
  source: str

  @property
  def known(self) -> bool:
    return self.source != "none"


@dataclasses.dataclass
class Frame:
  """One grayscale frame of an input file.

  Attributes:
    pixels: `[height, width]` uint8 grayscale.
    path: the input file.
    index: 0-based frame index within the file.
    num_frames: frames in the file (1 for a still image).
    conversion: how the stored pixels became 8-bit grayscale.
    regions: ultrasound regions with cm units (DICOM only).
    pixel_spacing_mm: DICOM Pixel Spacing `(row, column)` in mm, if present.
  """

  pixels: np.ndarray
  path: pathlib.Path
  index: int
  num_frames: int
  conversion: str
  regions: tuple[UltrasoundRegion, ...] = ()
  pixel_spacing_mm: tuple[float, float] | None = None


# Input discovery.


def find_inputs(patterns: Sequence[str],
                exclude: pathlib.Path | None = None
                ) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
  """Expands files, folders and glob patterns into a list of input files.

  A named file is taken whatever its type, so that a non-image is reported
  when read. Folders are searched recursively for files with an image or
  DICOM suffix, or with the DICOM preamble; other files in them are skipped.

  Args:
    patterns: paths of files or folders, or glob patterns (`**` recurses).
    exclude: a folder whose files are never inputs, such as the output
      folder.

  Returns:
    The input files in the given order without repeats, and
    `(pattern, reason)` for each pattern that yields no file.
  """
  files: list[pathlib.Path] = []
  problems: list[tuple[str, str]] = []
  for pattern in patterns:
    path = pathlib.Path(pattern)
    if path.is_dir():
      found = _files_in_folder(path, exclude)
      if not found:
        problems.append((pattern, "the folder contains no PNG, JPEG, BMP, "
                         "TIFF or DICOM file"))
      files.extend(found)
    elif path.exists():
      files.append(path)
    elif glob.has_magic(pattern):
      matches = sorted(glob.glob(pattern, recursive=True))
      found = []
      for match in map(pathlib.Path, matches):
        if match.is_dir():
          found.extend(_files_in_folder(match, exclude))
        elif not _is_inside(match, exclude):
          found.append(match)
      if not found:
        problems.append((pattern, "the pattern matches no file"))
      files.extend(found)
    else:
      problems.append((pattern, "no such file or folder"))

  unique = {}
  for file in files:
    unique.setdefault(file.resolve(), file)
  return list(unique.values()), problems


def _files_in_folder(folder: pathlib.Path,
                     exclude: pathlib.Path | None) -> list[pathlib.Path]:
  found = []
  skipped = 0
  for path in sorted(folder.rglob("*")):
    if not path.is_file() or _is_inside(path, exclude):
      continue
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES or is_dicom(path):
      found.append(path)
    else:
      skipped += 1
  if skipped:
    logging.info("Skipped %d files in %s that are neither images nor DICOM.",
                 skipped, folder)
  return found


def _is_inside(path: pathlib.Path, folder: pathlib.Path | None) -> bool:
  if folder is None:
    return False
  return path.resolve().is_relative_to(folder.resolve())


def is_dicom(path: pathlib.Path) -> bool:
  """Tells whether a file starts with the DICOM preamble (`DICM` at 128)."""
  try:
    with open(path, "rb") as file:
      header = file.read(132)
  except OSError:
    return False
  return len(header) == 132 and header[128:] == b"DICM"


# Reading frames.


def read_frames(path: pathlib.Path) -> Iterator[Frame]:
  """Yields the frames of an image or DICOM file, one at a time.

  Raises:
    ImageReadError: naming the problem, for a missing, unreadable, empty,
      truncated or unsupported file, a frame smaller than MIN_SIDE or larger
      than MAX_SIDE on a side, or a DICOM file without pixel data. Frames
      yielded before the error are valid.
  """
  path = pathlib.Path(path)
  try:
    size = path.stat().st_size
  except OSError as error:
    raise ImageReadError(f"cannot read the file: {error.strerror}") from error
  if size == 0:
    raise ImageReadError("the file is empty (0 bytes)")
  if path.suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
    yield from _read_dicom(path)
  else:
    yield from _read_image(path)


def _check_size(height: int, width: int) -> None:
  if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
    raise ImageReadError(
        f"the frame is {width}x{height} pixels; frames must be "
        f"{MIN_SIDE} to {MAX_SIDE} pixels on each side")


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
  """Scales an array linearly from its minimum..maximum to 0..255 (uint8)."""
  values = np.asarray(values, np.float64)
  low, high = float(values.min()), float(values.max())
  if high <= low:
    return np.zeros(values.shape, np.uint8)
  return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _read_image(path: pathlib.Path) -> Iterator[Frame]:
  try:
    image = Image.open(path)
  except UnidentifiedImageError as error:
    raise ImageReadError(
        "not a PNG, JPEG, BMP, TIFF or DICOM image") from error
  except (OSError, Image.DecompressionBombError) as error:
    raise ImageReadError(f"cannot open the image: {error}") from error

  with image:
    if image.format not in PIL_FORMATS:
      raise ImageReadError(
          f"unsupported image format {image.format}: use PNG, JPEG, BMP, "
          "TIFF or DICOM")
    num_frames = getattr(image, "n_frames", 1)
    for index in range(num_frames):
      image.seek(index)
      _check_size(image.height, image.width)
      try:
        image.load()
        pixels, conversion = _image_to_gray(image)
      except (OSError, ValueError, SyntaxError) as error:
        where = f"frame {index}: " if num_frames > 1 else ""
        raise ImageReadError(
            f"{where}cannot decode the image (truncated or corrupt?): "
            f"{error}") from error
      yield Frame(pixels=pixels, path=path, index=index,
                  num_frames=num_frames,
                  conversion=f"{image.format} {conversion}")


def _image_to_gray(image: Image.Image) -> tuple[np.ndarray, str]:
  """Converts a PIL frame to uint8 grayscale and describes the conversion."""
  mode = image.mode
  if mode == "L":
    return np.asarray(image, np.uint8), "mode L as is"
  if mode.startswith("I") or mode == "F":
    # 16-bit ("I;16", "I;16B", ...), 32-bit integer and float grayscale.
    values = np.asarray(image)
    return scale_to_uint8(values), (
        f"mode {mode} scaled from {values.min()}..{values.max()} to 0..255")
  return np.asarray(image.convert("L"), np.uint8), f"mode {mode} to L"


def _read_dicom(path: pathlib.Path) -> Iterator[Frame]:
  try:
    dataset = pydicom.dcmread(path)
  except (pydicom_errors.InvalidDicomError, OSError, EOFError, ValueError,
          KeyError, TypeError) as error:
    raise ImageReadError(f"cannot read the DICOM file: {error}") from error

  if not any(keyword in dataset for keyword in
             ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
    raise ImageReadError("the DICOM file has no pixel data")
  try:
    height, width = int(dataset.Rows), int(dataset.Columns)
    num_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    transfer_syntax = dataset.file_meta.TransferSyntaxUID
  except (AttributeError, TypeError, ValueError) as error:
    raise ImageReadError(
        f"the DICOM file lacks image attributes: {error}") from error
  _check_size(height, width)
  regions = ultrasound_regions(dataset)
  spacing = pixel_spacing(dataset)

  try:
    decoder = pydicom_pixels.get_decoder(transfer_syntax)
    frames = decoder.iter_array(
        dataset, raw=True, **pydicom_pixels.as_pixel_options(dataset))
  except (NotImplementedError, ValueError, AttributeError) as error:
    raise ImageReadError(
        f"cannot decode transfer syntax {transfer_syntax.name}: {error}"
    ) from error

  for index in range(num_frames):
    where = f"frame {index}: " if num_frames > 1 else ""
    try:
      values, meta = next(frames)
    except StopIteration:
      raise ImageReadError(
          f"{where}missing: the pixel data contains fewer frames than "
          f"NumberOfFrames ({num_frames})") from None
    # The decoders raise many exception types (ValueError, RuntimeError,
    # NotImplementedError, plugin errors) for corrupt or truncated data.
    except Exception as error:  # pylint: disable=broad-except
      raise ImageReadError(
          f"{where}cannot decode the pixel data: {error}") from error
    pixels, conversion = _dicom_to_gray(values, meta, dataset, where)
    yield Frame(pixels=pixels, path=path, index=index, num_frames=num_frames,
                conversion=f"DICOM {conversion}", regions=regions,
                pixel_spacing_mm=spacing)


def _dicom_to_gray(values: np.ndarray, meta: dict, dataset, where: str
                   ) -> tuple[np.ndarray, str]:
  """Converts one decoded DICOM frame to uint8 grayscale."""
  # `meta` gives the photometric interpretation of the decoded array, which
  # can differ from the dataset's when a JPEG decoder already returns RGB.
  photometric = str(meta.get("photometric_interpretation",
                             dataset.get("PhotometricInterpretation", "")))
  bits_stored = int(meta.get("bits_stored", dataset.get("BitsStored", 8)))
  steps = [photometric]

  if photometric in ("YBR_FULL", "YBR_FULL_422"):
    if values.dtype != np.uint8:
      raise ImageReadError(
          f"{where}{photometric} with {bits_stored} bits is not supported")
    values = pydicom_pixels.convert_color_space(values, photometric, "RGB")
    photometric = "RGB"
    steps.append("to RGB")
  elif photometric == "PALETTE COLOR":
    values = pydicom_pixels.apply_color_lut(values, dataset)
    photometric = "RGB"
    steps.append("through its palette to RGB")

  if photometric == "RGB":
    if values.ndim != 3 or values.shape[-1] != 3:
      raise ImageReadError(
          f"{where}expected 3 samples per pixel for RGB, got shape "
          f"{values.shape}")
    if values.dtype != np.uint8:
      values = scale_to_uint8(values)
      steps.append("scaled from min..max to 0..255")
    steps.append("to L")
    return np.asarray(Image.fromarray(values, "RGB").convert("L")), " ".join(
        steps)

  if photometric not in ("MONOCHROME1", "MONOCHROME2"):
    raise ImageReadError(
        f"{where}unsupported photometric interpretation {photometric!r}")
  if values.ndim != 2:
    raise ImageReadError(
        f"{where}expected one sample per pixel, got shape {values.shape}")
  if values.dtype == np.uint8 or (
      bits_stored <= 8 and values.dtype.kind == "u"):
    pixels = values.astype(np.uint8)
  else:
    pixels = scale_to_uint8(values)
    steps.append(f"{bits_stored}-bit scaled from min..max to 0..255")
  if photometric == "MONOCHROME1":
    pixels = 255 - pixels
    steps.append("inverted")
  return pixels, " ".join(steps)


# Pixel spacing.


def ultrasound_regions(dataset) -> tuple[UltrasoundRegion, ...]:
  """Lists the Sequence of Ultrasound Regions items with cm on both axes."""
  regions = []
  for item in dataset.get("SequenceOfUltrasoundRegions", []):
    try:
      if (int(item.PhysicalUnitsXDirection) != _UNITS_CM or
          int(item.PhysicalUnitsYDirection) != _UNITS_CM):
        continue
      delta_x = abs(float(item.PhysicalDeltaX)) * 10.0
      delta_y = abs(float(item.PhysicalDeltaY)) * 10.0
      region = UltrasoundRegion(
          min_x=int(item.RegionLocationMinX0),
          min_y=int(item.RegionLocationMinY0),
          max_x=int(item.RegionLocationMaxX1),
          max_y=int(item.RegionLocationMaxY1),
          delta_x_mm=delta_x, delta_y_mm=delta_y)
    except (AttributeError, TypeError, ValueError):
      continue
    if delta_x > 0 and delta_y > 0 and np.isfinite(delta_x * delta_y):
      regions.append(region)
  return tuple(regions)


def pixel_spacing(dataset) -> tuple[float, float] | None:
  """Reads Pixel Spacing `(row, column)` in mm, top-level or shared groups."""
  candidates = [dataset.get("PixelSpacing")]
  for group in dataset.get("SharedFunctionalGroupsSequence", []):
    for measures in group.get("PixelMeasuresSequence", []):
      candidates.append(measures.get("PixelSpacing"))
  for value in candidates:
    try:
      row, column = (float(v) for v in value)
    except (TypeError, ValueError):
      continue
    if row > 0 and column > 0 and np.isfinite(row * column):
      return row, column
  return None


def resolve_spacing(frame: Frame, mask: np.ndarray,
                    option_mm: tuple[float, float] | None) -> Spacing:
  """Chooses the pixel spacing for measuring `mask` on `frame`.

  In order: the ultrasound region that contains the most mask pixels (the
  smaller one on a tie, and the largest region when none contains any), then
  DICOM Pixel Spacing, then `option_mm` as `(row, column)`, else none.
  """
  if frame.regions:
    region = _region_for_mask(frame.regions, mask)
    return Spacing(region.delta_y_mm, region.delta_x_mm, "ultrasound_regions")
  if frame.pixel_spacing_mm is not None:
    return Spacing(*frame.pixel_spacing_mm, "pixel_spacing")
  if option_mm is not None:
    return Spacing(*option_mm, "option")
  return Spacing(None, None, "none")


def _region_for_mask(regions: Sequence[UltrasoundRegion],
                     mask: np.ndarray) -> UltrasoundRegion:
  mask = np.asarray(mask, bool)
  counts = [
      int(mask[max(r.min_y, 0):r.max_y + 1, max(r.min_x, 0):r.max_x + 1].sum())
      for r in regions]
  if max(counts) > 0:
    return min(zip(regions, counts), key=lambda rc: (-rc[1], rc[0].area))[0]
  return max(regions, key=lambda r: r.area)
