"""Loads a folder of frames with label maps for evaluation.

The folder contains pairs `X.png` (the frame, converted to 8-bit grayscale) and
`X_mask.png` (one channel, each pixel a training class id: 0 background, then
the classes of `data.classes` in config order). Subfolders are ignored.
"""

import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from spleen_jax.data import annotation
from spleen_jax.data import input_pipeline

MASK_SUFFIX = "_mask.png"
# PIL modes whose pixel values are the stored integers, not colours.
_ID_MODES = ("1", "L", "P", "I", "I;16")


def _read_image(path: pathlib.Path) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
  except (OSError, SyntaxError) as error:
    raise ValueError(f"Unreadable image file {path}: {error}. Replace or "
                     "remove it.") from error
  return image


def _read_mask(path: pathlib.Path, class_names: Sequence[str]) -> np.ndarray:
  """Reads a mask of class ids and checks every id against the classes."""
  image = _read_image(path)
  names = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
  if image.mode not in _ID_MODES:
    raise ValueError(
        f"Mask {path} is a {image.mode} image, but a mask must have one "
        f"channel of class ids ({names}). Save it as an 8-bit grayscale PNG "
        "whose pixel values are those ids.")
  mask = np.asarray(image).astype(np.int64)
  invalid = np.unique(mask[(mask < 0) | (mask >= len(class_names))])
  if invalid.size:
    raise ValueError(
        f"Mask {path} contains values {invalid[:10].tolist()} outside the "
        f"class ids 0 to {len(class_names) - 1} ({names}). Save the mask with "
        "training class ids, or set data.classes to the classes it labels.")
  return mask.astype(np.uint8)


def _subject_of(file_name: str) -> str:
  try:
    return annotation.subject_of(file_name)
  except ValueError:
    return ""


def load_folder(folder: str | pathlib.Path, class_names: Sequence[str],
                image_size: tuple[int, int]) -> input_pipeline.Frames:
  """Loads and letterboxes every `X.png` / `X_mask.png` pair of `folder`.

  Args:
    folder: the folder of pairs.
    class_names: training class names, background first.
    image_size: the model's input size `(height, width)`.

  Returns:
    `Frames` in file-name order, with the original frames and masks kept.
    The subject of `a22.png` is `a`, and empty for a name that does not start
    with letters.

  Raises:
    FileNotFoundError: the folder is missing or contains no pair, or a frame
      has no mask (or a mask no frame).
    ValueError: a mask is not a one-channel image of class ids, contains a
      value that is not a class id, or differs in size from its frame.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(
        f"Evaluation folder {folder} not found: set --config.eval.folder to a "
        f"folder of X.png frames with X{MASK_SUFFIX} masks.")
  masks = {p.name[:-len(MASK_SUFFIX)]: p
           for p in folder.glob(f"*{MASK_SUFFIX}")}
  frames = {p.stem: p for p in folder.glob("*.png")
            if not p.name.endswith(MASK_SUFFIX)}
  unpaired = sorted(set(frames) ^ set(masks))
  if unpaired:
    name = unpaired[0]
    missing = (folder / f"{name}{MASK_SUFFIX}" if name in frames
               else folder / f"{name}.png")
    raise FileNotFoundError(
        f"{missing} not found: every frame X.png in {folder} needs a mask "
        f"X{MASK_SUFFIX} and the other way round ({len(unpaired)} unpaired "
        f"names, e.g. {unpaired[:5]}). Add the missing files or move the "
        "unpaired ones out.")
  if not frames:
    raise FileNotFoundError(
        f"No frames in {folder}: expected pairs of X.png frames and "
        f"X{MASK_SUFFIX} masks of class ids.")

  images, labels, boxes, names, subjects = [], [], [], [], []
  original_images, original_labels = [], []
  for name in sorted(frames):
    image = np.asarray(_read_image(frames[name]).convert("L"), np.uint8)
    mask = _read_mask(masks[name], class_names)
    if mask.shape != image.shape:
      raise ValueError(
          f"Mask {masks[name]} is {mask.shape[1]}x{mask.shape[0]} pixels but "
          f"its frame {frames[name]} is {image.shape[1]}x{image.shape[0]}: "
          "the sizes must match.")
    padded_image, padded_label, box = input_pipeline.letterbox_frame(
        image[..., None], mask, image_size)
    images.append(padded_image)
    labels.append(padded_label)
    boxes.append(box.as_array())
    names.append(frames[name].name)
    subjects.append(_subject_of(frames[name].name))
    original_images.append(image)
    original_labels.append(mask)

  return input_pipeline.Frames(
      images=np.stack(images), labels=np.stack(labels), boxes=np.stack(boxes),
      file_names=names, subjects=subjects, original_images=original_images,
      original_labels=original_labels)
