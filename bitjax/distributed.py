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

    Where no cluster manager tells JAX the process count and rank (plain VMs, a test on one
    machine), set ``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` on every process. CPU processes exchange data through Gloo.
    """
    detected = any(os.environ.get(k) for k in _CLUSTER_ENV)
    tpu_multi = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if not (force or tpu_multi or (detected and "TPU_WORKER_HOSTNAMES" not in os.environ)):
        return False
    kwargs = {}
    for name, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        value = os.environ.get(env)
        if value is not None:
            try:
                kwargs[name] = int(value)
            except ValueError:
                raise ValueError(f"{env} must be an integer, got {value!r}") from None
    try:  # cross-process collectives on CPU (gathering results to every host)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
        pass
    jax.distributed.initialize(**kwargs)
    return True


def is_main_process() -> bool:
    """Whether this process writes the files every process would write alike."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of a multi-host run reaches ``name`` (no-op on one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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
    return jax.tree.map(lambda x: put_array(x, inst if (split and np.ndim(x)) else rep), tree)


def put_array(x, sharding: jax.sharding.Sharding) -> jax.Array:
    """One host array (the same full value on every process) placed with ``sharding``."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_host(tree):
    """Fetch a (possibly multi-host) pytree to numpy on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def unpad(tree, n: int):
    """Drop padding: keep the first ``n`` rows of every leaf with a leading instance axis."""
    return jax.tree.map(lambda x: x[:n] if np.ndim(x) else x, tree)


def per_device(fn, mesh: jax.sharding.Mesh, split: tuple[bool, ...]):
    """``fn`` run on each device's own block of instances (``jax.shard_map``).

    ``split[i]``: argument ``i`` is a pytree of instance-split arrays (else replicated).
    Every output leaf is instance-split. Nothing moves between devices.
    """
    def specs(is_split):
        return P(AXIS) if is_split else P()

    return jax.shard_map(fn, mesh=mesh, in_specs=tuple(specs(s) for s in split),
                         out_specs=P(AXIS), check_vma=False)


def host_available_bytes() -> int | None:
    """The host's available memory in bytes (Linux MemAvailable), or None when unknown."""
    return _host_available_bytes()


def _host_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_memory_per_device(mesh: jax.sharding.Mesh) -> int | None:
    """Bytes a new allocation may still take on each of this process's mesh devices.

    Accelerators report their allocator's limit and use (the smallest free amount over the
    local devices is returned); CPU devices share the host's available memory, split evenly
    between them. ``None`` when neither is known.
    """
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    free = []
    for d in local:
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001 - some backends raise instead of returning None
            stats = None
        if stats and "bytes_limit" in stats:
            free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    if free:
        return min(free)
    host = _host_available_bytes()
    return None if host is None else host // max(1, len(local))


def min_over_processes(value: int | None) -> int | None:
    """The smallest ``value`` any process of the run holds (``None`` where none knows one).

    A collective in a multi-host run: every process must call it at the same point.
    """
    # Exchanged as int32, the integer JAX gathers without jax_enable_x64 (an int64 sentinel
    # would wrap around to -1 and read as a known value); values are counts and KiB.
    unknown = np.iinfo(np.int32).max
    if value is not None and not 0 <= value < unknown:
        raise ValueError(f"min_over_processes takes integers in [0, {unknown}), got {value}")
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    got = multihost_utils.process_allgather(np.int32(unknown if value is None else value))
    low = int(np.min(got))
    return None if low == unknown else low
