"""Uniform superposition: do ternary weights change the "sticky" dimensions per feature?

Question: with every feature equally important (I = 1), the dense model's dimensions per
feature D* = m / ||W||_F^2 sticks at 1 and then at 1/2 (antipodal pairs) as features get
sparser (Elhage et al. 2022, section "Feature Dimensionality", the D* vs 1/(1-S) figure and
the per-feature D_i scatter). Does BitNet b1.58 ternarisation keep those plateaus?

Command:  python -m experiments.uniform            (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.uniform --preset quick --n-seeds 3

Presets:
  paper  n=400, m=30, 40 feature probabilities log-spaced 1 -> 1/100, dense + ternary,
         5 seeds, 10,000 steps, batch 1024 (400 instances).
  notebook  the notebook's size n=200, m=20 over the paper's range: 40 probabilities
         1 -> 1/100, dense + ternary, 5 seeds, 10,000 steps, batch 1024 (400 instances).
  quick  n=100, m=10, 16 probabilities 1 -> 1/20, dense + ternary, 2 seeds, 4,000 steps.
  tiny   smoke test (seconds).

Runtime: quick 49 s on a 2-core CPU (this machine, 2 CPU devices, at a30b4af; 2 min 52 s
before the CPU's cache-sized instance groups); with --n-seeds 3
--steps 6000 7 min 55 s; paper preset not measured on CPU (about 3 hours by --dry-run);
notebook preset 38 min with --recipe paper (the first 10,000 steps of results/uniform_paper,
at 4a1f79b; 26 min more to 20,000), 40 min with --recipe paper --fp-fraction 0.5
(results/uniform_fp_paper) and 42 min with --recipe fp_first (results/uniform_fp) on this
2-core CPU. One NVIDIA H200 (jax 0.11.2): the paper preset (`python -m experiments.uniform`,
the README's GPU command) 64 s wall alone (compile 3 s, training 24 s); the notebook preset
with the recipe (results/uniform) 71 s wall, side by side with four other experiments on the
same GPU.
Outputs (in --out): experiment.json, sweep.json, manifest.json, metrics.csv, features.csv.gz,
checkpoints/, dims_summary.csv (per kind and sparsity: D* mean and 95% CI over seeds, the
paired difference ternary - dense with its CI, loss, features represented),
dims_per_feature.{png,pdf}, feature_dimensionality.{png,pdf}, dims_clusters.csv and
dims_clusters.{png,pdf} (per kind and sparsity, the features at each D_i cluster 0, 3/8, 2/5,
1/2, 2/3, 3/4, 1 or "other": mean and 95% CI over seeds), loss_gap.{png,pdf} and
loss_gap.csv (per quantized kind and sparsity: the loss gap kind - dense paired by seed, mean
and 95% t CI, best of seeds, the ratio kind / dense as a geometric mean with its CI, and the
seeds converged where the run stored convergence); every figure's footer names the preset,
steps, seeds and training commit.
Paper figure: "Feature Dimensionality" (D* against 1/(1-S), and the D_i scatter).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import grid as analysis
from bitjax.analysis import metrics as metrics_lib
from bitjax.analysis import stats
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main


def _config(n, m, n_p, p_min, seeds, steps, kinds=("dense", "ternary"), **kw) -> SweepConfig:
    probs = tuple(float(p) for p in np.geomspace(1.0, p_min, n_p))
    return SweepConfig(n_features=n, n_hidden=m, kind=kinds, seed=tuple(range(seeds)),
                       feature_probability=probs, importance=(1.0,), steps=steps, **kw)


PRESETS = {
    "paper": lambda seeds: {"uniform": _config(400, 30, 40, 0.01, seeds or 5, 10_000)},
    "notebook": lambda seeds: {"uniform": _config(200, 20, 40, 0.01, seeds or 5, 10_000)},
    "quick": lambda seeds: {"uniform": _config(100, 10, 16, 0.05, seeds or 2, 4_000)},
    "tiny": lambda seeds: {"uniform": _config(12, 3, 4, 0.1, seeds or 1, 200, batch_size=128,
                                              chunk_size=100, history_every=50)},
}


def dims_table(sweep: LoadedSweep) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(1/p, dense first; {kind: D* [seeds, probs]})`` for the D* curve (NaN: diverged)."""
    da = analysis.kind_seed_grid(sweep, sweep.metrics()["dims_per_feature"])
    x = 1.0 / da["feature_probability"].values
    return x, {str(k): da.sel(kind=k).transpose("seed", "feature_probability").values
               for k in da["kind"].values}


#: Columns of ``dims_summary.csv``.
SUMMARY_COLUMNS = ("kind", "feature_probability", "inv_probability", "n_seeds",
                   "dims_per_feature", "dims_ci95", "dims_minus_dense",
                   "dims_minus_dense_ci95", "loss", "n_represented")


def summary_table(sweep: LoadedSweep):
    """Per kind and sparsity: D*, loss and features represented (mean, 95% CI over seeds) and
    the paired difference of D* against dense (same seed: same init and same data).

    Returns:
      A :class:`pandas.DataFrame` (:data:`SUMMARY_COLUMNS`), kind by kind, dense sparsity
      first.
    """
    m = sweep.metrics()
    grids = {name: analysis.kind_seed_grid(sweep, values) for name, values in
             (("dims", m["dims_per_feature"]), ("loss", sweep.loss),
              ("n_rep", m["n_represented"].astype(float)))}
    dims = grids["dims"]
    s = {name: stats.mean_ci_over(g, "seed") for name, g in grids.items()}
    if "dense" in dims["kind"].values:
        diff = stats.mean_ci_over(dims - dims.sel(kind="dense", drop=True), "seed")
    else:
        diff = xr.full_like(s["dims"], np.nan, dtype=float)
    ds = xr.Dataset({"inv_probability": 1 / dims["feature_probability"],
                     "n_seeds": s["dims"]["n"], "dims_per_feature": s["dims"]["mean"],
                     "dims_ci95": s["dims"]["ci95"], "dims_minus_dense": diff["mean"],
                     "dims_minus_dense_ci95": diff["ci95"], "loss": s["loss"]["mean"],
                     "n_represented": s["n_rep"]["mean"]})
    return grid_frame(ds, ("kind", "feature_probability"), SUMMARY_COLUMNS)


def cluster_table(sweep: LoadedSweep):
    """Per kind and sparsity: how many features sit at each dimensionality cluster (0, 3/8,
    2/5, 1/2, 2/3, 3/4, 1, or "other"; :func:`bitjax.analysis.metrics.dimensionality_labels`), mean
    and 95% t CI over seeds: where the D* curve has a plateau (1/2, the paper's 2/5), the
    features should sit in that cluster, not average to it.

    Returns:
      A :class:`pandas.DataFrame`: kind, feature_probability, inv_probability, n_seeds, then
      ``n_<label>`` and ``n_<label>_ci95`` per label.
    """
    codes = sweep.metrics()["dimensionality_label"]  # [I, n]
    counts = {name: stats.mean_ci_over(
        analysis.kind_seed_grid(sweep, (codes == code).sum(1).astype(float)), "seed")
        for code, name in enumerate(metrics_lib.DIMENSIONALITY_LABELS)}
    first = next(iter(counts.values()))
    data = {"inv_probability": 1 / first["feature_probability"], "n_seeds": first["n"]}
    for name, g in counts.items():
        data[f"n_{name}"] = g["mean"]
        data[f"n_{name}_ci95"] = g["ci95"]
    return grid_frame(xr.Dataset(data), ("kind", "feature_probability"),
                             ["kind", "feature_probability", *data])


def cluster_rows(sweep: LoadedSweep) -> list[dict]:
    """:func:`cluster_table` as one dict per row."""
    return cluster_table(sweep).to_dict("records")


#: Colour of each D_i cluster in ``dims_clusters``, in stacking order from the dedicated
#: dimension (bottom) to not learned (top); one entry per metrics.DIMENSIONALITY_LABELS.
CLUSTER_COLORS = {"1": "#1b9e77", "3/4": "#66a61e", "2/3": "#e6ab02", "1/2": "#d95f02",
                  "2/5": "#7570b3", "3/8": "#e7298a", "other": "0.75", "0": "0.92"}


def _draw_clusters(rows: list[dict], cfg, out: Path, label: str) -> list[Path]:
    names = list(CLUSTER_COLORS)
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plots.new_figure(1, len(kinds), size=(5, 3.6), sharey=True)
    for ax, kind in zip(axes[0], kinds, strict=True):
        kr = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["inv_probability"])
        x = np.array([r["inv_probability"] for r in kr])
        ys = [np.array([r[f"n_{n}"] for r in kr]) / cfg.n_features for n in names]
        ax.stackplot(x, *ys, labels=names, colors=list(CLUSTER_COLORS.values()))
        ax.set_xscale("log")
        ax.set_xlim(x.min(), x.max())
        ax.set_xlabel("1 / (1 - S)")
        ax.set_title(f"{kind}: features per D_i cluster (mean over seeds)", fontsize=9)
    axes[0, 0].set_ylabel(f"fraction of the n={cfg.n_features} features")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    axes[0, -1].legend(handles[::-1], labels[::-1], title="D_i within 0.02 of", fontsize=7,
                       title_fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    plots.footer(fig, label)
    return plots.save(fig, out / "dims_clusters")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.store import files as store_files

    sweep = parts["uniform"]
    cfg = sweep.config
    label = run_label(parts)
    x, tables = dims_table(sweep)
    n_seeds = next(iter(tables.values())).shape[0]
    files = [out / "dims_summary.csv", out / "loss_gap.csv"]
    store_files.write_frames(files[0], [summary_table(sweep)])
    with stats.quiet_nan_warnings():
        gap_rows, columns = analysis.loss_gap_parts({"uniform": sweep})
    store_files.write_csv(files[1], gap_rows, columns=analysis.LOSS_GAP_COLUMNS)
    fig = plots.loss_gap_figure(
        columns, inverse_x=True,
        title=f"Loss gap at the end of training, paired by seed (same init and data),\n"
              f"uniform importance, n={cfg.n_features}, m={cfg.n_hidden}")
    plots.footer(fig, label)
    files += plots.save(fig, out / "loss_gap")

    fig, axes = plots.new_figure(1, 1, size=(6, 4))
    ax = axes[0, 0]
    shown = []
    for kind, table in tables.items():
        mean, half = stats.mean_ci(table, axis=0)
        band = (mean - half, mean + half) if table.shape[0] > 1 else (None, None)
        plots.curve_with_band(ax, x, mean, *band, label=kind, color=plots.kind_color(kind))
        shown += [mean, *(v for v in band if v is not None)]
    plots.reference_lines(ax, {"1": 1.0, "1/2": 0.5, "2/5": 0.4})
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 - S)  (inverse feature probability)")
    ax.set_ylabel("dimensions per feature  m / ||W||_F^2")
    # Ternary's D* exceeds 1 at the dense end (||W_eff||_F^2 < m): show all of every curve.
    plots.data_ylim(ax, np.concatenate(shown), floor=0.0, ceiling=1.15)
    ax.set_title(f"Uniform importance, n={cfg.n_features}, m={cfg.n_hidden}: mean of "
                 f"{n_seeds} seed(s), band 95% CI", fontsize=9)
    ax.legend(title="kind", fontsize=8)
    plots.footer(fig, label)
    files += plots.save(fig, out / "dims_per_feature")

    kinds = list(tables)
    dim = analysis.kind_seed_grid(sweep, sweep.metrics()["dimensionality"])
    fig, axes = plots.new_figure(1, len(kinds), size=(5, 3.6), sharey=True)
    rng = np.random.default_rng(0)
    top = []
    for ax, kind in zip(axes[0], kinds, strict=True):
        d = dim.sel(kind=kind).transpose("seed", "feature_probability", "feature").values
        xs = np.broadcast_to((1.0 / dim["feature_probability"].values)[None, :, None],
                             d.shape)
        keep = np.isfinite(d)  # diverged instances are NaN
        jitter = np.exp(rng.normal(0, 0.02, int(keep.sum())))
        ax.scatter(xs[keep] * jitter, d[keep], s=2, alpha=0.25,
                   color=plots.kind_color(kind), lw=0)
        d_star = stats.mean_ci(tables[kind], axis=0)[0]
        top.append(d_star)
        ax.plot(x, d_star, color="k", lw=1, label="D* (mean over seeds)")
        plots.reference_lines(ax)
        ax.set_xscale("log")
        ax.set_xlabel("1 / (1 - S)")
        ax.set_title(f"{kind}: every feature's D_i (all seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    plots.data_ylim(axes[0, 0], np.concatenate(top), floor=-0.02, ceiling=1.1)
    axes[0, 0].set_ylabel("feature dimensionality D_i")
    plots.footer(fig, label)
    files += plots.save(fig, out / "feature_dimensionality")

    clusters = cluster_table(sweep)
    store_files.write_frames(out / "dims_clusters.csv", [clusters])
    files += [out / "dims_clusters.csv",
              *_draw_clusters(clusters.to_dict("records"), cfg, out, label)]
    return files


EXPERIMENT = Experiment(
    name="uniform",
    description="Uniform importance: dimensions per feature against sparsity, dense vs "
                "ternary (Elhage et al. 2022, Feature Dimensionality).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="dims_per_feature",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
