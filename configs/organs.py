"""Every organ that the shared AbdomenUS annotations contain, in one model."""

from configs import base


def get_config():
  config = base.get_config()
  # Pancreas, adrenals and bones have no annotated pixel in the shared frames.
  config.data.classes = ("liver", "kidney", "vessels", "gallbladder", "spleen")
  # Early stopping and the best checkpoint follow the mean Dice of all five.
  config.train.target_class = "mean"
  # The test subject `h` shows liver, kidney, vessels and gallbladder.
  config.eval.split = "test"
  config.eval.allow_absent_target = True
  return config
