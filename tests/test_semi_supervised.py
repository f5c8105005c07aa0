"""Mean-teacher pieces: ramp, EMA, unlabelled losses and one real step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spleen_jax.core import model as model_lib
from spleen_jax.core import semi_supervised
from spleen_jax.core import steps


def _state():
  model = model_lib.UNet(num_classes=2, depth=2, base_features=4)
  state = steps.create_train_state(
      model, jax.random.PRNGKey(0), (16, 16, 1),
      steps.make_optimizer(steps.make_learning_rate_schedule(
          "constant", 1e-2, 10)))
  return semi_supervised.attach_teacher(state)


def test_rampup_weight_values():
  assert float(semi_supervised.rampup_weight(jnp.array(0), 100)) == (
      pytest.approx(math.exp(-5.0)))
  assert float(semi_supervised.rampup_weight(jnp.array(50), 100)) == (
      pytest.approx(math.exp(-1.25)))
  assert float(semi_supervised.rampup_weight(jnp.array(300), 100)) == 1.0
  assert float(semi_supervised.rampup_weight(jnp.array(0), 0)) == 1.0


def test_ema_update_moves_towards_student():
  teacher = {"w": jnp.array([1.0, 2.0])}
  student = {"w": jnp.array([3.0, 2.0])}
  updated = semi_supervised.ema_update(teacher, student, 0.9)
  np.testing.assert_allclose(updated["w"], [1.2, 2.0], rtol=1e-6)


def test_pseudo_label_loss_keeps_confident_pixels():
  # Teacher: pixel 0 confident class 1 (p = 0.99), pixel 1 unsure (0.6).
  teacher = jnp.log(jnp.array([[[[0.01, 0.99], [0.4, 0.6]]]]))
  student = jnp.zeros((1, 1, 2, 2))
  config = semi_supervised.SemiConfig(loss="pseudo_label", confidence=0.9)
  loss, confident = semi_supervised.unlabeled_loss(student, teacher, config)
  # Only pixel 0 counts, at ln 2, averaged over both pixels.
  assert float(loss) == pytest.approx(math.log(2.0) / 2.0, rel=1e-5)
  assert float(confident) == 0.5


def test_consistency_loss_is_squared_difference():
  teacher = jnp.log(jnp.array([[[[0.2, 0.8]]]]))
  student = jnp.zeros((1, 1, 1, 2))
  config = semi_supervised.SemiConfig(loss="consistency")
  loss, _ = semi_supervised.unlabeled_loss(student, teacher, config)
  assert float(loss) == pytest.approx(0.3**2 + 0.3**2, rel=1e-5)


def test_unknown_unlabeled_loss_is_rejected():
  config = semi_supervised.SemiConfig(loss="entropy")
  with pytest.raises(ValueError, match="Unknown semi.loss 'entropy'"):
    semi_supervised.unlabeled_loss(jnp.zeros((1, 1, 1, 2)),
                                   jnp.zeros((1, 1, 1, 2)), config)


def test_step_updates_student_and_teacher():
  state = _state()
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(2, 16, 16, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 2, (2, 16, 16)), jnp.int32),
           "valid": jnp.ones(2)}
  unlabeled = {"weak": jnp.asarray(rng.normal(size=(3, 16, 16, 1)),
                                   jnp.float32)}
  unlabeled["strong"] = unlabeled["weak"] * 1.5
  config = semi_supervised.SemiConfig(rampup_steps=0, ema_decay=0.5,
                                      loss="consistency")
  before = jax.tree.map(np.asarray, state.params)
  teacher_before = jax.tree.map(np.asarray, state.teacher["params"])
  new_state, outputs = jax.jit(
      lambda s, b, u: semi_supervised.train_step(s, b, u, semi_config=config)
  )(state, batch, unlabeled)

  assert int(new_state.step) == 1
  assert float(outputs["unlabeled_weight"]) == 1.0
  assert float(outputs["loss"]) == pytest.approx(
      float(outputs["supervised_loss"]) + float(outputs["unlabeled_loss"]),
      rel=1e-5)
  # Teacher = 0.5 * old teacher + 0.5 * new student, leaf by leaf.
  expected = jax.tree.map(lambda t, s: 0.5 * t + 0.5 * np.asarray(s),
                          teacher_before, new_state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               new_state.teacher["params"], expected)
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.allclose(a, b), before, new_state.params))
  assert any(changed)
