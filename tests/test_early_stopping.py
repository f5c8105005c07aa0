"""Early stopping on a validation score where higher is better."""

import math

import pytest

from spleen_jax.core import early_stopping


def test_early_stopping_fires_on_plateau():
  stopper = early_stopping.EarlyStopping(patience=3, min_delta=0.01)
  scores = [0.1, 0.5, 0.505, 0.5, 0.509]
  fired = []
  for step, score in enumerate(scores, start=1):
    stopper.update(step, score)
    fired.append(stopper.should_stop)
  assert fired == [False, False, False, False, True]
  assert stopper.best_step == 2
  assert stopper.best_score == 0.5


def test_early_stopping_improvement_resets_count():
  stopper = early_stopping.EarlyStopping(patience=2)
  assert stopper.update(1, 0.2)
  assert not stopper.update(2, 0.2)
  assert stopper.update(3, 0.3)
  assert stopper.num_bad_evals == 0
  assert not stopper.should_stop


def test_early_stopping_zero_patience_never_fires():
  stopper = early_stopping.EarlyStopping(patience=0)
  for step in range(1, 20):
    stopper.update(step, 0.0)
  assert not stopper.should_stop


def test_early_stopping_rejects_nan():
  stopper = early_stopping.EarlyStopping()
  with pytest.raises(ValueError, match="Validation score at step 7 is NaN"):
    stopper.update(7, math.nan)


def test_early_stopping_state_round_trip():
  stopper = early_stopping.EarlyStopping(patience=4, min_delta=0.1)
  stopper.update(5, 0.7)
  stopper.update(10, 0.7)
  restored = early_stopping.EarlyStopping.from_state_dict(stopper.state_dict())
  assert restored == stopper
