"""Every organ that the shared AbdomenUS annotations contain, in one model."""

from configs import base


def get_config():
  config = base.get_config()
  # Pancreas, adrenals and bones have no annotated pixel in the shared frames.
  config.data.classes = ("liver", "kidney", "vessels", "gallbladder", "spleen")
  return config
