"""Train state, optimizer and the jittable train and eval steps.

A batch is a dict of arrays:
  `image`: `[n, h, w, 1]` float32, normalised intensities.
  `label`: `[n, h, w]` int32 training class ids (0 is background).
  `valid`: `[n]` float32, 1 for a real example and 0 for batch padding
    (evaluation pads its last batch to keep shapes fixed).
"""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from spleen_jax.core import losses
from spleen_jax.core import metrics

SCHEDULES = ("constant", "warmup_cosine")


class TrainState(train_state.TrainState):
  """Flax train state plus BatchNorm statistics and the dropout RNG key.

  The dropout key of step `s` is `fold_in(dropout_rng, s)`, so a run restored
  at step `s` draws the same dropout masks as one that never stopped.
  `teacher` holds the `params` and `batch_stats` of the exponential moving
  average teacher of semi-supervised training, and is None otherwise.
  """

  batch_stats: Any
  dropout_rng: jax.Array
  teacher: Any = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and options of `losses.segmentation_loss`."""

  dice_weight: float = 1.0
  cross_entropy_weight: float = 1.0
  dice_reduction: str = "batch"
  dice_include_background: bool = False
  dice_smooth: float = 1.0
  tversky_alpha: float = 0.5
  tversky_beta: float = 0.5
  class_weights: tuple[float, ...] = ()
  focal_gamma: float = 0.0


def make_learning_rate_schedule(name: str, learning_rate: float,
                                num_steps: int,
                                warmup_steps: int = 0) -> optax.Schedule:
  """Builds `constant` or `warmup_cosine` (linear warm-up, cosine to 0)."""
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate,
        warmup_steps=warmup_steps, decay_steps=max(num_steps, warmup_steps + 1),
        end_value=0.0)
  raise ValueError(f"Unknown learning rate schedule {name!r}: "
                   f"choose from {', '.join(SCHEDULES)}.")


def make_optimizer(schedule: optax.Schedule, *, weight_decay: float = 0.0,
                   gradient_clip_norm: float = 0.0
                   ) -> optax.GradientTransformation:
  """Builds Adam (AdamW when `weight_decay > 0`) with optional clipping.

  `gradient_clip_norm <= 0` turns clipping by global norm off.
  """
  if weight_decay > 0:
    adam = optax.adamw(schedule, weight_decay=weight_decay)
  else:
    adam = optax.adam(schedule)
  if gradient_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(gradient_clip_norm), adam)
  return adam


def create_train_state(model: nn.Module, rng: jax.Array,
                       image_shape: tuple[int, int, int],
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initialises parameters for images of `image_shape` (h, w, channels)."""
  params_rng, dropout_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  init = jax.jit(lambda key, images: model.init(key, images, train=False))
  variables = init(params_rng, dummy)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", flax.core.FrozenDict()),
      tx=optimizer,
      dropout_rng=dropout_rng)


def pixel_weights(batch: dict[str, jax.Array]) -> jax.Array:
  """Returns `[n, h, w]` float32 pixel weights: 0 on padded examples."""
  valid = batch.get("valid")
  if valid is None:
    return jnp.ones(batch["label"].shape, jnp.float32)
  return jnp.broadcast_to(valid[:, None, None], batch["label"].shape)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               loss_config: LossConfig = LossConfig()
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """Runs one optimizer step on a batch.

  Returns:
    The new state and per-batch outputs: `loss`, `dice_loss`,
    `cross_entropy` (scalars), `counts` (`[classes, 3]` TP/FP/FN of the
    arg-max prediction, taken before the update) and `num_examples`.
  """
  dropout_rng = jax.random.fold_in(state.dropout_rng, state.step)
  weights = pixel_weights(batch)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"],
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    terms = losses.segmentation_loss(
        logits, batch["label"], weights, **dataclasses.asdict(loss_config))
    return terms["loss"], (terms, logits, updates)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (terms, logits, updates)), grads = grad_fn(state.params)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))

  outputs = dict(terms)
  outputs["counts"] = metrics.confusion_counts(
      jnp.argmax(logits, axis=-1), batch["label"], logits.shape[-1], weights)
  outputs["num_examples"] = jnp.sum(batch.get("valid", jnp.ones(
      batch["label"].shape[:1])))
  return new_state, outputs


def predict_logits(state: TrainState, images: jax.Array) -> jax.Array:
  """Returns logits `[n, h, w, classes]` float32 in inference mode."""
  return state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, images,
      train=False)


def eval_step(state: TrainState, batch: dict[str, jax.Array],
              loss_config: LossConfig = LossConfig()) -> dict[str, jax.Array]:
  """Scores a batch in inference mode; padded examples count for nothing.

  Returns:
    The same outputs as `train_step`, without a state update.
  """
  weights = pixel_weights(batch)
  logits = predict_logits(state, batch["image"])
  outputs = losses.segmentation_loss(
      logits, batch["label"], weights, **dataclasses.asdict(loss_config))
  outputs["counts"] = metrics.confusion_counts(
      jnp.argmax(logits, axis=-1), batch["label"], logits.shape[-1], weights)
  outputs["num_examples"] = jnp.sum(batch.get("valid", jnp.ones(
      batch["label"].shape[:1])))
  outputs["frame_pixels"] = frame_pixel_counts(logits, batch["label"])
  return outputs


def frame_pixel_counts(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Counts each frame's predicted, true and overlapping pixels of each class.

  Args:
    logits: `[n, h, w, c]` float.
    labels: `[n, h, w]` int class ids.

  Returns:
    `[n, c, 3]` int32: arg-max predicted pixels, true pixels, and pixels
    both predicted and true.
  """
  num_classes = logits.shape[-1]
  predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes,
                             dtype=jnp.int32)
  truth = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
  return jnp.stack([jnp.sum(predicted, axis=(1, 2)),
                    jnp.sum(truth, axis=(1, 2)),
                    jnp.sum(predicted * truth, axis=(1, 2))], axis=-1)
