"""Tables and labels of a loaded sweep: ``metrics.csv`` and ``features.csv.gz`` of a run
folder, the recipe in a few words and a figure's footer.

The rows stream from the loaded grid (:class:`~bitjax.analysis.results.LoadedSweep`) to the
files, so a sweep of millions of instances never holds its tables in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bitjax.analysis.results import LoadedSweep, SweepCollection, code_names
from bitjax.config import SweepConfig
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


def metric_rows(sweep: LoadedSweep, threshold: float | None = None) -> list[dict[str, Any]]:
    """One dict per instance: the coordinates, then loss, diverged and the scalar metrics
    (then any per-instance diagnostics)."""
    return list(_metric_rows(sweep, threshold))


def _metric_rows(sweep: LoadedSweep, threshold: float | None) -> Iterator[dict[str, Any]]:
    cols = sweep.scalar_columns(threshold)
    keys = list(sweep.coords)
    for i in range(sweep.n_instances):
        yield {**{k: sweep.coords[k][i].item() for k in keys},
               **{k: v[i].item() for k, v in cols.items()}}


def feature_rows(sweep: LoadedSweep, threshold: float | None = None) -> list[dict[str, Any]]:
    """One dict per instance and feature: norm, superposition, dimensionality, bias."""
    return list(_feature_rows(sweep, threshold))


def _feature_rows(sweep: LoadedSweep, threshold: float | None) -> Iterator[dict[str, Any]]:
    m, b = sweep.metrics(threshold), sweep.b
    n_inst, n = b.shape
    label = code_names("dimensionality_label", m["dimensionality_label"])
    for i in range(n_inst):
        for f in range(n):
            yield {"instance": i, "feature": f, "norm": m["norm"][i, f],
                   "superposition": m["superposition"][i, f],
                   "dimensionality": m["dimensionality"][i, f], "bias": b[i, f],
                   "relative_norm": m["relative_norm"][i, f],
                   "dimensionality_label": label[i, f]}


def write_tables(sweep: LoadedSweep, out_dir: str | Path,
                 threshold: float | None = None) -> list[Path]:
    """Write ``metrics.csv`` (one row per instance) and ``features.csv.gz`` (one row per
    instance and feature, gzip-compressed) into ``out_dir``.

    Returns:
      The two paths.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / METRICS_CSV, out_dir / FEATURES_CSV]
    # Rows stream to the files: a sweep of millions of instances never holds its tables.
    files_lib.write_csv(paths[0], _metric_rows(sweep, threshold))
    files_lib.write_csv(paths[1], _feature_rows(sweep, threshold))
    return paths
