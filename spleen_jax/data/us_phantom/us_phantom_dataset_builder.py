"""TFDS builder `us_phantom`: simulated B-mode frames of the spleen.

Every frame comes from `spleen_jax.data.phantom.simulate_frame`, seeded by the
builder config's `seed` and the frame's index, so a config always builds the
same frames and needs no download. Splits are `train`, `validation` and
`test`; each frame is its own subject. Frames `0 .. num_train - 1` form
`train`, the next `num_validation` form `validation` and the last `num_test`
form `test`, so frame `p0007` is the same image in every config with the same
seed and size. README.md next to this file describes the simulation and the
features.
"""

import dataclasses
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from spleen_jax.data import legend
from spleen_jax.data import phantom

SPLITS = ("train", "validation", "test")
DEFAULT_CONFIG = "default"

# zlib level of the stored PNGs. For a frame and its label map, level 3 took
# 7 ms and 61 KiB, the default level 6 took 18 ms and 54 KiB (CPU time on a
# 2-core x86 machine, Pillow 13, mean of 10 frames).
_PNG_COMPRESS_LEVEL = 3


@dataclasses.dataclass(eq=False)
class PhantomConfig(tfds.core.BuilderConfig):
  """Split sizes, seed and frame size of a `us_phantom` build.

  Attributes:
    num_train: frames in the `train` split.
    num_validation: frames in the `validation` split.
    num_test: frames in the `test` split.
    seed: seeds every frame together with its index.
    height: frame height in pixels.
    width: frame width in pixels.
  """

  num_train: int = 96
  num_validation: int = 24
  num_test: int = 24
  seed: int = 0
  height: int = 480
  width: int = 640

  def split_sizes(self) -> dict[str, int]:
    return {"train": self.num_train, "validation": self.num_validation,
            "test": self.num_test}

  def first_index(self, split: str) -> int:
    """Returns the index of the first frame of `split`."""
    sizes = self.split_sizes()
    return sum(sizes[name] for name in SPLITS[:SPLITS.index(split)])


def subject_id(index: int) -> str:
  """Returns the synthetic subject id of frame `index`, e.g. `p0007`."""
  return f"p{index:04d}"


class Builder(tfds.core.GeneratorBasedBuilder):
  """Simulated ultrasound frames with exact label maps and spleen lengths."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": ("Initial release: convex-probe B-mode frames with spleen, "
                "kidney, liver, vessel and rib label maps."),
  }
  BUILDER_CONFIGS = [
      PhantomConfig(
          name=DEFAULT_CONFIG,
          description="96 train, 24 validation, 24 test frames of 480x640."),
      PhantomConfig(
          name="tiny", num_train=8, num_validation=4, num_test=4,
          description="8 train, 4 validation, 4 test frames, for tests."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG

  def _info(self) -> tfds.core.DatasetInfo:
    legend_text = ", ".join(
        f"{index}={name}" for index, name in enumerate(legend.CLASS_NAMES))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc="Simulated B-mode frame, 8-bit grayscale."),
            "label": tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc=f"Legend id of each pixel ({legend_text})."),
            "labeled": tfds.features.Scalar(
                dtype=np.bool_, doc="Always true: every frame has labels."),
            "subject": tfds.features.Text(
                doc="Synthetic subject id, one per frame, e.g. p0007."),
            "file_name": tfds.features.Text(
                doc="Frame name, e.g. p0007.png; also the example key."),
            "unmatched_pixels": tfds.features.Scalar(
                dtype=np.int32,
                doc="Always 0: the labels are drawn, not decoded."),
            "pixel_spacing_mm": tfds.features.Tensor(
                shape=(2,), dtype=np.float32,
                doc="Row and column pixel spacing in mm."),
            "spleen_length_mm": tfds.features.Scalar(
                dtype=np.float32,
                doc=("Maximum distance between two spleen pixel centres of "
                     "the label map (its Feret diameter), in mm.")),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    for split, size in config.split_sizes().items():
      if size < 1:
        raise ValueError(
            f"us_phantom config {config.name!r} has {size} {split} frames: "
            "every split needs at least one frame.")
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    first = config.first_index(split)
    for index in range(first, first + config.split_sizes()[split]):
      subject = subject_id(index)
      yield f"{subject}.png", make_example(config, index)


def make_example(config: PhantomConfig, index: int) -> dict[str, object]:
  """Simulates frame `index` of `config` as a feature dict."""
  frame = phantom.simulate_frame((config.seed, index), config.height,
                                 config.width)
  subject = subject_id(index)
  return {
      "image": _encode_png(frame.image),
      "label": _encode_png(frame.label),
      "labeled": True,
      "subject": subject,
      "file_name": f"{subject}.png",
      "unmatched_pixels": 0,
      "pixel_spacing_mm": frame.pixel_spacing_mm,
      "spleen_length_mm": np.float32(frame.spleen_length_mm),
  }


def _encode_png(pixels: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] array as a grayscale PNG."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG",
                               compress_level=_PNG_COMPRESS_LEVEL)
  return buffer.getvalue()
