"""One CPU device per core, for library users who train on a CPU.

XLA runs most of a small step on one core. With one JAX device per core, the trainer
splits the sweep's instance axis over every core exactly as it splits it over GPUs.
Importing bitjax changes nothing (no side effects on import); call
:func:`use_cpu_devices` once, right after ``import jax`` and before any computation.
"""

from __future__ import annotations

import os

import jax


def use_cpu_devices(n: int | None = None) -> int:
    """Ask JAX for ``n`` CPU devices (default: one per core) via ``jax_num_cpu_devices``.

    Only the CPU platform is affected; GPUs and TPUs are used as they are. Calling it again
    with the count the backend already has is a no-op.

    Args:
      n: the number of CPU devices (default ``os.cpu_count()``).

    Returns:
      The number of CPU devices requested.

    Raises:
      ValueError: ``n`` is not a positive integer.
      RuntimeError: JAX already started its backends with another CPU device count (the
        count is fixed when the first computation runs).

    Example::

        import jax
        import bitjax
        bitjax.use_cpu_devices()      # before anything computes
        trainer = bitjax.Trainer(cfg)  # the instance axis is split over every core
    """
    if n is None:
        n = os.cpu_count() or 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer number of CPU devices, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        # The backends are running: the count can no longer change. Fine if it matches.
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"use_cpu_devices({n}): JAX has already started with {have} CPU device(s), "
                "and the count cannot change once a computation has run. Call "
                "bitjax.use_cpu_devices right after `import jax`, before any JAX operation "
                "(or set XLA_FLAGS=--xla_force_host_platform_device_count=N before "
                "starting Python)") from None
    return n
