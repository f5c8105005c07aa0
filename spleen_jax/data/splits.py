"""Assignment of subjects to train, validation and test splits.

Splits are formed from whole subjects, so no subject's frames appear in two
splits. Subjects are listed in the config, drawn by a seeded fraction, or, for
cross-validation, dealt into seeded folds of which one validates.
"""

import math

import numpy as np

SPLITS = ("train", "validation", "test")


def assign_from_config(subjects: list[str] | tuple[str, ...],
                       data_config) -> dict[str, tuple[str, ...]]:
  """Calls `assign_subjects` with the split settings of `config.data`."""
  return assign_subjects(
      subjects,
      train_subjects=data_config.train_subjects,
      validation_subjects=data_config.validation_subjects,
      test_subjects=data_config.test_subjects,
      validation_fraction=data_config.validation_fraction,
      test_fraction=data_config.test_fraction,
      seed=data_config.split_seed,
      num_folds=data_config.get("num_folds", 0),
      fold=data_config.get("fold", 0))


def assign_subjects(subjects: list[str] | tuple[str, ...], *,
                    validation_subjects=(), test_subjects=(),
                    train_subjects=(), validation_fraction: float = 0.2,
                    test_fraction: float = 0.2, seed: int = 0,
                    num_folds: int = 0,
                    fold: int = 0) -> dict[str, tuple[str, ...]]:
  """Splits `subjects` into train, validation and test groups.

  An empty `validation_subjects` (or `test_subjects`) draws that split from
  the subjects not listed elsewhere, `ceil(fraction * number of subjects)` of
  them, with a permutation seeded by `seed`. An empty `train_subjects` takes
  every subject left over.

  With `num_folds` of 2 or more, the test split is assigned as above and the
  other subjects, in the same seeded order, are dealt into `num_folds` folds
  whose sizes differ by at most one. Fold `fold` validates and the rest
  train, so every subject validates in exactly one fold of the same seed.

  Raises:
    ValueError: a listed subject is unknown or listed in two splits, or the
      fold settings are invalid or conflict with listed subjects.
  """
  _check_folds(num_folds, fold, train_subjects, validation_subjects)
  available = sorted(set(subjects))
  listed = {"train": tuple(train_subjects),
            "validation": tuple(validation_subjects),
            "test": tuple(test_subjects)}

  for split, names in listed.items():
    unknown = sorted(set(names) - set(available))
    if unknown:
      raise ValueError(
          f"data.{split}_subjects names subjects {unknown} that have no "
          f"annotated frames; the annotated subjects are {available}.")
  seen: dict[str, str] = {}
  for split, names in listed.items():
    for name in names:
      if name in seen:
        raise ValueError(
            f"Subject {name!r} is listed in data.{seen[name]}_subjects and "
            f"data.{split}_subjects: a subject may belong to one split only.")
      seen[name] = split

  # Draw the unlisted held-out splits from the remaining subjects.
  remaining = [s for s in available if s not in seen]
  order = np.random.default_rng(seed).permutation(len(remaining))
  pool = [remaining[i] for i in order]
  assigned = dict(listed)
  for split, fraction in (("validation", validation_fraction),
                          ("test", test_fraction)):
    if split == "validation" and num_folds:
      continue
    if not assigned[split] and fraction > 0:
      count = min(math.ceil(fraction * len(available)), len(pool))
      assigned[split] = tuple(sorted(pool[:count]))
      pool = pool[count:]
  if num_folds:
    return _assign_fold(pool, assigned["test"], num_folds, fold)
  if not assigned["train"]:
    assigned["train"] = tuple(sorted(pool))
  return assigned


def _check_folds(num_folds: int, fold: int, train_subjects,
                 validation_subjects) -> None:
  if num_folds == 0:
    return
  if num_folds < 2:
    raise ValueError(
        f"data.num_folds is {num_folds}: set it to 2 or more for "
        "cross-validation, or to 0 to turn it off.")
  if not 0 <= fold < num_folds:
    raise ValueError(
        f"data.fold {fold} is out of range for data.num_folds {num_folds}: "
        f"choose a fold from 0 to {num_folds - 1}.")
  if train_subjects or validation_subjects:
    raise ValueError(
        "Cross-validation (data.num_folds > 0) assigns train and validation "
        "subjects itself, but data.train_subjects or "
        "data.validation_subjects is set: pass "
        "--config.data.train_subjects=() --config.data.validation_subjects=().")


def _assign_fold(pool: list[str], test: tuple[str, ...], num_folds: int,
                 fold: int) -> dict[str, tuple[str, ...]]:
  """Deals the seeded `pool` into folds; fold `fold` validates."""
  if len(pool) < num_folds:
    raise ValueError(
        f"data.num_folds is {num_folds} but only {len(pool)} subjects are "
        f"left after the test split ({sorted(pool)}): lower data.num_folds "
        "or move subjects out of the test split.")
  folds = np.array_split(np.array(pool, dtype=object), num_folds)
  validation = tuple(sorted(folds[fold]))
  train = tuple(sorted(s for s in pool if s not in validation))
  return {"train": train, "validation": validation, "test": tuple(test)}
