"""Mean-teacher semi-supervised training on unlabelled frames.

The teacher is an exponential moving average (EMA) of the student's
parameters and BatchNorm statistics. Each step, the teacher labels a weakly
augmented view of a batch of unlabelled frames in inference mode. The student
learns those labels on a strongly augmented view of the same frames, with the
same geometry but stronger intensity changes and noise, next to its
supervised loss on the labelled batch. The unlabelled loss is ramped up from 0 so that
the teacher is not trusted before it has learned anything.

Batches: the labelled batch is that of `steps.train_step`; the unlabelled
batch contains `weak` and `strong`, both `[m, h, w, 1]` float32.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spleen_jax.core import losses
from spleen_jax.core import metrics
from spleen_jax.core import steps

UNLABELED_LOSSES = ("pseudo_label", "consistency")


@dataclasses.dataclass(frozen=True)
class SemiConfig:
  """Settings of the unlabelled term.

  Attributes:
    weight: weight of the unlabelled loss once ramped up.
    rampup_steps: steps over which the weight rises from 0 along
      `exp(-5 (1 - t)^2)`; 0 applies the full weight from the first step.
    ema_decay: teacher = decay * teacher + (1 - decay) * student, each step.
    loss: `pseudo_label` (cross-entropy to the teacher's arg-max on pixels
      where its top probability reaches `confidence`) or `consistency`
      (squared difference of the two softmax outputs, summed over classes).
    confidence: threshold of `pseudo_label`, in [0, 1].
  """

  weight: float = 1.0
  rampup_steps: int = 100
  ema_decay: float = 0.99
  loss: str = "pseudo_label"
  confidence: float = 0.9


def attach_teacher(state: steps.TrainState) -> steps.TrainState:
  """Starts the teacher as a copy of the student, in buffers of its own.

  Own buffers let a jitted step donate the whole state.
  """
  return state.replace(teacher=jax.tree.map(
      jnp.copy, {"params": state.params, "batch_stats": state.batch_stats}))


def rampup_weight(step: jax.Array, rampup_steps: int) -> jax.Array:
  """Returns the ramp factor in [0, 1] at `step` (sigmoid-shaped ramp)."""
  if rampup_steps <= 0:
    return jnp.ones((), jnp.float32)
  progress = jnp.clip(step.astype(jnp.float32) / rampup_steps, 0.0, 1.0)
  return jnp.exp(-5.0 * (1.0 - progress) ** 2)


def ema_update(teacher: Any, student: Any, decay: float) -> Any:
  """Moves every teacher leaf towards the student leaf of the same path."""
  return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher,
                      student)


def unlabeled_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                   config: SemiConfig) -> tuple[jax.Array, jax.Array]:
  """Computes the unlabelled loss of the student against the teacher.

  Args:
    student_logits: `[m, h, w, c]` float, on the strong view.
    teacher_logits: `[m, h, w, c]` float, on the weak view; no gradient flows
      into them.
    config: loss kind and confidence threshold.

  Returns:
    The scalar loss (averaged over all pixels, so that unconfident pixels
    dilute it) and the fraction of pixels that passed the threshold (1 for
    `consistency`).
  """
  teacher_probabilities = jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
  student_logits = student_logits.astype(jnp.float32)
  if config.loss == "consistency":
    student_probabilities = jax.nn.softmax(student_logits, axis=-1)
    squared = jnp.sum((student_probabilities - teacher_probabilities)**2, -1)
    return jnp.mean(squared), jnp.ones((), jnp.float32)
  if config.loss != "pseudo_label":
    raise ValueError(f"Unknown semi.loss {config.loss!r}: choose from "
                     f"{', '.join(UNLABELED_LOSSES)}.")
  confident = (jnp.max(teacher_probabilities, axis=-1) >=
               config.confidence).astype(jnp.float32)
  pseudo_labels = jnp.argmax(teacher_probabilities, axis=-1)
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(
      student_logits, pseudo_labels)
  return jnp.mean(per_pixel * confident), jnp.mean(confident)


def train_step(state: steps.TrainState, batch: dict[str, jax.Array],
               unlabeled: dict[str, jax.Array],
               loss_config: steps.LossConfig = steps.LossConfig(),
               semi_config: SemiConfig = SemiConfig()
               ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
  """Runs one optimizer step on a labelled and an unlabelled batch.

  The student runs on both batches in one forward pass, so BatchNorm normalises
  them together. The teacher follows the updated student by EMA.

  Returns:
    The new state and the outputs of `steps.train_step` (their `loss` is the
    total, supervised plus weighted unlabelled), plus `supervised_loss`,
    `unlabeled_loss`, `unlabeled_weight` and `confident_fraction`.
  """
  dropout_rng = jax.random.fold_in(state.dropout_rng, state.step)
  weights = steps.pixel_weights(batch)
  num_labeled = batch["image"].shape[0]
  teacher_logits = state.apply_fn(state.teacher, unlabeled["weak"],
                                  train=False)
  weight = semi_config.weight * rampup_weight(state.step,
                                              semi_config.rampup_steps)

  def loss_fn(params):
    images = jnp.concatenate([batch["image"], unlabeled["strong"]], axis=0)
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, images,
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    labeled_logits = logits[:num_labeled]
    terms = losses.segmentation_loss(
        labeled_logits, batch["label"], weights,
        **dataclasses.asdict(loss_config))
    unlabeled_term, confident = unlabeled_loss(logits[num_labeled:],
                                               teacher_logits, semi_config)
    total = terms["loss"] + weight * unlabeled_term
    terms = {**terms, "supervised_loss": terms["loss"], "loss": total,
             "unlabeled_loss": unlabeled_term,
             "confident_fraction": confident}
    return total, (terms, labeled_logits, updates)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (terms, logits, updates)), grads = grad_fn(state.params)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
  new_state = new_state.replace(teacher=ema_update(
      state.teacher, {"params": new_state.params,
                      "batch_stats": new_state.batch_stats},
      semi_config.ema_decay))

  outputs = dict(terms)
  outputs["unlabeled_weight"] = weight
  outputs["counts"] = metrics.confusion_counts(
      jnp.argmax(logits, axis=-1), batch["label"], logits.shape[-1], weights)
  outputs["num_examples"] = jnp.sum(batch.get("valid", jnp.ones(
      batch["label"].shape[:1])))
  return new_state, outputs
