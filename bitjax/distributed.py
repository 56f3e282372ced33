"""Placing a sweep on every device and host with JAX's own sharding.

The instance axis is the only one that is ever split: a 1-D mesh named ``"instance"`` over
all devices (every host's, after :func:`initialize`), arrays with a leading instance axis
get ``NamedSharding(mesh, P("instance"))`` and everything else is replicated. The instance
count is padded to a multiple of the device count by repeating the last instance; callers
drop the padding from every output (:func:`unpad`).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "instance"

_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID",
                "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(force: bool = False) -> bool:
    """Join a multi-host run via ``jax.distributed.initialize()``.

    Called with ``force=True`` (the ``--distributed`` flag), or automatically when the
    environment names a cluster (Slurm, Open MPI, a multi-host TPU slice, or an explicit
    ``JAX_COORDINATOR_ADDRESS``). Returns whether it initialised. Must run before any other
    JAX call.
    """
    detected = any(os.environ.get(k) for k in _CLUSTER_ENV)
    tpu_multi = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if not (force or tpu_multi or (detected and "TPU_WORKER_HOSTNAMES" not in os.environ)):
        return False
    jax.distributed.initialize()
    return True


def make_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D ``"instance"`` mesh over all (or the first ``n_devices``) devices."""
    devices = jax.devices()
    if n_devices is not None:
        if not 1 <= n_devices <= len(devices):
            raise ValueError(f"n_devices must be in [1, {len(devices)}], got {n_devices}")
        devices = devices[:n_devices]
    return jax.sharding.Mesh(np.array(devices), (AXIS,),
                             axis_types=(jax.sharding.AxisType.Auto,))


def padded_count(n: int, mesh: jax.sharding.Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh size."""
    d = mesh.size
    return -(-n // d) * d


def pad(x: np.ndarray, n_padded: int) -> np.ndarray:
    """Pad a leading instance axis to ``n_padded`` by repeating the last instance."""
    x = np.asarray(x)
    if x.shape[0] == n_padded:
        return x
    reps = np.repeat(x[-1:], n_padded - x.shape[0], axis=0)
    return np.concatenate([x, reps], axis=0)


def instance_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put(tree, mesh: jax.sharding.Mesh, *, split: bool = True):
    """Place a host pytree on the mesh.

    With ``split`` every leaf with a leading (instance) axis is split over the mesh and
    0-d leaves are replicated; without it everything is replicated. Works on every host of a
    multi-host run: each host passes the full array and keeps the shards its devices own.
    """
    inst, rep = instance_sharding(mesh), replicated(mesh)

    def place(x):
        x = np.asarray(x)
        s = inst if (split and x.ndim) else rep
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(place, tree)


def to_host(tree):
    """Fetch a (possibly multi-host) pytree to numpy on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def unpad(tree, n: int):
    """Drop padding: keep the first ``n`` rows of every leaf with a leading instance axis."""
    return jax.tree.map(lambda x: x[:n] if np.ndim(x) else x, tree)
