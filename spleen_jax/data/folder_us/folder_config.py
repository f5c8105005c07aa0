"""Builder config of `folder_us`: one user folder and its conversion options.

The config's name is the folder's base name plus a hash of the resolved root
and every option that changes the stored examples, so two folders (or one
folder converted two ways) never share a TFDS data directory. Changes of the
folder's content do not rename the config: the builder stores a fingerprint
of the files and `preparation.py` rebuilds when it differs.
"""

import dataclasses
import hashlib
import json
import pathlib
import re

import ml_collections
import tensorflow_datasets as tfds

from spleen_jax.data import mask_conventions

AUTO = "auto"
IMAGES_MASKS = "images_masks"
PER_FRAME_FOLDERS = "per_frame_folders"
SIDE_BY_SIDE = "side_by_side"
LAYOUTS = (AUTO, IMAGES_MASKS, PER_FRAME_FOLDERS, SIDE_BY_SIDE)

_FIELD = "data.folder"


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """A folder of frames and masks, and how to convert it.

  Attributes mirror `config.data.folder` (see configs/folder.py); `root` is
  resolved to an absolute path, and the side-file paths are absolute or
  empty.
  """

  root: str = ""
  layout: str = AUTO
  images_folder: str = "images"
  masks_folder: str = "masks"
  mask_suffix: str = "_mask"
  mask_convention: str = mask_conventions.AUTO
  organ: str = "spleen"
  class_ids: str = ""
  legend_file: str = ""
  colour_tolerance: float = mask_conventions.DEFAULT_COLOUR_TOLERANCE
  max_unmatched_fraction: float = (
      mask_conventions.DEFAULT_MAX_UNMATCHED_FRACTION)
  jpeg_threshold: int = mask_conventions.DEFAULT_JPEG_THRESHOLD
  subject_pattern: str = ""
  subjects_file: str = ""
  splits_file: str = ""
  spacing_file: str = ""
  allow_unpaired: bool = False

  def options(self) -> dict[str, object]:
    """Returns the fields that shape the stored examples, keyed by name."""
    names = [f.name for f in dataclasses.fields(FolderConfig)
             if f.name not in _BASE_FIELDS]
    return {name: getattr(self, name) for name in names}


_BASE_FIELDS = frozenset(
    f.name for f in dataclasses.fields(tfds.core.BuilderConfig))


def config_name(root: pathlib.Path, options: dict[str, object]) -> str:
  """Returns `<base name>_<hash>` for a resolved root and its options."""
  digest = hashlib.sha256(
      json.dumps(options, sort_keys=True).encode("utf-8")).hexdigest()[:16]
  base = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")[:32]
  return f"{base or 'root'}_{digest}"


def _side_file(root: pathlib.Path, value: str) -> str:
  """Resolves a side file (relative to the root) to an absolute path."""
  if not value:
    return ""
  return str((root / pathlib.Path(value).expanduser()).resolve())


def from_data_config(data_config: ml_collections.ConfigDict) -> FolderConfig:
  """Builds the FolderConfig of `config.data.folder`.

  Raises:
    ValueError: `data.folder` is missing, its root is unset, or an option
      has an invalid value.
    FileNotFoundError: the root is not a folder.
  """
  folder = data_config.get("folder")
  if folder is None:
    raise ValueError(
        "data.name is 'folder' but the config has no data.folder settings: "
        "start from configs/folder.py, e.g. --config configs/folder.py "
        "--config.data.folder.root=PATH.")
  if not folder.root:
    raise ValueError(
        "data.folder.root is not set: pass --config.data.folder.root=PATH, "
        "the folder that contains your frames and masks.")
  root = pathlib.Path(folder.root).expanduser().resolve()
  if not root.is_dir():
    raise FileNotFoundError(
        f"data.folder.root {folder.root} is not a folder (resolved to "
        f"{root}): pass the folder that contains your frames and masks.")

  _check_choice("layout", folder.layout, LAYOUTS)
  _check_choice("mask_convention", folder.mask_convention,
                mask_conventions.CONVENTIONS)
  mask_conventions.organ_id(folder.organ, f"{_FIELD}.organ")
  if folder.class_ids:
    mask_conventions.parse_class_ids(folder.class_ids, f"{_FIELD}.class_ids")
  elif folder.mask_convention == mask_conventions.CLASS_IDS:
    raise ValueError(
        "data.folder.mask_convention is 'class_ids' but data.folder.class_ids "
        "is empty: map the ids to organs, e.g. "
        "--config.data.folder.class_ids='1=spleen,2=liver'.")
  if not 0 < folder.jpeg_threshold < 256:
    raise ValueError(
        f"Invalid data.folder.jpeg_threshold {folder.jpeg_threshold}: "
        "expected an 8-bit value from 1 to 255.")
  if not 0 <= folder.max_unmatched_fraction <= 1:
    raise ValueError(
        "Invalid data.folder.max_unmatched_fraction "
        f"{folder.max_unmatched_fraction}: expected a fraction from 0 to 1.")
  if folder.subject_pattern:
    try:
      re.compile(folder.subject_pattern)
    except re.error as error:
      raise ValueError(
          f"Invalid data.folder.subject_pattern {folder.subject_pattern!r}: "
          f"{error}.") from error

  fields = dict(
      root=str(root),
      layout=folder.layout,
      images_folder=folder.images_folder,
      masks_folder=folder.masks_folder,
      mask_suffix=folder.mask_suffix,
      mask_convention=folder.mask_convention,
      organ=folder.organ,
      class_ids=folder.class_ids,
      legend_file=_side_file(root, folder.legend_file),
      colour_tolerance=float(folder.colour_tolerance),
      max_unmatched_fraction=float(folder.max_unmatched_fraction),
      jpeg_threshold=int(folder.jpeg_threshold),
      subject_pattern=folder.subject_pattern,
      subjects_file=_side_file(root, folder.subjects_file),
      splits_file=_side_file(root, folder.splits_file),
      spacing_file=_side_file(root, folder.spacing_file),
      allow_unpaired=bool(folder.allow_unpaired),
  )
  return FolderConfig(
      name=config_name(root, fields),
      description=f"Frames and masks of {root}.",
      **fields)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"Invalid data.folder.{field} {value!r}: choose from "
                     f"{', '.join(choices)}.")
