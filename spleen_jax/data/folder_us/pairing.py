"""Pairing of frames with masks by name, in the three folder layouts.

  * `images_masks`: `images/X.ext` + `masks/X.ext`. X may contain
    subfolders (`images/p1/a.png` + `masks/p1/a.png` is pair `p1/a`).
  * `per_frame_folders`: `images/N/N.ext` + `masks/N/N.ext`, as in the
    Spleenex release; the pair is named `N`.
  * `side_by_side`: `X.ext` + `X_mask.ext` anywhere under the root.

A name ignores the file extension, so `images/a.jpg` pairs with
`masks/a.png`. Frames may be PNG, JPEG, BMP, TIFF or DICOM (by suffix or by
the DICOM preamble); masks may be PNG, JPEG, BMP or TIFF.
"""

import collections
import dataclasses
import pathlib

from absl import logging

from spleen_jax.data import imaging_io
from spleen_jax.data.folder_us import folder_config

_LAYOUT_HELP = (
    "images/X.png + masks/X.png, images/N/N.png + masks/N/N.png, or "
    "X.png + X_mask.png side by side")
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class Pair:
  """A frame and its mask.

  Attributes:
    name: the pair's name: the path relative to its folder without the
      extension, e.g. `p1/a`, `17` or `scan3`.
    frame: the frame file.
    mask: the mask file.
  """

  name: str
  frame: pathlib.Path
  mask: pathlib.Path


def _listing(names: list[str]) -> str:
  summary = ", ".join(names[:_MAX_LISTED])
  if len(names) > _MAX_LISTED:
    summary += f", ... ({len(names)} in all)"
  return summary


def _is_frame_file(path: pathlib.Path) -> bool:
  suffix = path.suffix.lower()
  if suffix in imaging_io.IMAGE_SUFFIXES or suffix in imaging_io.DICOM_SUFFIXES:
    return True
  return not suffix and imaging_io.is_dicom(path)


def _is_mask_file(path: pathlib.Path) -> bool:
  return path.suffix.lower() in imaging_io.IMAGE_SUFFIXES


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
  """Lists the files under `folder`, skipping hidden files and folders."""
  return sorted(
      path for path in folder.rglob("*")
      if path.is_file() and not any(part.startswith(".") for part in
                                    path.relative_to(folder).parts))


def _stem_name(relative: pathlib.Path) -> str:
  return relative.with_suffix("").as_posix()


def detect_layout(config: folder_config.FolderConfig) -> tuple[str, str]:
  """Returns the layout of the folder and the reason, for the log.

  Raises:
    ValueError: `layout` is `auto` and the folder has none of the layouts.
  """
  root = pathlib.Path(config.root)
  if config.layout != folder_config.AUTO:
    return config.layout, "set in data.folder.layout"

  images = root / config.images_folder
  masks = root / config.masks_folder
  if images.is_dir() and masks.is_dir():
    frames = [p.relative_to(images) for p in _files(images)
              if _is_frame_file(p)]
    if frames and all(len(p.parts) == 2 and p.parent.name == p.stem
                      for p in frames):
      return folder_config.PER_FRAME_FOLDERS, (
          f"every frame is {config.images_folder}/N/N.ext")
    return folder_config.IMAGES_MASKS, (
        f"{config.images_folder}/ and {config.masks_folder}/ exist")
  if any(p.stem.endswith(config.mask_suffix) and _is_mask_file(p)
         for p in _files(root)):
    return folder_config.SIDE_BY_SIDE, (
        f"files named X{config.mask_suffix}.ext exist")
  raise ValueError(
      f"No frames and masks found in {root}: expected {_LAYOUT_HELP} (folder "
      f"names from data.folder.images_folder, masks_folder and mask_suffix). "
      "Check --config.data.folder.root.")


def _names_of(layout: str, config: folder_config.FolderConfig
              ) -> tuple[dict[str, list[pathlib.Path]],
                         dict[str, list[pathlib.Path]]]:
  """Maps name -> files for the frames and for the masks of `layout`."""
  root = pathlib.Path(config.root)
  frames = collections.defaultdict(list)
  masks = collections.defaultdict(list)
  if layout == folder_config.SIDE_BY_SIDE:
    for path in _files(root):
      relative = path.relative_to(root)
      if _is_mask_file(path) and path.stem.endswith(config.mask_suffix):
        stem = path.stem[:len(path.stem) - len(config.mask_suffix)]
        masks[(relative.parent / stem).as_posix()].append(path)
      elif _is_frame_file(path):
        frames[_stem_name(relative)].append(path)
    return frames, masks

  for folder, keep, names in (
      (root / config.images_folder, _is_frame_file, frames),
      (root / config.masks_folder, _is_mask_file, masks)):
    if not folder.is_dir():
      raise ValueError(
          f"Folder {folder} not found: the {layout} layout expects "
          f"{config.images_folder}/ and {config.masks_folder}/ under {root}.")
    for path in _files(folder):
      if not keep(path):
        continue
      relative = path.relative_to(folder)
      if layout == folder_config.PER_FRAME_FOLDERS:
        if len(relative.parts) != 2 or relative.parent.name != relative.stem:
          raise ValueError(
              f"{path} does not fit the per_frame_folders layout, which "
              f"expects {folder.name}/N/N.ext. Move or remove the file, or "
              "set --config.data.folder.layout=images_masks.")
        names[relative.stem].append(path)
      else:
        names[_stem_name(relative)].append(path)
  return frames, masks


def find_pairs(config: folder_config.FolderConfig, layout: str) -> list[Pair]:
  """Pairs the frames and masks of the folder by name.

  Returns:
    The pairs, sorted by name.

  Raises:
    ValueError: two files map to one name, frames or masks are unpaired
      (unless `allow_unpaired`), or no pair is found.
  """
  root = pathlib.Path(config.root)
  frames, masks = _names_of(layout, config)

  clashes = [f"{kind} {name!r}: {', '.join(str(p) for p in paths)}"
             for kind, names in (("frame", frames), ("mask", masks))
             for name, paths in sorted(names.items()) if len(paths) > 1]
  if clashes:
    raise ValueError(
        "Several files map to the same name, so the pairing is ambiguous: "
        f"{'; '.join(clashes[:_MAX_LISTED])}. Rename or remove all but one "
        "file of each name.")

  lonely_frames = sorted(set(frames) - set(masks))
  lonely_masks = sorted(set(masks) - set(frames))
  if lonely_frames or lonely_masks:
    details = []
    if lonely_frames:
      details.append(f"{len(lonely_frames)} frames without a mask: "
                     f"{_listing([str(frames[n][0]) for n in lonely_frames])}")
    if lonely_masks:
      details.append(f"{len(lonely_masks)} masks without a frame: "
                     f"{_listing([str(masks[n][0]) for n in lonely_masks])}")
    text = "; ".join(details)
    if not config.allow_unpaired:
      raise ValueError(
          f"Unpaired files in {root} ({layout} layout): {text}. Add the "
          "missing files, remove these, or pass "
          "--config.data.folder.allow_unpaired=True to skip them.")
    logging.warning("Skipping unpaired files in %s: %s.", root, text)

  pairs = [Pair(name, frames[name][0], masks[name][0])
           for name in sorted(set(frames) & set(masks))]
  if not pairs:
    raise ValueError(
        f"No frame has a mask in {root} ({layout} layout): expected "
        f"{_LAYOUT_HELP}. Check --config.data.folder.root and the folder "
        "names.")
  return pairs
