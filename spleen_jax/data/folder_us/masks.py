"""Reading of mask files and their conversion to legend-id label maps.

`plan_conversion` reads every mask once to detect (or check) the folder's
convention, and reports all masks that fit it nowhere at once. The returned
`MaskConverter` then converts one mask at a time while the examples are
written.
"""

import dataclasses
import pathlib
from typing import Sequence

from absl import logging
import numpy as np
from PIL import Image

from spleen_jax.data import mask_conventions
from spleen_jax.data.folder_us import folder_config
from spleen_jax.data.folder_us import pairing
from spleen_jax.data.folder_us import side_files

_LOSSY_FORMATS = ("JPEG", "MPO")
_MAX_LISTED = 20
_CONVENTION_HELP = (
    "Binary masks contain only 0 and 255 (or 0 and 1). For class-id masks "
    "set --config.data.folder.class_ids='1=spleen,2=liver'; for colour-coded "
    "masks add a legend.json of organ -> [r, g, b] and set "
    "--config.data.folder.mask_convention=colour.")


def read_mask(path: pathlib.Path, palette_as_colour: bool
              ) -> tuple[np.ndarray, bool]:
  """Reads a mask file.

  Args:
    path: a PNG, JPEG, BMP or TIFF file.
    palette_as_colour: read a palette (mode P) image as the RGB colours of
      its palette entries instead of as the entry indices.

  Returns:
    A gray `[H, W]` integer array, or a uint8 `[H, W, 3]` RGB array when the
    image has non-gray colours (alpha is dropped), and whether the file is a
    lossy JPEG.

  Raises:
    ValueError: the file is unreadable; the message names it.
  """
  try:
    with Image.open(path) as image:
      image.load()
      lossy = image.format in _LOSSY_FORMATS
      mode = image.mode
      if mode == "P" and not palette_as_colour:
        return np.asarray(image), lossy
      if mode in ("1", "L", "LA", "P", "PA"):
        image = image.convert("RGB" if mode.startswith("P") else "L")
      elif mode.startswith("I"):
        return np.asarray(image).astype(np.int64), lossy
      elif mode != "RGB":
        image = image.convert("RGB")
      pixels = np.asarray(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError
          ) as error:
    raise ValueError(
        f"Unreadable mask file {path}: {error}. Replace it with an intact "
        "PNG, BMP, TIFF or JPEG file, or remove the pair.") from error
  if pixels.ndim == 3 and (np.all(pixels[..., 0] == pixels[..., 1]) and
                           np.all(pixels[..., 0] == pixels[..., 2])):
    pixels = pixels[..., 0]
  return pixels, lossy


@dataclasses.dataclass
class MaskConverter:
  """Converts masks of one convention to uint8 `[H, W]` legend-id maps.

  Attributes:
    convention: `binary`, `class_ids` or `colour`.
    config: the folder's builder config.
    organ: legend id of binary foreground.
    class_table: mask id -> legend id, for `class_ids`.
    colours: int32 `[K, 3]` legend colours, for `colour`.
    colour_ids: uint8 `[K]` legend ids of `colours`.
    palette_as_colour: read palette images as colours, as the detection did.
  """

  convention: str
  config: folder_config.FolderConfig
  palette_as_colour: bool
  organ: int = 0
  class_table: dict[int, int] | None = None
  colours: np.ndarray | None = None
  colour_ids: np.ndarray | None = None

  def convert(self, path: pathlib.Path) -> tuple[np.ndarray, int]:
    """Reads and converts one mask.

    Returns:
      The label map and the count of pixels that were changed (JPEG
      thresholding) or set to background (unmatched colours).

    Raises:
      ValueError: naming the file, when its values fit the convention
        nowhere or too many colours match no legend colour.
    """
    mask, lossy = read_mask(path, self.palette_as_colour)
    try:
      if self.convention == mask_conventions.BINARY:
        return self._binary(path, mask, lossy)
      if self.convention == mask_conventions.CLASS_IDS:
        return mask_conventions.class_ids_to_labels(mask, self.class_table), 0
      return self._colour(path, mask)
    except mask_conventions.MaskValueError as error:
      raise ValueError(
          f"Mask {path} does not fit the {self.convention} convention: "
          f"{error}. {_CONVENTION_HELP}") from error

  def _binary(self, path, mask, lossy) -> tuple[np.ndarray, int]:
    if mask.ndim == 3:
      raise mask_conventions.MaskValueError("it is an RGB mask with colours")
    label_map, changed = mask_conventions.binary_to_labels(
        mask, self.organ, lossy=lossy, threshold=self.config.jpeg_threshold)
    if changed:
      logging.warning(
          "%s: JPEG mask thresholded at %d; %d pixels (%.2f%%) were neither 0 "
          "nor 255 and changed. Save masks as PNG to keep them exact.",
          path, self.config.jpeg_threshold, changed,
          100.0 * changed / mask.size)
    return label_map, changed

  def _colour(self, path, mask) -> tuple[np.ndarray, int]:
    if mask.ndim == 2 and mask.max(initial=0) > 255:
      raise mask_conventions.MaskValueError(
          "it is a 16-bit gray mask, not RGB")
    label_map, unmatched, examples = mask_conventions.colour_to_labels(
        mask.astype(np.uint8), self.colours, self.colour_ids,
        self.config.colour_tolerance)
    if unmatched > self.config.max_unmatched_fraction * label_map.size:
      raise mask_conventions.MaskValueError(
          f"{unmatched} pixels ({100 * unmatched / label_map.size:.2f}%) are "
          f"farther than {self.config.colour_tolerance} from every legend "
          f"colour, e.g. {examples}; data.folder.max_unmatched_fraction "
          f"allows {100 * self.config.max_unmatched_fraction:.2f}%")
    if unmatched:
      logging.warning(
          "%s: %d pixels (%.3f%%) match no legend colour, e.g. %s, and are "
          "stored as background.", path, unmatched,
          100.0 * unmatched / label_map.size, examples)
    return label_map, unmatched


def plan_conversion(config: folder_config.FolderConfig,
                    pairs: Sequence[pairing.Pair]) -> MaskConverter:
  """Detects or checks the convention of all masks; logs the choice.

  Raises:
    ValueError: a mask is unreadable, masks fit the convention nowhere (all
      are listed), an organ name is unknown, or the colour tolerance is too
      large for the legend.
  """
  convention = config.mask_convention
  class_table = (mask_conventions.parse_class_ids(
      config.class_ids, "data.folder.class_ids") if config.class_ids else None)
  palette_as_colour = convention == mask_conventions.COLOUR or (
      convention == mask_conventions.AUTO and class_table is None)

  stats = {}
  for pair in pairs:
    mask, lossy = read_mask(pair.mask, palette_as_colour)
    stats[str(pair.mask)] = mask_conventions.summarize(mask, lossy)

  if convention == mask_conventions.AUTO:
    convention, reason = mask_conventions.detect_convention(
        stats, class_table is not None)
  else:
    reason = "set in data.folder.mask_convention"
  problems = mask_conventions.find_invalid(stats, convention, class_table)
  if problems:
    summary = "; ".join(problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
      summary += f"; ... ({len(problems)} masks in all)"
    raise ValueError(
        f"{len(problems)} masks do not fit the {convention} convention "
        f"({reason}): {summary}. {_CONVENTION_HELP}")

  converter = MaskConverter(convention=convention, config=config,
                            palette_as_colour=palette_as_colour)
  if convention == mask_conventions.BINARY:
    converter.organ = mask_conventions.organ_id(config.organ,
                                                "data.folder.organ")
    detail = f"foreground -> {config.organ}"
    if all(not s.values - {0} for s in stats.values()):
      logging.warning("No mask of %s contains a foreground pixel.",
                      config.root)
  elif convention == mask_conventions.CLASS_IDS:
    converter.class_table = class_table
    detail = f"class ids {config.class_ids}"
  else:
    colours, ids, source = side_files.read_legend(config.legend_file)
    mask_conventions.check_tolerance(colours, config.colour_tolerance,
                                     "data.folder.colour_tolerance")
    converter.colours, converter.colour_ids = colours, ids
    detail = (f"legend from {source}, tolerance "
              f"{config.colour_tolerance}")
  logging.info("Mask convention of %s: %s (%s; %s).", config.root, convention,
               reason, detail)
  return converter
