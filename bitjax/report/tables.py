"""Tables and labels of a loaded sweep: ``metrics.csv`` and ``features.csv.gz`` of a run
folder, the recipe in a few words and a figure's footer.

Both tables are pandas frames built from the labelled grid
(:meth:`~bitjax.analysis.results.LoadedSweep.to_dataframe` and
:meth:`~bitjax.analysis.results.LoadedSweep.grid`); the feature table, instances x features
rows, is built and written a block of instances at a time, so a sweep of millions of
instances never holds it in memory (the metric table holds one row per instance, as many
values as the per-instance arrays the sweep holds already).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bitjax.analysis.results import LoadedSweep, SweepCollection, code_names
from bitjax.config import AXES, SweepConfig
from bitjax.store import files as files_lib
from bitjax.store.layout import FEATURES_CSV, METRICS_CSV, Provenance


def recipe_text(cfg: SweepConfig) -> str:
    """The training recipe in a few words: ``"cosine + annealed last 0.1 lr 0.003, weight
    decay 0"`` (with ``init xS`` when the initial weights are scaled)."""
    lr = "/".join(f"{v:g}" for v in cfg.lr)
    wd = "/".join(f"{v:g}" for v in cfg.weight_decay)
    sched = cfg.schedule + (f" + annealed last {cfg.anneal_fraction:g}"
                            if cfg.anneal_fraction else "")
    init = f", init x{cfg.init_scale:g}" if cfg.init_scale != 1 else ""
    if getattr(cfg, "has_fp_phase", False):
        init += f", dense first {cfg.fp_steps:,} steps"
    return f"{sched} lr {lr}{init}, weight decay {wd}"


def run_label(sweeps: LoadedSweep | Mapping[str, LoadedSweep],
              provenance: Provenance | None = None) -> str:
    """A figure footer: ``"uniform: preset quick, 6,000 steps, 3 seeds, commit 91b62c2,
    none diverged"`` (or how many instances diverged and were left out).

    Args:
      sweeps: one sweep or the parts drawn in the figure.
      provenance: overrides what the sweeps' own provenance says.
    """
    parts = [sweeps] if isinstance(sweeps, LoadedSweep) else list(sweeps.values())
    prov = provenance or Provenance()
    if isinstance(sweeps, SweepCollection):
        prov = prov.merged(sweeps.provenance)
    for s in parts:
        prov = prov.merged(s.provenance)

    def span(values: Iterable[int], unit: str) -> str:
        vals = sorted(set(values))
        if not vals:
            return f"? {unit}s"
        text = f"{vals[0]:,}" if len(vals) == 1 else f"{vals[0]:,}-{vals[-1]:,}"
        return f"{text} {unit}{'' if vals == [1] else 's'}"

    bits = [f"preset {prov.preset or '?'}", span((s.step for s in parts), "step"),
            span((len(s.config.seed) for s in parts), "seed"),
            "recipe " + "; ".join(dict.fromkeys(recipe_text(s.config) for s in parts))]
    if prov.commit:
        bits.append(f"commit {prov.commit[:7]}{' (dirty)' if prov.dirty else ''}")
    # Figures leave diverged instances out; the footer says how many were left out.
    n_bad = sum(int(np.count_nonzero(s.diverged)) for s in parts)
    bits.append(f"{n_bad:,} of {sum(s.n_instances for s in parts):,} instances diverged "
                "(left out)" if n_bad else "none diverged")
    head = f"{prov.experiment}: " if prov.experiment else ""
    return head + ", ".join(bits)


#: The columns of ``features.csv.gz`` after ``instance`` and ``feature``: per-feature
#: metrics, the bias, and ``dimensionality_label`` as its label (``"1/2"``, ``"other"``).
FEATURE_COLUMNS = ("norm", "superposition", "dimensionality", "bias", "relative_norm",
                   "dimensionality_label")
#: Instances per block of ``features.csv.gz`` (a block's rows are instances x features).
FEATURE_BLOCK = 65_536


def metric_frame(sweep: LoadedSweep, threshold: float | None = None):
    """The table of ``metrics.csv``: one row per instance, the coordinates as the sweep
    stores them (``importance_index`` for an axis of vectors), then every column of
    :meth:`~bitjax.analysis.results.LoadedSweep.scalar_columns`.

    Returns:
      A :class:`pandas.DataFrame` in instance order
      (:meth:`~bitjax.analysis.results.LoadedSweep.to_dataframe` less the labels it adds
      beside a vector axis's positions).
    """
    # One row per instance is as many rows as the per-instance arrays already hold.
    return sweep.to_dataframe(threshold).drop(columns=list(sweep.vector_axes()))


def feature_frames(sweep: LoadedSweep, threshold: float | None = None,
                   block: int = FEATURE_BLOCK) -> Iterator:
    """The table of ``features.csv.gz`` in blocks of ``block`` instances: one row per
    instance and feature (instance, feature, then :data:`FEATURE_COLUMNS`).

    The per-feature variables come from the labelled grid, flattened over the sweep axes
    in instance order; a block at a time becomes a frame, so a sweep of millions of
    instances never holds its instances x features rows at once.

    Yields:
      :class:`pandas.DataFrame` blocks, in instance order.
    """
    import pandas as pd

    m = sweep.metrics(threshold)
    values = {k: m[k] for k in ("norm", "superposition", "dimensionality", "relative_norm")}
    values["bias"] = sweep.b
    values["dimensionality_label"] = code_names("dimensionality_label",
                                                m["dimensionality_label"])
    # Only these variables of the grid (LoadedSweep.grid, laid out as to_xarray lays them
    # out): the whole Dataset would also compute a privileged sweep's neuron measures. The
    # grid and its stacking are views of the per-instance arrays, not copies.
    ds = xr.Dataset({"instance": sweep.grid(np.arange(sweep.n_instances)),
                     **{k: sweep.grid(values[k], extra_dims=["feature"])
                        for k in FEATURE_COLUMNS}})
    flat = ds.stack(cell=AXES).transpose("cell", "feature")  # instance order (C order)
    features = flat["feature"].to_numpy()
    for start in range(0, sweep.n_instances, block):
        part = flat.isel(cell=slice(start, start + block))
        inst = part["instance"].to_numpy()
        cols = {"instance": np.repeat(inst, len(features)),
                "feature": np.tile(features, len(inst))}
        cols.update({k: part[k].to_numpy().ravel() for k in FEATURE_COLUMNS})
        yield pd.DataFrame(cols)


def grid_frame(ds, dims: Sequence[str], columns: Sequence[str] | None = None):
    """A labelled grid as a table: one row per cell of ``dims`` (the first slowest, each
    in its coordinate order), the coordinates of ``dims`` then the variables.

    Args:
      ds: an :class:`xarray.Dataset` over ``dims`` (a variable without one of them is
        repeated along it).
      dims: the dimensions, slowest first.
      columns: the columns to keep, in order (default: every coordinate and variable).
    Returns:
      A :class:`pandas.DataFrame`.
    """
    df = ds.to_dataframe(dim_order=list(dims)).reset_index()
    return df[list(columns)] if columns is not None else df


def metric_rows(sweep: LoadedSweep, threshold: float | None = None) -> list[dict[str, Any]]:
    """:func:`metric_frame` as one dict per instance."""
    return metric_frame(sweep, threshold).to_dict("records")


def feature_rows(sweep: LoadedSweep, threshold: float | None = None) -> list[dict[str, Any]]:
    """:func:`feature_frames` as one dict per instance and feature."""
    return [r for f in feature_frames(sweep, threshold) for r in f.to_dict("records")]


def write_tables(sweep: LoadedSweep, out_dir: str | Path,
                 threshold: float | None = None) -> list[Path]:
    """Write ``metrics.csv`` (one row per instance) and ``features.csv.gz`` (one row per
    instance and feature, gzip-compressed) into ``out_dir``.

    Returns:
      The two paths.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / METRICS_CSV, out_dir / FEATURES_CSV]
    files_lib.write_frames(paths[0], [metric_frame(sweep, threshold)])
    # Blocks of instances: a sweep of millions of instances never holds its feature rows.
    files_lib.write_frames(paths[1], feature_frames(sweep, threshold))
    return paths
