"""Reusable matplotlib figures for toy-model sweeps (the core modules never import this).

Functions draw onto an ``Axes`` the caller owns, so experiments compose them into figure
grids; colours per kind are fixed so every figure in results/ reads the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # results are files; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bitjax.metrics import REFERENCE_DIMENSIONALITIES  # noqa: E402

KIND_COLORS = {
    "dense": "tab:blue",
    "ternary": "tab:orange",
    "ternary_per_feature": "tab:green",
    "binary": "tab:red",
    "twn": "tab:purple",
    "bitlinear": "tab:brown",
}


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, "tab:gray")


@contextmanager
def quiet_nan_warnings():
    """Silence numpy's warnings for all-NaN or single-seed columns (their CI is NaN)."""
    with warnings.catch_warnings():
        for msg in ("Mean of empty slice", "Degrees of freedom <= 0",
                    "invalid value encountered", "All-NaN slice"):
            warnings.filterwarnings("ignore", message=msg, category=RuntimeWarning)
        yield


def mean_ci(values: np.ndarray, axis: int = 0, level: float = 0.95):
    """Mean and half-width of the t confidence interval along ``axis`` (NaNs ignored).

    With fewer than two finite values the half-width is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    n = np.sum(np.isfinite(v), axis=axis)
    mean = np.nanmean(v, axis=axis)
    sd = np.nanstd(v, axis=axis, ddof=1) if v.shape[axis] > 1 else np.full_like(mean, np.nan)
    half = np.where(n > 1, _t_quantile(np.maximum(n - 1, 1), level) * sd
                    / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, half


def mean_ci_floats(values) -> tuple[float, float]:
    """:func:`mean_ci` of a 1-D array as two floats (both NaN if no value is finite)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).any():
        return np.nan, np.nan
    mean, half = mean_ci(v)
    return float(mean), float(half)


def _t_quantile(dof, level: float):
    """Two-sided Student-t quantile (exact table for small dof, normal beyond)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
             9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}
    if level != 0.95:
        raise ValueError("only 95% intervals are tabulated")
    dof = np.asarray(dof)
    keys = np.array(sorted(table))
    vals = np.array([table[k] for k in keys])
    # Largest tabulated dof <= dof (conservative), 1.96 beyond 60.
    idx = np.searchsorted(keys, dof, side="right") - 1
    out = vals[np.clip(idx, 0, len(keys) - 1)]
    return np.where(dof > 60, 1.96, out)


def curve_with_band(ax, x: np.ndarray, y_by_seed: np.ndarray, *, label: str, color: str,
                    band: str = "ci"):
    """Mean over seeds (rows of ``y_by_seed [seeds, len(x)]``) with a band.

    ``band="ci"``: 95% t interval of the mean; ``"range"``: min to max over seeds.
    """
    y = np.asarray(y_by_seed, dtype=np.float64)
    mean, half = mean_ci(y, axis=0)
    ax.plot(x, mean, "-o", ms=3, color=color, label=label)
    if y.shape[0] > 1:
        if band == "ci":
            lo, hi = mean - half, mean + half
        else:
            lo, hi = np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def reference_lines(ax, values: dict[str, float] | None = None, *, axis: str = "y"):
    """Dashed lines at the paper's sticky dimensionalities (1, 3/4, 2/3, 1/2, 2/5, 3/8)."""
    values = REFERENCE_DIMENSIONALITIES if values is None else values
    for name, v in values.items():
        if axis == "y":
            ax.axhline(v, color="0.6", ls="--", lw=0.7, zorder=0)
            ax.annotate(name, (1.0, v), xycoords=("axes fraction", "data"), fontsize=7,
                        color="0.4", va="center", xytext=(2, 0), textcoords="offset points")
        else:
            ax.axvline(v, color="0.6", ls="--", lw=0.7, zorder=0)


def weight_diagram_2d(ax, w: np.ndarray, *, importance: Sequence[float] | None = None,
                      title: str | None = None):
    """The paper's 2-D picture: each feature's column of ``w [2, n]`` as a line from 0.

    Colour encodes importance (yellow = most important) as in the paper.
    """
    n = w.shape[1]
    imp = np.ones(n) if importance is None else np.asarray(importance, dtype=float)
    colors = plt.cm.viridis(imp / max(imp.max(), 1e-12))
    for i in range(n):
        ax.plot([0, w[0, i]], [0, w[1, i]], color=colors[i], lw=1.5)
        ax.scatter(w[0, i], w[1, i], color=colors[i], s=12, zorder=3)
    square_axes(ax, w, title)


def square_axes(ax, w: np.ndarray, title: str | None = None):
    """Frame of a 2-D weight diagram: equal, symmetric limits covering ``w``, thin axes."""
    lim = max(1.2, float(np.nanmax(np.abs(w))) * 1.1 if np.isfinite(w).any() else 1.2)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5, zorder=0)
    ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def gram_heatmap(ax, w: np.ndarray, *, title: str | None = None):
    """``W^T W`` with the paper's symmetric colour range [-1, 1]; returns the image."""
    im = ax.imshow(w.T @ w, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return im


def bias_column(ax, b: np.ndarray):
    """The bias vector as a one-column heat map, same colour scale as :func:`gram_heatmap`."""
    im = ax.imshow(np.asarray(b)[:, None], cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def norm_bars(ax, norms: np.ndarray, superposition: np.ndarray):
    """Horizontal bars of ``||W_i||`` coloured by ``sqrt(superposition)`` clipped to [0, 1]."""
    colour = plt.cm.viridis_r(np.clip(np.sqrt(np.maximum(superposition, 0)), 0, 1))
    n = len(norms)
    ax.barh(np.arange(n), norms, color=colour)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, max(1.2, float(np.nanmax(norms)) if np.isfinite(norms).any() else 1.2))
    ax.set_yticks([])


def new_figure(nrows: int = 1, ncols: int = 1, *, size=(4.0, 3.0), **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False, **kw)
    return fig, axes


def close(fig) -> None:
    plt.close(fig)


def save(fig, stem) -> list:
    """Write ``fig`` as ``stem.png`` and ``stem.pdf`` (atomically) and close it; the paths."""
    from bitjax import io

    try:
        return io.save_figure(fig, stem)
    finally:
        close(fig)
