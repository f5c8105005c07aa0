"""Subject-wise split assignment."""

import pytest

from spleen_jax.data import splits

SUBJECTS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def test_listed_subjects_are_kept():
  assigned = splits.assign_subjects(["a", "b", "h"], validation_subjects=["b"],
                                    test_subjects=["h"])
  assert assigned == {"train": ("a",), "validation": ("b",), "test": ("h",)}


def test_fraction_split_is_seeded():
  first = splits.assign_subjects(SUBJECTS, seed=3)
  second = splits.assign_subjects(SUBJECTS, seed=3)
  other = [splits.assign_subjects(SUBJECTS, seed=s) for s in range(4, 10)]
  assert first == second
  assert any(o != first for o in other)


def test_fraction_split_groups_subjects():
  assigned = splits.assign_subjects(SUBJECTS, validation_fraction=0.2,
                                    test_fraction=0.3, seed=1)
  assert len(assigned["validation"]) == 2
  assert len(assigned["test"]) == 3
  every = [s for names in assigned.values() for s in names]
  assert sorted(every) == SUBJECTS


def test_unknown_subject_is_rejected():
  with pytest.raises(ValueError, match=r"data.test_subjects names subjects \['z'\]"):
    splits.assign_subjects(["a", "b"], test_subjects=["z"])


def test_subject_in_two_splits_is_rejected():
  with pytest.raises(ValueError, match="Subject 'a' is listed in "
                     "data.train_subjects and data.validation_subjects"):
    splits.assign_subjects(["a", "b"], train_subjects=["a"],
                           validation_subjects=["a"])


def test_zero_fraction_leaves_split_empty():
  assigned = splits.assign_subjects(["a", "b", "c"], validation_subjects=["b"],
                                    test_fraction=0.0)
  assert assigned["test"] == ()
  assert assigned["train"] == ("a", "c")
