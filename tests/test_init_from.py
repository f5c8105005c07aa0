"""Tests for `--config.init_from`: copying weights from another run.

A tiny one-class run on the `tiny` phantom is the source. A two-class model
initialised from it must copy every leaf but its 1x1 output convolution.
Creating a train state compiles the model's initialisation, which takes
seconds on a CPU, so the tests share one fresh two-class state.
"""

import logging

from flax import traverse_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import phantom as phantom_config
from spleen_jax import init_from
from spleen_jax import train

HEAD = ("Conv_0/kernel", "Conv_0/bias")


def _tiny_config(phantom_tfds_dir, classes=("spleen",)):
  config = phantom_config.get_config()
  config.data.phantom_config = "tiny"
  config.data.tfds_data_dir = str(phantom_tfds_dir)
  config.data.classes = classes
  config.data.image_size = (64, 64)
  config.model.depth = 2
  config.model.base_features = 4
  config.augment.enabled = False
  config.train.batch_size = 4
  config.train.num_steps = 2
  config.train.warmup_steps = 1
  config.train.eval_every_steps = 2
  config.train.log_every_steps = 1
  config.eval.batch_size = 4
  return config


@pytest.fixture(scope="module")
def source_run(phantom_tfds_dir, tmp_path_factory):
  """Trains a one-class run for two steps; returns its workdir."""
  workdir = tmp_path_factory.mktemp("source_run")
  summary = train.train_and_evaluate(_tiny_config(phantom_tfds_dir),
                                     str(workdir))
  assert summary["best_step"] == 2
  return workdir


@pytest.fixture(scope="module")
def two_class_config(phantom_tfds_dir, source_run):
  config = _tiny_config(phantom_tfds_dir, classes=("spleen", "kidney"))
  config.init_from = str(source_run)
  return config


@pytest.fixture(scope="module")
def fresh_state(two_class_config):
  return train.create_train_state(two_class_config)


def _flat(tree):
  return {path: np.asarray(leaf) for path, leaf in
          traverse_util.flatten_dict(dict(tree), sep="/").items()}


def test_copies_matching_leaves_and_keeps_new_head(
    two_class_config, fresh_state, source_run, caplog):
  with caplog.at_level(logging.INFO):
    state = init_from.initialize_from_run(fresh_state, two_class_config)
  source, step = init_from.load_best_variables(source_run)
  assert step == 2

  source_params = _flat(source["params"])
  fresh_params = _flat(fresh_state.params)
  params = _flat(state.params)
  assert set(HEAD) <= set(params)
  for path, value in params.items():
    if path in HEAD:
      np.testing.assert_array_equal(value, fresh_params[path], err_msg=path)
      assert value.shape[-1] == 3
      assert source_params[path].shape[-1] == 2
    else:
      np.testing.assert_array_equal(value, source_params[path], err_msg=path)
  source_stats = _flat(source["batch_stats"])
  for path, value in _flat(state.batch_stats).items():
    np.testing.assert_array_equal(value, source_stats[path], err_msg=path)
  # The copied weights differ from a fresh initialisation.
  assert not np.array_equal(params["ConvBlock_0/Conv_0/kernel"],
                            fresh_params["ConvBlock_0/Conv_0/kernel"])
  assert int(state.step) == 0

  messages = [record.getMessage() for record in caplog.records]
  for leaf, shapes in (("kernel", "(1, 1, 4, 3) here, (1, 1, 4, 2)"),
                       ("bias", "(3,) here, (2,)")):
    assert any(f"params/Conv_0/{leaf}: shape {shapes}" in message
               for message in messages), messages


def test_train_and_evaluate_uses_init_from(phantom_tfds_dir, source_run,
                                           tmp_path, caplog):
  config = _tiny_config(phantom_tfds_dir)
  config.init_from = str(source_run)
  config.train.num_steps = 1
  config.train.eval_every_steps = 1
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  assert any(record.getMessage().startswith("Initialised") and
             str(source_run) in record.getMessage()
             for record in caplog.records)


def test_resumed_state_is_kept(two_class_config, fresh_state):
  resumed = fresh_state.replace(step=5)
  assert init_from.initialize_from_run(resumed, two_class_config) is resumed


def test_empty_init_from_keeps_state(two_class_config, fresh_state):
  config = two_class_config.copy_and_resolve_references()
  config.init_from = ""
  assert init_from.initialize_from_run(fresh_state, config) is fresh_state


def test_missing_run_is_rejected(two_class_config, fresh_state, tmp_path):
  config = two_class_config.copy_and_resolve_references()
  config.init_from = str(tmp_path / "no_such_run")
  with pytest.raises(FileNotFoundError,
                     match=r"no_such_run not found.*--config.init_from"):
    init_from.initialize_from_run(fresh_state, config)


def test_run_without_best_checkpoint_is_rejected(two_class_config,
                                                 fresh_state, tmp_path):
  config = two_class_config.copy_and_resolve_references()
  config.init_from = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="has no best checkpoint under"):
    init_from.initialize_from_run(fresh_state, config)


def test_unrelated_model_is_rejected(two_class_config, fresh_state):
  # A model of other widths shares only the head's bias with the source.
  params = {"Conv_0": {"bias": jnp.zeros(2), "kernel": jnp.zeros((1, 1, 8, 2))},
            "ConvBlock_0": {"Conv_0": {"kernel": jnp.zeros((3, 3, 1, 8))}}}
  other = fresh_state.replace(params=params, batch_stats={})
  with pytest.raises(ValueError, match="fills only 2 of the 90 parameter"):
    init_from.initialize_from_run(other, two_class_config)
