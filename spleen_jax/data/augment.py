"""Train-time augmentation with stateless TensorFlow random ops.

Every random draw comes from a seed derived from the example's position in the
training stream, so the same position always gets the same augmentation: a
resumed run gets exactly the batches of an uninterrupted run.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Ranges of the random transforms; 0 turns a transform off.

  Attributes:
    rotation_degrees: rotation drawn from [-r, r] degrees.
    scale: zoom factor drawn from [1 - s, 1 + s].
    translation: shift drawn from [-t, t] times the image size, per axis.
    flip_probability: probability of a left-right flip.
    brightness: offset drawn from [-b, b], on intensities scaled to [0, 1].
    contrast: factor drawn from [1 - c, 1 + c] around the image mean.
    gamma: exponent exp(u) with u drawn from [-g, g].
    noise_std: standard deviation of Gaussian noise added after
      normalisation, in units of the normalised intensity.
  """

  rotation_degrees: float = 15.0
  scale: float = 0.1
  translation: float = 0.05
  flip_probability: float = 0.3
  brightness: float = 0.1
  contrast: float = 0.2
  gamma: float = 0.2
  noise_std: float = 0.05


def _uniform(seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed, low, high, dtype=tf.float32)


def _affine_transform(seeds: tf.Tensor, height: int, width: int,
                      config: AugmentConfig) -> tf.Tensor:
  """Draws rotation, scale and translation as a projective transform vector.

  The vector maps each output pixel to the input pixel it samples, as
  `tf.raw_ops.ImageProjectiveTransformV3` expects: rotation by -angle and
  zoom by 1/scale about the image centre, after undoing the shift.
  """
  radians = config.rotation_degrees * math.pi / 180.0
  angle = _uniform(seeds[0], -radians, radians)
  scale = _uniform(seeds[1], 1.0 - config.scale, 1.0 + config.scale)
  shift_y = _uniform(seeds[2], -config.translation, config.translation) * height
  shift_x = _uniform(seeds[3], -config.translation, config.translation) * width

  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
  source_x = centre_x + shift_x
  source_y = centre_y + shift_y
  return tf.stack([
      cos, sin, centre_x - cos * source_x - sin * source_y,
      -sin, cos, centre_y + sin * source_x - cos * source_y,
      0.0, 0.0])


def augment_geometry(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                     config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
  """Applies one random affine transform and flip to an image and its labels.

  Args:
    image: `[h, w, 1]` float32 raw intensities; pixels moved in from outside
      the frame are 0 (black), like the area outside the ultrasound sector.
    label: `[h, w]` int32 class ids; moved-in pixels are background.
    seed: `[2]` int seed of this example.
    config: ranges of the transforms.

  Returns:
    The transformed image and label map, same shapes and dtypes.
  """
  seeds = tf.random.experimental.stateless_split(seed, 6)
  height, width = image.shape[0], image.shape[1]
  transform = _affine_transform(seeds, height, width, config)[None]
  stacked = tf.concat([image, tf.cast(label, tf.float32)[..., None]], -1)[None]

  def warp(values, interpolation):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=values, transforms=transform, output_shape=[height, width],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")[0]

  image = warp(stacked[..., :1], "BILINEAR")
  label = tf.cast(tf.round(warp(stacked[..., 1:], "NEAREST")[..., 0]),
                  tf.int32)

  flip = _uniform(seeds[4], 0.0, 1.0) < config.flip_probability
  image = tf.where(flip, tf.reverse(image, [1]), image)
  label = tf.where(flip, tf.reverse(label, [1]), label)
  return image, label


def augment_intensity(image: tf.Tensor, seed: tf.Tensor,
                      config: AugmentConfig) -> tf.Tensor:
  """Applies random brightness, contrast and gamma to `[h, w, 1]` in [0, 1]."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  image = image + _uniform(seeds[0], -config.brightness, config.brightness)
  mean = tf.reduce_mean(image)
  factor = _uniform(seeds[1], 1.0 - config.contrast, 1.0 + config.contrast)
  image = tf.clip_by_value((image - mean) * factor + mean, 0.0, 1.0)
  gamma = tf.exp(_uniform(seeds[2], -config.gamma, config.gamma))
  return tf.pow(image, gamma)


def add_noise(image: tf.Tensor, seed: tf.Tensor, std: float) -> tf.Tensor:
  """Adds Gaussian noise of standard deviation `std`."""
  return image + std * tf.random.stateless_normal(tf.shape(image), seed)


def foreground_crop(image: tf.Tensor, label: tf.Tensor, class_id: int,
                    seed: tf.Tensor, scale: float
                    ) -> tuple[tf.Tensor, tf.Tensor]:
  """Zooms into a window around a random pixel of `class_id`.

  The window is `scale` times the frame's height and width. It is centred
  on a pixel of the class drawn with `seed`, and moved inside the frame
  where it would cross an edge. The window is then resized back to the
  frame's size, bilinear for the image and nearest for the labels. A frame without the class is returned
  unchanged.

  Args:
    image: `[h, w, 1]` float32.
    label: `[h, w]` int32 class ids.
    class_id: training class id to zoom into.
    seed: `[2]` int seed.
    scale: window size as a fraction of the frame, in (0, 1].

  Returns:
    The zoomed image and label map, same shapes and dtypes.
  """
  height, width = image.shape[0], image.shape[1]
  window_height = max(1, round(scale * height))
  window_width = max(1, round(scale * width))
  pixels = tf.where(tf.equal(label, class_id))
  count = tf.shape(pixels, out_type=tf.int64)[0]
  pick = tf.random.stateless_uniform(
      [], seed, 0, tf.maximum(count, 1), dtype=tf.int64)
  centre = tf.gather(tf.concat([pixels, [[height // 2, width // 2]]], 0),
                     tf.where(count > 0, pick, count))
  top = tf.clip_by_value(centre[0] - window_height // 2, 0,
                         height - window_height)
  left = tf.clip_by_value(centre[1] - window_width // 2, 0,
                          width - window_width)

  def zoom(values, method):
    window = values[top:top + window_height, left:left + window_width]
    return tf.image.resize(window, (height, width), method=method)

  zoomed_image = zoom(image, "bilinear")
  zoomed_label = tf.cast(zoom(label[..., None], "nearest")[..., 0], tf.int32)
  return (tf.where(count > 0, zoomed_image, image),
          tf.where(count > 0, zoomed_label, label))
