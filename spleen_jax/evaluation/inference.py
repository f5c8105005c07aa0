"""Class probabilities of a split, with test-time augmentation, per frame."""

import functools
from typing import Sequence

import jax
import numpy as np

from spleen_jax.core import letterbox
from spleen_jax.core import steps
from spleen_jax.core import tta
from spleen_jax.data import input_pipeline


@functools.partial(jax.jit, static_argnames=("flip", "scales", "multiple"))
def _probabilities(state: steps.TrainState, images: jax.Array, *, flip: bool,
                   scales: tuple[float, ...], multiple: int) -> jax.Array:
  return tta.predict_probabilities(
      lambda x: steps.predict_logits(state, x), images, flip=flip,
      scales=scales, multiple=multiple)


def letterboxed_probabilities(state: steps.TrainState,
                              frames: input_pipeline.Frames, *,
                              batch_size: int, normalization: str,
                              model_depth: int, flip: bool = False,
                              scales: Sequence[float] = (1.0,)
                              ) -> np.ndarray:
  """Predicts softmax probabilities of every frame at the model's input size.

  Returns:
    `[n, height, width, classes]` float32, in frame order.
  """
  outputs = []
  for batch in input_pipeline.eval_batches(frames, batch_size=batch_size,
                                           normalization=normalization):
    count = int(batch["valid"].sum())
    probabilities = _probabilities(
        state, batch["image"], flip=flip, scales=tuple(scales),
        multiple=2**model_depth)
    outputs.append(np.asarray(probabilities[:count]))
  return np.concatenate(outputs)


@functools.partial(jax.jit, static_argnames=("box",))
def _invert(values: jax.Array, box: letterbox.Letterbox) -> jax.Array:
  return letterbox.invert_letterbox(values, box, method="linear")


def original_probabilities(probabilities: np.ndarray,
                           box_array: np.ndarray) -> np.ndarray:
  """Maps one frame's `[h, w, classes]` probabilities to its original size.

  Crops the padding and resizes bilinearly, so the arg-max of the result is
  the prediction at the frame's own resolution.
  """
  box = letterbox.Letterbox.from_array(box_array)
  return np.asarray(_invert(probabilities, box))
