"""AbdomenUS, a folder of your own and the phantom, trained together.

Each source keeps its own data settings and splits. Every batch takes rows
from each source in proportion to its `weight`, and validation reports the
Dice of each source (`validation_<source>/dice_<class>`) next to the pooled
score that early stopping follows.

The command line can only change keys that this file sets, so each source
lists the settings a user is likely to change. To drop a source, remove it
here or in a copy of this file.

Usage:
  python -m spleen_jax.main --config configs/mixture.py --workdir runs/mix \
      --config.data.sources.abdomen_us.manual_dir=PATH_TO_ABDOMINAL_US \
      --config.data.sources.spleenex.folder.root=PATH_TO_FOLDER
"""

import ml_collections

from configs import folder


def get_config() -> ml_collections.ConfigDict:
  config = folder.get_config()
  config.data.sources = ml_collections.ConfigDict({
      "abdomen_us": {
          "name": "abdomen_us", "weight": 1.0, "manual_dir": "",
          "validation_subjects": ("b",), "test_subjects": ("h",),
      },
      "spleenex": {
          "name": "folder", "weight": 1.0, "folder": {"root": ""},
          "train_subjects": (), "validation_subjects": (),
          "test_subjects": (), "validation_fraction": 0.2,
          "test_fraction": 0.2,
      },
      "phantom": {
          "name": "us_phantom", "weight": 0.5, "phantom_config": "default",
      },
  })
  config.eval.split = "validation"
  return config
