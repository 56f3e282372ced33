"""Figures of the mechanism: trained ternary weights against the best-known ternary solution.

Drawing only (the measures come from :mod:`bitjax.analysis.mechanism`): per run, the scale
``gamma``, the non-zeros per column, ``D*``, the mean ``|cos|`` and the loss over the
best-known solution against ``1 - S`` for each source (median over seeds with the
interquartile band, :func:`measure_figure`); and, for chosen instances, each source's
``W^T W`` or ``W`` side by side (:func:`instance_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bitjax.analysis import mechanism, metrics
from bitjax.report import plots

#: Colour and line style of each source (the kinds' own colours for the trained ones).
SOURCE_STYLE = {"dense": (plots.kind_color("dense"), "-"),
                "ternary": (plots.kind_color("ternary"), "-"),
                "ternary_fp": (plots.kind_color("ternary"), "--"),
                "best_known": ("black", "-")}
#: The panels of :func:`measure_figure`: summary column stem and axis words.
MEASURE_PANELS = (("gamma", "scale γ (non-zero magnitude)"),
                  ("nnz_nonzero", "non-zeros per column\n(mean over non-zero columns)"),
                  ("dims_per_feature", "D* = m / ||W||_F²"),
                  ("mean_abs_cos", "mean |cos|, represented features"),
                  ("loss_over_best_known", "loss / best-known loss\n(same estimator)"))


def measure_figure(summary, title: str, footer: str | None = None):
    """One run's measures against ``1 - S``, one panel per :data:`MEASURE_PANELS` entry.

    Args:
      summary: :func:`bitjax.analysis.mechanism.summary_table` rows of ONE run.
      title: the figure's title.
      footer: the provenance line (:func:`bitjax.report.plots.footer`), or None.

    Returns:
      The figure (the caller saves it).
    """
    fig, axes = plots.new_figure(1, len(MEASURE_PANELS), size=(2.9, 2.6))
    for ax, (stem, words) in zip(axes[0], MEASURE_PANELS, strict=True):
        for source in mechanism.SOURCES:
            rows = summary[summary["source"] == source].sort_values("feature_probability")
            med = rows[f"{stem}_median"].to_numpy(np.float64)
            if not np.isfinite(med).any():
                continue  # dense has no scale nor non-zeros; without best-known no ratio
            color, ls = SOURCE_STYLE[source]
            plots.curve_with_band(ax, rows["feature_probability"].to_numpy(np.float64), med,
                                  rows[f"{stem}_q25"].to_numpy(np.float64),
                                  rows[f"{stem}_q75"].to_numpy(np.float64),
                                  label=mechanism.SOURCE_WORDS[source], color=color, ls=ls)
        ax.set_xscale("log")
        _plain_log_x(ax)
        ax.invert_xaxis()
        ax.set_xlabel("1 - S (sparser to the right)", fontsize=7)
        ax.set_ylabel(words, fontsize=7)
        ax.tick_params(labelsize=6)
        if stem == "loss_over_best_known":
            ax.axhline(1.0, color="0.6", lw=0.7, ls=":", zorder=0)
    found = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(lab, h)
    labels = [mechanism.SOURCE_WORDS[s] for s in mechanism.SOURCES
              if mechanism.SOURCE_WORDS[s] in found]
    handles = [found[lab] for lab in labels]
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7,
               bbox_to_anchor=(0.5, 1.02), frameon=False)
    fig.suptitle(title, fontsize=9, y=1.09)
    fig.tight_layout()
    if footer:
        plots.footer(fig, footer)
    return fig


#: Panels of a model with more features show this many, reordered (:func:`chain_order`).
MAX_FEATURES = 64


def chain_order(w: np.ndarray) -> np.ndarray:
    """An order of the features of ``w [m, n]`` that puts interfering features side by side.

    The features represented by the scale-free rule
    (:func:`bitjax.analysis.metrics.represented_relative`) come first, as a chain: start at
    the one of largest norm, then repeatedly the not yet placed one with the largest
    ``|W_i . W_j|`` with the last one placed (none above 0: the not yet placed one of largest
    norm), so an antipodal pair becomes a 2 x 2 block of ``W^T W``; the other features follow
    by decreasing norm.
    """
    w = np.asarray(w, np.float64)
    norms = np.linalg.norm(w, axis=0)
    rep = np.asarray(metrics.represented_relative(w.astype(np.float32)), bool)
    g = np.abs(w.T @ w)
    np.fill_diagonal(g, 0.0)
    left = rep.copy()
    order = []
    cur = int(np.argmax(np.where(left, norms, -1.0)))
    while left.any():
        order.append(cur)
        left[cur] = False
        if not left.any():
            break
        row = np.where(left, g[cur], -1.0)
        cur = int(np.argmax(row)) if row.max() > 0 else \
            int(np.argmax(np.where(left, norms, -1.0)))
    rest = np.flatnonzero(~rep)
    rest = rest[np.argsort(-norms[rest], kind="stable")]
    return np.concatenate([np.asarray(order, np.int64), rest]).astype(np.int64)


def _plain_log_x(ax) -> None:
    """Plain numbers at 1, 2 and 5 x 10^k on a log x axis (a grid within one decade would
    otherwise get crowded minor labels such as ``4 x 10^-2``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


@dataclass(frozen=True)
class Panel:
    """One source's weights of one chosen instance: effective weights ``W [m, n]`` (None:
    the source lacks the instance) and the panel's title."""

    source: str
    W: np.ndarray | None
    title: str


def panel_title(source: str, measures: dict, loss_ratio: float | None = None) -> str:
    """``source`` words, then gamma and the non-zeros per column (a quantized source) or
    ``D*`` and the features represented, and the loss over the best-known one where known."""
    def num(k, fmt):
        v = measures.get(k, np.nan)
        return format(float(v), fmt) if np.isfinite(v) else "-"

    lines = [mechanism.SOURCE_WORDS[source]]
    if np.isfinite(measures.get("gamma", np.nan)):
        lines.append(f"γ {num('gamma', '.3g')}, nnz/col {num('nnz_nonzero', '.2f')}")
    lines.append(f"D* {num('dims_per_feature', '.2f')}, "
                 f"represented {num('n_represented', '.0f')}")
    if loss_ratio is not None and np.isfinite(loss_ratio):
        lines.append(f"loss / best-known {loss_ratio:.3g}")
    return "\n".join(lines)


def instance_figure(rows: Sequence[tuple[str, Sequence[Panel]]], what: str = "gram",
                    title: str = "", footer: str | None = None,
                    max_features: int = MAX_FEATURES):
    """Chosen instances side by side: one row per instance, one column per source.

    Args:
      rows: ``(row label, panels)`` per instance, the panels in the same source order.
      what: ``"gram"`` (``W^T W`` on the paper's fixed colour range [-1, 1],
        :func:`bitjax.report.plots.gram_heatmap`) or ``"weights"`` (``W`` itself, ``m`` rows
        by ``n`` columns, each panel on its own symmetric range ``+-max |W|``, so a ternary
        pattern shows as its three values).
      title: the figure's title.
      footer: the provenance line, or None.
      max_features: a model with more features is drawn with its features reordered per
        panel (:func:`chain_order`) and the first ``max_features`` of them shown (the row
        label says so); fewer features are drawn in their own order.

    Returns:
      The figure.
    """
    if what not in ("gram", "weights"):
        raise ValueError(f"unknown panel kind {what!r}; allowed: gram, weights")
    n_cols = max(len(p) for _, p in rows)
    size = (2.6, 2.9) if what == "gram" else (2.9, 1.9)
    fig, axes = plots.new_figure(len(rows), n_cols, size=size, layout="constrained")
    im = None
    for r, (label, panels) in enumerate(rows):
        n = max((p.W.shape[1] for p in panels if p is not None and p.W is not None),
                default=0)
        if n > max_features:
            label += f"\n(features reordered per panel,\nfirst {max_features} of {n})"
        for c in range(n_cols):
            ax = axes[r, c]
            panel = panels[c] if c < len(panels) else None
            if panel is None or panel.W is None or not np.isfinite(panel.W).all():
                ax.set_axis_off()
                if panel is not None:
                    ax.set_title(f"{mechanism.SOURCE_WORDS[panel.source]}\n(not available)",
                                 fontsize=7)
                continue
            w = panel.W
            if w.shape[1] > max_features:
                w = w[:, chain_order(w)[:max_features]]
            if what == "gram":
                im = plots.gram_heatmap(ax, w)
            else:
                top = float(np.max(np.abs(w))) or 1.0
                ax.imshow(w, cmap="RdBu", vmin=-top, vmax=top, aspect="auto",
                          interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(panel.title, fontsize=6.5)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes[:, -1].tolist(), shrink=0.6, label="W^T W")
    if title:
        fig.suptitle(title, fontsize=9)
    if footer:
        # Lay the figure out once and keep it so: the footer goes under what is drawn.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
        plots.footer(fig, footer)
    return fig
