"""Early stopping on a validation score where higher is better (Dice)."""

import dataclasses
import math


@dataclasses.dataclass
class EarlyStopping:
  """Stops when the score has not improved by `min_delta` for `patience` evals.

  Attributes:
    patience: validations without improvement before `should_stop` is true;
      0 or less turns early stopping off.
    min_delta: smallest increase of the score that counts as improvement.
    best_score: best score seen so far (-inf before the first validation).
    best_step: training step of `best_score`, -1 before the first validation.
    num_bad_evals: validations since the last improvement.
  """

  patience: int = 10
  min_delta: float = 0.0
  best_score: float = -math.inf
  best_step: int = -1
  num_bad_evals: int = 0

  def update(self, step: int, score: float) -> bool:
    """Records a validation score and returns whether it is a new best."""
    if math.isnan(score):
      raise ValueError(
          f"Validation score at step {step} is NaN: the model diverged or the "
          "validation split has no pixels; lower train.learning_rate or check "
          "the split.")
    if score > self.best_score + self.min_delta:
      self.best_score = score
      self.best_step = step
      self.num_bad_evals = 0
      return True
    self.num_bad_evals += 1
    return False

  @property
  def should_stop(self) -> bool:
    return 0 < self.patience <= self.num_bad_evals

  def state_dict(self) -> dict[str, float | int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_state_dict(cls, state: dict[str, float | int]) -> "EarlyStopping":
    return cls(**state)
