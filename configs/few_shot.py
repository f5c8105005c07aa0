"""Cross-validated few-shot spleen study on the shared AbdomenUS frames.

Segments spleen and liver at 128x128 for a fixed budget of steps, without
early stopping, so that each fold's score comes from its last step and not
from a checkpoint chosen on the held-out subject. Every annotated subject
validates in one fold and no test split is held out. The settings compared
(foreground sampling, pretraining, semi-supervised) are switched on from the
command line by launch/few_shot_study.py; docs/few_shot.md contains the results.

Usage (one fold; launch/few_shot_study.py runs them all):
  python launch/cross_validate.py --config configs/few_shot.py \
      --root runs/few_shot/baseline --num_folds 3 \
      --config.data.manual_dir=PATH_TO_ABDOMINAL_US
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.classes = ("spleen", "liver")
  config.data.image_size = (128, 128)
  config.data.test_subjects = ()
  config.data.test_fraction = 0.0
  config.train.num_steps = 300
  config.train.warmup_steps = 20
  config.train.eval_every_steps = 50
  config.train.early_stopping_patience = 0
  config.train.target_class = "spleen"
  config.eval.step = config.train.num_steps
  # Every setting under study starts off, so that `baseline` is plain
  # supervised training; launch/few_shot_study.py turns them on.
  config.semi.enabled = False
  config.data.foreground_fraction = 0.0
  config.data.foreground_crop_probability = 0.0
  config.loss.tversky_alpha = 0.5
  config.loss.tversky_beta = 0.5
  # Unlabelled frames per step when semi.enabled; 4 instead of 8 keeps a
  # semi-supervised fold near 1.5 times the cost of a supervised one.
  config.semi.batch_size = 4
  # The subject without spleen (h) still counts false-positive spleens.
  config.eval.allow_absent_target = True
  config.eval.figures = False
  config.eval.bootstrap_samples = 200
  return config
