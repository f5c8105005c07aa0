"""Assignment of subjects to train, validation and test splits.

Splits are formed from whole subjects, so no subject's frames appear in two
splits. Subjects are listed in the config or drawn by a seeded fraction.
"""

import math

import numpy as np

SPLITS = ("train", "validation", "test")


def assign_subjects(subjects: list[str] | tuple[str, ...], *,
                    validation_subjects=(), test_subjects=(),
                    train_subjects=(), validation_fraction: float = 0.2,
                    test_fraction: float = 0.2,
                    seed: int = 0) -> dict[str, tuple[str, ...]]:
  """Splits `subjects` into train, validation and test groups.

  An empty `validation_subjects` (or `test_subjects`) draws that split from
  the subjects not listed elsewhere, `ceil(fraction * number of subjects)` of
  them, with a permutation seeded by `seed`. An empty `train_subjects` takes
  every subject left over.

  Raises:
    ValueError: a listed subject is unknown or listed in two splits.
  """
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
    if not assigned[split] and fraction > 0:
      count = min(math.ceil(fraction * len(available)), len(pool))
      assigned[split] = tuple(sorted(pool[:count]))
      pool = pool[count:]
  if not assigned["train"]:
    assigned["train"] = tuple(sorted(pool))
  return assigned
