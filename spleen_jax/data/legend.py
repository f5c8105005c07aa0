"""Organ legend of the AbdomenUS annotations: class ids, names and RGB colours.

The colours are those of the public AbdomenUS release (Vitale et al., "Improving
realism in patient-specific abdominal ultrasound simulation using CycleGANs",
IJCARS 2020). A label map stores the legend id of each pixel; the input
pipeline later remaps the selected organs to consecutive training class ids.
"""

import numpy as np

# Legend order fixes the ids written into label maps: background is 0.
LEGEND: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "liver": (100, 0, 100),
    "kidney": (255, 255, 0),
    "vessels": (255, 0, 0),
    "gallbladder": (0, 255, 0),
    "spleen": (255, 0, 255),
    "pancreas": (0, 0, 255),
    "adrenals": (0, 255, 255),
    "bones": (255, 255, 255),
}

CLASS_NAMES: tuple[str, ...] = tuple(LEGEND)
ORGAN_NAMES: tuple[str, ...] = CLASS_NAMES[1:]
COLOURS: np.ndarray = np.array(list(LEGEND.values()), dtype=np.int32)  # [9, 3]


def legend_id(name: str) -> int:
  """Returns the legend id of an organ, or raises ValueError naming the choices."""
  if name not in LEGEND or name == "background":
    raise ValueError(
        f"Unknown class name {name!r}: choose from {', '.join(ORGAN_NAMES)}.")
  return CLASS_NAMES.index(name)
