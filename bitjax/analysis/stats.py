"""Statistics over restarts: t intervals, paired tests, equivalence tests, Holm's correction.

Seeds of a sweep are independent restarts, so a quantity measured once per seed is a small
sample; its mean gets a two-sided Student-t interval (quantiles from :mod:`scipy.stats`).
Dense and quantized instances of one seed share initial latent weights and data, so their
comparison is a *paired* difference, taken per seed before averaging. NaN marks a missing
value (a diverged instance, nothing to measure) and is ignored everywhere.

Both plain numpy arrays (:func:`mean_ci`) and labelled :class:`xarray.DataArray` grids
(:func:`mean_ci_over`, :func:`paired_difference`) are supported.

Hypothesis tests on per-seed paired differences (the seed is the unit: one value per seed):
:func:`paired_t` (a difference), :func:`tost_paired` (equivalence within a margin, two
one-sided tests), :func:`holm` (step-down correction over a family of p-values) and
:func:`paired_bootstrap_ci` (a percentile interval for smooth statistics without a t
interval, such as a ratio of means). The best of several seeds (a minimum) gets no interval
at all: :func:`best_of_seeds` reports it with the number of seeds and the distribution-free
order-statistic fact :func:`min_quantile` (see there why).

References:
  Student 1908, "The probable error of a mean", Biometrika 6(1) (the t interval).
  Schuirmann 1987, "A comparison of the two one-sided tests procedure and the power approach
  for assessing the equivalence of average bioavailability", J. Pharmacokinet. Biopharm.
  15(6) (TOST).
  Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
  6(2).
  Efron & Tibshirani 1993, "An Introduction to the Bootstrap", Chapman & Hall (percentile
  intervals).
  Bickel & Freedman 1981, "Some asymptotic theory for the bootstrap", Ann. Statist. 9(6)
  (the bootstrap of a sample extreme is inconsistent).
  David & Nagaraja 2003, "Order Statistics", 3rd ed., Wiley, section 7.1 (distribution-free
  statements about order statistics).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import xarray as xr

#: The confidence level of every interval bitjax reports.
LEVEL = 0.95


def t_quantile(dof, level: float = LEVEL) -> np.ndarray:
    """Two-sided Student-t quantile: ``mean +- t * sd / sqrt(n)`` covers ``level``.

    Args:
      dof: degrees of freedom (``n - 1``), scalar or array, each >= 1.
      level: coverage in (0, 1).
    Returns:
      ``t`` with the shape of ``dof`` (4.303 for dof=2 at 95%).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    import scipy.stats  # here, not at the top: it alone takes a second to import

    return scipy.stats.t.ppf(0.5 + level / 2.0, np.asarray(dof, dtype=np.float64))


def mean_ci(values, axis: int = 0, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the t confidence interval along ``axis``, NaNs ignored.

    Args:
      values: array of samples.
      axis: the sample axis (the seeds).
      level: coverage of the interval.
    Returns:
      ``(mean, half)`` with ``axis`` removed; ``half`` is NaN where fewer than two values are
      finite, ``mean`` is NaN where none is.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    n = finite.sum(axis=axis)
    total = np.where(finite, v, 0.0).sum(axis=axis)
    mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    dev = np.where(finite, v - np.expand_dims(mean, axis), 0.0)
    var = (dev**2).sum(axis=axis) / np.maximum(n - 1, 1)
    half = np.where(n > 1, t_quantile(np.maximum(n - 1, 1), level) * np.sqrt(var)
                    / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, half


def mean_ci_floats(values, level: float = LEVEL) -> tuple[float, float]:
    """:func:`mean_ci` of a 1-D sample as two floats (NaN, NaN when nothing is finite)."""
    mean, half = mean_ci(np.ravel(np.asarray(values, dtype=np.float64)), 0, level)
    return float(mean), float(half)


def mean_ci_over(da: xr.DataArray, dim: str = "seed", level: float = LEVEL) -> xr.Dataset:
    """Mean, CI half-width and sample count of ``da`` over ``dim`` (NaNs ignored).

    Args:
      da: a labelled grid, for example ``ds.dims_per_feature``.
      dim: the sample dimension.
      level: coverage of the interval.
    Returns:
      A Dataset with ``mean``, ``ci95`` (the half-width; named for the default level) and
      ``n`` (finite samples), over the remaining dimensions.
    """
    if dim not in da.dims:
        raise ValueError(f"{da.name or 'the array'} has no dimension {dim!r}; it has "
                         f"{', '.join(map(str, da.dims))}")
    axis = da.get_axis_num(dim)
    mean, half = mean_ci(da.values, axis=axis, level=level)
    rest = [d for d in da.dims if d != dim]
    coords = {k: v for k, v in da.coords.items() if dim not in v.dims}
    n = np.isfinite(np.asarray(da.values, dtype=np.float64)).sum(axis=axis)
    return xr.Dataset({"mean": (rest, mean), "ci95": (rest, half), "n": (rest, n)},
                      coords=coords)


def paired_difference(da: xr.DataArray, a: str = "ternary", b: str = "dense",
                      dim: str = "kind") -> xr.DataArray:
    """``da.sel(kind=a) - da.sel(kind=b)``: per-cell differences of instances that differ
    only in ``dim`` (same seed, probability, importance, lr, weight decay).

    Raises:
      ValueError: ``a`` or ``b`` is not a value of ``dim``.
    """
    have = [str(v) for v in da[dim].values]
    for k in (a, b):
        if k not in have:
            raise ValueError(f"no {dim} {k!r}; this grid has {', '.join(have)}")
    return da.sel({dim: a}, drop=True) - da.sel({dim: b}, drop=True)


@contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's warnings for all-NaN or single-seed samples (their CI is NaN)."""
    with warnings.catch_warnings():
        for msg in ("Mean of empty slice", "Degrees of freedom <= 0",
                    "invalid value encountered", "All-NaN slice"):
            warnings.filterwarnings("ignore", message=msg, category=RuntimeWarning)
        yield


# ----------------------------------------------------------------------------------------
# Tests on paired differences (one value per seed).

#: The alternatives :func:`paired_t` accepts (scipy's names).
ALTERNATIVES = ("two-sided", "greater", "less")


def _sample(diff, name: str = "diff") -> np.ndarray:
    """The finite values of a 1-D sample as float64 (NaN = nothing measured, dropped)."""
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sample (one value per seed), got shape "
                         f"{d.shape}")
    return d[np.isfinite(d)]


@dataclass(frozen=True)
class PairedTResult:
    """Result of :func:`paired_t`.

    Attributes:
      n: finite differences used.
      mean: their mean; ``sd``: their sample standard deviation (ddof 1; NaN for n < 2).
      statistic: the t statistic ``(mean - null) / (sd / sqrt(n))`` (NaN for n < 2 or sd 0
        with mean == null; +-inf for sd 0 otherwise).
      p: the p-value for ``alternative`` (NaN where the statistic is).
      alternative: "two-sided", "greater" (mean > null) or "less".
      null: the hypothesised mean.
      low, high: the confidence interval for the mean at ``level``, one-sided for a
        one-sided alternative (the open end is -inf or +inf).
      level: the interval's coverage.
    """

    n: int
    mean: float
    sd: float
    statistic: float
    p: float
    alternative: str
    null: float
    low: float
    high: float
    level: float


def paired_t(diff, alternative: str = "two-sided", null: float = 0.0,
             level: float = LEVEL) -> PairedTResult:
    """One-sample t test on paired differences (the paired t test), NaNs dropped.

    Args:
      diff: per-seed differences ``a - b`` (1-D; NaN = missing seed).
      alternative: "two-sided" (mean != null), "greater" (mean > null) or "less".
      null: the mean under the null hypothesis.
      level: coverage of the reported confidence interval, in (0, 1).
    Returns:
      A :class:`PairedTResult` (scipy.stats.ttest_1samp's statistic and p-value).

    Raises:
      ValueError: ``diff`` is not 1-D, or ``alternative`` / ``level`` is invalid.

    References:
      Student 1908, "The probable error of a mean", Biometrika 6(1).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got "
                         f"{alternative!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    import scipy.stats

    d = _sample(diff)
    n = int(d.size)
    mean = float(d.mean()) if n else np.nan
    if n < 2:
        return PairedTResult(n, mean, np.nan, np.nan, np.nan, alternative, float(null),
                             np.nan, np.nan, level)
    sd = float(d.std(ddof=1))
    with warnings.catch_warnings():
        # scipy warns on a constant sample (sd 0); the statistic is then +-inf or NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.ttest_1samp(d, popmean=null, alternative=alternative)
    se = sd / np.sqrt(n)
    if alternative == "two-sided":
        t = float(scipy.stats.t.ppf(0.5 + level / 2.0, n - 1))
        low, high = mean - t * se, mean + t * se
    else:
        t = float(scipy.stats.t.ppf(level, n - 1))
        low, high = ((mean - t * se, np.inf) if alternative == "greater"
                     else (-np.inf, mean + t * se))
    return PairedTResult(n, mean, sd, float(res.statistic), float(res.pvalue), alternative,
                         float(null), float(low), float(high), level)


@dataclass(frozen=True)
class TostResult:
    """Result of :func:`tost_paired` (equivalence of a mean difference to 0 within a margin).

    Attributes:
      n: finite differences used; ``mean``, ``sd``: their mean and standard deviation.
      lower, upper: the equivalence margin ``(lower, upper)``, lower < 0 < upper.
      p_lower: p-value of "mean <= lower" against "mean > lower".
      p_upper: p-value of "mean >= upper" against "mean < upper".
      p: ``max(p_lower, p_upper)``, the TOST p-value (NaN for n < 2).
      low, high: the ``1 - 2 alpha`` confidence interval of the mean (inside the margin
        exactly when both one-sided tests reject at ``alpha``).
      alpha: the level of each one-sided test.
    """

    n: int
    mean: float
    sd: float
    lower: float
    upper: float
    p_lower: float
    p_upper: float
    p: float
    low: float
    high: float
    alpha: float

    @property
    def equivalent(self) -> bool:
        """Whether both one-sided tests reject at ``alpha`` (equivalence shown)."""
        return bool(np.isfinite(self.p) and self.p < self.alpha)

    @property
    def ci_wider_than_margin(self) -> bool:
        """Whether the ``1 - 2 alpha`` interval is wider than the margin (or undefined):
        then no outcome of this size of sample could have shown equivalence."""
        return not (np.isfinite(self.low) and np.isfinite(self.high)
                    and self.high - self.low <= self.upper - self.lower)


def tost_paired(diff, margin, level: float = 0.05) -> TostResult:
    """Two one-sided tests (TOST) for the equivalence of paired samples, NaNs dropped.

    Equivalence is shown when "mean <= lower" and "mean >= upper" are both rejected by
    one-sided t tests at ``level``; the TOST p-value is the larger of the two.

    Args:
      diff: per-seed differences ``a - b`` (1-D; NaN = missing seed).
      margin: the equivalence margin, ``m`` for ``(-m, m)`` or a pair ``(lower, upper)``
        with ``lower < 0 < upper``; stated before the data are looked at.
      level: the significance level ``alpha`` of each one-sided test, in (0, 0.5).
    Returns:
      A :class:`TostResult`.

    Raises:
      ValueError: a margin that does not contain 0, a ``level`` outside (0, 0.5), or a
        ``diff`` that is not 1-D.

    References:
      Schuirmann 1987, J. Pharmacokinet. Biopharm. 15(6), 657-680.
    """
    lower, upper = ((-float(margin), float(margin)) if np.ndim(margin) == 0
                    else tuple(float(v) for v in margin))
    if not lower < 0.0 < upper:
        raise ValueError(f"the equivalence margin must contain 0 (lower < 0 < upper), got "
                         f"({lower:g}, {upper:g})")
    if not 0.0 < level < 0.5:
        raise ValueError(f"the TOST level (alpha of each one-sided test) must be in (0, 0.5), "
                         f"got {level!r}")
    lo_test = paired_t(diff, "greater", lower, 1.0 - level)
    hi_test = paired_t(diff, "less", upper, 1.0 - level)
    p = max(lo_test.p, hi_test.p) if lo_test.n >= 2 else np.nan
    # The 1 - 2 alpha two-sided interval has the one-sided bounds of the two tests.
    return TostResult(lo_test.n, lo_test.mean, lo_test.sd, lower, upper, lo_test.p,
                      hi_test.p, float(p), lo_test.low, hi_test.high, level)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), NaNs left out.

    The ``k``-th smallest of ``m`` p-values becomes ``max_{j <= k} min(1, (m - j + 1) p_(j))``;
    rejecting where the adjusted value is below ``alpha`` controls the family-wise error
    rate at ``alpha`` under any dependence between the tests.

    Args:
      pvalues: the family's p-values, any shape; NaN marks a test not carried out (it is
        not counted in ``m`` and stays NaN).
    Returns:
      The adjusted p-values, same shape, float64.

    Raises:
      ValueError: a p-value outside [0, 1].

    References:
      Holm 1979, Scand. J. Statist. 6(2), 65-70.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = np.flatnonzero(np.isfinite(flat))
    if np.any((flat[ok] < 0.0) | (flat[ok] > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1], got {flat[ok].min():g} .. "
                         f"{flat[ok].max():g}")
    out = np.full(flat.shape, np.nan)
    m = ok.size
    if m:
        order = ok[np.argsort(flat[ok], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * flat[order])
        out[order] = np.maximum.accumulate(scaled)
    return out.reshape(p.shape)


def paired_bootstrap_ci(a, b, statistic: Callable[[np.ndarray, np.ndarray], float], *,
                        n_boot: int = 2000, level: float = LEVEL,
                        seed: int = 0) -> tuple[float, float, float]:
    """A statistic of two paired samples and its percentile bootstrap interval.

    Rows (seeds) are resampled with replacement, the same rows for ``a`` and ``b`` (the
    pairing is kept). Suited to smooth statistics without a t interval (a ratio of means).
    Not for a sample extreme such as the best (smallest) of several seeds: a resample can
    never go below the sample's minimum, so the interval is biased upwards and can exclude
    the estimate itself (Bickel & Freedman 1981); use :func:`best_of_seeds` there.

    Args:
      a, b: ``[seeds, ...]`` arrays with the same number of rows.
      statistic: ``f(a_rows, b_rows) -> float``.
      n_boot: number of resamples.
      level: coverage of the interval.
      seed: seed of the resampling generator (the interval is reproducible).
    Returns:
      ``(estimate on the full sample, low, high)``; NaN bounds for fewer than two rows or
      where every resample gives NaN.

    Raises:
      ValueError: ``a`` and ``b`` have different numbers of rows, or a bad ``level``.

    References:
      Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[:1] != b.shape[:1]:
        raise ValueError(f"paired samples need the same number of rows, got {a.shape[0]} "
                         f"and {b.shape[0]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    with quiet_nan_warnings():
        est = float(statistic(a, b))
        k = a.shape[0]
        if k < 2:
            return est, np.nan, np.nan
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, k, size=(n_boot, k))
        boot = np.array([statistic(a[i], b[i]) for i in idx], dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return est, np.nan, np.nan
    q = np.quantile(boot, [0.5 - level / 2.0, 0.5 + level / 2.0])
    return est, float(q[0]), float(q[1])


def min_quantile(k: int, level: float = LEVEL) -> float:
    """The quantile ``q`` of one seed's distribution that the best of ``k`` seeds is at or
    below with probability ``level``: ``q = 1 - (1 - level) ** (1 / k)``.

    Distribution-free (any continuous distribution, independent seeds): the minimum of
    ``k`` draws exceeds the ``q``-quantile only if all ``k`` do, with probability
    ``(1 - q) ** k``. It says how good "the best of k" is relative to one restart (0.45 for
    5 seeds, 0.14 for 20 seeds at 95%); it is no interval for the minimum itself.

    Args:
      k: independent seeds (>= 1).
      level: the probability, in (0, 1).
    Returns:
      ``q`` in (0, 1).

    References:
      David & Nagaraja 2003, "Order Statistics", section 7.1.
    """
    if k < 1:
        raise ValueError(f"the best of k seeds needs k >= 1, got {k!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(1.0 - (1.0 - level) ** (1.0 / k))


@dataclass(frozen=True)
class BestOfSeeds:
    """Result of :func:`best_of_seeds`: a best-of-seeds statistic, reported without an
    interval.

    Attributes:
      estimate: the statistic on all seeds.
      k: seeds (rows) it was taken over.
      quantile: :func:`min_quantile` of ``k`` at ``level`` (NaN for k = 0).
      level: the probability of ``quantile``.
    """

    estimate: float
    k: int
    quantile: float
    level: float


def best_of_seeds(a, b, statistic: Callable[[np.ndarray, np.ndarray], float], *,
                  level: float = LEVEL) -> BestOfSeeds:
    """A statistic of the best (smallest) of several seeds, reported with no interval.

    Why no interval: the statistic is a sample extreme. The percentile bootstrap cannot go
    below the sample's minimum (every resample's minimum is at or above it), so it is
    inconsistent for extremes (Bickel & Freedman 1981) and its interval can exclude its own
    estimate; a distribution-free order-statistic interval exists for quantiles but not for
    the population minimum (no finite sample bounds it from below without assumptions on
    the tail). What can be stated without assumptions is how good the best of ``k`` seeds
    is relative to one seed (:func:`min_quantile`), and that is reported beside it.

    Args:
      a, b: ``[seeds, ...]`` arrays with the same number of rows (paired seeds).
      statistic: ``f(a, b) -> float``, e.g. the difference of the per-cell minima.
      level: the probability of the reported quantile.
    Returns:
      A :class:`BestOfSeeds`.

    Raises:
      ValueError: ``a`` and ``b`` have different numbers of rows.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[:1] != b.shape[:1]:
        raise ValueError(f"paired samples need the same number of rows, got {a.shape[0]} "
                         f"and {b.shape[0]}")
    with quiet_nan_warnings():
        est = float(statistic(a, b))
    rows = np.isfinite(a.reshape(a.shape[0], -1)).any(1) | np.isfinite(
        b.reshape(b.shape[0], -1)).any(1)
    k = int(rows.sum())
    return BestOfSeeds(est, k, min_quantile(k, level) if k else math.nan, level)
