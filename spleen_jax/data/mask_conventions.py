"""Mask conventions of user folders: binary, class-id and colour-coded masks.

Each function converts a decoded mask array into a uint8 `[H, W]` label map
of legend ids (`spleen_jax.data.legend`), the encoding that
`input_pipeline.load_frames` reads. The conventions are:

  * `binary`: 0 is background and 255 (or 1) is one organ. JPEG masks are
    lossy, so their values are thresholded and the changed pixels counted.
  * `class_ids`: each value is a class id that a map turns into an organ,
    e.g. `1=spleen,2=liver`. 0 is background unless the map lists it.
  * `colour`: RGB masks whose colours snap to the nearest colour of a legend
    (organ name -> RGB) within a Euclidean RGB distance.

Pure numpy, so the checks run without TensorFlow.
"""

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from spleen_jax.data import legend

AUTO = "auto"
BINARY = "binary"
CLASS_IDS = "class_ids"
COLOUR = "colour"
CONVENTIONS = (AUTO, BINARY, CLASS_IDS, COLOUR)

# Value sets of a lossless binary mask.
BINARY_VALUE_SETS = (frozenset({0, 1}), frozenset({0, 255}))

# In a JPEG mask, values within this distance of 0 or 255 count as near the
# ends. Values in between lie on blurred organ edges, and a large share of
# them means the file is no binary mask (a frame saved as mask, say).
LOSSY_NEAR_END = 64
DEFAULT_JPEG_THRESHOLD = 128
DEFAULT_MAX_AMBIGUOUS_FRACTION = 0.05

DEFAULT_COLOUR_TOLERANCE = 70.0
DEFAULT_MAX_UNMATCHED_FRACTION = 0.01

_BACKGROUND = "background"


class MaskValueError(ValueError):
  """A mask whose values fit the chosen convention nowhere."""


@dataclasses.dataclass(frozen=True)
class MaskStats:
  """Summary of a mask's values, for detecting the convention of a folder.

  Attributes:
    colour: True for an RGB mask with at least one non-gray pixel.
    values: the distinct values of a gray mask; empty for a colour mask.
    lossy: True for a JPEG file.
  """

  colour: bool
  values: frozenset[int]
  lossy: bool


def organ_id(name: str, field: str) -> int:
  """Returns the legend id of organ `name`, set in config field `field`.

  Raises:
    ValueError: `name` is no organ of the legend; the message lists them.
  """
  if name not in legend.ORGAN_NAMES:
    raise ValueError(
        f"Unknown organ {name!r} in {field}: choose from "
        f"{', '.join(legend.ORGAN_NAMES)}.")
  return legend.legend_id(name)


def _class_id(name: str, field: str) -> int:
  """Like `organ_id`, but also accepts `background` (legend id 0)."""
  if name == _BACKGROUND:
    return 0
  return organ_id(name, field)


def parse_class_ids(text: str, field: str) -> dict[int, int]:
  """Parses a class-id map such as `1=spleen,2=liver`.

  Args:
    text: comma-separated `id=organ` entries. Ids are non-negative integers;
      organs are legend names or `background`.
    field: the config field, named in errors.

  Returns:
    Mask value -> legend id. Value 0 maps to background unless listed.

  Raises:
    ValueError: an entry is malformed, an id repeats, or an organ is unknown.
  """
  table = {0: 0}
  listed = set()
  for entry in filter(None, (part.strip() for part in text.split(","))):
    key, separator, name = entry.partition("=")
    try:
      value = int(key.strip())
    except ValueError:
      value = -1
    if not separator or value < 0:
      raise ValueError(
          f"Invalid entry {entry!r} in {field}={text!r}: write id=organ "
          "pairs separated by commas, e.g. '1=spleen,2=liver'.")
    if value in listed:
      raise ValueError(f"Class id {value} appears twice in {field}={text!r}.")
    listed.add(value)
    table[value] = _class_id(name.strip(), field)
  if not listed:
    raise ValueError(
        f"{field} is empty: give id=organ pairs, e.g. '1=spleen,2=liver'.")
  return table


def parse_colour_legend(mapping: Mapping[str, Sequence[int]], source: str
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Validates a colour legend (organ name -> RGB).

  Background is (0, 0, 0) unless the legend gives it another colour.

  Args:
    mapping: organ name -> `[r, g, b]` with integers 0..255.
    source: the file or setting the legend came from, named in errors.

  Returns:
    `colours`, an int32 `[K, 3]` array, and `ids`, the uint8 `[K]` legend
    ids of those colours.

  Raises:
    ValueError: a name is unknown, a colour is malformed, or two organs share
      a colour.
  """
  entries = dict(mapping)
  entries.setdefault(_BACKGROUND, (0, 0, 0))
  colours, ids, owners = [], [], {}
  for name, value in entries.items():
    class_id = _class_id(str(name), source)
    rgb = tuple(value) if isinstance(value, (list, tuple)) else ()
    if (len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255
                                 for c in rgb)):
      raise ValueError(
          f"Invalid colour {value!r} for {name!r} in {source}: expected "
          "[r, g, b] with integers 0..255.")
    if rgb in owners:
      raise ValueError(
          f"{owners[rgb]!r} and {name!r} share the colour {list(rgb)} in "
          f"{source}: give each organ its own colour.")
    owners[rgb] = name
    colours.append(rgb)
    ids.append(class_id)
  return np.array(colours, np.int32), np.array(ids, np.uint8)


def check_tolerance(colours: np.ndarray, tolerance: float,
                    field: str) -> None:
  """Raises ValueError unless a pixel can snap to at most one colour.

  That holds when `tolerance` is below half the distance of the closest
  pair of legend colours.
  """
  if not math.isfinite(tolerance) or tolerance < 0:
    raise ValueError(
        f"Invalid {field} {tolerance}: expected a finite RGB distance >= 0.")
  offsets = colours[:, None, :] - colours[None, :, :]
  distances = np.sqrt(np.sum(offsets * offsets, axis=-1).astype(np.float64))
  np.fill_diagonal(distances, np.inf)
  closest = float(distances.min()) if len(colours) > 1 else math.inf
  if tolerance >= closest / 2:
    raise ValueError(
        f"{field} is {tolerance}, but the two closest legend colours are "
        f"{closest:.1f} apart, so a pixel could snap to either: set "
        f"{field} below {closest / 2:.1f}.")


def summarize(mask: np.ndarray, lossy: bool) -> MaskStats:
  """Describes a gray `[H, W]` or RGB `[H, W, 3]` mask for detection."""
  if mask.ndim == 3:
    return MaskStats(colour=True, values=frozenset(), lossy=lossy)
  return MaskStats(colour=False, values=frozenset(np.unique(mask).tolist()),
                   lossy=lossy)


def detect_convention(stats: Mapping[str, MaskStats], class_ids_set: bool
                      ) -> tuple[str, str]:
  """Chooses the convention of a folder's masks.

  Any colour mask makes the folder colour-coded. Otherwise a class-id map in
  the config selects `class_ids`, and else the masks are binary.

  Returns:
    The convention and the reason, for the log.
  """
  colour = sorted(name for name, s in stats.items() if s.colour)
  if colour:
    return COLOUR, (f"{len(colour)} of {len(stats)} masks are RGB with "
                    f"non-gray pixels, e.g. {colour[0]}")
  if class_ids_set:
    return CLASS_IDS, "the config sets a class-id map"
  lossy = sum(s.lossy for s in stats.values())
  reason = "every mask is gray and no class-id map is set"
  if lossy:
    reason += f"; {lossy} JPEG masks are thresholded"
  return BINARY, reason


def find_invalid(stats: Mapping[str, MaskStats], convention: str,
                 class_ids: Mapping[int, int] | None = None) -> list[str]:
  """Lists the masks whose values do not fit `convention`, one line each.

  Lossy (JPEG) binary masks and colour masks are checked pixel by pixel when
  they are converted instead.
  """
  problems = []
  for name, s in sorted(stats.items()):
    values = ", ".join(str(v) for v in sorted(s.values)[:12])
    if len(s.values) > 12:
      values += f", ... ({len(s.values)} values)"
    if convention == BINARY:
      if s.colour:
        problems.append(f"{name}: an RGB mask with colours")
      elif not s.lossy and not any(s.values <= allowed
                                   for allowed in BINARY_VALUE_SETS):
        problems.append(f"{name}: values {values}")
    elif convention == CLASS_IDS:
      if s.colour:
        problems.append(f"{name}: an RGB mask with colours")
      elif s.lossy:
        problems.append(f"{name}: a JPEG file, whose compression alters "
                        "class ids")
      else:
        unknown = sorted(s.values - set(class_ids or {}))
        if unknown:
          problems.append(
              f"{name}: ids {', '.join(str(v) for v in unknown[:12])} are not "
              "in the class-id map")
  return problems


def binary_to_labels(mask: np.ndarray, organ: int, *, lossy: bool,
                     threshold: int = DEFAULT_JPEG_THRESHOLD,
                     max_ambiguous_fraction: float = (
                         DEFAULT_MAX_AMBIGUOUS_FRACTION)
                     ) -> tuple[np.ndarray, int]:
  """Converts a binary mask to legend ids.

  Args:
    mask: gray `[H, W]` integer mask.
    organ: legend id of the foreground.
    lossy: True for a JPEG mask: values >= `threshold` become `organ`.
    threshold: the 8-bit threshold of lossy masks.
    max_ambiguous_fraction: largest share of pixels of a lossy mask that may
      lie more than LOSSY_NEAR_END from both 0 and 255.

  Returns:
    The uint8 `[H, W]` label map and the number of pixels that thresholding
    changed (those neither 0 nor 255); 0 for a lossless mask.

  Raises:
    MaskValueError: a lossless mask has values outside {0, 1} and {0, 255},
      or too many pixels of a lossy mask are far from both ends.
  """
  if not lossy:
    values = frozenset(np.unique(mask).tolist())
    if not any(values <= allowed for allowed in BINARY_VALUE_SETS):
      raise MaskValueError(
          f"values {sorted(values)[:12]} are not binary: expected only 0 and "
          "255, or only 0 and 1")
    return np.where(mask > 0, organ, 0).astype(np.uint8), 0

  ambiguous = np.count_nonzero((mask > LOSSY_NEAR_END) &
                               (mask < 255 - LOSSY_NEAR_END))
  if ambiguous > max_ambiguous_fraction * mask.size:
    raise MaskValueError(
        f"{ambiguous} pixels ({100 * ambiguous / mask.size:.1f}%) lie between "
        f"{LOSSY_NEAR_END} and {255 - LOSSY_NEAR_END}, more than the "
        f"{100 * max_ambiguous_fraction:.1f}% a JPEG-compressed binary mask "
        "shows on its edges")
  changed = int(np.count_nonzero((mask != 0) & (mask != 255)))
  return np.where(mask >= threshold, organ, 0).astype(np.uint8), changed


def class_ids_to_labels(mask: np.ndarray, table: Mapping[int, int]
                        ) -> np.ndarray:
  """Maps the class ids of a gray `[H, W]` mask to a uint8 label map.

  Raises:
    MaskValueError: the mask contains ids that `table` does not map.
  """
  values = np.unique(mask)
  unknown = sorted(set(values.tolist()) - set(table))
  if unknown:
    raise MaskValueError(
        f"ids {unknown[:12]} are not in the class-id map {dict(table)}")
  lookup = np.array([table[int(v)] for v in values], np.uint8)
  return lookup[np.searchsorted(values, mask)]


def colour_to_labels(rgb: np.ndarray, colours: np.ndarray, ids: np.ndarray,
                     tolerance: float
                     ) -> tuple[np.ndarray, int, list[tuple[int, ...]]]:
  """Snaps an RGB mask to the nearest legend colour.

  Args:
    rgb: `[H, W, 3]` uint8 mask; a gray `[H, W]` mask is read as (v, v, v).
    colours: int32 `[K, 3]` legend colours.
    ids: uint8 `[K]` legend ids of `colours`.
    tolerance: maximum Euclidean RGB distance to the nearest colour.

  Returns:
    The uint8 `[H, W]` label map, in which pixels farther than `tolerance`
    from every colour are background, their count, and the most frequent of
    their colours (up to 5).
  """
  if rgb.ndim == 2:
    rgb = np.repeat(rgb[..., None], 3, axis=-1)
  height, width = rgb.shape[:2]
  # Distances are computed once per distinct colour; packing RGB into one
  # int32 makes the search for distinct colours a 1-D sort.
  pixels = rgb[..., :3].reshape(-1, 3).astype(np.int32)
  packed = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
  unique, inverse, counts = np.unique(packed, return_inverse=True,
                                      return_counts=True)
  unique_rgb = np.stack(
      [(unique >> 16) & 0xFF, (unique >> 8) & 0xFF, unique & 0xFF], axis=-1)
  offsets = unique_rgb[:, None, :] - colours[None, :, :]
  distances = np.sqrt(np.sum(offsets * offsets, axis=-1).astype(np.float64))
  nearest = np.argmin(distances, axis=-1)
  unmatched = distances[np.arange(len(unique)), nearest] > tolerance
  labels = ids[nearest]
  labels[unmatched] = 0

  order = np.argsort(-counts[unmatched], kind="stable")[:5]
  examples = [tuple(int(c) for c in unique_rgb[unmatched][i]) for i in order]
  label_map = labels[inverse.reshape(-1)].reshape(height, width)
  return label_map, int(counts[unmatched].sum()), examples
