"""bitjax: Toy Models of Superposition, dense and ternary, as one compiled JAX sweep.

The curated surface: configure a sweep (:class:`SweepConfig`), train it into a run folder
with checkpoints and resume (:func:`run_sweep`; the CLI ``python -m experiments.<name>`` is
a thin shell over it), load a finished run (:func:`load_sweep`) as a labelled grid
(``sweep.to_xarray()``) and analyse effective weights with :mod:`bitjax.metrics`. On a CPU,
:func:`use_cpu_devices` (called before any computation) gives one device per core.
Importing bitjax has no side effects.
"""

from bitjax import analysis, convergence, data, layers, metrics, quant, results, stats
from bitjax.checkpoint import CheckpointError
from bitjax.config import AXES, SweepConfig, build_instances
from bitjax.devices import use_cpu_devices
from bitjax.layers import KINDS, TiedToyModel
from bitjax.results import LoadedSweep, SweepCollection, load_experiment, load_sweep
from bitjax.run import Interrupted, RunError, RunResult, estimate_seconds, run_sweep
from bitjax.trainer import ChunkInfo, Trainer

__version__ = "0.1.0"

__all__ = [
    "AXES",
    "KINDS",
    "CheckpointError",
    "ChunkInfo",
    "Interrupted",
    "LoadedSweep",
    "RunError",
    "RunResult",
    "SweepCollection",
    "SweepConfig",
    "TiedToyModel",
    "Trainer",
    "analysis",
    "build_instances",
    "convergence",
    "data",
    "estimate_seconds",
    "layers",
    "load_experiment",
    "load_sweep",
    "metrics",
    "quant",
    "results",
    "run_sweep",
    "stats",
    "use_cpu_devices",
]
