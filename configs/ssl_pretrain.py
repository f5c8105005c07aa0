"""Self-supervised pretraining on the unlabelled AbdomenUS frames.

Masked, denoising reconstruction (spleen_jax/core/reconstruction.py) of the
frames of subjects without any annotation, so that the weights fit every
cross-validation fold over the annotated subjects. The model settings must
match those of the run that loads the weights with `init_from`.

Usage:
  python -m spleen_jax.main --mode=pretrain --config configs/ssl_pretrain.py \
      --workdir runs/ssl --config.data.manual_dir=PATH_TO_ABDOMINAL_US
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.train.num_steps = 300
  config.train.eval_every_steps = 100
  config.train.warmup_steps = 20

  config.ssl = ml_collections.ConfigDict()
  # Side of the blanked squares, in pixels of the model input.
  config.ssl.patch_size = 16
  config.ssl.mask_ratio = 0.5
  config.ssl.noise_std = 0.1
  # Loss weight of pixels that were not blanked, against 1 for blanked ones.
  config.ssl.visible_weight = 0.1
  # False uses only the frames of subjects without annotated frames.
  config.ssl.use_annotated_subjects = False
  return config
