"""Analyses shared by several experiments (and by the findings), read through the grid.

Everything here takes a :class:`bitjax.analysis.results.LoadedSweep` and returns
per-instance arrays ``[I]`` (turned into grids with
:meth:`~bitjax.analysis.results.LoadedSweep.grid`) or labelled grids. Cells are found by
label on the grid, never by searching float coordinates; an analysis that needs one
instance per (kind, seed, probability) says so (:func:`kind_seed_grid`) instead of
averaging over another axis that varies.

Quantities (on effective weights, ``gamma * T`` for a quantized model):
  * the per-instance quantities of the sparsity analyses (:func:`instance_quantities`:
    features represented beyond the top m, superposition of the represented features,
    biases); their onsets along the sparsity grid are in :mod:`bitjax.analysis.onsets`;
  * the loss gap of a quantized kind against dense, paired by seed (:func:`loss_gap`,
    :func:`loss_gap_rows`);
  * paired values of two kinds (:func:`paired`) and the best seed per cell
    (:func:`best_seed_grid`).

Correlated geometry is in :mod:`bitjax.analysis.geometry`.

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (section "Superposition as a Phase
  Change").
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bitjax.analysis import stats
from bitjax.analysis.results import LoadedSweep, one_cell_per

#: The cells most analyses compare: one instance per kind, seed and probability.
KIND_SEED_PROBABILITY = ("kind", "seed", "feature_probability")


def kind_seed_grid(sweep: LoadedSweep, values, name: str | None = None, *,
                   mask_diverged: bool = True, dense_first: bool = True) -> xr.DataArray:
    """Per-instance ``values [I, ...]`` as ``(kind, seed, feature_probability, ...)``.

    Args:
      sweep: the loaded sweep.
      values: one value (or trailing vector) per instance.
      name: the DataArray's name.
      mask_diverged: NaN where the instance diverged.
      dense_first: order ``feature_probability`` from dense (largest) to sparse.
    Returns:
      The grid with the other sweep axes dropped.

    Raises:
      ValueError: another axis (importance, lr, weight decay) varies, so a cell would
        hold several instances; select one first or reduce explicitly.
    """
    da = sweep.grid(values, name=name)
    if mask_diverged:
        da = da.where(~sweep.grid(sweep.diverged))
    da = one_cell_per(da, KIND_SEED_PROBABILITY)
    return da.sortby("feature_probability", ascending=not dense_first)


# ----------------------------------------------------------------------------------------
# Sparsity: represented features and biases.


def instance_quantities(sweep: LoadedSweep, threshold: float | None = None
                        ) -> dict[str, np.ndarray]:
    """Per-instance scalars ``[I]`` of the sparsity analyses.

    ``n_beyond_top_m``: features with index >= m (the less important ones) represented;
    ``superposition_represented``: mean superposition over the represented features only
    (a dropped feature's direction W_i / ||W_i|| is noise, yet counts in the plain mean);
    ``min_bias``; ``bias_represented`` / ``bias_dropped``: mean b_i over represented /
    dropped features (NaN when there are none).

    Args:
      sweep: the loaded sweep.
      threshold: feature-norm cut for "represented" (default: the sweep's).
    """
    cfg, m, b = sweep.config, sweep.metrics(threshold), sweep.b
    t = sweep.default_threshold if threshold is None else threshold
    rep = m["norm"] > t
    beyond = rep[:, cfg.n_hidden:]
    with np.errstate(invalid="ignore", divide="ignore"):
        sup_rep = np.where(rep, m["superposition"], 0.0).sum(1) / rep.sum(1)
        b_rep = np.where(rep, b, 0.0).sum(1) / rep.sum(1)
        b_drop = np.where(~rep, b, 0.0).sum(1) / (~rep).sum(1)
    return {
        "loss": sweep.loss,
        "n_represented": m["n_represented"].astype(float),
        "n_beyond_top_m": beyond.sum(1).astype(float),
        "superposition_represented": sup_rep,
        "mean_superposition": m["mean_superposition"],
        "min_bias": b.min(1),
        "bias_represented": b_rep,
        "bias_dropped": b_drop,
    }


# ----------------------------------------------------------------------------------------
# Loss gap: quantized against dense, paired by seed.


def loss_gap(sweep: LoadedSweep, base: str = "dense") -> xr.Dataset:
    """The final loss of every kind against ``base``, paired by seed, per sparsity.

    Instances of one seed and sparsity differ only in kind (same initial latent weights,
    same data), so the gap ``loss(kind) - loss(base)`` is taken per seed before any
    averaging.

    Args:
      sweep: a sweep whose only varying axes are kind, seed and feature probability.
      base: the kind compared against (dense by default).

    Returns:
      A Dataset over ``(kind, seed, feature_probability)`` (kinds other than ``base``,
      feature probability dense first) with ``gap`` (NaN where either instance diverged),
      ``ratio`` (``loss / loss_base``, same NaNs), ``loss`` and ``loss_base`` (NaN where
      diverged), ``diverged`` and ``diverged_base``; when the run stores the convergence
      diagnostic, also ``converged`` and ``converged_base`` (bool, False where diverged).
      ``attrs``: ``base``, ``has_converged`` (whether the diagnostic was stored).

    Raises:
      ValueError: ``base`` is not a kind of the sweep, or it has no other kind; an axis other
        than kind, seed and probability varies.
    """
    kinds = [str(k) for k in sweep.config.kind]
    if base not in kinds:
        raise ValueError(f"no kind {base!r} to compare with; this sweep has {', '.join(kinds)}")
    others = [k for k in kinds if k != base]
    if not others:
        raise ValueError(f"the sweep has only the kind {base!r}: no gap to take")
    loss = kind_seed_grid(sweep, sweep.loss)
    bad = kind_seed_grid(sweep, sweep.diverged, mask_diverged=False).astype(bool)
    lb = loss.sel(kind=base, drop=True)
    lk = loss.sel(kind=others)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (lk / lb).where(lb > 0)
    ds = xr.Dataset({"gap": lk - lb, "ratio": ratio, "loss": lk, "loss_base": lb,
                     "diverged": bad.sel(kind=others),
                     "diverged_base": bad.sel(kind=base, drop=True)})
    conv = sweep.diagnostics.get("converged")
    if conv is not None:
        c = kind_seed_grid(sweep, np.asarray(conv, dtype=bool), mask_diverged=False)
        c = c.astype(bool) & ~bad
        ds["converged"] = c.sel(kind=others)
        ds["converged_base"] = c.sel(kind=base, drop=True)
    ds.attrs.update({"base": base, "has_converged": conv is not None})
    return ds


LOSS_GAP_COLUMNS = (
    "part", "kind", "base", "feature_probability", "n_seeds", "n_pairs", "n_diverged",
    "n_diverged_base", "loss_mean", "loss_base_mean", "gap_mean", "gap_ci95",
    "gap_best_of_seeds", "ratio_geomean", "ratio_ci95_low", "ratio_ci95_high",
    "ratio_best_of_seeds", "n_converged", "n_converged_base", "n_pairs_converged",
    "gap_converged_mean", "gap_converged_ci95", "per_seed_gap")


def loss_gap_rows(gap: xr.Dataset, part: str = "") -> list[dict]:
    """Per kind and sparsity: the paired loss gap's mean, 95% t CI and best of seeds.

    Args:
      gap: :func:`loss_gap`'s Dataset.
      part: the part name written in every row.

    Returns:
      Rows with :data:`LOSS_GAP_COLUMNS`: ``n_pairs`` seeds where neither instance diverged
      (the sample); ``gap_mean`` +- ``gap_ci95`` (Student t, :func:`bitjax.analysis.stats.mean_ci`)
      of ``loss - loss_base``; ``gap_best_of_seeds``: the best (lowest) loss of the kind
      minus the best of the base, over non-diverged seeds (the paper keeps the best
      restart); ``ratio_geomean`` and its CI: the mean and t CI of ``log10(loss /
      loss_base)``, raised back to a ratio; ``n_converged`` / ``n_converged_base`` /
      ``n_pairs_converged`` and the gap over the pairs where both converged (empty when the
      run stores no convergence diagnostic); ``per_seed_gap``: every seed's gap, in seed
      order (``nan`` where a member diverged).
    """
    base = gap.attrs.get("base", "dense")
    has_conv = bool(gap.attrs.get("has_converged", "converged" in gap))
    rows = []
    for kind in gap["kind"].values:
        g = gap.sel(kind=kind)
        for pi, p in enumerate(g["feature_probability"].values):
            cell = g.isel(feature_probability=pi)
            d = cell["gap"].values
            mean, half = stats.mean_ci_floats(d)
            with np.errstate(divide="ignore", invalid="ignore"):
                lmean, lhalf = stats.mean_ci_floats(np.log10(cell["ratio"].values))
            lk, lb = cell["loss"].values, cell["loss_base"].values
            fk, fb = np.isfinite(lk), np.isfinite(lb)
            best_k = float(lk[fk].min()) if fk.any() else np.nan
            best_b = float(lb[fb].min()) if fb.any() else np.nan
            row = {
                "part": part, "kind": str(kind), "base": base, "feature_probability": float(p),
                "n_seeds": int(d.size), "n_pairs": int(np.isfinite(d).sum()),
                "n_diverged": int(cell["diverged"].values.sum()),
                "n_diverged_base": int(cell["diverged_base"].values.sum()),
                "loss_mean": stats.mean_ci_floats(lk)[0],
                "loss_base_mean": stats.mean_ci_floats(lb)[0],
                "gap_mean": mean, "gap_ci95": half,
                "gap_best_of_seeds": best_k - best_b,
                "ratio_geomean": 10 ** lmean if np.isfinite(lmean) else np.nan,
                "ratio_ci95_low": 10 ** (lmean - lhalf) if np.isfinite(lhalf) else np.nan,
                "ratio_ci95_high": 10 ** (lmean + lhalf) if np.isfinite(lhalf) else np.nan,
                "ratio_best_of_seeds": best_k / best_b if best_b > 0 else np.nan,
                "n_converged": None, "n_converged_base": None, "n_pairs_converged": None,
                "gap_converged_mean": np.nan, "gap_converged_ci95": np.nan,
                "per_seed_gap": " ".join(f"{v:.4g}" for v in d),
            }
            if has_conv:
                ck, cb = cell["converged"].values, cell["converged_base"].values
                both = ck & cb & np.isfinite(d)
                cmean, chalf = stats.mean_ci_floats(np.where(both, d, np.nan))
                row.update({"n_converged": int(ck.sum()), "n_converged_base": int(cb.sum()),
                            "n_pairs_converged": int(both.sum()),
                            "gap_converged_mean": cmean, "gap_converged_ci95": chalf})
            rows.append(row)
    return rows


def loss_gap_parts(parts, base: str = "dense", titles=None
                   ) -> tuple[list[dict], list[tuple[str, xr.Dataset, list[dict]]]]:
    """The loss gap of every part and quantized kind: table rows and figure columns.

    Args:
      parts: ``{part name: LoadedSweep}`` (every part needs the ``base`` kind).
      base: the kind compared against.
      titles: ``{part name: words}`` for the column titles (default: the part name; a
        single part gets no prefix).

    Returns:
      ``(rows, columns)``: :func:`loss_gap_rows` of every part (the ``part`` column set),
      and one ``(title, gap of one kind, its rows)`` per part and kind, the input of
      :func:`bitjax.report.plots.loss_gap_figure`.
    """
    titles = dict(titles or {})
    rows, columns = [], []
    for name, sweep in parts.items():
        gap = loss_gap(sweep, base)
        part_rows = loss_gap_rows(gap, part=name)
        rows += part_rows
        for kind in gap["kind"].values:
            kind = str(kind)
            head = titles.get(name, name if len(parts) > 1 else "")
            words = f"{kind} - {base}" + (f" ({head})" if head else "")
            sub = gap.sel(kind=kind)
            sub.attrs.update(gap.attrs)
            columns.append((words, sub, [r for r in part_rows if r["kind"] == kind]))
    return rows, columns


# ----------------------------------------------------------------------------------------
# Paired comparisons.


def paired(sweep: LoadedSweep, values, a: str = "ternary", b: str = "dense",
           **where) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values of a, values of b, a - b)`` over the cells where both kinds trained.

    A cell is every combination of the other axes (seed, probability, importance, lr,
    weight decay); instances of one cell differ only in kind, so the difference is paired
    (same initial latent weights, same data). Pairs with a diverged member drop out; NaN
    values (nothing to measure) stay in and are ignored by the statistics.

    Args:
      sweep: the loaded sweep.
      values: ``[I]`` per-instance values.
      a, b: the kinds compared.
      **where: restrict the cells by label, e.g. ``feature_probability=0.1`` (floats
        must be on the grid; see :meth:`~bitjax.analysis.results.LoadedSweep.select`).
    Returns:
      Three flat float arrays, cells in instance order.
    """
    da = sweep.grid(np.asarray(values, dtype=np.float64))
    bad = sweep.grid(sweep.diverged)
    kinds = [str(k) for k in da["kind"].values]
    for k in (a, b):
        if k not in kinds:
            raise ValueError(f"no kind {k!r}; this sweep has {', '.join(kinds)}")
    if where:
        axes = sweep.axes()
        labels = {}
        for k, v in where.items():
            if k not in axes or k == "kind":
                raise ValueError(f"paired(): cannot restrict {k!r}; use one of "
                                 f"{', '.join(a for a in axes if a != 'kind')}")
            idx = sweep.select(**{k: v})  # validates v against the grid
            labels[k] = axes[k][sweep.coords[f"{k}_index"][idx[0]]] \
                if k in sweep.vector_axes() else sweep.coords[k][idx[0]]
        da, bad = da.sel(labels), bad.sel(labels)
    ok = ~(bad.sel(kind=a) | bad.sel(kind=b)).values.ravel()
    va = da.sel(kind=a).values.ravel()[ok]
    vb = da.sel(kind=b).values.ravel()[ok]
    return va, vb, va - vb


def best_seed_grid(sweep: LoadedSweep, dense_first: bool = True) -> xr.DataArray:
    """Per (kind, probability) cell, the instance of the seed with the lowest final loss.

    Diverged instances are skipped; -1 where every seed diverged (the paper keeps the
    best restart of each setting).

    Raises:
      ValueError: an axis other than kind, seed and probability varies.
    """
    from bitjax.analysis.results import best_instance

    ds = xr.Dataset({"loss": sweep.grid(sweep.loss), "diverged": sweep.grid(sweep.diverged),
                     "instance": sweep.grid(np.arange(sweep.n_instances))})
    best = one_cell_per(best_instance(ds, "seed"), ("kind", "feature_probability"))
    return best.sortby("feature_probability", ascending=not dense_first)
