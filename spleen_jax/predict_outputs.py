"""Files that `spleen_jax.predict` writes: masks, overlays and measurements.

Layout under the output folder:
  `masks/<name>.png`: 8-bit class ids at the input's resolution; 0 is
    background, then the run's `data.classes` in config order.
  `probabilities/<name>.png`: 16-bit probability of the target class
    (`round(p * 65535)`), with `--save_probabilities`.
  `overlays/<name>.png`: the frame with each class's contour, length and
    thickness drawn.
  `measurements.csv`, `measurements.json`: one row per frame and class, and
    the list of failures.
Every file is written under a temporary name and renamed when complete.
"""

import csv
import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from scipy import ndimage

from spleen_jax.core import measure
from spleen_jax.data import imaging_io
from spleen_jax.data import legend

MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
PROBABILITIES_DIR = "probabilities"
CSV_FILE = "measurements.csv"
JSON_FILE = "measurements.json"

CSV_COLUMNS = (
    "file", "frame", "output", "height", "width", "class", "class_id",
    "found", "area_mm2", "length_mm", "thickness_mm", "area_px", "length_px",
    "thickness_px", "length_x0", "length_y0", "length_x1", "length_y1",
    "thickness_x0", "thickness_y0", "thickness_x1", "thickness_y1",
    "mean_probability", "touches_edge", "splenomegaly", "spacing_source",
    "row_spacing_mm", "column_spacing_mm",
)

_LENGTH_COLOUR = (255, 255, 0)
_THICKNESS_COLOUR = (0, 255, 255)
_WARNING_COLOUR = (255, 80, 80)
_TEXT_COLOUR = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class ClassResult:
  """The measurements of one class on one frame.

  Attributes:
    name: class name from `data.classes`.
    class_id: the id in the mask file.
    spacing: the pixel spacing used for the mm values.
    physical: measured with `spacing` in mm; None when the spacing is
      unknown.
    pixels: measured on the pixel grid (unit spacing).
    mean_probability: mean probability of the class over its mask; None for
      an empty mask.
    touches_edge: the mask reaches the sector's edge or the image border, so
      the length may be underestimated.
    splenomegaly: length above the threshold; None unless the class is the
      spleen, it was found and the spacing is known.
  """

  name: str
  class_id: int
  spacing: imaging_io.Spacing
  physical: measure.Measurement | None
  pixels: measure.Measurement
  mean_probability: float | None
  touches_edge: bool
  splenomegaly: bool | None

  @property
  def found(self) -> bool:
    return self.pixels.num_pixels > 0

  @property
  def shown(self) -> measure.Measurement:
    """The measurement whose endpoints are reported: mm if known, else px."""
    return self.physical if self.physical is not None else self.pixels


@dataclasses.dataclass(frozen=True)
class FrameResult:
  """The prediction for one frame: where it came from and its classes."""

  path: pathlib.Path
  index: int
  num_frames: int
  name: str
  height: int
  width: int
  conversion: str
  classes: tuple[ClassResult, ...]


# Checking and writing files.


def existing_outputs(directory: pathlib.Path) -> list[pathlib.Path]:
  """Lists files in `directory` that a prediction would write or replace."""
  found = [directory / name for name in (CSV_FILE, JSON_FILE)
           if (directory / name).exists()]
  for subdirectory in (MASKS_DIR, OVERLAYS_DIR, PROBABILITIES_DIR):
    folder = directory / subdirectory
    if folder.is_dir():
      found.extend(sorted(p for p in folder.iterdir()
                          if not p.name.startswith(".")))
  return found


def make_output_dirs(directory: pathlib.Path, probabilities: bool) -> None:
  for subdirectory in (MASKS_DIR, OVERLAYS_DIR):
    (directory / subdirectory).mkdir(parents=True, exist_ok=True)
  if probabilities:
    (directory / PROBABILITIES_DIR).mkdir(parents=True, exist_ok=True)


def _temporary_path(path: pathlib.Path) -> pathlib.Path:
  return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save_png(image: Image.Image, path: pathlib.Path) -> None:
  """Saves a PNG through a temporary file and a rename."""
  temporary = _temporary_path(path)
  try:
    image.save(temporary, format="PNG")
    os.replace(temporary, path)
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise


def write_frame_images(directory: pathlib.Path, name: str,
                       label_map: np.ndarray, frame: np.ndarray,
                       result: FrameResult,
                       target_probability: np.ndarray | None) -> None:
  """Writes the mask, the overlay and (if given) the probability map."""
  save_png(Image.fromarray(label_map.astype(np.uint8), "L"),
           directory / MASKS_DIR / f"{name}.png")
  if target_probability is not None:
    scaled = np.round(np.clip(target_probability, 0.0, 1.0) * 65535.0)
    save_png(Image.fromarray(scaled.astype(np.uint16)),
             directory / PROBABILITIES_DIR / f"{name}.png")
  save_png(draw_overlay(frame, label_map, result),
           directory / OVERLAYS_DIR / f"{name}.png")


# Overlays.


def draw_overlay(frame: np.ndarray, label_map: np.ndarray,
                 result: FrameResult) -> Image.Image:
  """Draws each class's contour, length and thickness over the frame."""
  rgb = np.repeat(frame[..., None], 3, axis=-1)
  for item in result.classes:
    mask = label_map == item.class_id
    if not mask.any():
      continue
    # A two-pixel contour: the mask's boundary and the ring just outside it.
    contour = (measure.boundary_pixels(mask) |
               measure.boundary_pixels(ndimage.binary_dilation(mask)))
    rgb[contour] = _class_colour(item.name)

  image = Image.fromarray(rgb, "RGB")
  draw = ImageDraw.Draw(image)
  size = max(12, round(min(frame.shape) / 32))
  font = ImageFont.load_default(size=size)
  for item in result.classes:
    shown = item.shown
    if shown.thickness_endpoints is not None:
      draw.line(shown.thickness_endpoints, fill=_THICKNESS_COLOUR,
                width=max(1, size // 8))
    if shown.length_endpoints is not None:
      draw.line(shown.length_endpoints, fill=_LENGTH_COLOUR,
                width=max(2, size // 6))
      radius = max(2, size // 5)
      for x, y in shown.length_endpoints:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                     outline=_LENGTH_COLOUR, width=2)

  y = 2
  for item in result.classes:
    for text, colour in _caption(item):
      box = draw.textbbox((4, y), text, font=font)
      draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2),
                     fill=(0, 0, 0))
      draw.text((4, y), text, fill=colour, font=font)
      y = box[3] + 4
  return image


def _class_colour(name: str) -> tuple[int, int, int]:
  return legend.LEGEND.get(name, (255, 0, 255))


def _caption(item: ClassResult) -> list[tuple[str, tuple[int, int, int]]]:
  if not item.found:
    return [(f"{item.name}: not found", _TEXT_COLOUR)]
  if item.physical is not None:
    size = (f"length {item.physical.length:.1f} mm, thickness "
            f"{item.physical.thickness:.1f} mm")
  else:
    size = (f"length {item.pixels.length:.1f} px, thickness "
            f"{item.pixels.thickness:.1f} px (pixel spacing unknown)")
  lines = [(f"{item.name}: {size}", _TEXT_COLOUR)]
  if item.touches_edge:
    lines.append(("touches the sector edge: length may be underestimated",
                  _WARNING_COLOUR))
  if item.splenomegaly:
    lines.append(("length above the splenomegaly threshold",
                  _WARNING_COLOUR))
  return lines


# Measurement tables.


def _number(value: float | None, digits: int) -> float | None:
  return None if value is None else round(float(value), digits)


def _endpoints(points) -> list[list[float]] | None:
  if points is None:
    return None
  return [[round(x, 2), round(y, 2)] for x, y in points]


def class_record(item: ClassResult) -> dict[str, Any]:
  """Builds the JSON record of one class on one frame."""
  physical = item.physical
  return {
      "class_id": item.class_id,
      "found": item.found,
      "area_mm2": _number(physical and physical.area, 3),
      "length_mm": _number(physical and physical.length, 3),
      "thickness_mm": _number(physical and physical.thickness, 3),
      "area_px": item.pixels.num_pixels,
      "length_px": _number(item.pixels.length, 3),
      "thickness_px": _number(item.pixels.thickness, 3),
      "length_endpoints": _endpoints(item.shown.length_endpoints),
      "thickness_endpoints": _endpoints(item.shown.thickness_endpoints),
      "mean_probability": _number(item.mean_probability, 4),
      "touches_edge": item.touches_edge,
      "splenomegaly": item.splenomegaly,
      "spacing": {
          "source": item.spacing.source,
          "row_mm": item.spacing.row_mm,
          "column_mm": item.spacing.column_mm,
      },
  }


def frame_record(result: FrameResult) -> dict[str, Any]:
  """Builds the JSON record of one frame."""
  return {
      "file": str(result.path),
      "frame": result.index,
      "num_frames": result.num_frames,
      "output": result.name,
      "height": result.height,
      "width": result.width,
      "conversion": result.conversion,
      "classes": {item.name: class_record(item) for item in result.classes},
  }


def csv_rows(result: FrameResult) -> list[dict[str, Any]]:
  """Flattens a frame's result into one CSV row per class."""
  rows = []
  for item in result.classes:
    record = class_record(item)
    row = {
        "file": str(result.path), "frame": result.index,
        "output": result.name, "height": result.height,
        "width": result.width, "class": item.name,
        "spacing_source": item.spacing.source,
        "row_spacing_mm": item.spacing.row_mm,
        "column_spacing_mm": item.spacing.column_mm,
    }
    for key in ("class_id", "found", "area_mm2", "length_mm", "thickness_mm",
                "area_px", "length_px", "thickness_px", "mean_probability",
                "touches_edge", "splenomegaly"):
      row[key] = record[key]
    for prefix in ("length", "thickness"):
      points = record[f"{prefix}_endpoints"] or [[None, None], [None, None]]
      for i, (x, y) in enumerate(points):
        row[f"{prefix}_x{i}"] = x
        row[f"{prefix}_y{i}"] = y
    rows.append({key: _csv_value(row[key]) for key in CSV_COLUMNS})
  return rows


def _csv_value(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, bool):
    return "true" if value else "false"
  return value


class MeasurementFiles:
  """Streams measurements into the CSV and JSON files.

  Rows go to temporary files as frames finish, so memory does not grow with
  the number of frames. `close` completes both files and renames them into
  place.
  """

  def __init__(self, directory: pathlib.Path, header: dict[str, Any]):
    self._csv_path = directory / CSV_FILE
    self._json_path = directory / JSON_FILE
    self._csv_temporary = _temporary_path(self._csv_path)
    self._json_temporary = _temporary_path(self._json_path)
    self._csv_file = open(self._csv_temporary, "w", newline="",
                          encoding="utf-8")
    self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS)
    self._csv.writeheader()
    self._json_file = open(self._json_temporary, "w", encoding="utf-8")
    # The JSON object is written by hand up to the frame list, so that frames
    # can be appended one by one.
    opening = json.dumps(header, indent=2)[:-2]
    self._json_file.write(f'{opening},\n  "frames": [')
    self._num_frames = 0

  def add(self, result: FrameResult) -> None:
    self._csv.writerows(csv_rows(result))
    separator = "," if self._num_frames else ""
    self._json_file.write(
        f"{separator}\n    {json.dumps(frame_record(result))}")
    self._num_frames += 1

  def close(self, summary: dict[str, Any],
            failures: Sequence[dict[str, Any]]) -> None:
    """Completes both files with the summary and the failures; renames them."""
    self._json_file.write("\n  ],\n")
    closing = {"failures": list(failures), **summary}
    self._json_file.write(json.dumps(closing, indent=2)[2:])
    self._json_file.write("\n")
    self._csv_file.close()
    self._json_file.close()
    os.replace(self._csv_temporary, self._csv_path)
    os.replace(self._json_temporary, self._json_path)
