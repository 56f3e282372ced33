"""Analyses shared by several experiments (and by the findings), read through the grid.

Everything here takes a :class:`bitjax.analysis.results.LoadedSweep` and returns per-instance arrays
``[I]`` (turned into grids with :meth:`~bitjax.analysis.results.LoadedSweep.grid`) or labelled
grids. Cells are found by label on the grid, never by searching float coordinates; an
analysis that needs one instance per (kind, seed, probability) says so
(:func:`kind_seed_grid`) instead of averaging over another axis that varies.

Quantities (on effective weights, ``gamma * T`` for a quantized model):
  * sparsity onsets (:func:`onset_table`): the feature probability at which features with
    index >= m become represented, or biases turn negative;
  * onsets per seed between grid points (:func:`onset_per_seed`), by linear interpolation
    in log10(1-S);
  * the loss gap of a quantized kind against dense, paired by seed (:func:`loss_gap`,
    :func:`loss_gap_rows`);
  * correlated geometry (:func:`instance_measures`): cosines within correlated or
    anticorrelated pairs and interference within / across sets.

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (sections "Superposition as a Phase
  Change" and "Superposition with Correlated and Anticorrelated Features").
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
# Sparsity: represented features, biases, onsets.

#: A bias counts as negative below this (not 0: tiny negative noise is not a filter).
NEGATIVE_BIAS = -0.01
ONSET_RULES = ("first", "sustained")
ONSET_CONDITIONS = {
    "superposition_onset": "a feature with index >= m has ||W_i|| > threshold",
    "negative_bias_onset": f"some b_i < {NEGATIVE_BIAS}",
}
ONSET_DEFINITIONS = {
    "first": "largest 1-S at which {}",
    "sustained": "largest 1-S from which on (at every sparser grid point) {}",
}


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


def onsets_along(probs: np.ndarray, hit: np.ndarray, ok: np.ndarray) -> dict[str, tuple]:
    """Onsets of a condition along a dense -> sparse grid: ``{rule: (1-S, grid index)}``.

    ``first``: the largest 1-S at which ``hit`` holds. ``sustained``: the largest 1-S from
    which it holds at every sparser grid point (robust to an isolated hit at the dense end).
    ``(nan, None)`` where there is none; grid points that are not ``ok`` (diverged) are
    skipped.
    """
    idx = np.flatnonzero(ok)
    h = hit[idx]
    out = {"first": (np.nan, None), "sustained": (np.nan, None)}
    if h.any():
        j = int(idx[np.argmax(h)])
        out["first"] = (float(probs[j]), j)
    if h.size and h[-1]:
        misses = np.flatnonzero(~h)
        j = int(idx[misses[-1] + 1 if misses.size else 0])
        out["sustained"] = (float(probs[j]), j)
    return out


def onset_definition(stat: str) -> str:
    """The words of an onset statistic ``<condition>_<rule>``."""
    cond, rule = stat.rsplit("_", 1)
    return ONSET_DEFINITIONS[rule].format(ONSET_CONDITIONS[cond])


def onset_table(sweep: LoadedSweep, threshold: float | None = None
                ) -> dict[str, dict[str, dict]]:
    """``{statistic: {kind: {"p": [seeds], "features": [seeds]}}}`` for every onset.

    Statistics are ``<condition>_<rule>`` (:data:`ONSET_CONDITIONS` x :data:`ONSET_RULES`);
    per seed, the grid is scanned from dense to sparse (:func:`onsets_along`) and
    ``features`` names the features that meet the condition at the onset.

    Raises:
      ValueError: an axis other than kind, seed and probability varies.
    """
    cfg = sweep.config
    t = sweep.default_threshold if threshold is None else threshold
    rep = sweep.metrics(t)["norm"] > t
    b = sweep.b
    tests = {
        "superposition_onset": lambda i: [f for f in np.flatnonzero(rep[i])
                                          if f >= cfg.n_hidden],
        "negative_bias_onset": lambda i: list(np.flatnonzero(b[i] < NEGATIVE_BIAS)),
    }
    inst = kind_seed_grid(sweep, np.arange(sweep.n_instances), mask_diverged=False)
    bad = kind_seed_grid(sweep, sweep.diverged, mask_diverged=False)
    probs = inst["feature_probability"].values
    out: dict[str, dict[str, dict]] = {f"{c}_{r}": {} for c in ONSET_CONDITIONS
                                       for r in ONSET_RULES}
    for kind in inst["kind"].values:
        ids = inst.sel(kind=kind).transpose("seed", "feature_probability").values
        oks = ~bad.sel(kind=kind).transpose("seed", "feature_probability").values
        res = {k: {"p": np.full(len(ids), np.nan), "features": [""] * len(ids)} for k in out}
        for si, (row, ok) in enumerate(zip(ids, oks, strict=True)):
            for cond, features in tests.items():
                hit = np.array([bool(o) and len(features(i)) > 0
                                for o, i in zip(ok, row, strict=True)])
                for rule, (p_on, j) in onsets_along(probs, hit, ok).items():
                    res[f"{cond}_{rule}"]["p"][si] = p_on
                    if j is not None:
                        res[f"{cond}_{rule}"]["features"][si] = " ".join(
                            str(f) for f in features(row[j]))
        for k in out:
            out[k][str(kind)] = res[k]
    return out


#: Rules of :func:`onset_per_seed`: the first crossing, or the one after which it holds on.
ONSET_PER_SEED_RULES = ("first", "sustained")


def onset_per_seed(log_p, values, level: float, *, above: bool = True,
                   rule: str = "first", inclusive: bool = False) -> np.ndarray:
    """Per-seed onset of ``values > level`` (or ``< level``) between grid points.

    Estimated per seed by linear interpolation in ``log10(1-S)`` where the per-seed quantity
    crosses ``level`` going from dense to sparse: between the last grid point where the
    condition fails and the next one where it holds, the onset is where the straight line
    joining the two values (against ``log10(1-S)``) reaches ``level``. So an onset can fall
    between grid points, and seeds that differ by less than a grid step get different
    estimates instead of a zero-width interval on one grid point.

    Args:
      log_p: ``[n]`` log10 of the feature probability 1-S of each grid point, all distinct,
        in any order (it is sorted here from dense, the largest, to sparse).
      values: ``[..., n]`` the quantity per seed (leading axes: seeds, kinds, ...), last axis
        on the grid of ``log_p``. NaN marks a missing point (a diverged instance): it is
        skipped, so the line joins its finite neighbours.
      level: the level crossed. For an integer count ("more than m features represented")
        pass a half-integer (``m + 0.5``): with ``level = m`` a step from m to m + 2 would
        put the onset on the grid point where the count is still m.
      above: the condition is ``values > level``; ``False``: ``values < level``.
      inclusive: the condition includes equality (``>=`` / ``<=``).
      rule: ``"first"``: the first crossing from dense to sparse; ``"sustained"``: the
        crossing after which the condition holds at every sparser finite point (robust to an
        isolated hit at the dense end).

    Returns:
      ``[...]`` the onset as log10(1-S). Where the condition already holds at the densest
      finite point, that point's log_p (the onset is there or denser: left-censored). NaN
      where the condition never holds (``"first"``), does not hold at the sparsest finite
      point (``"sustained"``), or no value is finite.

    Raises:
      ValueError: the shapes do not match, ``log_p`` is not finite and distinct, or ``rule``
        is unknown.
    """
    x = np.asarray(log_p, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if rule not in ONSET_PER_SEED_RULES:
        raise ValueError(f"rule must be one of {ONSET_PER_SEED_RULES}, got {rule!r}")
    if x.ndim != 1 or v.ndim < 1 or v.shape[-1] != x.size:
        raise ValueError(f"values' last axis must match log_p: values {v.shape}, log_p "
                         f"{x.shape}")
    if not np.isfinite(x).all() or np.unique(x).size != x.size:
        raise ValueError(f"log_p must be finite and distinct, got {x.tolist()}")
    order = np.argsort(-x, kind="stable")  # dense (largest 1-S) first
    x, v = x[order], v[..., order]
    flat = v.reshape(-1, x.size)
    out = np.full(flat.shape[0], np.nan)
    for r, row in enumerate(flat):
        ok = np.isfinite(row)
        xs, vs = x[ok], row[ok]
        if not vs.size:
            continue
        if inclusive:
            hit = vs >= level if above else vs <= level
        else:
            hit = vs > level if above else vs < level
        if rule == "first":
            if not hit.any():
                continue
            j = int(np.argmax(hit))
        else:
            if not hit[-1]:
                continue
            misses = np.flatnonzero(~hit)
            j = int(misses[-1]) + 1 if misses.size else 0
        if j == 0:
            out[r] = xs[0]  # holds at the densest point: censored there
            continue
        # vs[j-1] fails and vs[j] holds, so level lies in [vs[j-1], vs[j]) (or the mirror)
        # and the fraction t is in [0, 1).
        t = (level - vs[j - 1]) / (vs[j] - vs[j - 1])
        out[r] = xs[j - 1] + t * (xs[j] - xs[j - 1])
    return out.reshape(v.shape[:-1])


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
# Correlated and anticorrelated features.

#: Norm above which a feature counts as represented in the correlated measures.
NORM_THRESHOLD = 0.5
#: A correlated pair counts as collapsed onto one direction above this cosine ...
COLLAPSE_COS = 0.9
#: ... when both members still carry at least this norm (not dropped).
COLLAPSE_NORM = 0.25
#: Pair counted orthogonal below this |cos|, antipodal below minus this.
ORTHOGONAL_COS = 0.1
ANTIPODAL_COS = 0.9


def set_ids(cfg) -> np.ndarray:
    """Set index of every feature (correlated sets, then anticorrelated; -1 = independent)."""
    ids = np.full(cfg.n_features, -1)
    nc = cfg.correlated_sets * cfg.correlated_size
    ids[:nc] = np.arange(nc) // cfg.correlated_size
    na = cfg.anticorrelated_sets * cfg.anticorrelated_size
    ids[nc:nc + na] = cfg.correlated_sets + np.arange(na) // cfg.anticorrelated_size
    return ids


def _norms_cos(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    norms = np.linalg.norm(w, axis=1)  # [I, n]
    g = np.einsum("kmi,kmj->kij", w, w)  # W^T W per instance
    cos = g / np.maximum(norms[:, :, None] * norms[:, None, :], 1e-12)
    return norms, cos


def pair_cosines(w: np.ndarray, n_pairs: int,
                 threshold: float = NORM_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each pair (features 2k, 2k+1), ``[I, n_pairs]``, and both-represented mask."""
    norms, cos = _norms_cos(w)
    a, b = np.arange(n_pairs) * 2, np.arange(n_pairs) * 2 + 1
    c = cos[:, a, b]
    both = (norms[:, a] >= threshold) & (norms[:, b] >= threshold)
    return c, both


def within_pair_cos(w: np.ndarray, n_pairs: int,
                    threshold: float = NORM_THRESHOLD) -> np.ndarray:
    """Mean cosine over the pairs whose members are both represented, ``[I]`` (NaN if none)."""
    c, both = pair_cosines(w, n_pairs, threshold)
    with np.errstate(invalid="ignore"):
        return np.where(both.any(1), np.sum(np.where(both, c, 0), 1) / both.sum(1), np.nan)


def collapse_fraction(w: np.ndarray, n_pairs: int, cos_min: float = COLLAPSE_COS,
                      norm_min: float = COLLAPSE_NORM) -> np.ndarray:
    """Share of pairs collapsed onto one direction (cos > cos_min, norms >= norm_min), ``[I]``."""
    c, both = pair_cosines(w, n_pairs, norm_min)
    return np.mean((c > cos_min) & both, axis=1)


def pair_geometry_fractions(w: np.ndarray, n_pairs: int,
                            threshold: float = NORM_THRESHOLD) -> dict[str, np.ndarray]:
    """Share of pairs (both represented) that are orthogonal / antipodal, ``{name: [I]}``."""
    c, both = pair_cosines(w, n_pairs, threshold)
    return {"orthogonal_fraction": np.mean(both & (np.abs(c) < ORTHOGONAL_COS), axis=1),
            "antipodal_fraction": np.mean(both & (c < -ANTIPODAL_COS), axis=1)}


def set_interference(w: np.ndarray, ids: np.ndarray,
                     threshold: float = NORM_THRESHOLD) -> dict[str, np.ndarray]:
    """Within-set vs cross-set interference per instance (pairs i != j of set features).

    Returns ``within_set_abs_cos``, ``cross_set_abs_cos`` (represented features only; NaN
    when no such pair) and ``within_set_sq_dot``, ``cross_set_sq_dot`` (all features).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    norms, cos = _norms_cos(w)
    dot2 = np.einsum("kmi,kmj->kij", w, w) ** 2
    ids = np.asarray(ids)
    in_set = ids >= 0
    off = ~np.eye(len(ids), dtype=bool) & in_set[:, None] & in_set[None, :]
    same = off & (ids[:, None] == ids[None, :])
    cross = off & (ids[:, None] != ids[None, :])
    rep = norms >= threshold  # [I, n]
    rep2 = rep[:, :, None] & rep[:, None, :]
    out = {}
    for name, mask in (("within_set", same), ("cross_set", cross)):
        m = rep2 & mask
        cnt = m.sum((1, 2))
        with np.errstate(invalid="ignore"):
            out[f"{name}_abs_cos"] = np.where(
                cnt > 0, np.sum(np.where(m, np.abs(cos), 0), (1, 2)) / np.maximum(cnt, 1),
                np.nan)
        out[f"{name}_sq_dot"] = (np.sum(np.where(mask, dot2, 0), (1, 2))
                                 / max(int(mask.sum()), 1))
    return out


def instance_measures(sweep: LoadedSweep, threshold: float | None = None
                      ) -> dict[str, np.ndarray]:
    """Every correlated-geometry measurement of a sweep's instances, ``{name: [I]}``.

    Pair measures for sweeps of pairs (correlated or anticorrelated, size 2), set measures
    for sweeps with two or more sets larger than pairs; NaN for diverged instances.

    Args:
      sweep: the loaded sweep.
      threshold: feature-norm cut for "represented" (default: the sweep's).
    """
    cfg = sweep.config
    t = sweep.default_threshold if threshold is None else threshold
    w = sweep.W_eff
    out = {"n_represented": np.asarray(sweep.metrics(t)["n_represented"], dtype=float),
           "loss": np.asarray(sweep.loss, dtype=float)}
    n_pairs = 0
    if cfg.correlated_size == 2 and cfg.correlated_sets and not cfg.anticorrelated_sets:
        n_pairs = cfg.correlated_sets
    elif cfg.anticorrelated_size == 2 and cfg.anticorrelated_sets and not cfg.correlated_sets:
        n_pairs = cfg.anticorrelated_sets
    if n_pairs:
        out["within_pair_cos"] = within_pair_cos(w, n_pairs, t)
        out.update(pair_geometry_fractions(w, n_pairs, t))
        if cfg.correlated_sets:
            out["collapse_fraction"] = collapse_fraction(w, n_pairs)
    ids = set_ids(cfg)
    if len(set(ids[ids >= 0].tolist())) >= 2 and np.bincount(ids[ids >= 0]).max() > 2:
        out.update(set_interference(w, ids, t))
    bad = sweep.diverged
    return {k: np.where(bad, np.nan, v) for k, v in out.items()}


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
