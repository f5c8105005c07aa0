"""Spleen segmentation on your own folder of frames and masks.

The folder is converted into the TFDS dataset `folder_us` on the first run,
and again whenever its files change; README.md ("Train on your own data")
lists the layouts and mask conventions.

Usage:
  python -m spleen_jax.main --config configs/folder.py --workdir runs/mine \
      --config.data.folder.root=PATH
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.data.name = "folder"
  # The subjects of a user folder are unknown in advance, so validation and
  # test subjects are drawn by seeded fraction (or set by splits.csv).
  config.data.validation_subjects = ()
  config.data.test_subjects = ()
  config.eval.split = "test"
  # A folder has no unlabelled frames for the mean teacher.
  config.semi.enabled = False

  folder = ml_collections.ConfigDict()
  # The folder with the frames and masks. Required.
  folder.root = ""
  # `auto`, `images_masks` (images/X.ext + masks/X.ext), `per_frame_folders`
  # (images/N/N.ext + masks/N/N.ext) or `side_by_side` (X.ext + X_mask.ext).
  folder.layout = "auto"
  folder.images_folder = "images"
  folder.masks_folder = "masks"
  # File-name ending of a mask in the side_by_side layout.
  folder.mask_suffix = "_mask"
  # `auto`, `binary` (0/255 or 0/1), `class_ids` or `colour`.
  folder.mask_convention = "auto"
  # Organ of the foreground of binary masks. Segmenting another organ also
  # needs --config.data.classes and --config.train.target_class.
  folder.organ = "spleen"
  # Class-id masks: id=organ pairs, e.g. "1=spleen,2=liver". Unlisted ids
  # other than 0 (background) are an error; map an id to `background` to
  # ignore it.
  folder.class_ids = ""
  # Colour-coded masks: a JSON object of organ -> [r, g, b], relative to the
  # root. Without the file, the AbdomenUS colours of spleen_jax/data/legend.py
  # apply.
  folder.legend_file = "legend.json"
  # Maximum Euclidean RGB distance at which a mask pixel snaps to a legend
  # colour. It must stay below half the distance of the closest two colours.
  folder.colour_tolerance = 70.0
  # Share of a colour mask's pixels that may match no legend colour (they
  # become background); above it the mask is rejected.
  folder.max_unmatched_fraction = 0.01
  # JPEG binary masks: values from this threshold up are foreground.
  folder.jpeg_threshold = 128
  # Regular expression that finds the subject in a pair name (the path
  # without the extension, e.g. "p1/a" or "17"): its group `subject`, else
  # group 1, else the whole match. Empty: each frame is its own subject.
  folder.subject_pattern = ""
  # Optional CSV files, relative to the root: subjects (file, subject),
  # fixed splits (file, subject, split) and pixel spacing in mm for frames
  # whose files carry none (file, row_mm, col_mm).
  folder.subjects_file = "subjects.csv"
  folder.splits_file = "splits.csv"
  folder.spacing_file = "spacing.csv"
  # True skips frames without a mask and masks without a frame, with a
  # warning that lists them; False stops.
  folder.allow_unpaired = False
  config.data.folder = folder
  return config
