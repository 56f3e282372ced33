"""Correlated and anticorrelated features: does ternary weight geometry follow the dense one?

Question: Elhage et al. 2022 (section "Superposition with Correlated and Anticorrelated
Features") find that correlated features (always active together) are kept orthogonal to
each other and superposed with features of OTHER sets, that anticorrelated features (never
active together) are put antipodal to each other, and that denser data collapses correlated
pairs onto their sum direction. The BitNet study reported "the same geometry, ternary weights
looking more orthogonal" from one seed. With many seeds and 95% CIs: is that so?

Command:  python -m experiments.correlated             (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.correlated --preset quick --n-seeds 6

Parts (uniform importance, kinds dense + ternary (b1.58, per-tensor scale), seeds = restarts;
feature order: sets first; densities p = probability that a SET is active):
  corr_pairs  n=4,  m=2,  2 correlated pairs,      p = 400^-linspace(0.5, 1, 5) (ARENA)
  anti_pairs  n=4,  m=2,  2 anticorrelated pairs,  p = 10^-linspace(0.5, 1, 5)  (ARENA values)
  three_corr  n=6,  m=2,  3 correlated pairs,      p log-spaced 0.5 -> 0.01 (wider than
              ARENA's 100^-linspace(0.5, 1, 5) = 0.1 -> 0.01, to reach the published
              "all three pairs collapse at 0.25-0.5")
  sets20      n=20, m=10, 2 correlated sets of 10, p = 400^-linspace(0.5, 1, 5)
  anti20      n=20, m=10, 2 anticorrelated sets of 10, p = 10^-linspace(0.5, 1, 5)
Anticorrelated sets use the paper's definition (``anticorrelated_mode="paper"``: the set is
active with probability p and exactly one member, uniform at random, fires, so each
feature's marginal is p/k); ARENA's "marginal p, never both" mode exists for pairs only and
the n=20 bundles need the paper's.

Presets:
  paper  the densities above (three_corr: 10), 20 seeds, 10,000 steps, batch 1024.
  quick  the densities above (three_corr: 7), 6 seeds, 4,000 steps, batch 512.
  tiny   parts three_corr and anti20 only (CPU compile time is ~5-8 s per part), 2
         densities, 2 seeds, 50 steps (smoke test; the analysis handles any subset of parts).

Runtime (2-core CPU of the dev machine): quick 4m04s-4m16s wall in two runs while other
jobs kept the load at ~5 (five parts; training 12-82 s per part, the rest compiling,
checkpointing and plotting); quick with --n-seeds 10: 3 min 56 s (results/correlated); tiny
33 s; paper preset 15 min on this 2-core CPU (2 CPU devices, at 4a1f79b: --recipe paper,
results/correlated_paper; and --recipe paper --fp-fraction 0.5, results/correlated_fp_paper,
15 min as well). One NVIDIA H200
(jax 0.11.2): the paper preset (five parts, 1,200 instances, 10,000 steps) 74 s wall, run side
by side with four other experiments on the same GPU (results/correlated/manifest.json).

Measurements (on EFFECTIVE weights, gamma*T for ternary; mean over seeds with a 95% t CI;
"represented" means ||W_i|| >= 0.5, the bitjax default threshold):
  within_pair_cos     cos(W_a, W_b) of the two members of a pair, averaged over the pairs
                      whose members are both represented (corr: ~0 orthogonal; anti: ~-1).
  collapse_fraction   share of pairs with cos > 0.9 and both norms >= 0.25 (pair collapsed
                      onto its sum direction; the members then carry norm ~1/sqrt 2).
  orthogonal_fraction / antipodal_fraction   share of pairs, both members represented, with
                      |cos| < 0.1 / cos < -0.9 (trained m=2 models are bimodal across seeds:
                      a seed finds the geometry or sits in another local minimum, so these
                      fractions say more than the mean cosine).
  within_set_abs_cos / cross_set_abs_cos   mean |cos| over pairs i != j of represented
                      features in the same / in different sets (n=20 parts).
  within_set_sq_dot / cross_set_sq_dot     mean (W_i . W_j)^2 over the same pairs of ALL
                      features (interference as the loss sees it).
Weight diagrams and W^T W maps show the best seed (lowest final loss) of each cell.

Outputs (in --out; per part in --out/<part>/: sweep.json, metrics.csv, features.csv.gz,
checkpoints/): weights_<m=2 part>.{png,pdf} (2-D diagrams, kind x density, coloured by
pair), gram_<n=20 part>.{png,pdf} (W^T W, kind x density), summary.{png,pdf} (the main
measurements vs density), correlated_summary.csv (part, kind, density, measure, mean, ci95,
n_seeds, best_seed = the value of the lowest-loss seed), correlated_instances.csv (every
measurement per instance), manifest.json, experiment.json.
Paper figures: "Superposition with Correlated and Anticorrelated Features" (2-D diagrams of
correlated / anticorrelated pairs, the collapse of three correlated pairs, and the W^T W of
two correlated sets forming local orthogonal bases).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import geometry, stats
from bitjax.analysis import grid as analysis
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

KINDS = ("dense", "ternary")
PAIR_PARTS = ("corr_pairs", "anti_pairs", "three_corr")
SET_PARTS = ("sets20", "anti20")
ANTI_MODE = "paper"


# ------------------------------------------------------------------------------------------
# Presets.
# ------------------------------------------------------------------------------------------


def densities(n_p: int, n_three: int) -> dict[str, tuple[float, ...]]:
    """Set densities per part (densest first, as in ARENA)."""
    lin = np.linspace(0.5, 1.0, n_p)
    corr = tuple(float(v) for v in 400.0 ** -lin)
    anti = tuple(float(v) for v in 10.0 ** -lin)
    three = tuple(float(v) for v in np.geomspace(0.5, 0.01, n_three))
    return {"corr_pairs": corr, "anti_pairs": anti, "three_corr": three, "sets20": corr,
            "anti20": anti}


STRUCTURE = {
    "corr_pairs": dict(n_features=4, n_hidden=2, correlated_sets=2, correlated_size=2),
    "anti_pairs": dict(n_features=4, n_hidden=2, anticorrelated_sets=2, anticorrelated_size=2,
                       anticorrelated_mode=ANTI_MODE),
    "three_corr": dict(n_features=6, n_hidden=2, correlated_sets=3, correlated_size=2),
    "sets20": dict(n_features=20, n_hidden=10, correlated_sets=2, correlated_size=10),
    "anti20": dict(n_features=20, n_hidden=10, anticorrelated_sets=2, anticorrelated_size=10,
                   anticorrelated_mode=ANTI_MODE),
}


def _parts(seeds: int, steps: int, n_p: int, n_three: int, names=tuple(STRUCTURE),
           **kw) -> dict[str, SweepConfig]:
    ps = densities(n_p, n_three)
    return {name: SweepConfig(**STRUCTURE[name], kind=KINDS, seed=tuple(range(seeds)),
                              feature_probability=ps[name], importance=(1.0,), steps=steps,
                              **kw)
            for name in names}


PRESETS = {
    "paper": lambda seeds: _parts(seeds or 20, 10_000, 5, 10, batch_size=1024),
    "quick": lambda seeds: _parts(seeds or 6, 4_000, 5, 7, batch_size=512, chunk_size=500,
                                  history_every=100),
    "tiny": lambda seeds: _parts(seeds or 2, 50, 2, 2, names=("three_corr", "anti20"),
                                 batch_size=64, chunk_size=50, history_every=50,
                                 eval_batches=2),
}


# ------------------------------------------------------------------------------------------
# Measurements on effective weights [I, m, n] live in bitjax.analysis.geometry (shared with
# the findings).
# ------------------------------------------------------------------------------------------


def seed_table(sweep: LoadedSweep, values: np.ndarray,
               kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(densities [P] ascending, values [seeds, P])`` of one kind (NaN: diverged)."""
    grid = analysis.kind_seed_grid(sweep, values, dense_first=False)
    return (grid["feature_probability"].values,
            grid.sel(kind=kind).transpose("seed", "feature_probability").values)


# ------------------------------------------------------------------------------------------
# Figures.
# ------------------------------------------------------------------------------------------

_MEMBER_STYLE = (("-", "o"), ("--", "s"), (":", "^"))


def set_weight_diagram(ax, w: np.ndarray, ids: np.ndarray, *, title: str | None = None):
    """2-D diagram of ``w [2, n]``: one colour per set, line style/marker per member."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors
    seen: dict[int, int] = {}
    for i in range(w.shape[1]):
        s = int(ids[i])
        k = seen.get(s, 0)
        seen[s] = k + 1
        ls, mk = _MEMBER_STYLE[k % len(_MEMBER_STYLE)]
        col = colors[s % len(colors)] if s >= 0 else "0.5"
        ax.plot([0, w[0, i]], [0, w[1, i]], color=col, lw=1.6, ls=ls)
        ax.scatter(w[0, i], w[1, i], color=col, marker=mk, s=18, zorder=3)
    plots.square_axes(ax, w, title)


def _pair_legend(fig, ids: np.ndarray, anti: bool):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colors = plt.cm.tab10.colors
    word = "anticorrelated" if anti else "correlated"
    handles = [Line2D([], [], color=colors[s % 10], lw=2, label=f"{word} pair {s + 1}")
               for s in sorted(set(ids[ids >= 0].tolist()))]
    handles += [Line2D([], [], color="k", ls=ls, marker=mk, label=f"member {k + 1}")
                for k, (ls, mk) in enumerate(_MEMBER_STYLE[:2])]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))


def _best_grid(sweep: LoadedSweep, size: tuple[float, float]):
    """A kinds x densities figure: ``fig, axes`` and ``(ax, kind, p, i)`` for every cell,
    ``i`` the best seed's instance; cells with no instance are blanked."""
    best = analysis.best_seed_grid(sweep)
    kinds = [str(k) for k in best["kind"].values]
    ps = best["feature_probability"].values
    fig, axes = plots.new_figure(len(kinds), len(ps), size=size)
    cells = []
    for r, kind in enumerate(kinds):
        for c, p in enumerate(ps):
            i = int(best.sel(kind=kind)[c])
            if i < 0:
                axes[r, c].set_axis_off()
            else:
                cells.append((axes[r, c], kind, p, i))
    return fig, axes, cells


def draw_weights(part: LoadedSweep, meas: dict[str, np.ndarray], out: Path,
                 label: str = "") -> list[Path]:
    cfg = part.config
    ids = geometry.set_ids(cfg)
    fig, axes, cells = _best_grid(part, size=(2.1, 2.3))
    for ax, kind, p, i in cells:
        extra = ""
        if "within_pair_cos" in meas and np.isfinite(meas["within_pair_cos"][i]):
            extra = f"\npair cos {meas['within_pair_cos'][i]:+.2f}"
        set_weight_diagram(ax, part.W_eff[i], ids, title=f"{kind}, 1-S={p:.3g}{extra}")
    for row, kind in zip(axes, part.config.kind, strict=True):
        row[0].set_ylabel(kind)
    _pair_legend(fig, ids, anti=cfg.anticorrelated_sets > 0)
    n_seeds = len(cfg.seed)
    fig.suptitle(f"{part.name}: n={cfg.n_features}, m={cfg.n_hidden}, effective weight columns "
                 f"W_i (best of {n_seeds} seed(s) by loss); 1-S = set density", fontsize=9,
                 y=1.02)
    if label:
        plots.footer(fig, label)
    return plots.save(fig, out / f"weights_{part.name}")


def draw_grams(part: LoadedSweep, out: Path, label: str = "") -> list[Path]:
    cfg = part.config
    ids = geometry.set_ids(cfg)
    cuts = np.flatnonzero(np.diff(ids)) + 0.5
    fig, axes, cells = _best_grid(part, size=(2.2, 2.3))
    im = None
    for ax, kind, p, i in cells:
        im = plots.gram_heatmap(ax, part.W_eff[i], title=f"{kind}, 1-S={p:.3g}")
        for x in cuts:
            ax.axhline(x, color="k", lw=0.6)
            ax.axvline(x, color="k", lw=0.6)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.7, label="W^T W (effective weights)")
    word = "anticorrelated" if cfg.anticorrelated_sets else "correlated"
    fig.suptitle(f"{part.name}: n={cfg.n_features}, m={cfg.n_hidden}, two {word} sets of "
                 f"{cfg.anticorrelated_size if cfg.anticorrelated_sets else cfg.correlated_size}"
                 f" (black lines); best of {len(cfg.seed)} seed(s) by loss", fontsize=9)
    if label:
        plots.footer(fig, label)
    return plots.save(fig, out / f"gram_{part.name}")


#: Summary panels: (part, [(measure, line style)], y label, reference value, y limits).
PANELS = (
    ("corr_pairs", [("within_pair_cos", "-")], "within-pair cos", 0.0, (-1.05, 1.05)),
    ("anti_pairs", [("antipodal_fraction", "-")], "fraction of pairs antipodal", 1.0,
     (-0.03, 1.03)),
    ("three_corr", [("within_pair_cos", "-")], "within-pair cos", None, (-1.05, 1.05)),
    ("three_corr", [("collapse_fraction", "-")], "fraction of pairs collapsed", None,
     (-0.03, 1.03)),
    ("sets20", [("within_set_abs_cos", "-"), ("cross_set_abs_cos", "--")],
     "mean |cos| (represented)", 0.0, (-0.02, 1.02)),
    ("anti20", [("within_set_abs_cos", "-"), ("cross_set_abs_cos", "--")],
     "mean |cos| (represented)", 0.0, (-0.02, 1.02)),
)


def _density_axis(ax, ps: np.ndarray):
    """Log x axis with one labelled tick per trained density (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ps)
    ax.set_xticklabels([f"{p:.2g}" for p in ps], rotation=45 if len(ps) > 4 else 0,
                       fontsize=7)


def draw_summary(parts: Mapping[str, LoadedSweep], meas: dict[str, dict], out: Path,
                 label: str = "") -> list[Path]:
    from matplotlib.lines import Line2D

    panels = [pn for pn in PANELS if pn[0] in parts]
    if not panels:
        return []
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plots.new_figure(nrows, ncols, size=(3.8, 3.0))
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (name, lines, ylabel, ref, ylim) in zip(axes.flat, panels, strict=False):
        part = parts[name]
        n_seeds = len(part.config.seed)
        for kind in part.config.kind:
            for measure, ls in lines:
                if measure not in meas[name]:
                    continue
                ps, t = seed_table(part, meas[name][measure], kind)
                mean, half = stats.mean_ci(t, axis=0)
                band = (mean - half, mean + half) if t.shape[0] > 1 else (None, None)
                plots.curve_with_band(ax, ps, mean, *band, label=None,
                                      color=plots.kind_color(kind), ls=ls)
        if ref is not None:
            ax.axhline(ref, color="0.6", lw=0.7, ls=":", zorder=0)
        _density_axis(ax, np.sort(part.axes()["feature_probability"]))
        ax.set_ylim(*ylim)
        ax.set_xlabel("set density 1 - S")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name} ({n_seeds} seeds, 95% CI)", fontsize=9)
        handles = [Line2D([], [], color=plots.kind_color(k), lw=2, label=k)
                   for k in part.config.kind]
        if len(lines) > 1:
            handles += [Line2D([], [], color="k", ls=ls,
                               label=m.split("_")[0] + " set") for m, ls in lines]
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle("Correlated / anticorrelated features: geometry of the effective weights "
                 "(mean over seeds, band = 95% CI)", fontsize=10)
    fig.tight_layout()
    if label:
        plots.footer(fig, label)
    return plots.save(fig, out / "summary")


# ------------------------------------------------------------------------------------------
# Analysis entry point.
# ------------------------------------------------------------------------------------------

SUMMARY_MEASURES = ("within_pair_cos", "orthogonal_fraction", "antipodal_fraction",
                    "collapse_fraction", "within_set_abs_cos",
                    "cross_set_abs_cos", "within_set_sq_dot", "cross_set_sq_dot",
                    "n_represented", "loss")


#: Columns of ``correlated_summary.csv`` and ``correlated_instances.csv``.
SUMMARY_COLUMNS = ("part", "kind", "density", "measure", "mean", "ci95", "n_seeds",
                   "best_seed")
INSTANCE_COLUMNS = ("part", "instance", "kind", "seed", "density", *SUMMARY_MEASURES)


def summary_table(part: LoadedSweep, meas: dict[str, np.ndarray]):
    """Per kind, measure and density (ascending): mean, 95% CI and count over seeds, and
    the value of the lowest-loss seed (NaN where every seed diverged).

    Returns:
      A :class:`pandas.DataFrame` (:data:`SUMMARY_COLUMNS`), kind by kind (config order),
      then measure (:data:`SUMMARY_MEASURES` order, those the part has), then density.
    """
    import pandas as pd

    best = analysis.best_seed_grid(part, dense_first=False)  # -1: every seed diverged
    ok = best.values >= 0
    at = np.where(ok, best.values, 0)
    measures = [m for m in SUMMARY_MEASURES if m in meas]
    cells = []
    for measure in measures:
        sm = stats.mean_ci_over(analysis.kind_seed_grid(part, meas[measure],
                                                        dense_first=False), "seed")
        cells.append(xr.Dataset({
            "mean": sm["mean"], "ci95": sm["ci95"], "n_seeds": sm["n"],
            "best_seed": best.copy(data=np.where(ok, meas[measure][at], np.nan))}))
    ds = xr.concat(cells, dim=pd.Index(measures, name="measure"))
    df = grid_frame(ds, ("kind", "measure", "feature_probability"))
    return df.rename(columns={"feature_probability": "density"}).assign(
        part=part.name)[list(SUMMARY_COLUMNS)]


def instance_table(part: LoadedSweep, meas: dict[str, np.ndarray]):
    """One row per instance: its coordinates and every measure (empty: a measure the part
    does not have).

    Returns:
      A :class:`pandas.DataFrame` (:data:`INSTANCE_COLUMNS`), in instance order.
    """
    df = part.to_dataframe()[["instance", "kind", "seed", "feature_probability"]]
    df = df.rename(columns={"feature_probability": "density"}).assign(part=part.name)
    return df.assign(**{m: meas.get(m) for m in SUMMARY_MEASURES})[list(INSTANCE_COLUMNS)]


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    import warnings

    from bitjax.store import files as store_files

    files: list[Path] = []
    label = run_label(parts)
    meas = {name: geometry.instance_measures(part) for name, part in parts.items()}
    summaries, instances = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (nothing represented)
        for name, part in parts.items():
            cfg = part.config
            if cfg.n_hidden == 2:
                files += draw_weights(part, meas[name], out, label)
            else:
                files += draw_grams(part, out, label)
            summaries.append(summary_table(part, meas[name]))
            instances.append(instance_table(part, meas[name]))
        files += draw_summary(parts, meas, out, label)
    files.append(out / "correlated_summary.csv")
    store_files.write_frames(files[-1], summaries)
    files.append(out / "correlated_instances.csv")
    store_files.write_frames(files[-1], instances)
    return files


EXPERIMENT = Experiment(
    name="correlated",
    description="Correlated and anticorrelated features: within-pair angles, collapse of "
                "correlated pairs and local orthogonal bases, dense vs ternary (Elhage et al. "
                "2022, Superposition with Correlated and Anticorrelated Features).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="summary",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
