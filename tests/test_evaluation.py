"""Evaluation reports of a tiny trained run on the real frames, and bad input.

One smoke run (4 steps) is trained per module and evaluated on the
validation split, whose subject `b` shows the spleen in one frame (b26).
"""

import csv
import importlib.util
import json
import math
import pathlib
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from configs import smoke
from spleen_jax import evaluate
from spleen_jax import run_config
from spleen_jax import train
from spleen_jax.evaluation import cross_validation
from spleen_jax.evaluation import folder as folder_lib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = pathlib.Path(__file__).resolve().parents[1]


def _import_script(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cross_validate = _import_script(REPO / "launch" / "cross_validate.py")


def _config(shared_data_dir, tfds_data_dir):
  config = smoke.get_config()
  config.data.manual_dir = str(shared_data_dir)
  config.data.tfds_data_dir = str(tfds_data_dir)
  config.train.num_steps = 4
  config.train.eval_every_steps = 2
  config.eval.split = "validation"
  config.eval.bootstrap_samples = 200
  config.eval.num_figure_frames = 3
  return config


@pytest.fixture(scope="module")
def trained_run(shared_data_dir, tfds_data_dir, tmp_path_factory):
  """Trains the smoke config for 4 steps and evaluates the validation split."""
  workdir = tmp_path_factory.mktemp("run")
  config = _config(shared_data_dir, tfds_data_dir)
  summary = train.train_and_evaluate(config, str(workdir))
  metrics = evaluate.evaluate(config, str(workdir))
  return workdir, summary, metrics


@pytest.fixture
def config(shared_data_dir, tfds_data_dir):
  return _config(shared_data_dir, tfds_data_dir)


def _read_rows(path):
  with open(path, newline="") as file:
    return list(csv.DictReader(file))


def _write_folder(folder, masks):
  """Writes synthetic 96x128 frames, each with its mask of class ids."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for name, mask in masks.items():
    frame = rng.integers(0, 120, mask.shape, dtype=np.uint8)
    frame[mask > 0] += 100
    Image.fromarray(frame).save(folder / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8)).save(folder / f"{name}_mask.png")


def _disk_mask(center_row, center_column, radius, value=1):
  rows, columns = np.mgrid[:96, :128]
  inside = (rows - center_row)**2 + (columns - center_column)**2 < radius**2
  return np.where(inside, value, 0).astype(np.uint8)


def test_report_files_written(trained_run):
  workdir, _, _ = trained_run
  out = workdir / "eval" / "validation"
  for name in ("metrics.json", "per_image.csv", "summary.json",
               "threshold_curve.csv"):
    assert (out / name).is_file(), name
  for name in ("training_curves.png", "examples.png", "worst_frames.png",
               "threshold_curves.png"):
    assert (out / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)
  assert not list(out.rglob("*.tmp"))


def test_metrics_json_keeps_pooled_scores(trained_run):
  workdir, summary, metrics = trained_run
  saved = json.loads(
      (workdir / "eval/validation/metrics.json").read_text())
  assert saved == metrics
  assert saved["split"] == "validation"
  assert saved["subjects"] == ["b"]
  assert saved["num_frames"] == 8
  assert saved["step"] == summary["best_step"]
  assert 0.0 <= saved["metrics"]["dice_spleen"] <= 1.0


def test_per_image_rows_at_original_resolution(trained_run):
  workdir, _, _ = trained_run
  rows = _read_rows(workdir / "eval/validation/per_image.csv")
  assert len(rows) == 8  # 8 frames, one foreground class
  assert {r["class"] for r in rows} == {"spleen"}
  for row in rows:
    counts = sum(int(row[k]) for k in ("true_positive", "false_positive",
                                       "false_negative", "true_negative"))
    assert counts == 480 * 640, row["file_name"]
  spleen = {r["file_name"]: r for r in rows}["b26.jpg"]
  assert int(spleen["area_truth"]) > 0


def test_summary_counts_missing_distances(trained_run):
  workdir, _, _ = trained_run
  rows = _read_rows(workdir / "eval/validation/per_image.csv")
  summary = json.loads((workdir / "eval/validation/summary.json").read_text())
  spleen = summary["classes"]["spleen"]
  missing = sum(1 for r in rows if math.isnan(float(r["hd95"])))
  assert spleen["frames"] == 8
  assert spleen["frames_with_class"] == 1
  assert spleen["missing_distance"] == missing
  assert spleen["metrics"]["hd95"]["missing"] == missing
  assert spleen["metrics"]["hd95"]["count"] == 8 - missing
  dice = spleen["metrics"]["dice"]
  assert dice["count"] == 8
  assert dice["ci95_low"] <= dice["mean"] <= dice["ci95_high"]
  assert dice["mean"] == pytest.approx(
      np.mean([float(r["dice"]) for r in rows]), abs=1e-5)
  assert "hd95_mm" not in spleen["metrics"]  # spacing unknown


def test_summary_compares_variants(trained_run):
  workdir, _, _ = trained_run
  summary = json.loads((workdir / "eval/validation/summary.json").read_text())
  variants = summary["variants"]
  assert set(variants) == {"plain", "largest_component", "fill_holes",
                           "tta_flip", "all", "configured"}
  for variant in variants.values():
    assert variant["frames"] == 8
    assert 0.0 <= variant["dice_mean"] <= 1.0
  # The smoke config keeps only the largest component, like the base config.
  configured = variants["configured"]
  assert configured["largest_component"]
  assert not configured["fill_holes"] and not configured["tta_flip"]
  assert configured["dice_mean"] == variants["largest_component"]["dice_mean"]
  assert configured["hd95_mean"] == variants["largest_component"]["hd95_mean"]
  assert summary["threshold_curve"]["best_threshold"] >= 0.0


def test_interrupted_evaluation_keeps_report(trained_run, config,
                                             monkeypatch):
  workdir, _, _ = trained_run
  out = workdir / "eval" / "validation"
  before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

  def interrupt(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(evaluate, "score_frames", interrupt)
  with pytest.raises(KeyboardInterrupt):
    evaluate.evaluate(config, str(workdir))
  after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
  assert after == before


def test_folder_with_tta_and_postprocessing(trained_run, config, tmp_path):
  workdir, _, _ = trained_run
  folder = tmp_path / "pairs"
  _write_folder(folder, {"x1": _disk_mask(40, 60, 20),
                         "x2": np.zeros((96, 128), np.uint8)})
  config.eval.folder = str(folder)
  config.eval.step = 2
  config.eval.tta_flip = True
  config.eval.largest_component = True
  config.eval.figures = False
  config.eval.pixel_spacing_mm = (0.5, 0.25)
  metrics = evaluate.evaluate(config, str(workdir))

  out = workdir / "eval" / "folder_pairs"
  assert metrics["num_frames"] == 2
  assert metrics["step"] == 2
  rows = _read_rows(out / "per_image.csv")
  assert [r["file_name"] for r in rows] == ["x1.png", "x2.png"]
  assert int(rows[0]["area_truth"]) == int(_disk_mask(40, 60, 20).sum())
  assert float(rows[0]["area_truth_mm2"]) == pytest.approx(
      int(rows[0]["area_truth"]) * 0.125)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["settings"]["pixel_spacing_mm"] == [0.5, 0.25]
  assert "hd95_mm" in summary["classes"]["spleen"]["metrics"]
  configured = summary["variants"]["configured"]
  assert configured["tta_flip"] and configured["largest_component"]
  assert not configured["fill_holes"]
  assert not (out / "figures" / "examples.png").exists()


def test_workdir_without_checkpoint_is_rejected(config, tmp_path):
  run_config.write_config(tmp_path, config)
  with pytest.raises(FileNotFoundError,
                     match=f"No checkpoint in {re.escape(str(tmp_path))}.*"
                     "Train first"):
    evaluate.evaluate(config, str(tmp_path))


def test_run_without_best_checkpoint_is_rejected(trained_run, config,
                                                 tmp_path):
  workdir, _, _ = trained_run
  shutil.copy(workdir / "config.json", tmp_path / "config.json")
  shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
  with pytest.raises(FileNotFoundError, match=(
      f"No best checkpoint under {re.escape(str(tmp_path / 'best'))}.*"
      r"Pass --config.eval.step=4")):
    evaluate.evaluate(config, str(tmp_path))


def test_incompatible_config_is_rejected(trained_run, config):
  workdir, _, _ = trained_run
  config.model.base_features = 8
  with pytest.raises(ValueError, match=(
      f"Workdir {re.escape(str(workdir))} contains a run with an "
      "incompatible config "
      r"\(model.base_features: saved 4, now 8\).*--restart")):
    evaluate.evaluate(config, str(workdir))


def test_checkpoint_of_other_model_is_rejected(trained_run, config, tmp_path):
  # The config file claims the new model, but the checkpoint has the old one.
  workdir, _, _ = trained_run
  shutil.copytree(workdir / "best", tmp_path / "best")
  config.model.base_features = 8
  config.eval.folder = str(tmp_path / "pairs")
  _write_folder(tmp_path / "pairs", {"x1": _disk_mask(40, 60, 20)})
  run_config.write_config(tmp_path, config)
  with pytest.raises(ValueError, match=(
      f"Checkpoint {re.escape(str(tmp_path / 'best'))}/4 does not fit the "
      "current model "
      "config.*Use the config the run was trained with")):
    evaluate.evaluate(config, str(tmp_path))


def test_split_without_target_is_rejected(trained_run, config):
  workdir, _, _ = trained_run
  config.eval.split = "test"
  config.eval.allow_absent_target = False
  with pytest.raises(ValueError, match=(
      r"The test split \(subjects h; 26 frames from .*abdomen_us.*\) has no "
      "pixel of the target class 'spleen'.*"
      "--config.eval.allow_absent_target=True")):
    evaluate.evaluate(config, str(workdir))


def test_folder_without_target_is_rejected(trained_run, config, tmp_path):
  workdir, _, _ = trained_run
  _write_folder(tmp_path, {"x1": np.zeros((96, 128), np.uint8)})
  config.eval.folder = str(tmp_path)
  config.eval.allow_absent_target = False
  with pytest.raises(ValueError, match=(
      f"No mask in {re.escape(str(tmp_path))} .* contains the target class "
      "'spleen'")):
    evaluate.evaluate(config, str(workdir))


def test_mask_with_unknown_class_id_is_rejected(trained_run, config,
                                                tmp_path):
  workdir, _, _ = trained_run
  _write_folder(tmp_path, {"x1": _disk_mask(40, 60, 20, value=7)})
  config.eval.folder = str(tmp_path)
  with pytest.raises(ValueError, match=(
      f"Mask {re.escape(str(tmp_path / 'x1_mask.png'))} contains values "
      r"\[7\] outside the "
      r"class ids 0 to 1 \(0=background, 1=spleen\)\. Save the mask with "
      "training class ids")):
    evaluate.evaluate(config, str(workdir))


def test_folder_errors_name_the_file(tmp_path):
  classes = ("background", "spleen")
  with pytest.raises(FileNotFoundError, match="Evaluation folder .* not found"):
    folder_lib.load_folder(tmp_path / "nowhere", classes, (64, 64))
  with pytest.raises(FileNotFoundError, match="No frames in"):
    folder_lib.load_folder(tmp_path, classes, (64, 64))

  _write_folder(tmp_path, {"x1": _disk_mask(40, 60, 20)})
  (tmp_path / "x1_mask.png").rename(tmp_path / "x2_mask.png")
  with pytest.raises(FileNotFoundError, match=(
      f"{re.escape(str(tmp_path / 'x1_mask.png'))} not found")):
    folder_lib.load_folder(tmp_path, classes, (64, 64))

  (tmp_path / "x2_mask.png").unlink()
  Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(
      tmp_path / "x1_mask.png")
  with pytest.raises(ValueError, match="x1_mask.png is a RGB image"):
    folder_lib.load_folder(tmp_path, classes, (64, 64))

  Image.fromarray(np.zeros((50, 60), np.uint8)).save(tmp_path / "x1_mask.png")
  with pytest.raises(ValueError, match="x1_mask.png is 60x50 pixels but its "
                     "frame .*x1.png is 128x96"):
    folder_lib.load_folder(tmp_path, classes, (64, 64))


def test_unknown_split_is_rejected(config, tmp_path):
  config.eval.split = "holdout"
  with pytest.raises(ValueError, match="Unknown eval.split 'holdout'"):
    evaluate.evaluate(config, str(tmp_path))


def test_cross_validation_report_pools_folds(trained_run, tmp_path):
  # Two copies of the run's validation report stand in for two folds.
  workdir, _, _ = trained_run
  for fold in range(2):
    shutil.copytree(workdir / "eval" / "validation",
                    tmp_path / f"fold_{fold}" / "eval" / "validation")
  report = cross_validation.aggregate(tmp_path, 2, bootstrap_samples=100)
  cross_validation.write_report(tmp_path, report)

  single = json.loads(
      (workdir / "eval/validation/summary.json").read_text())
  fold_dice = single["variants"]["configured"]["dice_mean"]
  assert report["target_class"] == "spleen"
  assert [f["fold"] for f in report["folds"]] == [0, 1]
  assert report["folds"][1]["validation_subjects"] == ["b"]
  assert report["folds"][0]["dice_mean"] == pytest.approx(fold_dice)
  assert report["fold_dice_mean"]["std"] == pytest.approx(0.0)
  assert report["pooled"]["frames"] == 16
  assert report["pooled"]["frames_with_class"] == 2
  # per_image.csv keeps 6 significant digits.
  assert report["pooled"]["metrics"]["dice"]["mean"] == pytest.approx(
      fold_dice, abs=1e-5)
  saved = json.loads((tmp_path / "cv_report.json").read_text())
  assert saved["num_folds"] == 2
  markdown = (tmp_path / "cv_report.md").read_text()
  assert "| 1 | b | 8 | 1 |" in markdown
  assert "| all | | 16 | 2 |" in markdown


def test_cross_validation_missing_fold_is_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match=(
      f"{re.escape(str(tmp_path / 'fold_0'))}.*summary.json not found: fold "
      "0 has no validation report")):
    cross_validation.aggregate(tmp_path, 2, "spleen")


def test_cross_validate_script_builds_fold_commands(tmp_path):
  args, overrides = cross_validate.parse_args([
      "--config", "configs/smoke.py", "--root", str(tmp_path),
      "--num_folds", "3", "--config.train.num_steps=4"])
  command = cross_validate.fold_command(args, overrides, 2)
  assert f"--workdir={tmp_path / 'fold_2'}" in " ".join(command).replace(
      "--workdir ", "--workdir=")
  assert "--config.data.num_folds=3" in command
  assert "--config.data.fold=2" in command
  assert "--config.eval.split=validation" in command
  assert command[-1] == "--config.train.num_steps=4"
  with pytest.raises(SystemExit):
    cross_validate.parse_args(["--config", "c.py", "--root", "r",
                               "--num_folds", "2", "--steps=3"])


def test_target_class_follows_config():
  config = smoke.get_config()
  assert evaluate.target_class(config) == "spleen"
  config.data.classes = ("liver", "kidney", "spleen")
  config.train.target_class = "mean"
  assert evaluate.target_class(config) == "spleen"
  config.data.classes = ("liver", "kidney")
  assert evaluate.target_class(config) == "liver"
  config.eval.target_class = "kidney"
  assert evaluate.target_class(config) == "kidney"


def test_unknown_target_class_is_rejected(config, tmp_path):
  config.eval.target_class = "pancreas"
  with pytest.raises(ValueError, match=(
      r"eval.target_class 'pancreas' is not in data.classes \('spleen',\)")):
    evaluate.evaluate(config, str(tmp_path))
