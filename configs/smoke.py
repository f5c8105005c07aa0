"""A tiny model and a few steps on the real frames, for tests and CI."""

from configs import base


def get_config():
  config = base.get_config()
  config.data.image_size = (64, 64)
  config.model.depth = 2
  config.model.base_features = 4
  config.train.batch_size = 4
  config.train.num_steps = 20
  config.train.warmup_steps = 2
  config.train.log_every_steps = 5
  config.train.eval_every_steps = 10
  config.eval.batch_size = 4
  # The test split (subject h) shows no spleen. The smoke run scores it
  # anyway to exercise the whole evaluation on frames no run trained on.
  config.eval.split = "test"
  config.eval.allow_absent_target = True
  # Plain supervised steps keep the smoke run fast; the semi-supervised
  # tests turn the mean teacher on themselves.
  config.semi.enabled = False
  return config
