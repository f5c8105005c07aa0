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


def test_folds_validate_each_subject_once():
  folds = [splits.assign_subjects(SUBJECTS, test_subjects=["j"], num_folds=3,
                                  fold=k, seed=5) for k in range(3)]
  validated = [s for f in folds for s in f["validation"]]
  assert sorted(validated) == SUBJECTS[:-1]
  assert sorted(len(f["validation"]) for f in folds) == [3, 3, 3]
  for assigned in folds:
    assert assigned["test"] == ("j",)
    assert not set(assigned["train"]) & set(assigned["validation"])
    assert sorted(assigned["train"] + assigned["validation"]) == SUBJECTS[:-1]


def test_folds_are_seeded():
  first = splits.assign_subjects(SUBJECTS, num_folds=4, fold=1, seed=2,
                                 test_fraction=0.0)
  again = splits.assign_subjects(SUBJECTS, num_folds=4, fold=1, seed=2,
                                 test_fraction=0.0)
  others = [splits.assign_subjects(SUBJECTS, num_folds=4, fold=1, seed=s,
                                   test_fraction=0.0) for s in range(3, 9)]
  assert first == again
  assert any(o != first for o in others)
  assert first["test"] == ()


def test_folds_draw_test_split_by_fraction():
  assigned = splits.assign_subjects(SUBJECTS, num_folds=2, fold=0,
                                    test_fraction=0.2, seed=1)
  assert len(assigned["test"]) == 2
  every = [s for names in assigned.values() for s in names]
  assert sorted(every) == SUBJECTS


@pytest.mark.parametrize("kwargs,message", [
    ({"num_folds": 1}, "data.num_folds is 1: set it to 2 or more"),
    ({"num_folds": 3, "fold": 3},
     "data.fold 3 is out of range for data.num_folds 3"),
    ({"num_folds": 2, "validation_subjects": ["a"]},
     r"--config.data.validation_subjects=\(\)"),
    ({"num_folds": 4, "test_subjects": ["a"]},
     r"data.num_folds is 4 but only 2 subjects are left"),
])
def test_invalid_folds_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    splits.assign_subjects(["a", "b", "c"], test_fraction=0.0, **kwargs)
