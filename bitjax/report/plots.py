"""Reusable matplotlib figures for toy-model sweeps (the core modules never import this).

Functions draw onto an ``Axes`` the caller owns, so experiments compose them into figure
grids; colours per kind are fixed so every figure in results/ reads the same way. Figures
only: statistics live in :mod:`bitjax.analysis.stats`, and the matplotlib backend is the caller's
choice (the command line picks a file backend; a notebook keeps its inline one).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from bitjax.analysis.metrics import REFERENCE_DIMENSIONALITIES
from bitjax.layers import KINDS


def kind_color(kind: str) -> str:
    """The colour of a kind in every figure (:data:`bitjax.layers.KINDS`); grey for a name
    that is not a kind (a difference such as "ternary - dense")."""
    k = KINDS.get(kind)
    return k.colour if k is not None else "tab:gray"


def mean_and_best_by_kind(ax, rows, key: str, kinds) -> None:
    """Per kind, ``key``'s mean over restarts with its 95% band (``<key>_ci95``) and its best
    restart (``<key>_best``, dashed) against the feature probability, from table rows (one
    per kind and probability)."""
    for kind in kinds:
        kr = sorted((r for r in rows if r["kind"] == kind),
                    key=lambda r: -r["feature_probability"])
        x = np.array([r["feature_probability"] for r in kr])
        mean = np.array([r[key] for r in kr])
        half = np.array([r[f"{key}_ci95"] for r in kr])
        color = kind_color(kind)
        curve_with_band(ax, x, mean, mean - half, mean + half, label=kind, color=color)
        ax.plot(x, [r[f"{key}_best"] for r in kr], ls="--", color=color, lw=1,
                label=f"{kind}, best restart")


def curve_with_band(ax, x: np.ndarray, mean: np.ndarray, lo: np.ndarray | None = None,
                    hi: np.ndarray | None = None, *, label: str | None, color: str,
                    ls: str = "-"):
    """A line ``mean`` against ``x`` with markers and, where given, a band ``lo..hi``.

    The statistics (mean and 95% CI over seeds) come from :mod:`bitjax.analysis.stats`; this only
    draws them. Band segments with a NaN bound are left open.
    """
    ax.plot(x, mean, ls=ls, marker="o", ms=3, color=color, label=label)
    if lo is not None and hi is not None:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


#: The colour of each phase of the extra feature in every phase diagram (experiments.phase
#: and experiments.representable draw the trained and the exact diagrams alike).
PHASE_COLORS = {"dropped": "0.85", "dedicated": "tab:blue", "superposed": "tab:orange"}


def footer(fig, text: str) -> None:
    """A small grey line under everything else in ``fig`` saying where its data came from
    (preset, steps, seeds, commit: see :func:`bitjax.report.tables.run_label`).

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
    from bitjax.store import files as store_files

    try:
        return store_files.save_figure(fig, stem)
    finally:
        close(fig)


def _gap_yscale(ax, values: np.ndarray) -> None:
    """Log y when every value is positive, else symlog with a linear zone below the
    smallest non-zero magnitude (gaps span orders of magnitude across sparsities)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return
    if (v > 0).all():
        ax.set_yscale("log")
        return
    mags = np.abs(v[v != 0])
    # The linear zone ends a decade below the typical magnitude (the lower quartile): a
    # few near-zero values would otherwise stretch the axis over many empty decades.
    lin = 10.0 ** np.floor(np.log10(np.percentile(mags, 25))) if mags.size else 1.0
    ax.set_yscale("symlog", linthresh=lin, linscale=0.5)
    ax.axhline(0.0, color="0.5", lw=0.7, zorder=0)


def loss_gap_figure(columns, *, inverse_x: bool = False, title: str = "",
                    seed: int = 0):
    """The paired loss gap of a quantized kind against dense, one column per comparison.

    Rows: the gap ``loss(kind) - loss(dense)`` (each seed as a dot, the mean with its 95%
    t CI as a band, the best of seeds, and the mean over pairs where both converged when
    the run stored convergence); the ratio ``loss(kind) / loss(dense)`` on a log scale
    (geometric mean and CI); when stored, how many seeds converged (kind, dense, both).
    Statistics come precomputed from :func:`bitjax.analysis.grid.loss_gap_rows`; this only draws.

    Args:
      columns: ``(title, gap, rows)`` per column: ``gap`` is
        :func:`bitjax.analysis.grid.loss_gap`'s Dataset for one kind (dimensions ``seed`` and
        ``feature_probability``), ``rows`` the matching rows of
        :func:`~bitjax.analysis.grid.loss_gap_rows`, in the Dataset's probability order.
      inverse_x: x is ``1/(1-S)`` (increasing to the right) instead of ``1-S`` (inverted
        log axis, sparser to the right).
      title: the figure title.
      seed: seed of the horizontal jitter of the per-seed dots.
    Returns:
      The figure (call :func:`footer` then :func:`save`).
    """
    columns = list(columns)
    if not columns:
        raise ValueError("loss_gap_figure needs at least one column")
    has_conv = any("converged" in g for _, g, _ in columns)
    n_rows = 3 if has_conv else 2
    fig, axes = new_figure(n_rows, len(columns), size=(4.4, 2.9))
    rng = np.random.default_rng(seed)
    for c, (col_title, gap, rows) in enumerate(columns):
        kind = str(rows[0]["kind"]) if rows else ""
        color, base_color = kind_color(kind), kind_color(str(gap.attrs.get("base", "dense")))
        p = gap["feature_probability"].values
        x = 1.0 / p if inverse_x else p
        col = {k: np.array([r[k] if r[k] is not None else np.nan for r in rows], float)
               for k in ("gap_mean", "gap_ci95", "gap_best_of_seeds", "ratio_geomean",
                         "ratio_ci95_low", "ratio_ci95_high", "ratio_best_of_seeds",
                         "gap_converged_mean", "n_converged", "n_converged_base",
                         "n_pairs_converged", "n_pairs", "n_seeds")}
        per_seed = {k: gap[k].transpose("seed", "feature_probability").values
                    for k in ("gap", "ratio")}
        jitter = np.exp(rng.normal(0.0, 0.025, per_seed["gap"].shape))
        xs = x[None, :] * jitter
        n_seeds = int(col["n_seeds"].max())
        n_left = int(np.sum(col["n_seeds"] - col["n_pairs"]))

        ax = axes[0, c]
        ax.scatter(xs, per_seed["gap"], s=7, color=color, alpha=0.35, lw=0,
                   label="each seed")
        mean, half = col["gap_mean"], col["gap_ci95"]
        curve_with_band(ax, x, mean, mean - half, mean + half, color=color,
                        label="mean over seeds, 95% t CI")
        ax.plot(x, col["gap_best_of_seeds"], ls=":", marker="x", ms=4, color="k", lw=1,
                label="best of seeds (min - min)")
        shown = [per_seed["gap"].ravel(), mean - half, mean + half, col["gap_best_of_seeds"]]
        if "converged" in gap:
            ax.plot(x, col["gap_converged_mean"], ls="--", marker="s", ms=3, mfc="none",
                    color=color, lw=1, label="mean over pairs both converged")
            shown.append(col["gap_converged_mean"])
        _gap_yscale(ax, np.concatenate(shown))
        ax.set_ylabel(f"loss gap  {kind} - dense")
        ax.set_title(f"{col_title}\n{int(col['n_pairs'].sum()):,} seed pairs used, "
                     f"{n_left:,} left out (a member diverged)", fontsize=9)

        ax = axes[1, c]
        ax.scatter(xs, per_seed["ratio"], s=7, color=color, alpha=0.35, lw=0,
                   label="each seed")
        curve_with_band(ax, x, col["ratio_geomean"], col["ratio_ci95_low"],
                        col["ratio_ci95_high"], color=color,
                        label="geometric mean, 95% t CI")
        ax.plot(x, col["ratio_best_of_seeds"], ls=":", marker="x", ms=4, color="k", lw=1,
                label="best of seeds (min / min)")
        ax.axhline(1.0, color="0.5", lw=0.7, zorder=0)
        ax.set_yscale("log")
        _plain_log_labels(ax)
        ax.set_ylabel(f"loss ratio  {kind} / dense  (log)")

        if has_conv:
            ax = axes[2, c]
            if "converged" in gap:
                for key, lab, colr, style in (
                        ("n_converged", kind, color, dict(marker="o", ms=4, lw=2.2)),
                        ("n_converged_base", "dense", base_color, dict(marker="o", ms=4,
                                                                        lw=2.2)),
                        ("n_pairs_converged", "both (pairs)", "k", dict(marker="s", ms=2.5,
                                                                         lw=0.8, ls="--"))):
                    ax.plot(x, col[key], color=colr, label=lab, **style)
                ax.axhline(n_seeds, color="0.6", ls="--", lw=0.7, zorder=0)
                ax.set_ylim(-0.5, n_seeds + 0.8)
                ax.set_ylabel(f"seeds converged (of {n_seeds})")
            else:
                ax.text(0.5, 0.5, "no convergence diagnostic stored", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8)
        for r in range(n_rows):
            ax = axes[r, c]
            ax.set_xscale("log")
            if inverse_x:
                ax.set_xlabel("1 / (1 - S)  (log)")
            else:
                if not ax.xaxis_inverted():
                    ax.invert_xaxis()
                ax.set_xlabel("feature probability 1 - S  (log; sparser ->)")
            # The same entries in every column: said once per row (the converged row's
            # differ by kind).
            if (c == 0 or r == 2) and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    if not has_conv:
        title = (title + "\n" if title else "") + "(this run stores no convergence diagnostic)"
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _plain_log_labels(ax) -> None:
    """Plain numbers (``2``, ``0.5``) instead of ``2 x 10^0`` on a log y axis: at 1, 2, 3,
    5 x 10^k, or at evenly spaced values when the data span less than a factor 4 (call it
    after plotting, so that the limits are known)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 4.0:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def onset_strip(ax, strips) -> None:
    """Per-seed onset estimates as a strip plot, one row per strip (top to bottom).

    Each seed's onset is a vertical tick; a seed whose condition already holds at the
    densest grid point (left-censored) is an open triangle there; the mean with its 95% CI
    is a black bar with a dot. Seeds that never meet the condition are counted in the row
    label. Statistics come precomputed (:func:`bitjax.analysis.stats.mean_ci`); this only draws.

    Args:
      ax: the axes; its x axis is the caller's (share it with the curves above).
      strips: dicts with ``label``, ``color``, ``values`` (``[seeds]`` onsets in the x
        units, NaN where never met), ``censored`` (``[seeds]`` bool) and optionally
        ``mean``, ``low``, ``high`` (the summary bar; NaN or absent: not drawn).
    """
    strips = list(strips)
    labels = []
    for r, s in enumerate(strips):
        y = len(strips) - 1 - r
        v = np.asarray(s["values"], dtype=np.float64)
        cens = np.asarray(s.get("censored", np.zeros(v.shape, bool)), dtype=bool)
        found = np.isfinite(v)
        plain, at_edge = found & ~cens, found & cens
        ax.scatter(v[plain], np.full(plain.sum(), y), marker="|", s=120, lw=1.3,
                   color=s["color"], alpha=0.8)
        ax.scatter(v[at_edge], np.full(at_edge.sum(), y), marker="<", s=28,
                   facecolors="none", edgecolors=s["color"], lw=1.0)
        mean, lo, hi = (float(s.get(k, np.nan)) for k in ("mean", "low", "high"))
        if np.isfinite(mean):
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y - 0.28, y - 0.28], color="k", lw=1.5)
            ax.plot([mean], [y - 0.28], marker="o", ms=3.5, color="k")
        never = int((~found).sum())
        extra = [f"{int(at_edge.sum())} at densest"] if at_edge.any() else []
        extra += [f"{never} never"] if never else []
        labels.append(f"{s['label']} ({found.sum()}/{v.size}"
                      f"{'; ' + ', '.join(extra) if extra else ''})")
    ax.set_yticks(range(len(strips) - 1, -1, -1), labels, fontsize=7)
    ax.set_ylim(-0.7, len(strips) - 0.4)
    ax.grid(axis="x", color="0.92", lw=0.5)
