"""Post-processing of predicted label maps: largest component, hole filling.

Works on numpy arrays with scipy.ndimage (scipy is a dependency of jax, so it
is present wherever the core runs).
"""

import numpy as np
from scipy import ndimage


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
  """Keeps the largest 8-connected component of a `[h, w]` bool mask."""
  components, count = ndimage.label(mask, structure=np.ones((3, 3)))
  if count <= 1:
    return mask.astype(bool)
  sizes = np.bincount(components.ravel())
  sizes[0] = 0
  return components == np.argmax(sizes)


def fill_holes(mask: np.ndarray) -> np.ndarray:
  """Fills the holes (background not connected to the border) of a mask."""
  return ndimage.binary_fill_holes(mask)


def postprocess_label_map(label_map: np.ndarray, num_classes: int, *,
                          largest_component: bool = False,
                          holes: bool = False) -> np.ndarray:
  """Applies the selected steps to each foreground class of a label map.

  Args:
    label_map: `[h, w]` int class ids, 0 is background.
    num_classes: classes including background.
    largest_component: keep only the largest component of each class.
    holes: fill holes inside each class; filled pixels take that class even if
      another class was predicted there.

  Returns:
    `[h, w]` label map of the same dtype. Removed pixels become background.
    Classes are processed in increasing id, each on the result of the
    previous ones, so a hole that class 1 filled is not removed again when
    class 2 keeps only its largest component.
  """
  result = np.array(label_map, copy=True)
  for class_id in range(1, num_classes):
    mask = result == class_id
    if not mask.any():
      continue
    if largest_component:
      kept = keep_largest_component(mask)
      result[mask & ~kept] = 0
      mask = kept
    if holes:
      result[fill_holes(mask)] = class_id
  return result
