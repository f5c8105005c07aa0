"""Prediction on real frames: alignment, outputs, measurements, bad input.

A tiny run of the smoke config (2 steps) is trained once for this module.
Its masks are meaningless; the tests check the mechanism. Alignment is
checked with a stand-in model that thresholds the frame, fed with a frame
painted from a real annotation.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import dicom_builder
from configs import smoke
from spleen_jax import predict
from spleen_jax import train
from spleen_jax.core import measure
from spleen_jax.data import annotation
from spleen_jax.data import legend

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAMES = ("b26", "a22", "h1")


@pytest.fixture(scope="module")
def run_dir(shared_data_dir, tfds_data_dir, tmp_path_factory):
  config = smoke.get_config()
  config.data.manual_dir = str(shared_data_dir)
  config.data.tfds_data_dir = str(tfds_data_dir)
  config.train.num_steps = 2
  workdir = tmp_path_factory.mktemp("run")
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope="module")
def images_dir(shared_data_dir) -> pathlib.Path:
  return shared_data_dir / "abdominal_US/RUS/images/test"


@pytest.fixture(scope="module")
def spleen_b26(shared_data_dir) -> np.ndarray:
  path = shared_data_dir / "abdominal_US/RUS/annotations/test/b26.png"
  with Image.open(path) as image:
    label_map, _ = annotation.decode_annotation(
        np.asarray(image.convert("RGB")))
  return label_map == legend.legend_id("spleen")


def _read_csv(path: pathlib.Path) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as file:
    return list(csv.DictReader(file))


def _read_mask(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image)


# Alignment with a stand-in model.


def _threshold_predictor(batch_size: int) -> predict.Predictor:
  """A predictor whose model calls pixels above mid-gray class 1."""
  config = smoke.get_config()
  config.data.image_size = (256, 256)
  config.data.normalization = "unit"

  @jax.jit
  def probabilities(images):
    logit = 40.0 * (images[..., 0] - 110.0 / 255.0)
    return jnp.stack([jax.nn.sigmoid(-logit), jax.nn.sigmoid(logit)], -1)

  return predict.Predictor(config, probabilities, batch_size)


def test_masks_align_with_input_frames(spleen_b26, images_dir, tmp_path):
  # The frame is painted from the annotation: 200 on the spleen, 20 in the
  # rest of the real frame's sector and 0 outside it.
  with Image.open(images_dir / "b26.jpg") as image:
    sector = measure.sector_mask(np.asarray(image.convert("L")))
  painted = np.select([spleen_b26, sector], [200, 20], 0).astype(np.uint8)
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  Image.fromarray(painted).save(inputs / "whole.png")
  # A crop of another aspect ratio, and the frame as DICOM with 0.3 mm pixels.
  crop = (slice(40, 400), slice(200, 640))
  Image.fromarray(painted[crop]).save(inputs / "crop.png")
  dicom_builder.write_dicom(
      inputs / "scan.dcm", [painted],
      regions=[dicom_builder.ultrasound_region((0, 0, 639, 479), 0.03)])
  files = [inputs / "whole.png", inputs / "crop.png", inputs / "scan.dcm"]
  output = tmp_path / "output"

  settings = predict.Settings(pixel_spacing_mm=(0.25, 0.25))
  summary = predict.predict_files(files, _threshold_predictor(2), output,
                                  settings)
  assert summary["num_frames"] == 3
  assert summary["num_failures"] == 0

  expected = {"whole": spleen_b26, "crop": spleen_b26[crop],
              "scan": spleen_b26}
  for name, truth in expected.items():
    mask = _read_mask(output / "masks" / f"{name}.png") == 1
    assert mask.shape == truth.shape, name
    # Resampling to 256x256 and back moves the edge by about a pixel; a
    # misplaced crop or offset would move the whole mask.
    union = np.sum(mask | truth)
    assert np.sum(mask & truth) / union > 0.95, name
    shift = (np.array(np.nonzero(mask)).mean(axis=1) -
             np.array(np.nonzero(truth)).mean(axis=1))
    assert np.all(np.abs(shift) < 0.5), (name, shift)

  rows = {row["output"]: row for row in _read_csv(output /
                                                  "measurements.csv")}
  truth_length, _ = measure.feret_diameter(spleen_b26)
  assert abs(float(rows["whole"]["length_px"]) - truth_length) < 3
  assert rows["whole"]["spacing_source"] == "option"
  assert float(rows["whole"]["length_mm"]) == pytest.approx(
      0.25 * float(rows["whole"]["length_px"]), rel=1e-3)
  assert rows["scan"]["spacing_source"] == "ultrasound_regions"
  assert float(rows["scan"]["length_mm"]) == pytest.approx(
      0.3 * float(rows["scan"]["length_px"]), rel=1e-3)
  assert float(rows["scan"]["area_mm2"]) == pytest.approx(
      0.09 * int(rows["scan"]["area_px"]), rel=1e-3)
  # The b26 spleen reaches the right edge of the sector.
  assert rows["whole"]["touches_edge"] == "true"
  assert rows["whole"]["splenomegaly"] == "false"


# The command line with a trained run.


def _run_cli(*arguments: str) -> subprocess.CompletedProcess:
  command = [sys.executable, "-m", "spleen_jax.predict", *arguments]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def test_cli_predicts_frames_and_reports_bad_file(run_dir, images_dir,
                                                  tmp_path):
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"")
  with Image.open(images_dir / "b26.jpg") as image:
    frame = np.asarray(image.convert("L"))
  cine = dicom_builder.write_dicom(
      tmp_path / "cine.dcm", [frame, frame[:, ::-1].copy()],
      regions=[dicom_builder.ultrasound_region((0, 0, 639, 479), 0.02)])
  output = tmp_path / "output"
  inputs = [str(images_dir / f"{stem}.jpg") for stem in FRAMES]
  process = _run_cli("--workdir", str(run_dir), "--input", *inputs,
                     str(bad), str(cine), "--output", str(output),
                     "--save_probabilities", "--batch_size", "4")

  assert process.returncode == 1, process.stderr[-3000:]
  assert "Predicted 5 frames from 5 input files" in process.stdout
  assert "1 failures" in process.stdout
  assert f"{bad}: the file is empty (0 bytes)" in process.stdout
  assert "frames/s" in process.stderr

  names = [*FRAMES, "cine_f0", "cine_f1"]
  for stem in names:
    mask = _read_mask(output / "masks" / f"{stem}.png")
    assert mask.shape == (480, 640)
    assert set(np.unique(mask)) <= {0, 1}
    with Image.open(output / "overlays" / f"{stem}.png") as overlay:
      assert (overlay.mode, overlay.size) == ("RGB", (640, 480))
    with Image.open(output / "probabilities" / f"{stem}.png") as image:
      assert image.size == (640, 480)
      assert np.asarray(image).dtype == np.uint16
  assert not (output / "masks" / "broken.png").exists()

  rows = _read_csv(output / "measurements.csv")
  assert [row["output"] for row in rows] == names
  assert all(row["class"] == "spleen" for row in rows)
  for row in rows[:3]:
    assert row["spacing_source"] == "none"
    assert row["length_mm"] == ""
  for row in rows[3:]:
    assert row["spacing_source"] == "ultrasound_regions"
    assert float(row["row_spacing_mm"]) == pytest.approx(0.2)
  report = json.loads((output / "measurements.json").read_text())
  assert report["num_frames"] == 5
  assert [f["file"] for f in report["failures"]] == [str(bad)]
  assert report["classes"] == ["background", "spleen"]


def test_outputs_kept_without_overwrite(run_dir, images_dir, tmp_path,
                                        capsys):
  output = tmp_path / "output"
  (output / "masks").mkdir(parents=True)
  earlier = output / "masks" / "b26.png"
  earlier.write_bytes(b"an earlier prediction")
  arguments = ["--workdir", str(run_dir), "--input",
               str(images_dir / "b26.jpg"), "--output", str(output)]

  assert predict.main(arguments) == 1
  assert "already contains outputs" in capsys.readouterr().err
  assert earlier.read_bytes() == b"an earlier prediction"
  assert sorted(p.name for p in output.rglob("*")) == ["b26.png", "masks"]

  assert predict.main([*arguments, "--overwrite"]) == 0
  assert _read_mask(earlier).shape == (480, 640)
  assert (output / "measurements.csv").exists()
  leftovers = [p for p in output.rglob(".*") if p.is_file()]
  assert leftovers == []
