"""Reusable matplotlib figures for toy-model sweeps (the core modules never import this).

Functions draw onto an ``Axes`` the caller owns, so experiments compose them into figure
grids; colours per kind are fixed so every figure in results/ reads the same way. Figures
only: statistics live in :mod:`bitjax.stats`, and the matplotlib backend is the caller's
choice (the command line picks a file backend; a notebook keeps its inline one).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from bitjax.metrics import REFERENCE_DIMENSIONALITIES

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


def curve_with_band(ax, x: np.ndarray, mean: np.ndarray, lo: np.ndarray | None = None,
                    hi: np.ndarray | None = None, *, label: str | None, color: str,
                    ls: str = "-"):
    """A line ``mean`` against ``x`` with markers and, where given, a band ``lo..hi``.

    The statistics (mean and 95% CI over seeds) come from :mod:`bitjax.stats`; this only
    draws them. Band segments with a NaN bound are left open.
    """
    ax.plot(x, mean, ls=ls, marker="o", ms=3, color=color, label=label)
    if lo is not None and hi is not None:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def footer(fig, text: str) -> None:
    """A small grey line under everything else in ``fig`` saying where its data came from
    (preset, steps, seeds, commit: see :func:`bitjax.results.run_label`).

    Call it last, after legends and titles: it is placed below the figure's tight bounding
    box, which ``save`` (``bbox_inches="tight"``) then grows to include it.
    """
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, all artists drawn so far
    width, height = fig.get_size_inches()
    fig.text(box.x0 / width, (box.y0 - 0.04) / height, text, fontsize=6, color="0.45",
             ha="left", va="top")


def data_ylim(ax, values, *, floor: float | None = None, ceiling: float | None = None,
              pad: float = 0.05) -> None:
    """Y limits that show every finite value of ``values`` (plus a ``pad`` fraction),
    never inside ``floor..ceiling`` (the range the figure always shows)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo = [x for x in (floor, v.min() if v.size else None) if x is not None]
    hi = [x for x in (ceiling, v.max() if v.size else None) if x is not None]
    if not lo or not hi:
        return
    lo_v, hi_v = min(lo), max(hi)
    span = (hi_v - lo_v) or 1.0
    ax.set_ylim(lo_v - pad * span if floor is None or lo_v < floor else lo_v,
                hi_v + pad * span if ceiling is None or hi_v > ceiling else hi_v)


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
