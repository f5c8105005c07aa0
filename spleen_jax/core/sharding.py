"""Data parallelism with `jax.sharding`: one mesh axis over every device.

Parameters and optimizer state are replicated; each batch is split along its
first axis over the `data` axis. With several hosts, each host feeds the rows
of the global batch that belong to its own devices, so every host reads only
its shard of the data. The same code runs on 1 CPU, N GPUs or a TPU slice.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """Builds a 1-D mesh with axis `data` over `devices` (default: all)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str) -> int:
  """Returns this host's share of a global batch.

  Raises:
    ValueError: the batch does not divide evenly over the devices.
  """
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
        f"{name} = {global_batch_size} does not divide over {num_devices} "
        f"devices: set it to a multiple of {num_devices}, e.g. "
        f"--config.{name}={max(1, global_batch_size // num_devices) * num_devices}.")
  return global_batch_size // jax.process_count()


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on all devices of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(local_batch: dict[str, np.ndarray],
                mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles global arrays split along axis 0 from this host's rows."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in local_batch.items()}


def local_rows(global_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Slices this host's rows out of a batch that every host built whole."""
  count = jax.process_count()
  index = jax.process_index()
  rows = next(iter(global_batch.values())).shape[0] // count
  return {name: value[index * rows:(index + 1) * rows]
          for name, value in global_batch.items()}
