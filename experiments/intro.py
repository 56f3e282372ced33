"""Intro: five features in two dimensions, dense against ternary weights.

Question: the paper's first figure trains n=5 features into m=2 hidden dimensions with
importance I_i = 0.9^i and shows the geometry change with sparsity: dense data gives the two
most important features orthogonal directions and drops the rest; moderate sparsity
(1-S about 0.2-0.4) packs four features as two antipodal pairs; high sparsity
(1-S <= ~0.07) packs all five in a pentagon-like star (Elhage et al. 2022). A ternary
(BitNet b1.58) W has only 8 possible directions per column when m=2 (multiples of 45
degrees), so the pentagon cannot exist: what does the ternary model do instead, and does it
represent as many features? Seeds are restarts; the figures show the best seed by final loss
(as the paper keeps the best restart), the curves and table average over all seeds.

Command:  python -m experiments.intro              (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.intro --preset quick --n-seeds 8

Presets:
  paper  n=5, m=2, I=0.9^i, 19 feature probabilities 20^-linspace(0,1,19) (every other one
         is the paper's 20^-linspace(0,1,10)); kinds dense, ternary, ternary_per_feature,
         binary; 20 seeds; 10,000 steps, batch 1024 (1,520 instances).
  quick  the paper's 10 probabilities, dense + ternary, 8 seeds, 5,000 steps, batch 1024
         (160 instances).
  tiny   3 probabilities, dense + ternary, 2 seeds, 100 steps, batch 128 (smoke test).

Runtime: quick about 1 min on the 2-core CPU of the development machine (measured 49 s
wall, 35 s of it training, while other jobs kept the load at ~5); tiny ~10-25 s; paper
preset 7 min 23 s on that CPU (1,520 instances, 10,000 steps, 2 CPU devices); with
--n-seeds 240 (18,240 instances, results/intro/manifest.json) 34 min; not measured on a GPU.
Outputs (in --out): experiment.json, sweep.json, manifest.json, metrics.csv, features.csv.gz,
checkpoints/, weights_2d.{png,pdf} (rows of 2-D weight diagrams, one row per kind, one column per
sparsity, best seed, each titled with its configuration from
bitjax.analysis.metrics.geometry_m2: two
orthogonal, antipodal pair, two antipodal pairs, pentagon, fan, ...),
loss_and_features.{png,pdf} (loss and number of represented features against 1-S, mean and
95% CI over seeds), loss_gap.{png,pdf} and loss_gap.csv (per quantized kind and sparsity: the
final loss gap kind - dense paired by seed, mean and 95% t CI, best of seeds, the ratio kind /
dense on a log scale, and how many seeds converged where the run stored convergence),
summary.csv (per kind x
probability: mean and 95% CI over seeds of n_represented and loss, the best seed's values and
configuration, and how many seeds take each configuration).
Paper figure: the introduction's five-features-in-two-dimensions figure (and section
"Superposition as a Phase Change"'s first demonstration); notebook toy_models.ipynb, intro.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import grid as analysis
from bitjax.analysis import metrics, stats
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, importance_vector
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

N_FEATURES, N_HIDDEN, IMPORTANCE = 5, 2, 0.9
#: At most this many sparsity columns in the weight-diagram figure (evenly spaced picks).
MAX_DIAGRAM_COLUMNS = 10


def _probabilities(n_points: int) -> tuple[float, ...]:
    """The paper's grid ``20 ** -linspace(0, 1, n_points)``, dense first."""
    return tuple(float(p) for p in 20.0 ** -np.linspace(0.0, 1.0, n_points))


def _config(n_p: int, kinds, seeds: int, steps: int, **kw) -> SweepConfig:
    return SweepConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN, kind=tuple(kinds),
                       seed=tuple(range(seeds)), feature_probability=_probabilities(n_p),
                       importance=(IMPORTANCE,), steps=steps, **kw)


PRESETS = {
    "paper": lambda seeds: {"intro": _config(
        19, ("dense", "ternary", "ternary_per_feature", "binary"), seeds or 20, 10_000)},
    "quick": lambda seeds: {"intro": _config(10, ("dense", "ternary"), seeds or 8, 5_000)},
    "tiny": lambda seeds: {"intro": _config(3, ("dense", "ternary"), seeds or 2, 100,
                                            batch_size=128, chunk_size=100,
                                            history_every=50, eval_batches=2)},
}


# ----------------------------------------------------------------------------------------
# Tables


def _geometry_counts(codes: np.ndarray) -> str:
    """``"two_antipodal_pairs:12 fan:5"``: seeds per configuration, most frequent first
    (codes below 0, diverged instances, are left out)."""
    codes = np.asarray(codes, dtype=int)
    codes = codes[codes >= 0]
    values, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((values, -counts))
    return " ".join(f"{metrics.GEOMETRY_M2_LABELS[values[i]]}:{counts[i]}" for i in order)


def summary_table(sweep: LoadedSweep):
    """Per kind x probability: mean and 95% CI over seeds, the best seed's values, and how
    many seeds take each m = 2 configuration (:func:`bitjax.analysis.metrics.geometry_m2`).

    Returns:
      A :class:`pandas.DataFrame`, kind by kind, dense probability first; the best seed's
      columns are empty (``best_seed_loss`` NaN) where every seed diverged.
    """
    m = sweep.metrics()
    grids = {name: analysis.kind_seed_grid(sweep, v) for name, v in (
        ("n_represented", m["n_represented"].astype(float)), ("loss", sweep.loss),
        ("sum_dimensionality", m["sum_dimensionality"]))}
    diverged = analysis.kind_seed_grid(sweep, sweep.diverged, mask_diverged=False)
    best = analysis.best_seed_grid(sweep)  # instance per (kind, probability); -1: none
    geometry = m["geometry_m2"]
    # Diverged instances get -1 here: they are left out of the counts.
    geometry_grid = analysis.kind_seed_grid(
        sweep, np.where(sweep.diverged, metrics.GEOMETRY_NOT_M2, geometry),
        mask_diverged=False)
    data = {"n_seeds": xr.full_like(best, diverged.sizes["seed"]),
            "n_diverged": diverged.sum("seed")}
    for name, g in grids.items():
        sm = stats.mean_ci_over(g, "seed")
        data[f"{name}_mean"], data[f"{name}_ci95"] = sm["mean"], sm["ci95"]
    # The best seed's values, cell by cell; empty where every seed diverged (an object
    # column keeps the integers integers beside the empty cells).
    ok = best.values >= 0
    at = np.where(ok, best.values, 0)
    words = np.array([metrics.geometry_m2_words(int(g)) for g in geometry[at].ravel()],
                     dtype=object).reshape(at.shape)
    data.update({
        "best_seed": best.copy(data=np.where(ok, sweep.coords["seed"][at], None)),
        "best_seed_loss": best.copy(data=np.where(ok, sweep.loss[at], np.nan)),
        "best_seed_n_represented": best.copy(
            data=np.where(ok, m["n_represented"][at].astype(np.int64), None)),
        "best_seed_geometry": best.copy(data=np.where(ok, words, "")),
        "geometry_counts": xr.apply_ufunc(_geometry_counts, geometry_grid,
                                          input_core_dims=[["seed"]], vectorize=True,
                                          output_dtypes=[object]),
    })
    return grid_frame(xr.Dataset(data), ("kind", "feature_probability"),
                      ["kind", "feature_probability", *data])


# ----------------------------------------------------------------------------------------
# Figures


def _diagram_columns(probs: np.ndarray) -> np.ndarray:
    """Indices of at most MAX_DIAGRAM_COLUMNS probabilities, evenly spaced, ends included."""
    if len(probs) <= MAX_DIAGRAM_COLUMNS:
        return np.arange(len(probs))
    return np.unique(np.round(np.linspace(0, len(probs) - 1, MAX_DIAGRAM_COLUMNS)).astype(int))


def _draw_diagrams(sweep: LoadedSweep, out: Path, label: str) -> list[Path]:
    import matplotlib as mpl

    cfg, c, m = sweep.config, sweep.coords, sweep.metrics()
    best_grid = analysis.best_seed_grid(sweep)
    probs = best_grid["feature_probability"].values
    cols = _diagram_columns(probs)
    kinds = [str(k) for k in best_grid["kind"].values]
    # weight_diagram_2d colours by importance / max; I = 0.9^i only spans 0.66-1, so stretch
    # it to the full colour map (least important feature = dark) and label the bar in I_i.
    imp = (importance_vector(float(c["importance"][0]), cfg.n_features)
           if "importance" in c else np.ones(cfg.n_features))
    span = float(imp.max() - imp.min())
    colour_scale = (imp - imp.min()) / span if span > 0 else np.ones_like(imp)
    fig, axes = plots.new_figure(len(kinds), len(cols), size=(1.7, 1.75))
    for r, kind in enumerate(kinds):
        for ci, pi in enumerate(cols):
            ax = axes[r, ci]
            p = float(probs[pi])
            best = int(best_grid.sel(kind=kind)[pi])
            head = f"1-S = {p:.3g}\n" if r == 0 else ""
            if best < 0:
                ax.set_axis_off()
                ax.set_title(head + "(all diverged)", fontsize=7)
                continue
            plots.weight_diagram_2d(ax, sweep.W_eff[best], importance=colour_scale)
            # The configuration's name, as in metrics.csv's geometry_m2 column.
            ax.set_title(head + metrics.geometry_m2_words(int(m["geometry_m2"][best])), fontsize=7)
            ax.set_xlabel(f"{int(m['n_represented'][best])} repr., seed "
                          f"{int(c['seed'][best])}", fontsize=6, labelpad=2)
        axes[r, 0].set_ylabel(kind, fontsize=9)
    lo, hi = (float(imp.min()), float(imp.max())) if span > 0 else (0.0, float(imp.max()))
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(lo, hi), cmap="viridis")
    cb = fig.colorbar(sm, ax=axes, shrink=0.6, pad=0.01, aspect=25)
    cb.set_label("importance I_i", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    n_seeds = len(np.unique(c["seed"]))
    fig.suptitle(
        f"Columns W_i of the effective weights (n={cfg.n_features}, m={cfg.n_hidden}, "
        f"I_i = {IMPORTANCE}^i): best of {n_seeds} seed(s) by final loss; "
        f"'repr.' = features with ||W_i|| > {sweep.default_threshold:g}.\nAbove each "
        "diagram its configuration (bitjax.analysis.metrics.geometry_m2, metrics.csv's "
        "geometry_m2; "
        f"features with ||W_i|| > {metrics.DEFAULT_REL_THRESHOLD:g} x the largest norm)",
        fontsize=9)
    plots.footer(fig, label)
    return plots.save(fig, out / "weights_2d")


def _invert_sparsity_axis(ax) -> None:
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("feature probability 1 - S  (log; sparser ->)")


def _draw_curves(sweep: LoadedSweep, out: Path, label: str) -> list[Path]:
    cfg, m = sweep.config, sweep.metrics()
    loss = analysis.kind_seed_grid(sweep, sweep.loss)
    n_rep = analysis.kind_seed_grid(sweep, m["n_represented"].astype(float))
    probs = loss["feature_probability"].values
    n_seeds = loss.sizes["seed"]
    fig, axes = plots.new_figure(1, 2, size=(5, 3.8))
    ax_loss, ax_rep = axes[0]
    for kind in loss["kind"].values:
        color = plots.kind_color(str(kind))
        for ax, grid in ((ax_loss, loss), (ax_rep, n_rep)):
            s = stats.mean_ci_over(grid.sel(kind=kind), "seed")
            mean, half = s["mean"].values, s["ci95"].values
            band = (mean - half, mean + half) if n_seeds > 1 else (None, None)
            plots.curve_with_band(ax, probs, mean, *band, label=str(kind), color=color)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("final loss (importance-weighted MSE)")
    ax_loss.set_title("loss", fontsize=9)
    ax_rep.axhline(cfg.n_hidden, color="0.6", ls="--", lw=0.7, zorder=0)
    ax_rep.axhline(cfg.n_features, color="0.6", ls=":", lw=0.7, zorder=0)
    for name, v in (("m", cfg.n_hidden), ("n", cfg.n_features)):
        ax_rep.annotate(f"{name} = {v}", (1.0, v), fontsize=7, color="0.4", va="center",
                        xycoords=("axes fraction", "data"), xytext=(2, 0),
                        textcoords="offset points")
    ax_rep.set_ylim(-0.2, cfg.n_features + 0.8)
    ax_rep.set_ylabel(f"features represented (||W_i|| > {sweep.default_threshold:g})")
    ax_rep.set_title("represented features", fontsize=9)
    for ax in (ax_loss, ax_rep):
        _invert_sparsity_axis(ax)
        ax.legend(title="kind", fontsize=8, title_fontsize=8)
    fig.suptitle(f"n={cfg.n_features}, m={cfg.n_hidden}, I_i = {IMPORTANCE}^i: mean of "
                 f"{n_seeds} seed(s), band 95% CI", fontsize=9)
    fig.tight_layout()
    plots.footer(fig, label)
    return plots.save(fig, out / "loss_and_features")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.store import files as store_files

    sweep = parts["intro"]
    label = run_label(parts)
    files = [out / "summary.csv", out / "loss_gap.csv"]
    with stats.quiet_nan_warnings():
        store_files.write_frames(files[0], [summary_table(sweep)])
        gap_rows, columns = analysis.loss_gap_parts({"intro": sweep})
        store_files.write_csv(files[1], gap_rows, columns=analysis.LOSS_GAP_COLUMNS)
        fig = plots.loss_gap_figure(
            columns, title=f"Loss gap at the end of training, paired by seed (same init and "
                           f"data), n={N_FEATURES}, m={N_HIDDEN}, I_i = {IMPORTANCE}^i")
        plots.footer(fig, label)
        files += plots.save(fig, out / "loss_gap")
        files += _draw_diagrams(sweep, out, label)
        files += _draw_curves(sweep, out, label)
    return files


EXPERIMENT = Experiment(
    name="intro",
    description="Five features in two dimensions: weight geometry against sparsity, dense vs "
                "ternary (Elhage et al. 2022, introduction figure).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="weights_2d",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
