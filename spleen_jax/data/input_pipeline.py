"""tf.data input pipeline: letterbox, class selection, augmentation, batches.

Frames of a split are decoded once, letterboxed to the model's input size and
kept in memory as uint8 (about 64 KiB per 256x256 frame). Training draws an
endless, seeded stream from them; evaluation walks them in a fixed order.

Batches are dicts of numpy arrays:
  `image`: `[n, h, w, 1]` float32 normalised intensities.
  `label`: `[n, h, w]` int32 training class ids: 0 is background, then the
    classes of `data.classes` in config order.
  `valid`: `[n]` float32, 1 for a real frame and 0 for batch padding.
"""

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from spleen_jax.core import letterbox
from spleen_jax.data import augment
from spleen_jax.data import legend

NORMALIZATIONS = ("zscore", "unit")


@dataclasses.dataclass
class Frames:
  """The letterboxed frames of one split, in memory.

  Attributes:
    images: `[n, h, w, 1]` uint8 raw intensities; padding is 0.
    labels: `[n, h, w]` uint8 training class ids.
    boxes: `[n, 8]` int32 `Letterbox` fields, to map outputs back.
    file_names: `[n]` file names, e.g. `a22.jpg`.
    subjects: `[n]` subject ids.
    original_images: optional `[n]` list of `[height, width]` uint8 frames at
      their original resolution, for evaluation at that resolution.
    original_labels: optional `[n]` list of `[height, width]` uint8 training
      class ids at the original resolution.
  """

  images: np.ndarray
  labels: np.ndarray
  boxes: np.ndarray
  file_names: list[str]
  subjects: list[str]
  original_images: list[np.ndarray] | None = None
  original_labels: list[np.ndarray] | None = None

  def __len__(self) -> int:
    return len(self.file_names)


def class_lookup(classes: Sequence[str]) -> np.ndarray:
  """Builds a `[num_legend_classes]` uint8 table from legend id to class id.

  Organs not in `classes` map to background (0); the selected ones map to
  1, 2, ... in the order given.
  """
  if not classes:
    raise ValueError("data.classes is empty: name at least one organ, e.g. "
                     "--config.data.classes=\"('spleen',)\".")
  duplicates = sorted({c for c in classes if list(classes).count(c) > 1})
  if duplicates:
    raise ValueError(f"data.classes lists {duplicates} more than once.")
  table = np.zeros(len(legend.CLASS_NAMES), np.uint8)
  for class_id, name in enumerate(classes, start=1):
    table[legend.legend_id(name)] = class_id
  return table


def letterbox_frame(image: np.ndarray, label: np.ndarray | None,
                    image_size: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray | None,
                               letterbox.Letterbox]:
  """Resizes a frame (and label map) with preserved aspect ratio and pads it.

  Args:
    image: `[height, width, 1]` uint8 frame.
    label: optional `[height, width]` uint8 label map; resized with
      nearest-neighbour sampling so that ids stay ids.
    image_size: `(target_height, target_width)` in pixels.

  Returns:
    `[target_height, target_width, 1]` uint8 image, the label map resized the
    same way (or None) and the `Letterbox` that inverts the mapping.
  """
  height, width = image.shape[:2]
  box = letterbox.letterbox_geometry(height, width, *image_size)
  size = (box.resized_height, box.resized_width)
  padding = [[box.top, box.target_height - box.resized_height - box.top],
             [box.left, box.target_width - box.resized_width - box.left]]

  resized = tf.image.resize(tf.cast(image, tf.float32), size,
                            method="bilinear", antialias=True)
  resized = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
  padded_image = np.pad(resized, padding + [[0, 0]])

  padded_label = None
  if label is not None:
    resized_label = tf.image.resize(label[..., None], size, method="nearest")
    padded_label = np.pad(resized_label.numpy()[..., 0], padding)
  return padded_image, padded_label, box


def load_frames(examples, classes: Sequence[str],
                image_size: tuple[int, int],
                keep_originals: bool = False) -> Frames:
  """Letterboxes TFDS examples (numpy dicts) and remaps their label maps.

  `keep_originals` also keeps each frame and its class-id label map at the
  original resolution, in `Frames.original_images` and `original_labels`.
  """
  table = class_lookup(classes)
  images, labels, boxes, file_names, subjects = [], [], [], [], []
  original_images, original_labels = [], []
  for example in examples:
    image, label, box = letterbox_frame(
        example["image"], example["label"][..., 0], image_size)
    images.append(image)
    labels.append(table[label])
    boxes.append(box.as_array())
    file_names.append(_text(example["file_name"]))
    subjects.append(_text(example["subject"]))
    if keep_originals:
      original_images.append(example["image"][..., 0])
      original_labels.append(table[example["label"][..., 0]])

  height, width = image_size
  return Frames(
      images=np.stack(images) if images else np.zeros(
          (0, height, width, 1), np.uint8),
      labels=np.stack(labels) if labels else np.zeros(
          (0, height, width), np.uint8),
      boxes=np.stack(boxes) if boxes else np.zeros((0, 8), np.int32),
      file_names=file_names, subjects=subjects,
      original_images=original_images if keep_originals else None,
      original_labels=original_labels if keep_originals else None)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def normalize(image: tf.Tensor, method: str) -> tf.Tensor:
  """Maps raw intensities in [0, 1] to the model's input scale.

  `zscore` subtracts the frame's mean and divides by its standard deviation
  (both taken over the whole letterboxed image); `unit` keeps [0, 1].
  """
  if method == "unit":
    return image
  if method == "zscore":
    mean = tf.reduce_mean(image)
    std = tf.math.reduce_std(image)
    return (image - mean) / tf.maximum(std, 1e-6)
  raise ValueError(f"Unknown data.normalization {method!r}: "
                   f"choose from {', '.join(NORMALIZATIONS)}.")


def train_dataset(frames: Frames, *, batch_size: int, seed: int,
                  start_step: int = 0, normalization: str = "zscore",
                  augmentation: augment.AugmentConfig | None = None,
                  shard_index: int = 0, num_shards: int = 1
                  ) -> tf.data.Dataset:
  """Builds the endless, seeded training stream of batches.

  Element `k` of the stream is frame `shuffle(k mod n)` of epoch `k // n`,
  where the shuffle is a stateless permutation seeded by `(seed, epoch)`, and
  its augmentation is seeded by `(seed, k)`. Global batch `s` contains
  elements `s * batch_size` to `(s + 1) * batch_size - 1`, so starting at
  `start_step` reproduces the stream of an uninterrupted run exactly.

  With `num_shards > 1` (one shard per host) this returns only rows
  `shard_index * batch_size / num_shards` onwards of each global batch, in
  batches of `batch_size / num_shards`.
  """
  if batch_size % num_shards:
    raise ValueError(f"Batch size {batch_size} does not divide into "
                     f"{num_shards} host shards.")
  local_size = batch_size // num_shards
  if len(frames) == 0:
    raise ValueError("The train split has no frames: check "
                     "data.train_subjects and data.manual_dir.")
  num_frames = len(frames)
  images = tf.constant(frames.images)
  labels = tf.constant(frames.labels)

  def make_example(position):
    epoch = position // num_frames
    seed_pair = tf.stack([tf.cast(seed, tf.int64), epoch])
    index = tf.random.experimental.index_shuffle(
        position % num_frames, seed_pair, num_frames - 1)
    image = tf.cast(tf.gather(images, index), tf.float32) / 255.0
    label = tf.cast(tf.gather(labels, index), tf.int32)

    if augmentation is not None:
      seeds = tf.random.experimental.stateless_split(
          tf.stack([tf.cast(seed, tf.int64) + 1, position]), 3)
      image, label = augment.augment_geometry(image, label, seeds[0],
                                              augmentation)
      image = augment.augment_intensity(image, seeds[1], augmentation)
    image = normalize(image, normalization)
    if augmentation is not None and augmentation.noise_std > 0:
      image = augment.add_noise(image, seeds[2], augmentation.noise_std)
    return {"image": image, "label": label,
            "valid": tf.constant(1.0, tf.float32)}

  def global_position(local_position):
    step = local_position // local_size
    row = local_position % local_size
    return step * batch_size + shard_index * local_size + row

  first = tf.constant(start_step * local_size, tf.int64)
  dataset = tf.data.Dataset.range(first, tf.int64.max)
  dataset = dataset.map(lambda k: make_example(global_position(k)),
                        num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return dataset.batch(local_size, drop_remainder=True).prefetch(2)


def eval_batches(frames: Frames, *, batch_size: int,
                 normalization: str = "zscore"
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Yields fixed-size batches in frame order; the last one is zero-padded."""
  for start in range(0, len(frames), batch_size):
    stop = min(start + batch_size, len(frames))
    count = stop - start
    image = tf.cast(frames.images[start:stop], tf.float32) / 255.0
    image = tf.map_fn(lambda x: normalize(x, normalization), image)
    padding = batch_size - count
    yield {
        "image": np.pad(image.numpy(), [[0, padding], [0, 0], [0, 0], [0, 0]]),
        "label": np.pad(frames.labels[start:stop].astype(np.int32),
                        [[0, padding], [0, 0], [0, 0]]),
        "valid": np.pad(np.ones(count, np.float32), [[0, padding]]),
    }
