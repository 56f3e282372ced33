"""bitjax: Toy Models of Superposition, dense and ternary, as one compiled JAX sweep.

The curated surface: configure a sweep (:class:`SweepConfig`), train it
(:class:`Trainer`, usually through ``python -m experiments.<name>``), load a finished run
(:func:`load_sweep`) and analyse effective weights with :mod:`bitjax.metrics`.
"""

from bitjax import data, layers, metrics, quant
from bitjax.checkpoint import CheckpointError, LoadedSweep, load_sweep
from bitjax.layers import KINDS, TiedToyModel
from bitjax.sweep import SweepConfig, Trainer, build_instances

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "CheckpointError",
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
]
