"""Several data sources: row allocation, per-source settings, one real run."""

import numpy as np
import pytest

from configs import mixture
from launch import export_folder
from spleen_jax import evaluate
from spleen_jax import train
from spleen_jax.data import input_pipeline
from spleen_jax.data import sources


def test_allocate_rows_by_largest_remainder():
  counts = input_pipeline.allocate_rows(
      {"abdomen_us": 1.0, "spleenex": 1.0, "phantom": 0.5}, 8)
  # Exact shares 3.2, 3.2, 1.6: floors 3, 3, 1 and the one row left goes
  # to the largest remainder, the phantom's 0.6.
  assert counts == {"abdomen_us": 3, "spleenex": 3, "phantom": 2}


def test_allocate_rows_rejects_starved_source():
  with pytest.raises(ValueError, match=r"\['phantom'\] get no row of the 2"):
    input_pipeline.allocate_rows({"a": 1.0, "b": 1.0, "phantom": 0.1}, 2)


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_allocate_rows_rejects_invalid_weight(weight):
  with pytest.raises(ValueError, match="must be positive and finite"):
    input_pipeline.allocate_rows({"a": 1.0, "b": weight}, 4)


def test_source_configs_merge_overrides():
  config = mixture.get_config()
  config.data.sources.spleenex.folder.root = "/data/spleenex"
  configs = sources.source_configs(config.data)
  assert sorted(configs) == ["abdomen_us", "phantom", "spleenex"]
  assert configs["spleenex"].folder.root == "/data/spleenex"
  assert configs["spleenex"].folder.layout == "auto"
  assert configs["abdomen_us"].validation_subjects == ("b",)
  assert configs["phantom"].name == "us_phantom"
  assert "sources" not in configs["phantom"]
  assert sources.sampling_weights(config.data) == {
      "abdomen_us": 1.0, "spleenex": 1.0, "phantom": 0.5}


def test_source_cannot_override_shared_setting():
  config = mixture.get_config()
  config.data.sources.phantom.image_size = (64, 64)
  with pytest.raises(ValueError, match=r"phantom sets \['image_size'\]"):
    sources.source_configs(config.data)


def test_source_unknown_setting_is_rejected():
  config = mixture.get_config()
  config.data.sources.phantom.phantom_confg = "tiny"
  with pytest.raises(ValueError, match="phantom.phantom_confg is not a data"):
    sources.source_configs(config.data)


def test_rows_come_from_their_source():
  frames = input_pipeline.Frames(
      images=np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(
          8, 1).repeat(8, 2),
      labels=np.zeros((6, 8, 8), np.uint8), boxes=np.zeros((6, 8), np.int32),
      file_names=[f"f{i}" for i in range(6)], subjects=["s"] * 6,
      sources=["a", "a", "a", "a", "b", "b"])
  dataset = input_pipeline.train_dataset(
      frames, batch_size=4, seed=0, normalization="unit",
      source_weights={"a": 1.0, "b": 1.0})
  for batch in dataset.take(5).as_numpy_iterator():
    values = np.round(batch["image"][:, 0, 0, 0] * 255).astype(int)
    # Rows 0-1 from source a (frames 0-3), rows 2-3 from b (frames 4-5).
    assert set(values[:2]) <= {0, 1, 2, 3}
    assert set(values[2:]) <= {4, 5}


def test_mixture_trains_and_scores_each_source(shared_data_dir, tfds_data_dir,
                                               phantom_tfds_dir, tmp_path):
  export_folder.export(shared_data_dir, tmp_path / "spleenex", "spleen",
                       "per_frame_folders")
  config = mixture.get_config()
  config.data.image_size = (64, 64)
  config.data.tfds_data_dir = str(tfds_data_dir)
  config.data.sources.abdomen_us.manual_dir = str(shared_data_dir)
  config.data.sources.spleenex.folder.root = str(tmp_path / "spleenex")
  config.data.sources.spleenex.validation_subjects = ("b",)
  config.data.sources.spleenex.test_subjects = ("h",)
  config.data.sources.phantom.phantom_config = "tiny"
  config.data.sources.phantom.tfds_data_dir = str(phantom_tfds_dir)
  config.model.depth = 2
  config.model.base_features = 4
  config.train.batch_size = 4
  config.eval.batch_size = 4
  config.train.num_steps = 1
  config.train.warmup_steps = 1
  config.train.eval_every_steps = 1
  config.train.log_every_steps = 1

  summary = train.train_and_evaluate(config, str(tmp_path / "run"))

  assert summary["last_step"] == 1
  assert summary["subjects"]["spleenex"]["validation"] == ("b",)
  validation = summary["last_validation"]
  assert validation["abdomen_us/frames"] == 8
  assert validation["spleenex/frames"] == 8
  assert validation["phantom/frames"] == 4
  for source in ("abdomen_us", "spleenex", "phantom"):
    assert 0.0 <= validation[f"{source}/dice_spleen"] <= 1.0

  # Evaluation scores the validation frames of all sources together.
  config.eval.figures = False
  config.eval.bootstrap_samples = 10
  report = evaluate.evaluate(config, str(tmp_path / "run"))
  assert report["num_frames"] == 20
  assert "spleenex:b" in report["subjects"]
  assert "abdomen_us:b" in report["subjects"]


def test_semi_with_sources_is_rejected(tmp_path):
  config = mixture.get_config()
  config.semi.enabled = True
  config.data.name = "abdomen_us"
  with pytest.raises(ValueError, match="does not support several data.sources"):
    train.validate_config(config)


def test_unknown_eval_source_is_rejected():
  config = mixture.get_config()
  config.eval.source = "spleenx"
  with pytest.raises(ValueError, match="eval.source 'spleenx' is not one of"):
    evaluate.load_source(config)


def test_export_rejects_non_empty_output(shared_data_dir, tmp_path):
  (tmp_path / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="is not empty: choose a new"):
    export_folder.export(shared_data_dir, tmp_path, "spleen",
                         "per_frame_folders")
  assert (tmp_path / "notes.txt").read_text() == "keep me"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_export_command_exits_with_message(shared_data_dir, tmp_path,
                                           capsys):
  (tmp_path / "x").write_text("")
  status = export_folder.main(["--manual_dir", str(shared_data_dir),
                               "--output", str(tmp_path)])
  assert status == 1
  assert "is not empty" in capsys.readouterr().err
