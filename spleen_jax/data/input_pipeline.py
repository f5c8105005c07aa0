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
import logging
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
    sources: optional `[n]` names of the data source of each frame, set when
      several sources are trained together (see `concatenate_frames`).
  """

  images: np.ndarray
  labels: np.ndarray
  boxes: np.ndarray
  file_names: list[str]
  subjects: list[str]
  original_images: list[np.ndarray] | None = None
  original_labels: list[np.ndarray] | None = None
  sources: list[str] | None = None

  def __len__(self) -> int:
    return len(self.file_names)


def concatenate_frames(parts: dict[str, Frames]) -> Frames:
  """Joins the frames of several sources and records each frame's source.

  All parts must share the letterbox size. Originals are kept only when
  every part has them.
  """
  parts = {name: frames for name, frames in parts.items() if len(frames)}
  if not parts:
    raise ValueError("None of the data sources has frames in this split.")
  values = list(parts.values())
  keep_originals = all(f.original_images is not None for f in values)
  return Frames(
      images=np.concatenate([f.images for f in values]),
      labels=np.concatenate([f.labels for f in values]),
      boxes=np.concatenate([f.boxes for f in values]),
      file_names=[n for f in values for n in f.file_names],
      subjects=[s for f in values for s in f.subjects],
      original_images=([i for f in values for i in f.original_images]
                       if keep_originals else None),
      original_labels=([i for f in values for i in f.original_labels]
                       if keep_originals else None),
      sources=[name for name, f in parts.items() for _ in range(len(f))])


def select_frames(frames: Frames, indices: np.ndarray) -> Frames:
  """Returns the frames at `indices`, in that order."""
  indices = np.asarray(indices, np.int64)

  def pick(values):
    return None if values is None else [values[i] for i in indices]

  return Frames(
      images=frames.images[indices], labels=frames.labels[indices],
      boxes=frames.boxes[indices], file_names=pick(frames.file_names),
      subjects=pick(frames.subjects),
      original_images=pick(frames.original_images),
      original_labels=pick(frames.original_labels),
      sources=pick(frames.sources))


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


@dataclasses.dataclass(frozen=True)
class ForegroundSampling:
  """Oversampling of frames, and zoomed crops, that show one class.

  Attributes:
    class_id: training class id of the target structure.
    fraction: share of each batch drawn from the frames that contain
      `class_id`; the other rows walk all frames as usual.
    crop_probability: chance that such a row is zoomed into a window around
      the class (see `augment.foreground_crop`).
    crop_scale: the window's size as a fraction of the frame.
    class_name: name of the class, for messages; empty names it by id.
  """

  class_id: int = 1
  fraction: float = 0.0
  crop_probability: float = 0.0
  crop_scale: float = 0.5
  class_name: str = ""

  def rows(self, batch_size: int) -> int:
    """Rows of each global batch that come from foreground frames.

    Halves round up, so a fraction of 0.5 of one row gives one row.
    """
    return int(np.floor(self.fraction * batch_size + 0.5))


def allocate_rows(weights: dict[str, float], rows: int) -> dict[str, int]:
  """Splits `rows` batch rows among sources in proportion to `weights`.

  Uses the largest-remainder method, so the counts sum to `rows` and each
  differs from its exact share by less than one.

  Raises:
    ValueError: a weight is not positive, or some source would get no row.
  """
  for name, weight in weights.items():
    if not 0 < weight < float("inf"):
      raise ValueError(f"data.sources.{name}.weight is {weight}: sampling "
                       "weights must be positive and finite. Remove the "
                       "source from data.sources instead.")
  total = sum(weights.values())
  exact = {name: rows * weight / total for name, weight in weights.items()}
  counts = {name: int(np.floor(share)) for name, share in exact.items()}
  by_remainder = sorted(exact, key=lambda n: counts[n] - exact[n])
  for name in by_remainder[:rows - sum(counts.values())]:
    counts[name] += 1
  empty = sorted(name for name, count in counts.items() if count == 0)
  if empty:
    raise ValueError(
        f"Data sources {empty} get no row of the {rows} batch rows left for "
        f"them with weights {weights}: raise train.batch_size or their "
        "data.sources.<name>.weight.")
  return counts


@dataclasses.dataclass(frozen=True)
class _RowGroup:
  """Batch rows `[start, start + rows)` and the frames they walk in turn."""

  frames: np.ndarray
  start: int
  rows: int
  seed_offset: int


def _row_groups(frames: Frames, batch_size: int, foreground_rows: int,
                positive: np.ndarray | None,
                source_weights: dict[str, float] | None) -> list[_RowGroup]:
  """Assigns the rows of each batch to foreground frames and to sources."""
  groups = []
  if foreground_rows:
    groups.append(_RowGroup(positive, 0, foreground_rows, seed_offset=2))
  other_rows = batch_size - foreground_rows
  if not other_rows:
    return groups
  if not source_weights or len(source_weights) == 1:
    groups.append(_RowGroup(np.arange(len(frames)), foreground_rows,
                            other_rows, seed_offset=0))
    return groups

  if frames.sources is None:
    raise ValueError("Sampling weights per source need Frames.sources.")
  sources = np.asarray(frames.sources)
  missing = sorted(set(source_weights) - set(frames.sources))
  if missing:
    raise ValueError(f"Data sources {missing} have no train frames: check "
                     "their data settings, or remove them from data.sources.")
  start = foreground_rows
  counts = allocate_rows(source_weights, other_rows)
  for number, (name, rows) in enumerate(counts.items()):
    groups.append(_RowGroup(np.flatnonzero(sources == name), start, rows,
                            seed_offset=10 + number))
    start += rows
  logging.info("Rows per batch by source: %s.", counts)
  return groups


def _shuffled_index(position, seed, num_items: int):
  """Item of stream `position`: epoch `position // n`, seeded permutation."""
  epoch = position // num_items
  seed_pair = tf.stack([tf.cast(seed, tf.int64), epoch])
  return tf.random.experimental.index_shuffle(
      position % num_items, seed_pair, num_items - 1)


def _local_positions(batch_size: int, start_step: int, shard_index: int,
                     num_shards: int) -> tuple[tf.data.Dataset, int]:
  """Stream of global example positions that this host reads, and its size."""
  if batch_size % num_shards:
    raise ValueError(f"Batch size {batch_size} does not divide into "
                     f"{num_shards} host shards.")
  local_size = batch_size // num_shards

  def global_position(local_position):
    step = local_position // local_size
    row = local_position % local_size
    return step * batch_size + shard_index * local_size + row

  first = tf.constant(start_step * local_size, tf.int64)
  positions = tf.data.Dataset.range(first, tf.int64.max)
  return positions.map(global_position), local_size


def train_dataset(frames: Frames, *, batch_size: int, seed: int,
                  start_step: int = 0, normalization: str = "zscore",
                  augmentation: augment.AugmentConfig | None = None,
                  foreground: ForegroundSampling | None = None,
                  source_weights: dict[str, float] | None = None,
                  shard_index: int = 0, num_shards: int = 1
                  ) -> tf.data.Dataset:
  """Builds the endless, seeded training stream of batches.

  Element `k` of the stream is frame `shuffle(k mod n)` of epoch `k // n`,
  where the shuffle is a stateless permutation seeded by `(seed, epoch)`, and
  its augmentation is seeded by `(seed, k)`. Global batch `s` contains
  elements `s * batch_size` to `(s + 1) * batch_size - 1`, so starting at
  `start_step` reproduces the stream of an uninterrupted run exactly.

  With `foreground`, the first `foreground.rows(batch_size)` rows of each
  global batch walk, in the same seeded way, only the frames that contain
  `foreground.class_id`, and may be zoomed around it.

  With `source_weights` (source name to weight) the remaining rows are split
  among the sources of `frames.sources` in proportion to the weights, and
  each source's rows walk only its own frames.

  With `num_shards > 1` (one shard per host) this returns only rows
  `shard_index * batch_size / num_shards` onwards of each global batch, in
  batches of `batch_size / num_shards`.

  Raises:
    ValueError: the split has no frames, the batch does not divide into the
      host shards, or foreground sampling is on and no frame shows its class.
  """
  if len(frames) == 0:
    raise ValueError("The train split has no frames: check "
                     "data.train_subjects and data.manual_dir.")
  positions, local_size = _local_positions(batch_size, start_step,
                                           shard_index, num_shards)
  num_frames = len(frames)
  images = tf.constant(frames.images)
  labels = tf.constant(frames.labels)

  foreground_rows = foreground.rows(batch_size) if foreground else 0
  positive = None
  if foreground_rows:
    positive = np.flatnonzero(
        np.any(frames.labels == foreground.class_id, axis=(1, 2)))
    if positive.size == 0:
      raise ValueError(
          f"Foreground sampling (data.foreground_fraction "
          f"{foreground.fraction}) needs train frames that show "
          f"{foreground.class_name or f'class id {foreground.class_id}'}, "
          f"but none of the {num_frames} train frames "
          "does: move a subject with that organ into the train split, or set "
          "--config.data.foreground_fraction=0.")
    logging.info("Foreground sampling: %d of %d rows per batch from the %d "
                 "of %d train frames that show class id %d.", foreground_rows,
                 batch_size, positive.size, num_frames, foreground.class_id)

  groups = _row_groups(frames, batch_size, foreground_rows, positive,
                       source_weights)

  def frame_index(position):
    # Row r of batch s in a group of k rows is item s * k + (r - start) of
    # that group's own seeded walk over its frames.
    step = position // batch_size
    row = position % batch_size
    index = tf.constant(0, tf.int64)
    for group in groups:
      offset = tf.clip_by_value(row - group.start, 0, group.rows - 1)
      candidate = tf.gather(
          tf.constant(group.frames, tf.int64),
          _shuffled_index(step * group.rows + offset,
                          seed + group.seed_offset, len(group.frames)))
      in_group = tf.logical_and(row >= group.start,
                                row < group.start + group.rows)
      index = tf.where(in_group, candidate, index)
    return index, row < foreground_rows

  def make_example(position):
    index, is_foreground = frame_index(position)
    image = tf.cast(tf.gather(images, index), tf.float32) / 255.0
    label = tf.cast(tf.gather(labels, index), tf.int32)

    if foreground_rows and foreground.crop_probability > 0:
      crop_seeds = tf.random.experimental.stateless_split(
          tf.stack([tf.cast(seed, tf.int64) + 3, position]), 2)
      crop = tf.logical_and(is_foreground, tf.random.stateless_uniform(
          [], crop_seeds[0]) < foreground.crop_probability)
      cropped_image, cropped_label = augment.foreground_crop(
          image, label, foreground.class_id, crop_seeds[1],
          foreground.crop_scale)
      image = tf.where(crop, cropped_image, image)
      label = tf.where(crop, cropped_label, label)

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

  dataset = positions.map(make_example, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return dataset.batch(local_size, drop_remainder=True).prefetch(2)


def unlabeled_dataset(frames: Frames, *, batch_size: int, seed: int,
                      start_step: int = 0, normalization: str = "zscore",
                      weak: augment.AugmentConfig | None = None,
                      strong: augment.AugmentConfig | None = None,
                      shard_index: int = 0, num_shards: int = 1
                      ) -> tf.data.Dataset:
  """Builds the endless, seeded stream of unlabelled frame pairs.

  Each element is one frame under one random geometric transform (from
  `weak`), seen twice. The `weak` view, for the teacher, adds only the weak
  intensity changes. The `strong` view, for the student, adds the strong
  intensity changes and noise. Both views share the geometry, so the teacher's prediction is a
  pixel-aligned target for the student. The stream is a pure function of
  `seed` and the step, like `train_dataset`.

  Returns:
    Batches of `weak` and `strong`: `[batch_size / num_shards, h, w, 1]`
    float32 normalised images.
  """
  if len(frames) == 0:
    raise ValueError("Semi-supervised training found no unlabelled frames: "
                     "check data.manual_dir, or set --config.semi.enabled="
                     "False.")
  positions, local_size = _local_positions(batch_size, start_step,
                                           shard_index, num_shards)
  num_frames = len(frames)
  images = tf.constant(frames.images)

  def make_pair(position):
    index = _shuffled_index(position, seed + 4, num_frames)
    image = tf.cast(tf.gather(images, index), tf.float32) / 255.0
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.cast(seed, tf.int64) + 5, position]), 5)
    if weak is not None:
      image, _ = augment.augment_geometry(
          image, tf.zeros(image.shape[:2], tf.int32), seeds[0], weak)
    weak_image, strong_image = image, image
    if weak is not None:
      weak_image = augment.augment_intensity(image, seeds[1], weak)
    if strong is not None:
      strong_image = augment.augment_intensity(image, seeds[2], strong)
    weak_image = normalize(weak_image, normalization)
    strong_image = normalize(strong_image, normalization)
    if weak is not None and weak.noise_std > 0:
      weak_image = augment.add_noise(weak_image, seeds[3], weak.noise_std)
    if strong is not None and strong.noise_std > 0:
      strong_image = augment.add_noise(strong_image, seeds[4],
                                       strong.noise_std)
    return {"weak": weak_image, "strong": strong_image}

  dataset = positions.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE,
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
