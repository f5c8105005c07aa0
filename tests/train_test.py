"""Real training steps on the shared frames, resume, evaluation and bad input.

These tests train the smoke config (a 2-level U-Net on 64x64 frames) on the
real AbdomenUS data. Runs in a new process go through `python -m
spleen_jax.main`, as a user would start them.
"""

import json
import os
import pathlib
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from configs import smoke
from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import evaluate
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.core import steps
from spleen_jax.data import datasets
from spleen_jax.data import input_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def config(shared_data_dir, tfds_data_dir):
  config = smoke.get_config()
  config.data.manual_dir = str(shared_data_dir)
  config.data.tfds_data_dir = str(tfds_data_dir)
  return config


def _run_main(workdir, *overrides, mode="train"):
  """Runs the entry point in a new process; returns the finished process."""
  command = [sys.executable, "-m", "spleen_jax.main",
             "--config", str(REPO / "configs/smoke.py"),
             "--workdir", str(workdir), f"--mode={mode}", *overrides]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def _data_flags(config):
  return [f"--config.data.manual_dir={config.data.manual_dir}",
          f"--config.data.tfds_data_dir={config.data.tfds_data_dir}"]


def _params(workdir, config, step):
  checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
  state, progress = checkpoints.restore(train.create_train_state(config),
                                        step=step)
  checkpoints.close()
  return state, progress


def test_train_steps_lower_loss(config):
  builder = datasets.prepare_builder(config.data)
  subjects = datasets.assign_subjects(builder, config.data)
  frames = datasets.load_split(builder, config.data, "train",
                               subjects["train"])
  batch = next(input_pipeline.eval_batches(frames, batch_size=4))
  state = train.create_train_state(config)
  step = jax.jit(steps.train_step)

  losses = []
  for _ in range(6):
    state, outputs = step(state, batch)
    losses.append(float(outputs["loss"]))
  assert losses[-1] < losses[0]
  assert int(state.step) == 6


def test_train_and_evaluate_writes_run(config, tmp_path):
  config.train.num_steps = 4
  config.train.eval_every_steps = 2
  summary = train.train_and_evaluate(config, str(tmp_path))

  assert summary["last_step"] == 4
  assert summary["subjects"]["validation"] == ("b",)
  assert (tmp_path / "config.json").exists()
  assert (tmp_path / "train_summary.json").exists()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
      "2", "4"]
  assert len(list((tmp_path / "best").iterdir())) == 1
  assert list(tmp_path.glob("events.out.tfevents.*"))

  # Evaluation restores the best checkpoint in a new process.
  result = _run_main(tmp_path, *_data_flags(config),
                     "--config.train.num_steps=4",
                     "--config.train.eval_every_steps=2", mode="evaluate")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "eval/test/metrics.json").read_text())
  assert report["split"] == "test"
  assert report["num_frames"] == 26
  assert report["step"] == summary["best_step"]
  assert 0.0 <= report["metrics"]["dice_spleen"] <= 1.0


def test_resume_matches_straight_run(config, tmp_path):
  flags = [*_data_flags(config), "--config.train.num_steps=4",
           "--config.train.eval_every_steps=3"]
  straight = _run_main(tmp_path / "straight", *flags)
  assert straight.returncode == 0, straight.stderr[-3000:]
  first = _run_main(tmp_path / "resumed", *flags,
                    "--config.train.max_steps_per_run=2")
  assert first.returncode == 0, first.stderr[-3000:]
  second = _run_main(tmp_path / "resumed", *flags)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Training from step 2 to 4" in second.stderr

  config.train.num_steps = 4
  config.train.eval_every_steps = 3
  state_a, progress_a = _params(tmp_path / "straight", config, 4)
  state_b, progress_b = _params(tmp_path / "resumed", config, 4)
  tree_a = flax.serialization.to_state_dict(state_a)
  tree_b = flax.serialization.to_state_dict(state_b)
  for path, a in jax.tree_util.tree_leaves_with_path(tree_a):
    b = tree_b
    for key in path:
      b = b[key.key]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6, err_msg=jax.tree_util.keystr(path))
  assert progress_a["early_stopping"] == progress_b["early_stopping"]


def test_unknown_config_key_is_rejected(tmp_path):
  result = _run_main(tmp_path, "--config.train.learning_rat=0.1")
  assert result.returncode != 0
  assert "learning_rat" in result.stderr
  assert "Invalid config override" in result.stderr
  assert "Did you mean \"learning_rate\"" in result.stderr


def test_unknown_class_is_rejected(config, tmp_path):
  config.data.classes = ("spleem",)
  with pytest.raises(ValueError, match="Unknown class name 'spleem'"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_missing_manual_dir_is_rejected(config, tmp_path):
  config.data.manual_dir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_incompatible_workdir_is_rejected(config, tmp_path):
  run_config.write_config(tmp_path, config)
  (tmp_path / "checkpoints" / "2").mkdir(parents=True)
  config.model.base_features = 8
  with pytest.raises(ValueError, match=r"model.base_features: saved 4, now 8"):
    train.train_and_evaluate(config, str(tmp_path))


def test_config_without_checkpoint_is_replaced(config, tmp_path):
  # A run that failed before its first checkpoint must not block the fix.
  run_config.write_config(tmp_path, config)
  config.model.base_features = 8
  run_config.check_config(tmp_path, config)
  (tmp_path / "best").mkdir()
  run_config.check_config(tmp_path, config)
  (tmp_path / "best" / "4").mkdir()
  with pytest.raises(ValueError, match="incompatible config"):
    run_config.check_config(tmp_path, config)


def test_failed_data_writes_no_config(config, tmp_path):
  config.data.foreground_fraction = 0.5
  config.data.train_subjects = ("h",)
  config.data.validation_subjects = ("b",)
  config.data.test_subjects = ("a",)
  with pytest.raises(ValueError, match="show spleen, but none of the 26 train frames"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_compatible_change_is_accepted(config, tmp_path):
  run_config.write_config(tmp_path, config)
  config.train.num_steps = 1000
  config.data.manual_dir = "/elsewhere"
  assert run_config.incompatible_keys(
      json.loads((tmp_path / "config.json").read_text()), config) == []


def test_restart_archives_previous_run(config, tmp_path):
  run_config.write_config(tmp_path, config)
  (tmp_path / "checkpoints").mkdir()
  destination = run_config.archive_run(tmp_path)
  assert (destination / "config.json").exists()
  assert (destination / "checkpoints").is_dir()
  assert not (tmp_path / "config.json").exists()


def test_evaluate_without_run_is_rejected(config, tmp_path):
  with pytest.raises(FileNotFoundError, match="No trained run in"):
    evaluate.evaluate(config, str(tmp_path))


def test_evaluate_without_checkpoint_is_rejected(config, tmp_path):
  run_config.write_config(tmp_path, config)
  with pytest.raises(FileNotFoundError, match="available steps: none"):
    evaluate.evaluate(config, str(tmp_path))


def test_empty_split_is_rejected(config, tmp_path):
  config.data.test_subjects = ()
  config.data.test_fraction = 0.0
  builder = datasets.prepare_builder(config.data)
  subjects = datasets.assign_subjects(builder, config.data)
  with pytest.raises(ValueError, match="The test split is empty"):
    datasets.load_split(builder, config.data, "test", subjects["test"])
