"""bitjax: Toy Models of Superposition, dense and ternary, as one compiled JAX sweep.

The curated surface: configure a sweep (:class:`SweepConfig`), train it (:class:`Trainer`,
usually through ``python -m experiments.<name>``), load a finished run (:func:`load_sweep`)
and analyse effective weights with :mod:`bitjax.metrics`. On a CPU,
:func:`use_cpu_devices` (called before any computation) gives one device per core.
Importing bitjax has no side effects.
"""

from bitjax import data, layers, metrics, quant
from bitjax.checkpoint import CheckpointError, LoadedSweep, load_sweep
from bitjax.config import AXES, SweepConfig, build_instances
from bitjax.devices import use_cpu_devices
from bitjax.layers import KINDS, TiedToyModel
from bitjax.trainer import ChunkInfo, Trainer

# run_sweep (bitjax.run) is wired in here at integration:
# from bitjax.run import run_sweep

__version__ = "0.1.0"

__all__ = [
    "AXES",
    "KINDS",
    "CheckpointError",
    "ChunkInfo",
    "LoadedSweep",
    "SweepConfig",
    "TiedToyModel",
    "Trainer",
    "build_instances",
    "data",
    "layers",
    "load_sweep",
    "metrics",
    "quant",
    "use_cpu_devices",
]
