"""Writes the annotated AbdomenUS frames as a folder of frames and binary masks.

  python launch/export_folder.py --manual_dir PATH_TO_ABDOMINAL_US \
      --output /tmp/spleenex_like [--organ spleen] [--layout per_frame_folders]

The `per_frame_folders` layout is that of the Spleenex release:
`images/N/N.png` beside `masks/N/N.png`, masks of 0 and 255. A
`subjects.csv` (file, subject) keeps each volunteer's frames in one split.
Use it to try the folder dataset (configs/folder.py) on real frames; the
output is derived from AbdomenUS and must not be redistributed either.
"""

import argparse
import csv
import pathlib
import sys

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from spleen_jax.data import annotation
from spleen_jax.data import legend
from spleen_jax.data.abdomen_us import abdomen_us_dataset_builder

LAYOUTS = ("per_frame_folders", "images_masks", "side_by_side")


def mask_paths(output: pathlib.Path, stem: str,
               layout: str) -> tuple[pathlib.Path, pathlib.Path]:
  """Returns the frame and mask paths of `stem` in `layout`."""
  if layout == "per_frame_folders":
    return (output / "images" / stem / f"{stem}.png",
            output / "masks" / stem / f"{stem}.png")
  if layout == "images_masks":
    return output / "images" / f"{stem}.png", output / "masks" / f"{stem}.png"
  return output / f"{stem}.png", output / f"{stem}_mask.png"


def export(manual_dir: pathlib.Path, output: pathlib.Path, organ: str,
           layout: str) -> int:
  """Exports every frame that has an annotation; returns the frame count.

  Raises:
    FileExistsError: `output` exists and is not empty.
  """
  if output.exists() and any(output.iterdir()):
    raise FileExistsError(f"{output} is not empty: choose a new folder, so "
                          "that no existing file is overwritten.")
  organ_id = legend.legend_id(organ)
  root = abdomen_us_dataset_builder.find_release_root(manual_dir) / "RUS"
  frames = {p.stem: p for p in (root / "images" / "test").glob("*.jpg")}
  annotations = sorted((root / "annotations" / "test").glob("*.png"))
  rows = []
  showing = 0
  for annotation_path in annotations:
    stem = annotation_path.stem
    if stem not in frames:
      continue
    with Image.open(annotation_path) as image:
      labels, _ = annotation.decode_annotation(np.asarray(image))
    with Image.open(frames[stem]) as image:
      frame = np.asarray(image.convert("L"))
    frame_path, mask_path = mask_paths(output, stem, layout)
    for path in (frame_path, mask_path):
      path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(frame_path)
    mask = np.where(labels == organ_id, 255, 0).astype(np.uint8)
    showing += int(mask.any())
    Image.fromarray(mask).save(mask_path)
    rows.append((frame_path.relative_to(output).as_posix(),
                 annotation.subject_of(frames[stem].name)))
  if not rows:
    raise FileNotFoundError(f"No annotated frame found under {root}.")
  if not showing:
    print(f"warning: no frame shows {organ}, so every mask is empty.",
          file=sys.stderr)

  with open(output / "subjects.csv", "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(("file", "subject"))
    writer.writerows(rows)
  return len(rows)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--manual_dir", required=True, type=pathlib.Path,
                      help="Folder that contains abdominal_US/.")
  parser.add_argument("--output", required=True, type=pathlib.Path,
                      help="New or empty folder to write.")
  parser.add_argument("--organ", default="spleen",
                      help="Organ of the binary masks (default: spleen).")
  parser.add_argument("--layout", default="per_frame_folders",
                      choices=LAYOUTS, help="Folder layout to write.")
  args = parser.parse_args(argv)
  try:
    count = export(args.manual_dir, args.output, args.organ, args.layout)
  except (OSError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"Wrote {count} frames with {args.organ} masks to {args.output} "
        f"({args.layout} layout).")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
