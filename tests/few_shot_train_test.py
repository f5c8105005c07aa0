"""Few-shot training on the shared frames: foreground sampling, mean teacher,
self-supervised pretraining and collapse detection."""

import json
import logging

import jax
import numpy as np
import pytest

from configs import smoke
from configs import ssl_pretrain
from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import init_from as init_from_lib
from spleen_jax import pretrain
from spleen_jax import train
from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline


@pytest.fixture
def config(shared_data_dir, tfds_data_dir):
  config = smoke.get_config()
  config.data.manual_dir = str(shared_data_dir)
  config.data.tfds_data_dir = str(tfds_data_dir)
  return config


def test_unlabeled_frames_leave_out_held_out_subjects(config):
  builder = datasets.prepare_builder(config.data)
  frames = datasets.load_unlabeled(builder, config.data,
                                   exclude_subjects=("b", "h"))
  assert set(frames.subjects) == {"a", "c", "d", "e", "f", "i", "j", "k"}
  assert not frames.labels.any()
  unannotated = datasets.load_unlabeled(builder, config.data,
                                        only_unannotated_subjects=True)
  assert set(unannotated.subjects) == {"c", "d", "e", "f", "i", "j", "k"}
  assert len(unannotated) == 404


def test_semi_supervised_run_resumes_with_teacher(config, tmp_path):
  config.train.num_steps = 4
  config.train.eval_every_steps = 2
  config.semi.enabled = True
  config.semi.batch_size = 4
  config.data.foreground_fraction = 0.5
  config.data.foreground_crop_probability = 0.5
  summary = train.train_and_evaluate(config, str(tmp_path))

  assert summary["last_step"] == 4
  validation = summary["last_validation"]
  assert validation["step"] == 4
  assert validation["positive_frames_spleen"] == 1
  assert validation["empty_on_positive_spleen"] in (0.0, 1.0)
  # The checkpoint contains a teacher that differs from the student.
  checkpoints = checkpoints_lib.RunCheckpoints(tmp_path, read_only=True)
  state, _ = checkpoints.restore(train.create_train_state(config))
  checkpoints.close()
  student = jax.tree.leaves(state.params)
  teacher = jax.tree.leaves(state.teacher["params"])
  assert len(student) == len(teacher)
  assert any(not np.allclose(s, t) for s, t in zip(student, teacher))


def test_pretrained_weights_initialise_segmentation(config, tmp_path):
  pretrain_config = ssl_pretrain.get_config()
  pretrain_config.data = config.data
  pretrain_config.model = config.model
  pretrain_config.train.batch_size = 4
  pretrain_config.train.num_steps = 2
  pretrain_config.train.eval_every_steps = 2
  summary = pretrain.pretrain(pretrain_config, tmp_path / "ssl")
  assert summary["last_step"] == 2
  assert summary["num_frames"] == 404

  config.init_from = str(tmp_path / "ssl")
  state = init_from_lib.initialize_from_run(train.create_train_state(config),
                                            config)
  source, step = init_from_lib.load_best_variables(tmp_path / "ssl")
  assert step == 2
  encoder = state.params["ConvBlock_0"]["Conv_0"]["kernel"]
  np.testing.assert_array_equal(
      np.asarray(encoder),
      np.asarray(source["params"]["ConvBlock_0"]["Conv_0"]["kernel"]))


def test_collapse_is_reported_with_frame_names(config, caplog):
  frames = input_pipeline.Frames(
      images=np.zeros((3, 4, 4, 1), np.uint8),
      labels=np.zeros((3, 4, 4), np.uint8), boxes=np.zeros((3, 8), np.int32),
      file_names=["b1.jpg", "b2.jpg", "b3.jpg"], subjects=["b"] * 3)
  # [frame, class, (predicted, true)]: b1 shows spleen and gets none, b2
  # shows it and gets some, b3 has none and gets 5 pixels.
  pixels = np.array([[[16, 10], [0, 6]],
                     [[12, 12], [4, 4]],
                     [[11, 16], [5, 0]]])
  with caplog.at_level(logging.WARNING):
    scores = train.collapse_scores(pixels, frames, config)
  assert scores["positive_frames_spleen"] == 2
  assert scores["empty_on_positive_spleen"] == 0.5
  assert scores["false_positive_frames_spleen"] == 1
  assert "b1.jpg" in caplog.text
  assert "b2.jpg" not in caplog.text


@pytest.mark.parametrize("key, value, message", [
    ("data.foreground_class", "liver", "data.foreground_class 'liver' is not"),
    ("data.foreground_fraction", 1.5, "foreground_fraction must lie in"),
    ("data.foreground_fraction", 0.1, "0.1 of train.batch_size 4 rounds to"),
    ("data.foreground_crop_probability", 2.0, "crop_probability must lie"),
    ("loss.tversky_alpha", -1.0, "must be non-negative"),
    ("loss.class_weights", (1.0, 2.0, 3.0), "class_weights has 3 values"),
    ("semi.loss", "entropy", "Unknown semi.loss 'entropy'"),
    ("data.name", "us_phantom", "semi.enabled needs the unlabelled AbdomenUS"),
])
def test_few_shot_settings_are_checked(config, tmp_path, key, value,
                                       message):
  section, name = key.split(".")
  config[section][name] = value
  config.semi.enabled = key in ("semi.loss", "data.name")
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_pretrain_needs_ssl_config(config, tmp_path):
  with pytest.raises(ValueError, match="configs/ssl_pretrain.py"):
    pretrain.pretrain(config, tmp_path)
  assert not (tmp_path / "config.json").exists()


def test_summary_writes_nan_as_null(tmp_path):
  path = tmp_path / "summary.json"
  train._write_json(path, {"a": float("nan"), "b": [1.0, float("inf")],
                           "c": {"d": 0.5}})
  assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None],
                                          "c": {"d": 0.5}}


def test_unlabeled_split_missing_is_rejected(config, phantom_tfds_dir):
  config.data.name = "us_phantom"
  config.data.phantom_config = "tiny"
  config.data.tfds_data_dir = str(phantom_tfds_dir)
  builder = datasets.prepare_builder(config.data)
  with pytest.raises(ValueError, match="has no 'unlabeled' split"):
    datasets.load_unlabeled(builder, config.data)
