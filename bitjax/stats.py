"""Statistics over restarts: means with Student-t confidence intervals, paired differences.

Seeds of a sweep are independent restarts, so a quantity measured once per seed is a small
sample; its mean gets a two-sided Student-t interval (quantiles from :mod:`scipy.stats`).
Dense and quantized instances of one seed share initial latent weights and data, so their
comparison is a *paired* difference, taken per seed before averaging. NaN marks a missing
value (a diverged instance, nothing to measure) and is ignored everywhere.

Both plain numpy arrays (:func:`mean_ci`) and labelled :class:`xarray.DataArray` grids
(:func:`mean_ci_over`, :func:`paired_difference`) are supported.

References:
  Student 1908, "The probable error of a mean", Biometrika 6(1) (the t interval).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.stats
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
