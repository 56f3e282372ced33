"""bitjax: Toy Models of Superposition, dense and ternary, as one compiled JAX sweep.

The curated surface: configure a sweep (:class:`SweepConfig`), train it into a run folder
with checkpoints and resume (:func:`run_sweep`; the CLI ``python -m experiments.<name>`` is
a thin shell over it), load a finished run (:func:`load_sweep`) as a labelled grid
(``sweep.to_xarray()``) and analyse effective weights with :mod:`bitjax.analysis.metrics`
(the neurons of the privileged-basis models with :mod:`bitjax.analysis.neurons`, adversarial
vulnerability with :mod:`bitjax.analysis.adversarial`).
On a CPU, :func:`use_cpu_devices` (called before any computation) gives one device per core.
Importing bitjax has no side effects.

The package is stages over an engine: the core (:mod:`~bitjax.quant`, :mod:`~bitjax.layers`,
:mod:`~bitjax.data`, :mod:`~bitjax.config`, :mod:`~bitjax.lattice`,
:mod:`~bitjax.convergence`), then :mod:`bitjax.store` (folders, checkpoints, files),
:mod:`bitjax.train` and :mod:`bitjax.analysis` (which never import each other), and
:mod:`bitjax.report` (tables, figures, the explorer). :func:`run_sweep` spans them.
"""

from bitjax import analysis, convergence, data, layers, quant
from bitjax.analysis import adversarial, grid, metrics, neurons, results, stats
from bitjax.analysis.results import LoadedSweep, SweepCollection, load_experiment, load_sweep
from bitjax.config import AXES, SweepConfig, build_instances
from bitjax.layers import KINDS, TiedToyModel
from bitjax.store.checkpoint import CheckpointError
from bitjax.train.devices import use_cpu_devices
from bitjax.train.run import Interrupted, RunError, RunResult, estimate_seconds
from bitjax.train.trainer import ChunkInfo, Trainer
from bitjax.workflow import run_sweep

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
    "adversarial",
    "analysis",
    "build_instances",
    "convergence",
    "data",
    "estimate_seconds",
    "grid",
    "layers",
    "load_experiment",
    "load_sweep",
    "metrics",
    "neurons",
    "quant",
    "results",
    "run_sweep",
    "stats",
    "use_cpu_devices",
]
