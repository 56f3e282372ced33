"""Experiments: one module per question, ``python -m experiments.<name>``.

On a CPU, XLA runs most of a step on one core. Before JAX starts, this package asks XLA to
expose one CPU device per core (``--xla_force_host_platform_device_count``), so the sweep's
instance axis is split over every core exactly as it is split over GPUs or TPU cores. The
flag only affects the CPU platform. Set ``BITJAX_CPU_DEVICES`` to choose the count (1 turns
it off); an ``XLA_FLAGS`` that already sets the flag wins.
"""

import os as _os

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _n = int(_os.environ.get("BITJAX_CPU_DEVICES", _os.cpu_count() or 1))
    if _n > 1:
        _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_FLAG}={_n}".strip()
