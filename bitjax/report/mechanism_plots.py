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


# ------------------------------------------------------------------------------------------
# The findings section (markdown)

#: Sparsities per run in the findings tables: the densest, the middle and the sparsest
#: point of the run's grid.
TABLE_POINTS = 3
#: The columns of each findings table: summary stem, header, format.
TABLE_COLUMNS = (("gamma", "γ", ".3f"), ("nnz_nonzero", "nnz/column (non-zero columns)", ".2f"),
                 ("nnz_represented", "nnz/column (represented)", ".2f"),
                 ("dims_per_feature", "D*", ".3f"), ("n_represented", "represented", ".0f"),
                 ("mean_abs_cos", "mean abs cos", ".3f"),
                 ("loss_over_best_known", "loss / best-known", ".3f"))
#: The files of the mechanism tool a findings section reads (in its output folder).
SUMMARY_FILE, MANIFEST_FILE = "mechanism.csv", "manifest.json"
#: ...and its per-instance table (one row per run, source, seed and sparsity).
INSTANCES_FILE = "mechanism_instances.csv"
#: The sources the findings' opening sentence compares, with their words there.
OPENING_SOURCES = (("ternary", "trained from scratch"),
                   ("ternary_fp", "trained from full precision"),
                   ("best_known", "the best-known ternary solutions"))
GRAM_FIGURE, WEIGHTS_FIGURE = "mechanism_gram", "mechanism_weights"


def figure_stem(run: str) -> str:
    """A run's figure name: ``sparsity/relu`` -> ``mechanism_sparsity_relu``."""
    return f"mechanism_{run.replace('/', '_')}"


def _cell(row, stem: str, fmt: str) -> str:
    med = float(row[f"{stem}_median"])
    if not np.isfinite(med):
        return "-"
    lo, hi = float(row[f"{stem}_q25"]), float(row[f"{stem}_q75"])
    if lo == hi == med:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(lo, fmt)}-{format(hi, fmt)})"


def table_points(probabilities) -> list[float]:
    """The :data:`TABLE_POINTS` sparsities of a run's table: densest, middle, sparsest
    (all of them when the grid has fewer)."""
    grid = sorted({float(p) for p in probabilities}, reverse=True)
    if len(grid) <= TABLE_POINTS:
        return grid
    return [grid[0], grid[len(grid) // 2], grid[-1]]


def section_lines(summary, inputs: dict, losses: dict, notes: Sequence[str], folder,
                  runs: Sequence[str]) -> list[str]:
    """Markdown lines of the section "The mechanism: dense codes against the rotated
    optimum": definitions, one table per run (source by three sparsities: median and
    quartiles over seeds of each :data:`TABLE_COLUMNS` measure) and the figure files. Fixed
    text states definitions only; every number comes from ``summary``.

    Args:
      summary: :func:`bitjax.analysis.mechanism.summary_table` (or the mechanism.csv the
        tool wrote), or None when no run was measured.
      inputs: run -> source -> the folder it was read from; losses: run -> source -> the
        sample its loss is on (``estimator`` or the training's own).
      notes: what was left out, in words.
      folder: the tool's output folder (the figures are looked for there).
      runs: the runs, in order.
    """
    from pathlib import Path

    folder = Path(folder)
    lines = ["## The mechanism: dense codes against the rotated optimum", "",
             "Per run and sparsity, each source's effective weights (gamma * T for ternary) "
             "measured alike (bitjax.analysis.mechanism; `python -m experiments.mechanism` "
             f"writes the tables and figures into {folder.name}/): gamma is the one non-zero "
             "magnitude of a per-tensor ternary matrix; nnz/column the non-zero entries per "
             "column, mean over the columns with any and over the represented features; "
             f"represented: features with norm > {metrics.DEFAULT_THRESHOLD:g}; D* = m / "
             "||W||_F^2; mean abs cos over pairs of represented features; loss / best-known: "
             "the loss over the best-known ternary loss of the same instance on the "
             "best-known run's stratified estimator (given only where the source's loss is "
             "on that estimator). Dense weights have no scale and no zeros ('-'). Cells: "
             "median over seeds (quartiles in parentheses). Best-known method: the candidate "
             "that won the best-known solutions of the cell (bitjax.analysis.best_ternary).",
             "", "Sources: " + "; ".join(f"{s}: {w}" for s, w in
                                         mechanism.SOURCE_WORDS.items()) + ".", ""]
    if summary is None:
        return lines + [f"No run measured ({', '.join(runs)}): "
                        f"`python -m experiments.mechanism` writes {folder.name}/.", ""]
    header = "| 1-S | source | instances | " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + \
        " | best-known method (instances) |"
    for run in runs:
        rows = summary[summary["run"] == run]
        if not len(rows):
            continue
        present = [s for s in mechanism.SOURCES if s in set(rows["source"])]
        lines += [f"### {run}", "",
                  "Sources: " + ", ".join(
                      f"{s} ({inputs.get(run, {}).get(s, '?')}, loss: "
                      f"{losses.get(run, {}).get(s, '?')})" for s in present) + ".", "",
                  header, "|---|---|---|" + "---|" * (len(TABLE_COLUMNS) + 1)]
        for p in table_points(rows["feature_probability"]):
            for s in present:
                r = rows[(rows["source"] == s) & np.isclose(
                    rows["feature_probability"].astype(float), p, rtol=1e-12, atol=0)]
                if not len(r):
                    continue
                r = r.iloc[0]
                methods = r["methods"] if isinstance(r["methods"], str) else ""
                lines.append(f"| {p:.3g} | {s} | {int(r['n_instances'])} | " + " | ".join(
                    _cell(r, stem, fmt) for stem, _, fmt in TABLE_COLUMNS) + f" | {methods} |")
        lines.append("")
    stems = [figure_stem(run) for run in runs] + [GRAM_FIGURE, WEIGHTS_FIGURE]
    lines += [f"Figures (in {folder.name}/): " + ", ".join(
        f"{s}.png" + ("" if (folder / f"{s}.png").is_file() else " (not written yet)")
        for s in stems) + ".", ""]
    if notes:
        lines += ["Left out: " + "; ".join(notes) + ".", ""]
    return lines


def opening_sentence(folder) -> str:
    """One plain sentence for the findings' opening: over the instances the mechanism tool
    measured (``folder``/mechanism_instances.csv) in every ternary source (the same problems
    for each: a run with more seeds in one source adds none), the median non-zero weights
    per represented feature's column and the median loss over the best-known ternary loss,
    per ternary source; empty without the table. Every number comes from the table."""
    from pathlib import Path

    import pandas as pd

    table = Path(folder) / INSTANCES_FILE
    if not table.is_file():
        return ""
    d = pd.read_csv(table)
    d = d[d["present"].astype(bool)]
    sources = [source for source, _ in OPENING_SOURCES if (d["source"] == source).any()]
    key = ["run", "seed", "feature_probability"]
    common = d[d["source"].isin(sources)].groupby(key)["source"].nunique()
    common = common[common == len(sources)].index
    d = d[pd.MultiIndex.from_frame(d[key]).isin(common)]
    nnz, ratio = [], []
    for source, words in OPENING_SOURCES:
        g = d[d["source"] == source]
        col = g["nnz_represented"].to_numpy(np.float64)
        col = col[np.isfinite(col)]
        if col.size:
            nnz.append(f"{words} {np.median(col):.3g} ({np.mean(col > 1):.0%} of "
                       f"{col.size:,} instances above one)")
        if source != "best_known":
            r = g["loss_over_best_known"].to_numpy(np.float64)
            r = r[np.isfinite(r)]
            if r.size:
                ratio.append(f"{np.median(r):.3g} {words} ({r.size:,} instances)")
    if not nnz:
        return ""
    runs = ", ".join(dict.fromkeys(d["run"]))
    text = ("Non-zero entries in a represented feature's weight column (the mean over an "
            "instance's represented features), median over the instances measured in every "
            f"source (the same problems) of {runs}: " + "; ".join(nnz) + ".")
    if ratio:
        text += " Loss over the best-known ternary loss of the same instance, median: " + \
            "; ".join(ratio) + "."
    return text + f" Per run and sparsity in the section on the mechanism ({Path(folder).name}/)."


def section_from_folder(folder, runs: Sequence[str]) -> list[str]:
    """:func:`section_lines` from what ``python -m experiments.mechanism`` wrote into
    ``folder`` (mechanism.csv and manifest.json: the inputs, the losses' samples, the
    notes, the commit); a folder without them gives the section saying so."""
    import json
    from pathlib import Path

    import pandas as pd

    folder = Path(folder)
    table, manifest = folder / SUMMARY_FILE, folder / MANIFEST_FILE
    if not (table.is_file() and manifest.is_file()):
        return section_lines(None, {}, {}, [], folder, runs)
    man = json.loads(manifest.read_text())
    summary = pd.read_csv(table)
    present = [r for r in runs if (summary["run"] == r).any()]
    lines = section_lines(summary, man.get("inputs", {}), man.get("losses", {}),
                          man.get("notes", []), folder, present)
    commit = (man.get("git") or {}).get("commit", "?")[:10]
    return lines[:2] + [f"From {folder.name}/ (written at commit {commit})."] + lines[2:]
