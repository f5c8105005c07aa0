"""Data parallelism: 4 CPU devices against 1, and checkpoints across them.

JAX fixes the device count at start-up, so the 4-device side runs in a new
process with `XLA_FLAGS=--xla_force_host_platform_device_count=4`.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import smoke
from spleen_jax import checkpoints as checkpoints_lib
from spleen_jax import train
from spleen_jax.core import early_stopping
from spleen_jax.core import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]

# Trains one step on a fixed random batch of 8, saves the state, and prints
# the shard shapes of the batch and the device count as JSON.
STEP_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from configs import smoke
    from spleen_jax import checkpoints as checkpoints_lib, train
    from spleen_jax.core import early_stopping, sharding

    config = smoke.get_config()
    config.train.batch_size = 8
    mesh = sharding.make_mesh()
    state = train.create_train_state(config, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, 64, 64, 1)).astype(np.float32),
        "label": (rng.random((8, 64, 64)) > 0.9).astype(np.int32),
        "valid": np.ones(8, np.float32),
    }
    batch = sharding.shard_batch(batch, mesh)
    state, _ = train.make_train_step(config)(state, batch)
    checkpoints = checkpoints_lib.RunCheckpoints(sys.argv[1])
    checkpoints.save(1, state, early_stopping.EarlyStopping(), is_best=False)
    checkpoints.wait_until_finished()
    checkpoints.close()
    shards = [list(s.data.shape) for s in batch["image"].addressable_shards]
    print(json.dumps({"devices": jax.device_count(), "shards": shards}))
""")


def _run_step(workdir, num_devices):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  result = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(workdir)],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _restore(workdir):
  config = smoke.get_config()
  config.train.batch_size = 8
  checkpoints = checkpoints_lib.RunCheckpoints(workdir, read_only=True)
  state, _ = checkpoints.restore(train.create_train_state(config), step=1)
  checkpoints.close()
  return state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharding")
  return {n: (root / f"devices_{n}", _run_step(root / f"devices_{n}", n))
          for n in (1, 4)}


def test_batch_is_sharded_over_four_devices(runs):
  _, info = runs[4]
  assert info["devices"] == 4
  assert info["shards"] == [[2, 64, 64, 1]] * 4


def test_four_device_step_matches_one_device(runs):
  # Restoring both on this process's single device also checks that a
  # checkpoint saved on 4 devices restores on 1.
  one = _restore(runs[1][0])
  four = _restore(runs[4][0])
  leaves_one = jax.tree_util.tree_leaves_with_path(
      {"params": one.params, "batch_stats": one.batch_stats})
  leaves_four = jax.tree_util.tree_leaves(
      {"params": four.params, "batch_stats": four.batch_stats})
  for (path, a), b in zip(leaves_one, leaves_four):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-5, err_msg=jax.tree_util.keystr(path))
  assert int(four.step) == 1


def test_indivisible_batch_is_rejected():
  mesh = sharding.make_mesh()
  if mesh.devices.size == 1:
    # One device divides every batch; check the message on a fake count.
    mesh = jax.sharding.Mesh(np.array(jax.devices() * 3), ("data",))
  with pytest.raises(ValueError, match=r"train.batch_size = 4 does not divide "
                     r"over 3 devices: set it to a multiple of 3"):
    sharding.check_batch_size(4, mesh, "train.batch_size")
