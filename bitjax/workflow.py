"""The whole path in one call: train a sweep into a run folder, then write its tables.

The stages do not import each other (training knows nothing of analysis or report), so the
function that goes from a config to a complete run folder lives above them: it is
:func:`bitjax.run_sweep`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitjax.analysis.results import load_sweep
from bitjax.config import SweepConfig
from bitjax.report.tables import write_tables
from bitjax.train import run as run_lib


def write_run_tables(out_dir: str | Path) -> None:
    """Write ``metrics.csv`` and ``features.csv.gz`` of the finished run in ``out_dir``."""
    write_tables(load_sweep(out_dir), out_dir)


def run_sweep(cfg: SweepConfig, out_dir: str | Path, *, tables: bool = True,
              **kwargs: Any) -> run_lib.RunResult:
    """Train ``cfg`` into the run folder ``out_dir`` (resumable, safe to interrupt) and, once
    finished, write its tables, so a library run folder is as complete as the command
    line's.

    Args:
      cfg: the sweep.
      out_dir: the run folder.
      tables: write ``metrics.csv`` and ``features.csv.gz`` into ``out_dir`` once finished.
      **kwargs: the keywords of :func:`bitjax.train.run.run_sweep` (resume, progress,
        until_converged, init_from, ...), which trains.

    Returns:
      The :class:`~bitjax.train.run.RunResult` of the training.
    """
    after = tuple(kwargs.pop("after", ()))
    if tables:
        after = (*after, write_run_tables)
    return run_lib.run_sweep(cfg, out_dir, after=after, **kwargs)
