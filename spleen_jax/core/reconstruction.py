"""Self-supervised pretraining by masked, denoising reconstruction.

The model gets an unlabelled frame with square patches blanked out and noise
added, and predicts the clean frame in its one output channel. Reaching the
blanked anatomy from its surroundings trains the encoder and decoder on the
texture and shapes of real ultrasound without any annotation; a segmentation
run then takes these weights with `init_from` (its output convolution, of
another shape, starts afresh).
"""

import dataclasses

import jax
import jax.numpy as jnp

from spleen_jax.core import steps


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Corruption settings of the model input.

  Attributes:
    patch_size: side of the square patches, in pixels of the model input.
    mask_ratio: chance that a patch is blanked (set to 0, the frame mean of
      z-scored input).
    noise_std: standard deviation of the Gaussian noise added to the input.
    visible_weight: loss weight of the pixels that were not blanked,
      relative to 1 for blanked pixels.
  """

  patch_size: int = 16
  mask_ratio: float = 0.5
  noise_std: float = 0.1
  visible_weight: float = 0.1


def corrupt(images: jax.Array, rng: jax.Array, config: MaskingConfig
            ) -> tuple[jax.Array, jax.Array]:
  """Blanks random patches and adds noise.

  Args:
    images: `[n, h, w, 1]` float32 normalised frames; h and w must be
      multiples of `config.patch_size`.
    rng: PRNG key.
    config: the corruption settings.

  Returns:
    The corrupted images, same shape, and the `[n, h, w]` float32 mask that
    is 1 on blanked pixels.
  """
  count, height, width, _ = images.shape
  size = config.patch_size
  if height % size or width % size:
    raise ValueError(
        f"ssl.patch_size {size} does not divide the input size "
        f"{height}x{width}: choose a divisor of both.")
  mask_rng, noise_rng = jax.random.split(rng)
  patches = jax.random.bernoulli(
      mask_rng, config.mask_ratio, (count, height // size, width // size))
  mask = jnp.repeat(jnp.repeat(patches, size, axis=1), size, axis=2)
  mask = mask.astype(jnp.float32)
  noise = config.noise_std * jax.random.normal(noise_rng, images.shape)
  corrupted = (images + noise) * (1.0 - mask[..., None])
  return corrupted, mask


def reconstruction_loss(predicted: jax.Array, target: jax.Array,
                        mask: jax.Array, visible_weight: float) -> jax.Array:
  """Weighted mean squared error.

  Args:
    predicted: `[n, h, w, 1]` float, the model's output.
    target: `[n, h, w, 1]` float32 clean frames.
    mask: `[n, h, w]` float32, 1 on blanked pixels.
    visible_weight: weight of pixels where `mask` is 0.

  Returns:
    Scalar: sum of weighted squared errors over the sum of weights.
  """
  weights = mask + visible_weight * (1.0 - mask)
  squared = (predicted[..., 0].astype(jnp.float32) - target[..., 0])**2
  return jnp.sum(weights * squared) / jnp.maximum(jnp.sum(weights), 1e-6)


def train_step(state: steps.TrainState, images: jax.Array,
               config: MaskingConfig
               ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
  """Runs one optimizer step of masked reconstruction.

  The corruption and dropout keys of step `s` derive from
  `fold_in(state.dropout_rng, s)`, so a resumed run repeats them.

  Args:
    state: train state of a U-Net with one output channel.
    images: `[n, h, w, 1]` float32 clean, normalised frames.
    config: the corruption settings.

  Returns:
    The new state and `loss` (all pixels) and `masked_loss` (blanked
    pixels only), both scalars.
  """
  step_rng = jax.random.fold_in(state.dropout_rng, state.step)
  corrupt_rng, dropout_rng = jax.random.split(step_rng)
  inputs, mask = corrupt(images, corrupt_rng, config)

  def loss_fn(params):
    predicted, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, inputs,
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    loss = reconstruction_loss(predicted, images, mask, config.visible_weight)
    masked = reconstruction_loss(predicted, images, mask, 0.0)
    return loss, (masked, updates)

  (loss, (masked, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
  return new_state, {"loss": loss, "masked_loss": masked}
