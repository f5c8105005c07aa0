"""Side files of a user folder: splits, subjects, pixel spacing and legend.

  * `splits.csv`: columns `file`, `split` (train, validation or test) and
    optionally `subject`. It fixes the split of every frame.
  * `subjects.csv`: columns `file`, `subject`.
  * `spacing.csv`: columns `file`, `row_mm`, `col_mm`, the pixel spacing of
    frames whose files carry none.
  * `legend.json`: organ name -> [r, g, b] of colour-coded masks.

The `file` column names a frame by its pair name (`17`, `p1/a`), its path
relative to the root (`images/17/17.png`) or its file name (`17.png`).
"""

import csv
import json
import math
import pathlib
import re
from typing import Sequence

from absl import logging
import numpy as np

from spleen_jax.data import legend
from spleen_jax.data import mask_conventions
from spleen_jax.data import splits as splits_lib
from spleen_jax.data.folder_us import pairing

_MAX_LISTED = 20


class FrameLookup:
  """Finds the pair that a `file` cell of a CSV names."""

  def __init__(self, root: pathlib.Path, pairs: Sequence[pairing.Pair]):
    self._keys: dict[str, set[str]] = {}
    for pair in pairs:
      for key in (pair.name, pair.frame.relative_to(root).as_posix(),
                  pair.frame.name):
        self._keys.setdefault(key, set()).add(pair.name)

  def find(self, cell: str, where: str) -> str | None:
    """Returns the pair name of `cell`, or None when no frame matches.

    Raises:
      ValueError: the cell matches several frames.
    """
    names = self._keys.get(cell.strip().replace("\\", "/"), set())
    if len(names) > 1:
      raise ValueError(
          f"{where}: {cell!r} matches the frames {sorted(names)}: give the "
          "path relative to the folder root instead.")
    return next(iter(names), None)


def _read_rows(path: pathlib.Path, required: tuple[str, ...]
               ) -> list[tuple[int, dict[str, str]]]:
  """Reads a CSV with a header; returns (line number, row) pairs."""
  with open(path, newline="", encoding="utf-8-sig") as file:
    reader = csv.DictReader(file)
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in columns]
    if missing:
      raise ValueError(
          f"{path} lacks the columns {missing}: its header is {columns}, and "
          f"it needs {list(required)}.")
    return [(number, {(k or "").strip(): (v or "").strip()
                      for k, v in row.items()})
            for number, row in enumerate(reader, start=2)]


def _rows_by_pair(path: pathlib.Path, required: tuple[str, ...],
                  lookup: FrameLookup) -> dict[str, tuple[int, dict]]:
  """Maps pair name -> (line, row); warns about rows that match no frame."""
  found, unknown = {}, []
  for number, row in _read_rows(path, required):
    where = f"{path} line {number}"
    name = lookup.find(row["file"], where)
    if name is None:
      unknown.append(row["file"])
      continue
    if name in found:
      raise ValueError(
          f"{where} lists frame {name!r} again (first on line "
          f"{found[name][0]}): keep one row per frame.")
    found[name] = (number, row)
  if unknown:
    logging.warning("%s: %d rows name no paired frame and are ignored: %s.",
                    path, len(unknown), ", ".join(unknown[:_MAX_LISTED]))
  return found


def _optional(path: str) -> pathlib.Path | None:
  """Returns the side file's path, or None when it is unset or absent."""
  if not path:
    return None
  file = pathlib.Path(path)
  return file if file.is_file() else None


def read_splits(path: str, lookup: FrameLookup, names: Sequence[str]
                ) -> dict[str, tuple[str, str]] | None:
  """Reads splits.csv into pair name -> (split, subject or "").

  Returns None when the file does not exist.

  Raises:
    ValueError: a split value is invalid, or a paired frame has no row.
  """
  file = _optional(path)
  if file is None:
    return None
  rows = _rows_by_pair(file, ("file", "split"), lookup)
  result = {}
  for name, (number, row) in rows.items():
    split = row["split"].lower()
    if split not in splits_lib.SPLITS:
      raise ValueError(
          f"{file} line {number}: invalid split {row['split']!r} for "
          f"{row['file']!r}: choose from {', '.join(splits_lib.SPLITS)}.")
    result[name] = (split, row.get("subject", ""))
  missing = sorted(set(names) - set(result))
  if missing:
    raise ValueError(
        f"{file} has no row for {len(missing)} frames: "
        f"{', '.join(missing[:_MAX_LISTED])}. Add a row (file,subject,split) "
        "for each, or remove the frames.")
  return result


def read_subjects(path: str, lookup: FrameLookup) -> dict[str, str]:
  """Reads subjects.csv into pair name -> subject; empty when absent."""
  file = _optional(path)
  if file is None:
    return {}
  rows = _rows_by_pair(file, ("file", "subject"), lookup)
  return {name: row["subject"] for name, (_, row) in rows.items()
          if row["subject"]}


def read_spacing(path: str, lookup: FrameLookup
                 ) -> dict[str, tuple[float, float]]:
  """Reads spacing.csv into pair name -> (row, column) spacing in mm.

  Raises:
    ValueError: a spacing is not a positive finite number.
  """
  file = _optional(path)
  if file is None:
    return {}
  spacing = {}
  for name, (number, row) in _rows_by_pair(
      file, ("file", "row_mm", "col_mm"), lookup).items():
    try:
      values = (float(row["row_mm"]), float(row["col_mm"]))
    except ValueError:
      values = (math.nan, math.nan)
    if not all(math.isfinite(v) and v > 0 for v in values):
      raise ValueError(
          f"{file} line {number}: invalid spacing row_mm={row['row_mm']!r}, "
          f"col_mm={row['col_mm']!r} for {row['file']!r}: expected "
          "positive millimetres.")
    spacing[name] = values
  return spacing


def read_legend(path: str) -> tuple[np.ndarray, np.ndarray, str]:
  """Reads legend.json, or falls back to the project's legend.

  Returns:
    int32 `[K, 3]` colours, uint8 `[K]` legend ids, and where they came from.

  Raises:
    ValueError: the file is not a JSON object of organ -> [r, g, b].
  """
  file = _optional(path)
  if file is None:
    colours, ids = mask_conventions.parse_colour_legend(
        legend.LEGEND, "the default AbdomenUS legend")
    return colours, ids, "the default AbdomenUS legend (no legend file)"
  try:
    mapping = json.loads(file.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"Invalid JSON in legend file {file}: {error}.") from error
  if not isinstance(mapping, dict):
    raise ValueError(
        f"Legend file {file} must contain a JSON object such as "
        '{"spleen": [255, 0, 255]}.')
  colours, ids = mask_conventions.parse_colour_legend(mapping, str(file))
  return colours, ids, str(file)


def subject_from_pattern(name: str, pattern: str) -> str | None:
  """Extracts the subject from a pair name with a regular expression.

  The group named `subject` is used if the pattern has one, else group 1
  if it has groups, else the whole match. An empty pattern returns the name,
  so each frame is its own subject.
  """
  if not pattern:
    return name
  match = re.search(pattern, name)
  if match is None:
    return None
  if "subject" in match.re.groupindex:
    return match.group("subject")
  return match.group(1) if match.re.groups else match.group(0)
