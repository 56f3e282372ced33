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


def loss_gap_frame(gap: xr.Dataset, part: str = ""):
    """Per kind and sparsity: the paired loss gap's mean, 95% t CI and best of seeds.

    Every statistic is reduced over the ``seed`` dimension of the labelled grid at once
    (each cell's seeds a contiguous 1-D sample, as :func:`bitjax.analysis.stats.mean_ci_floats`
    reduces one), and the Dataset over ``(kind, feature_probability)`` becomes the table.

    Args:
      gap: :func:`loss_gap`'s Dataset.
      part: the part name written in every row.

    Returns:
      A :class:`pandas.DataFrame` with :data:`LOSS_GAP_COLUMNS`, kind by kind (in the
      grid's order), each in the grid's sparsity order: ``n_pairs`` seeds where neither
      instance diverged (the sample); ``gap_mean`` +- ``gap_ci95`` (Student t,
      :func:`bitjax.analysis.stats.mean_ci`) of ``loss - loss_base``;
      ``gap_best_of_seeds``: the best (lowest) loss of the kind minus the best of the base,
      over non-diverged seeds (the paper keeps the best restart); ``ratio_geomean`` and its
      CI: the mean and t CI of ``log10(loss / loss_base)``, raised back to a ratio;
      ``n_converged`` / ``n_converged_base`` / ``n_pairs_converged`` and the gap over the
      pairs where both converged (``None``, written empty, and NaN when the run stores no
      convergence diagnostic); ``per_seed_gap``: every seed's gap, in seed order (``nan``
      where a member diverged).
    """
    base = gap.attrs.get("base", "dense")
    has_conv = bool(gap.attrs.get("has_converged", "converged" in gap))
    dims = ("kind", "feature_probability")
    shape = (gap.sizes["kind"], gap.sizes["feature_probability"])

    def seeds_last(name: str) -> np.ndarray:
        # C order with seed last: each cell's seeds are one contiguous row, reduced as
        # the 1-D sample of that cell.
        da = gap[name].broadcast_like(gap["gap"]).transpose(*dims, "seed")
        return np.ascontiguousarray(da.to_numpy())

    def pow10(x: np.ndarray) -> np.ndarray:
        # Python's float power, value by value (numpy's vector power may round otherwise).
        return np.array([10 ** v if np.isfinite(v) else np.nan for v in x.ravel().tolist()],
                        dtype=np.float64).reshape(x.shape)

    d_raw = seeds_last("gap")
    d = d_raw.astype(np.float64)
    mean, half = stats.mean_ci(d, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lmean, lhalf = stats.mean_ci(np.log10(seeds_last("ratio")).astype(np.float64),
                                     axis=-1)
    lk, lb = seeds_last("loss"), seeds_last("loss_base")
    best_k, best_b = (np.where(np.isfinite(v), v, np.inf).min(-1).astype(np.float64)
                      for v in (lk, lb))
    best_k[np.isinf(best_k)] = np.nan
    best_b[np.isinf(best_b)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_best = np.where(best_b > 0, best_k / best_b, np.nan)
    cols = {
        "n_seeds": np.full(shape, d.shape[-1]), "n_pairs": np.isfinite(d).sum(-1),
        "n_diverged": seeds_last("diverged").sum(-1),
        "n_diverged_base": seeds_last("diverged_base").sum(-1),
        "loss_mean": stats.mean_ci(lk.astype(np.float64), axis=-1)[0],
        "loss_base_mean": stats.mean_ci(lb.astype(np.float64), axis=-1)[0],
        "gap_mean": mean, "gap_ci95": half, "gap_best_of_seeds": best_k - best_b,
        "ratio_geomean": pow10(lmean),
        "ratio_ci95_low": np.where(np.isfinite(lhalf), pow10(lmean - lhalf), np.nan),
        "ratio_ci95_high": np.where(np.isfinite(lhalf), pow10(lmean + lhalf), np.nan),
        "ratio_best_of_seeds": ratio_best,
        "per_seed_gap": np.array([" ".join(f"{v:.4g}" for v in row)
                                  for row in d_raw.reshape(-1, d.shape[-1])],
                                 dtype=object).reshape(shape),
    }
    if has_conv:
        ck, cb = seeds_last("converged"), seeds_last("converged_base")
        both = ck & cb & np.isfinite(d)
        cmean, chalf = stats.mean_ci(np.where(both, d, np.nan), axis=-1)
        cols.update({"n_converged": ck.sum(-1), "n_converged_base": cb.sum(-1),
                     "n_pairs_converged": both.sum(-1), "gap_converged_mean": cmean,
                     "gap_converged_ci95": chalf})
    else:
        none = np.full(shape, None, dtype=object)
        cols.update({"n_converged": none, "n_converged_base": none,
                     "n_pairs_converged": none, "gap_converged_mean": np.full(shape, np.nan),
                     "gap_converged_ci95": np.full(shape, np.nan)})
    coords = {k: gap[k].to_numpy() for k in dims}
    ds = xr.Dataset({k: (dims, v) for k, v in cols.items()}, coords=coords)
    ds["kind"] = ds["kind"].astype(str)
    df = ds.assign(part=part, base=base).to_dataframe(dim_order=list(dims)).reset_index()
    return df[list(LOSS_GAP_COLUMNS)]


def loss_gap_rows(gap: xr.Dataset, part: str = "") -> list[dict]:
    """:func:`loss_gap_frame` as one dict per row (``None`` where the run stores no
    convergence diagnostic)."""
    return loss_gap_frame(gap, part).to_dict("records")


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
