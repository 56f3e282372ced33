"""Onsets: the sparsity at which a condition starts to hold, one name per censoring rule.

Every onset here is read along a sweep's sparsity grid from dense (the largest 1-S) to sparse,
per seed and kind. They differ in where the onset may fall and in what is returned when it
is not inside the grid, so each rule has its own name:

* :func:`grid_onsets` / :func:`grid_onset_table`: the onset is a grid point (the first one
  at which the condition holds, or the one from which it holds at every sparser point);
  none where it never holds. Censoring: none; an onset at the densest point is reported as
  that point (the tables count those seeds separately).
* :func:`interpolated_onset` / :func:`interpolated_onset_table`: between grid points, by
  linear interpolation in log10(1-S) where the per-seed quantity crosses a level.
  Left-censored: a condition that holds at the densest point gives that point's x; NaN where
  it never holds (``"first"``) or does not hold at the sparsest point (``"sustained"``).
* :func:`bounded_onset`: the sustained, inclusive interpolated onset with both edges as
  bounds: beyond the sparsest point it is that point's x (not NaN), and a flag says which
  edge censored it (the findings' unit of a per-seed difference).

The conditions of the sparsity tables (:data:`ONSET_CONDITIONS`,
:data:`INTERPOLATED_ONSETS`) are "a feature beyond the top m represented" and "a negative
bias" (below :data:`NEGATIVE_BIAS`).

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (section "Superposition as a Phase
  Change").
"""

from __future__ import annotations

import numpy as np

from bitjax.analysis import grid
from bitjax.analysis.results import LoadedSweep

#: A bias counts as negative below this (not 0: tiny negative noise is not a filter).
NEGATIVE_BIAS = -0.01

# ----------------------------------------------------------------------------------------
# Grid-point onsets.

#: The rules of :func:`grid_onsets`, and the conditions and words of :func:`grid_onset_table`.
ONSET_RULES = ("first", "sustained")
ONSET_CONDITIONS = {
    "superposition_onset": "a feature with index >= m has ||W_i|| > threshold",
    "negative_bias_onset": f"some b_i < {NEGATIVE_BIAS}",
}
ONSET_DEFINITIONS = {
    "first": "largest 1-S at which {}",
    "sustained": "largest 1-S from which on (at every sparser grid point) {}",
}


def grid_onsets(probs: np.ndarray, hit: np.ndarray, ok: np.ndarray) -> dict[str, tuple]:
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


def grid_onset_table(sweep: LoadedSweep, threshold: float | None = None
                ) -> dict[str, dict[str, dict]]:
    """``{statistic: {kind: {"p": [seeds], "features": [seeds]}}}`` for every onset.

    Statistics are ``<condition>_<rule>`` (:data:`ONSET_CONDITIONS` x :data:`ONSET_RULES`);
    per seed, the grid is scanned from dense to sparse (:func:`grid_onsets`) and
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
    inst = grid.kind_seed_grid(sweep, np.arange(sweep.n_instances), mask_diverged=False)
    bad = grid.kind_seed_grid(sweep, sweep.diverged, mask_diverged=False)
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
                for rule, (p_on, j) in grid_onsets(probs, hit, ok).items():
                    res[f"{cond}_{rule}"]["p"][si] = p_on
                    if j is not None:
                        res[f"{cond}_{rule}"]["features"][si] = " ".join(
                            str(f) for f in features(row[j]))
        for k in out:
            out[k][str(kind)] = res[k]
    return out

# ----------------------------------------------------------------------------------------
# Interpolated onsets of the sparsity tables.

#: The rules of :func:`interpolated_onset` and their words.
INTERPOLATED_RULES = {
    "first": "the first crossing from dense to sparse",
    "sustained": "the crossing after which it holds at every sparser grid point",
}
#: Onsets estimated per seed between grid points (:func:`interpolated_onset`): condition ->
#: (per-instance quantity of :func:`bitjax.analysis.grid.instance_quantities`, level as a
#: function of the config, above?, words).
INTERPOLATED_ONSETS = {
    "superposition_onset": (
        "n_represented", lambda cfg: cfg.n_hidden + 0.5, True,
        "more than m features represented (||W_i|| > threshold): the count crosses m + 1/2"),
    "negative_bias_onset": (
        "min_bias", lambda cfg: NEGATIVE_BIAS, False,
        f"some bias below {NEGATIVE_BIAS}: min_i b_i crosses {NEGATIVE_BIAS}"),
}


def interpolated_onset(log_p, values, level: float, *, above: bool = True,
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
    if rule not in INTERPOLATED_RULES:
        raise ValueError(f"rule must be one of {tuple(INTERPOLATED_RULES)}, got {rule!r}")
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


def interpolated_onset_table(sweep: LoadedSweep
                             ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per-seed onsets between grid points, linear in log10(1-S) (:func:`interpolated_onset`).

    Returns:
      ``{f"{condition}_{rule}": {kind: {"p": [seeds] onset 1-S (NaN: never),
      "censored": [seeds] bool (the condition already holds at the densest grid point the
      seed did not diverge on, so the onset is there or denser)}}}`` for the conditions of
      :data:`INTERPOLATED_ONSETS` and the rules of :data:`INTERPOLATED_RULES`.
    """
    q = grid.instance_quantities(sweep)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for cond, (key, level, above, _) in INTERPOLATED_ONSETS.items():
        da = grid.kind_seed_grid(sweep, q[key])  # dense first; NaN where diverged
        logp = np.log10(da["feature_probability"].values)
        for rule in INTERPOLATED_RULES:
            res = {}
            for kind in da["kind"].values:
                v = da.sel(kind=kind).transpose("seed", "feature_probability").values
                lp = interpolated_onset(logp, v, level(sweep.config), above=above, rule=rule)
                finite = np.isfinite(v)
                densest = np.where(finite.any(1), logp[np.argmax(finite, axis=1)], np.nan)
                res[str(kind)] = {"p": 10.0 ** lp, "censored": np.isfinite(lp) & (lp == densest)}
            out[f"{cond}_{rule}"] = res
    return out


def interpolated_definition(stat: str) -> str:
    """The words of an interpolated onset statistic ``<condition>_<rule>``."""
    cond, rule = stat.rsplit("_", 1)
    return (f"1-S where {INTERPOLATED_ONSETS[cond][3]}, {INTERPOLATED_RULES[rule]}; "
            "per seed, linear in log10(1-S) between grid points")


# ----------------------------------------------------------------------------------------
# Bounded onsets of the findings.


def bounded_onset(feature_probability, values, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the sustained onset of ``values >= level`` along the sparsity grid, with
    where it is censored.

    The onset is :func:`interpolated_onset` (``rule="sustained"``, inclusive):
    the point from which on the condition holds at every sparser grid point, linearly
    interpolated in ``x = log10(1 - S)`` between the last grid point where it fails and the
    next one; grid points with a NaN value (a diverged instance) are skipped for that seed.
    Here an onset beyond the sparsest point is not NaN but that point's x (a bound), flagged.

    Args:
      feature_probability: ``[P]`` the grid's 1-S values (any order, all > 0).
      values: ``[seeds, P]`` the quantity per seed and grid point (same order).
      level: the crossing level.
    Returns:
      ``(onset, censored)``, each ``[seeds]``: ``onset`` in ``log10(1 - S)``; ``censored``
      0 for an interpolated crossing, -1 if the condition already holds at the densest
      point (onset at or above it: the densest x is returned), +1 if it does not hold at
      the sparsest point (no onset on the grid: the sparsest x is returned, a bound), and
      the onset is NaN with censored 0 for a seed with no finite value.

    Raises:
      ValueError: shapes that do not match, or a probability <= 0.
    """
    p = np.asarray(feature_probability, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or v.ndim != 2 or v.shape[1] != p.size:
        raise ValueError(f"values must be [seeds, {p.size}] for {p.size} probabilities, got "
                         f"{v.shape}")
    if np.any(~(p > 0)):
        raise ValueError("feature probabilities must be > 0 (log10(1-S) is taken)")
    x = np.log10(p)
    onset = interpolated_onset(x, v, level, rule="sustained", inclusive=True)
    order = np.argsort(-p, kind="stable")
    censored = np.zeros(v.shape[0], dtype=int)
    for s, row in enumerate(v[:, order]):
        ok = np.isfinite(row)
        if not ok.any():
            continue
        hit = row[ok] >= level
        if not hit[-1]:
            onset[s], censored[s] = x[order][ok][-1], 1
        elif hit.all():
            censored[s] = -1
    return onset, censored
