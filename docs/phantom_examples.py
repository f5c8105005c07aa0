"""Draws docs/phantom_examples.png: phantom frames above their label maps.

  python docs/phantom_examples.py [--seed 0] [--frames 5] [--output PATH]

spleen_jax must be importable: install it with `pip install -e .`, or run
the script with PYTHONPATH set to the repository root.

Frame `k` of the figure is `us_phantom` frame `k` of the given seed, i.e.
subject `p000k` of a build with that seed.
"""

import argparse
import pathlib

import matplotlib
matplotlib.use("Agg")
from matplotlib import colors  # pylint: disable=g-import-not-at-top
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from spleen_jax.data import legend  # pylint: disable=g-import-not-at-top
from spleen_jax.data import phantom  # pylint: disable=g-import-not-at-top

# Display colours of the organs that the phantom draws. The legend's own
# colours include black-on-purple liver and white bones, which do not show on
# a gray frame.
COLOURS = {"liver": "tab:orange", "kidney": "yellow", "vessels": "red",
           "spleen": "magenta", "bones": "cyan"}


def draw_examples(seed: int, num_frames: int, output: pathlib.Path) -> None:
  """Simulates `num_frames` frames and saves them with their labels."""
  table = np.zeros((len(legend.CLASS_NAMES), 4))
  for name, colour in COLOURS.items():
    table[legend.legend_id(name)] = (*colors.to_rgb(colour), 0.4)

  figure, axes = plt.subplots(2, num_frames,
                              figsize=(3.2 * num_frames, 5.4),
                              squeeze=False)
  for column in range(num_frames):
    frame = phantom.simulate_frame((seed, column))
    top, bottom = axes[0, column], axes[1, column]
    top.imshow(frame.image, cmap="gray", vmin=0, vmax=255)
    top.set_title(f"p{column:04d}: spleen {frame.spleen_length_mm:.0f} mm\n"
                  f"{frame.pixel_spacing_mm[0]:.2f} mm/pixel", fontsize=9)
    bottom.imshow(frame.image, cmap="gray", vmin=0, vmax=255)
    bottom.imshow(table[frame.label], interpolation="nearest")
    for axis in (top, bottom):
      axis.set_axis_off()

  handles = [plt.Rectangle((0, 0), 1, 1, color=colour)
             for colour in COLOURS.values()]
  names = [f"{name} ({legend.legend_id(name)})" for name in COLOURS]
  figure.legend(handles, names, loc="lower center", ncol=len(COLOURS),
                frameon=False, fontsize=9)
  figure.tight_layout(rect=(0, 0.05, 1, 1))
  figure.savefig(output, dpi=80)
  plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0,
                      help="us_phantom builder seed.")
  parser.add_argument("--frames", type=int, default=5,
                      help="Number of frames to show.")
  parser.add_argument(
      "--output", type=pathlib.Path,
      default=pathlib.Path(__file__).with_name("phantom_examples.png"),
      help="PNG file to write.")
  arguments = parser.parse_args()
  draw_examples(arguments.seed, arguments.frames, arguments.output)


if __name__ == "__main__":
  main()
