"""Placing the training state and the batches on a `jax.sharding.Mesh` of every device.

One mesh axis, "data", over all devices of all hosts. Batches are always split along their rows
on "data". Parameters and optimizer state are either:
  - "data" parallelism: replicated on every device (the default);
  - "fsdp": each leaf split along its largest axis whose size the device count divides, and
    replicated when no axis qualifies (scalars, small biases). XLA inserts the all-gathers and
    reduce-scatters; the step's code is the same for both.
Each host feeds only its own rows (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PARALLELISMS = ("data", "fsdp")
DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A one-axis mesh ("data") over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def fsdp_spec(shape: tuple[int, ...], num_devices: int) -> P:
  """Shard the largest axis divisible by `num_devices`; replicate if there is none."""
  best = None
  for axis, size in enumerate(shape):
    if size % num_devices == 0 and size >= num_devices and (best is None or size > shape[best]):
      best = axis
  if best is None or num_devices == 1:
    return P()
  spec = [None] * len(shape)
  spec[best] = DATA_AXIS
  return P(*spec)


def state_shardings(abstract_state, mesh: Mesh, parallelism: str):
  """A NamedSharding for every leaf of `abstract_state` (arrays or ShapeDtypeStructs)."""
  if parallelism not in PARALLELISMS:
    raise ValueError(f"parallelism={parallelism!r} is unknown; allowed: {', '.join(PARALLELISMS)}.")
  num_devices = mesh.devices.size

  def leaf_sharding(leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    spec = fsdp_spec(shape, num_devices) if parallelism == "fsdp" else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(leaf_sharding, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over "data"; the other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy arrays [local_rows, ...] -> global jax.Arrays [global_rows, ...].

  Every host passes its own rows; the global batch is their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in local_batch.items()}


def describe(mesh: Mesh) -> str:
  """'8 x cpu over 1 host(s), mesh {'data': 8}' style one-liner."""
  devices = mesh.devices.ravel()
  kinds = sorted({d.device_kind for d in devices})
  return (f"{devices.size} x {'/'.join(kinds)} ({devices[0].platform}) over "
          f"{jax.process_count()} host(s), mesh {dict(mesh.shape)}")


def from_process_0(value: int) -> int:
  """Process 0's `value` on every process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
