"""Fixtures shared by the tests: the real AbdomenUS data and the phantom."""

import os
from pathlib import Path

import pytest

# The data stays beside the repository, outside version control, because the
# release's licence has not been checked for redistribution.
SHARED_DATA_DIR = (
    Path(__file__).resolve().parents[2] / "shared/data/abdominal_us")
REQUIRE_DATA_ENV = "SPLEEN_JAX_REQUIRE_DATA"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
  """Returns the folder that contains `abdominal_US/`.

  Skips the test when the folder is missing, or fails it when the environment
  sets SPLEEN_JAX_REQUIRE_DATA=1.
  """
  if (SHARED_DATA_DIR / "abdominal_US").is_dir():
    return SHARED_DATA_DIR

  reason = (
      f"AbdomenUS data not found: expected {SHARED_DATA_DIR}/abdominal_US "
      "with the RUS frames and annotations.")
  if os.environ.get(REQUIRE_DATA_ENV) == "1":
    pytest.fail(f"{reason} {REQUIRE_DATA_ENV}=1 requires it.")
  pytest.skip(f"{reason} Set {REQUIRE_DATA_ENV}=1 to fail instead of skip.")


@pytest.fixture(scope="session")
def tfds_data_dir(shared_data_dir, tmp_path_factory) -> Path:
  """Prepares the AbdomenUS TFDS dataset once per session; returns its dir."""
  # Imported here so that tests without TensorFlow collect quickly.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from spleen_jax.data import abdomen_us  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
  builder = abdomen_us.Builder(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(shared_data_dir)))
  return data_dir


@pytest.fixture(scope="session")
def phantom_tfds_dir(tmp_path_factory) -> Path:
  """Builds the `tiny` us_phantom config (16 frames) once; returns its dir."""
  from spleen_jax.data import us_phantom  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path_factory.mktemp("phantom_tensorflow_datasets")
  builder = us_phantom.Builder(config="tiny", data_dir=str(data_dir))
  builder.download_and_prepare()
  return data_dir
