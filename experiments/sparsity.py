"""Sparsity sweep: when do features enter superposition, dense against ternary weights?

Question: with n=20 features, m=5 hidden dimensions and importance I_i = 0.7^i, the dense
ReLU model at 1-S = 1 equals the linear model (the top m features in an identity block of
W^T W, b = 0 for them and b = E[x_i] = (1-S)/2 for the dropped ones); as features get
sparser the less important ones enter superposition, first as antipodal pairs, and at high
sparsity all features are superposed with negative biases (Elhage et al. 2022). The BitNet
study suggested ternary (b1.58) weights delay the onset of superposition and of negative
biases; the "zoom" part settles that with a fine sparsity grid, several seeds and 95%
confidence intervals.

Command:  python -m experiments.sparsity           (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.sparsity --preset quick --n-seeds 4

Parts (each trains into --out/<part>/):
  relu    the paper's grid 1-S in {1, .3, .1, .03, .01, .003, .001}, dense + ternary.
  linear  the same grid without the ReLU (activation="linear"), dense + ternary.
  zoom    a fine geometric grid around the onset of superposition (1-S from 1 to 0.05),
          dense + ternary, several seeds.
  notebook  the notebook's variant n=100, m=20, I = 100^-linspace(0, 1, 100), its 20
          probabilities 20^-linspace(0, 1, 20), dense + ternary (paper and tiny presets);
          notebook_counts.{csv,png} put its count of features with ||W_i|| > 0.5 beside the
          ten counts the notebook published (spec section 5.2).
Presets:
  paper  relu 10 seeds, linear 10 seeds, zoom 24 probabilities x 20 seeds, notebook 10
         seeds; 10,000 steps, batch 1024 (140 + 140 + 960 + 400 instances).
  quick  relu 2 seeds x 4,000 steps, linear 2 seeds x 3,000 steps, zoom 12 probabilities x
         4 seeds x 3,000 steps; batch 1024 (28 + 28 + 96 instances). Not converged at the
         sparsest points (1-S <= 0.003 needs the paper's 10,000 steps or more).
  tiny   2-3 probabilities per part, 1-2 seeds, 100 steps, batch 128 (smoke test).

Runtime: quick 2-3 min on the 2-core CPU of the development machine (measured 2 min 40 s
wall, 2 min 4 s CPU, training 32 + 19 + 73 s, while other jobs kept the load at ~5); tiny
~20-40 s; quick with --n-seeds 8 --steps 6000: 6 min 34 s; paper preset (1,640 instances,
10,000 steps) 19 min with --recipe paper (results/sparsity_paper) and 32 min with --recipe
paper --fp-fraction 0.5 (results/sparsity_fp_paper) on a 2-core CPU; with --recipe committed
--n-seeds 20 (2,320 instances) 53 min there, alone (the notebook part 42 min of it), and the
ReLU part with --part-seeds relu=60 (840 instances) 10 min beside another job
(results/sparsity). One NVIDIA H200 (jax 0.11.2): the paper preset with the notebook part (1,640
instances, 10,000 steps) 55 s wall alone (training 2-8 s per part; the run committed before
the 20-seed one); with --steps 100000 188 s, beside another run on the same GPU.
Outputs (in --out): experiment.json, manifest.json; per part <part>/{sweep.json, metrics.csv,
features.csv.gz, checkpoints/}; weights_by_sparsity.{png,pdf} (rows: dense/ternary ReLU and
linear; columns: sparsity; each cell W^T W, the bias b and bars of ||W_i|| coloured by
superposition, best seed by final loss); zoom.{png,pdf} (number of features represented, mean
superposition of the represented features and the minimum bias against 1-S, mean and 95% CI
over seeds; below, each seed's interpolated onsets as a strip per kind); loss_gap.{png,pdf}
and loss_gap.csv (per part and sparsity: the final loss gap ternary - dense paired by seed,
mean and 95% t CI, best of seeds, and the ratio ternary / dense on a log scale);
summary.csv (per part x kind x probability: means and 95% CIs over seeds); onsets.csv (one
row per part (relu, zoom), kind and seed: the interpolated onsets below, their paired log10
differences from dense, and the grid-point onsets); onset_summary.csv (per part x statistic x
kind: mean and 95% CI over seeds of every onset, grid-point and interpolated, and the paired
ternary - dense differences).
Definitions used in the tables: a feature is represented when ||W_i|| > the config's
threshold (0.5); "beyond the top m" = feature index >= m (I_i decreases with i); a bias is
negative when b_i < -0.01. Interpolated onsets (per seed, linear in log10(1-S) between the
grid points where the seed's curve crosses the level; bitjax.analysis.onsets.interpolated_onset):
superposition = more than m features represented (the count crosses m + 1/2), negative
biases = min_i b_i crosses -0.01. Grid-point onsets, per seed, scanning the grid from dense
to sparse (superposition: a feature beyond the top m represented): "first" = the largest
1-S at which the condition holds; "sustained" = the largest 1-S from which it holds at every
sparser grid point (robust to an isolated hit at the dense end, e.g. the small negative bias
on feature m-1 that a not fully converged dense model keeps at 1-S = 1). Seeds where it
never holds count in n_seeds but not in n_found; a seed where it holds at 1-S = 1 already is
counted in n_at_densest (its onset is there or denser); onsets are averaged in log10
(p_geomean) and plainly (p_mean).
Paper figure: section "Superposition as a Phase Change"/"Demonstrating Superposition", the
W^T W + b + ||W_i|| grid against sparsity for n=20, m=5 (and its linear-model row).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import grid as analysis
from bitjax.analysis import onsets, stats
from bitjax.analysis.metrics import DEFAULT_THRESHOLD
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

N_FEATURES, N_HIDDEN, IMPORTANCE = 20, 5, 0.7
#: The notebook's variant (spec section 5.2): n=100, m=20, I = 100^-linspace(0, 1, n).
NOTEBOOK_N, NOTEBOOK_M = 100, 20
#: What the notebook published for that variant (spec section 5.2), a reference drawn beside
#: the trained counts, never a result of this code: the number of features with
#: ||W_i|| > 0.5 at every other point of its grid 20^-linspace(0, 1, 20), dense first
#: (1-S = 20^(-2k/19), k = 0..9), one model per point.
NOTEBOOK_PUBLISHED_COUNTS = (20, 21, 24, 30, 33, 37, 40, 43, 47, 50)
PAPER_PROBABILITIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
ROW_LABELS = {"relu": "ReLU", "linear": "linear"}


def _config(probs, kinds, seeds: int, steps: int, activation: str = "relu",
            **kw) -> SweepConfig:
    return SweepConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN, activation=activation,
                       kind=tuple(kinds), seed=tuple(range(seeds)),
                       feature_probability=tuple(float(p) for p in probs),
                       importance=(IMPORTANCE,), steps=steps, **kw)


def _zoom_grid(n_points: int, p_min: float = 0.05) -> tuple[float, ...]:
    return tuple(float(p) for p in np.geomspace(1.0, p_min, n_points))


def notebook_probabilities(n_points: int = 20) -> tuple[float, ...]:
    """The notebook's sparsity grid ``20 ** -linspace(0, 1, n_points)``, dense first."""
    return tuple(float(p) for p in 20.0 ** -np.linspace(0.0, 1.0, n_points))


def notebook_config(seeds: int, steps: int, n_points: int = 20, **kw) -> SweepConfig:
    """The notebook's variant of this sweep: n=100, m=20, I = 100^-linspace(0, 1, 100),
    dense + ternary, ``n_points`` probabilities of :func:`notebook_probabilities`."""
    importance = tuple(float(v) for v in 100.0 ** -np.linspace(0.0, 1.0, NOTEBOOK_N))
    return SweepConfig(n_features=NOTEBOOK_N, n_hidden=NOTEBOOK_M, kind=("dense", "ternary"),
                       seed=tuple(range(seeds)),
                       feature_probability=notebook_probabilities(n_points),
                       importance=(importance,), steps=steps, **kw)


def _preset(relu_seeds, linear_seeds, zoom_points, zoom_seeds, steps, linear_steps,
            zoom_steps, probs=PAPER_PROBABILITIES, notebook=None,
            **kw) -> dict[str, SweepConfig]:
    """The parts; ``notebook=(seeds, steps, points)`` adds the notebook's n=100, m=20 part."""
    kinds = ("dense", "ternary")
    parts = {
        "relu": _config(probs, kinds, relu_seeds, steps, **kw),
        "linear": _config(probs, kinds, linear_seeds, linear_steps, activation="linear", **kw),
        "zoom": _config(_zoom_grid(zoom_points), kinds, zoom_seeds, zoom_steps, **kw),
    }
    if notebook is not None:
        n_seeds, n_steps, n_points = notebook
        parts["notebook"] = notebook_config(n_seeds, n_steps, n_points, **kw)
    return parts


PRESETS = {
    "paper": lambda seeds: _preset(seeds or 10, seeds or 10, 24, seeds or 20,
                                   10_000, 10_000, 10_000, notebook=(seeds or 10, 10_000, 20)),
    "quick": lambda seeds: _preset(seeds or 2, seeds or 2, 12, seeds or 4,
                                   4_000, 3_000, 3_000),
    "tiny": lambda seeds: _preset(seeds or 1, seeds or 1, 3, seeds or 2, 100, 100, 100,
                                  probs=(1.0, 0.03), notebook=(seeds or 2, 100, 2),
                                  batch_size=128, chunk_size=100, history_every=50,
                                  eval_batches=2),
}


# ----------------------------------------------------------------------------------------
# Per-instance quantities and tables


SUMMARY_QUANTITIES = ("loss", "n_represented", "n_beyond_top_m", "superposition_represented",
                      "mean_superposition", "min_bias", "bias_represented", "bias_dropped")


def summary_table(sweep: LoadedSweep):
    """Per kind x probability: mean and 95% CI over seeds of every summary quantity, and
    the best seed (empty where every seed diverged).

    Returns:
      A :class:`pandas.DataFrame`, kind by kind, dense probability first.
    """
    q = analysis.instance_quantities(sweep)
    diverged = analysis.kind_seed_grid(sweep, sweep.diverged, mask_diverged=False)
    best = analysis.best_seed_grid(sweep)  # instance per (kind, probability); -1: none
    data = {"n_seeds": xr.full_like(best, diverged.sizes["seed"]),
            "n_diverged": diverged.sum("seed")}
    for k in SUMMARY_QUANTITIES:
        sm = stats.mean_ci_over(analysis.kind_seed_grid(sweep, q[k]), "seed")
        data[f"{k}_mean"], data[f"{k}_ci95"] = sm["mean"], sm["ci95"]
    # An object column keeps the integers integers beside the empty cells.
    ok = best.values >= 0
    at = np.where(ok, best.values, 0)
    data["best_seed"] = best.copy(data=np.where(ok, sweep.coords["seed"][at], None))
    data["best_seed_n_represented"] = best.copy(data=np.where(
        ok, sweep.metrics()["n_represented"][at].astype(np.int64), None))
    df = grid_frame(xr.Dataset(data), ("kind", "feature_probability"))
    df.insert(0, "part", sweep.name)
    df.insert(1, "activation", sweep.config.activation)
    return df[["part", "activation", "kind", "feature_probability", *data]]


def _probabilities(sweep: LoadedSweep) -> np.ndarray:
    """The sweep's feature probabilities, dense (largest) first."""
    return np.sort(sweep.axes()["feature_probability"])[::-1]


def onset_table(sweep: LoadedSweep):
    """Onsets per kind (mean and 95% CI over seeds), then paired differences vs dense.

    Statistics: the grid-point onsets of :func:`bitjax.analysis.onsets.grid_onset_table`
    (``<condition>_first`` / ``_sustained``), then the per-seed interpolated ones of
    :func:`bitjax.analysis.onsets.interpolated_onset_table`
    (``<condition>_interpolated_first`` / ``_sustained``). The per-seed onsets become one
    long table (statistic, kind, seed), which pandas groups per statistic and kind.

    Returns:
      A :class:`pandas.DataFrame` (:data:`ONSET_COLUMNS`): per statistic, its kinds, then
      each quantized kind's ``"<kind> - dense"`` row (whose columns about 1-S itself are
      empty).
    """
    import pandas as pd

    table = onsets.grid_onset_table(sweep)
    probs = _probabilities(sweep)
    grid = f"{probs.max():.3g}..{probs.min():.3g} ({len(probs)} points)"
    definitions = {stat: onsets.onset_definition(stat) for stat in table}
    for stat, by_kind in onsets.interpolated_onset_table(sweep).items():
        name = f"{stat.rsplit('_', 1)[0]}_interpolated_{stat.rsplit('_', 1)[1]}"
        table[name] = {k: {"p": d["p"], "censored": d["censored"],
                           "features": [""] * len(d["p"])} for k, d in by_kind.items()}
        definitions[name] = onsets.interpolated_definition(stat)
    order = {stat: j for j, stat in enumerate(table)}
    seeds = pd.concat([pd.DataFrame({
        "statistic": stat, "kind": kind, "seed": np.arange(len(d["p"])), "p": d["p"],
        "at_densest": d["censored"] if "censored" in d else d["p"] == probs.max(),
        "features": d["features"]}) for stat, by_kind in table.items()
        for kind, d in by_kind.items()], ignore_index=True)

    def per_kind(g) -> pd.Series:
        p = g["p"].to_numpy()
        mean, ci = stats.mean_ci_floats(p)
        lmean, lci = stats.mean_ci_floats(np.log10(p))
        return pd.Series({
            "n_seeds": len(p), "n_found": int(np.isfinite(p).sum()),
            "n_at_densest": int(g["at_densest"].sum()), "p_mean": mean, "p_ci95": ci,
            "log10_p_mean": lmean, "log10_p_ci95": lci,
            "p_geomean": 10 ** lmean if np.isfinite(lmean) else np.nan,
            "per_seed_values": " ".join(f"{v:.4g}" for v in p),
            "per_seed_features": " | ".join(g["features"])}, dtype=object)

    def paired(g) -> pd.Series:
        diff = g["diff"].to_numpy()
        lmean, lci = stats.mean_ci_floats(diff)
        return pd.Series({"n_seeds": len(diff), "n_found": int(np.isfinite(diff).sum()),
                          "log10_p_mean": lmean, "log10_p_ci95": lci,
                          "per_seed_values": " ".join(f"{v:.3g}" for v in diff)},
                         dtype=object)

    keys = ["statistic", "kind"]
    kinds = seeds.groupby(keys, sort=False)[["p", "at_densest", "features"]].apply(per_kind)
    frames = [kinds.reset_index().assign(block=0, definition=lambda f: f["statistic"].map(
        definitions))]
    # Paired: the same seed (same init and data) of each kind against dense.
    logp = seeds.assign(logp=np.log10(seeds["p"])).pivot(
        index=["statistic", "seed"], columns="kind", values="logp")
    others = [k for k in dict.fromkeys(seeds["kind"]) if k != "dense"]
    if "dense" in logp.columns and others:
        diffs = pd.concat([pd.DataFrame({"diff": logp[k] - logp["dense"], "kind": k})
                           for k in others]).reset_index()
        pairs = diffs.groupby(keys, sort=False)[["diff"]].apply(paired).reset_index()
        frames.append(pairs.assign(
            block=1, kind=pairs["kind"] + " - dense",
            definition="paired per-seed difference of log10 onset 1-S (negative = "
                       "later onset, i.e. sparser; 10**mean = geometric-mean ratio to "
                       "dense)",
            **dict.fromkeys(("n_at_densest", "p_mean", "p_ci95", "p_geomean",
                             "per_seed_features"))))
    out = pd.concat(frames, ignore_index=True).assign(part=sweep.name, grid=grid)
    out = out.assign(order=out["statistic"].map(order)).sort_values(
        ["order", "block"], kind="stable")
    return out[list(ONSET_COLUMNS)].reset_index(drop=True)


def onset_rows(sweep: LoadedSweep) -> list[dict]:
    """:func:`onset_table` as one dict per row."""
    return onset_table(sweep).to_dict("records")


ONSET_COLUMNS = ("part", "statistic", "kind", "definition", "grid", "n_seeds", "n_found",
                 "n_at_densest", "p_mean", "p_ci95", "log10_p_mean", "log10_p_ci95",
                 "p_geomean", "per_seed_values", "per_seed_features")

def onset_seed_table(sweep: LoadedSweep):
    """One row per kind and seed: the interpolated onsets and the grid onsets.

    Columns: ``<condition>`` (the first crossing, interpolated; NaN: never),
    ``<condition>_sustained`` (interpolated), ``<condition>_censored`` (1: the condition
    holds at the densest grid point already), ``<condition>_log10_minus_dense`` (paired:
    the same seed's log10 onset minus dense's; negative = later onset, at sparser data),
    and the grid-point onsets of :func:`bitjax.analysis.onsets.grid_onset_table` as
    ``<condition>_first_grid``, ``<condition>_sustained_grid`` and
    ``<condition>_first_grid_features`` (the features meeting the condition there).

    Returns:
      A :class:`pandas.DataFrame`, kind by kind (config order), then seed.
    """
    interp = onsets.interpolated_onset_table(sweep)
    grid = onsets.grid_onset_table(sweep)
    bad = analysis.kind_seed_grid(sweep, sweep.diverged, mask_diverged=False)
    cells = bad.isel(feature_probability=0, drop=True)  # the (kind, seed) grid

    def per_seed(table: dict, key: str = "p", dtype=float) -> xr.DataArray:
        """``table[kind][key] [seeds]`` of every kind on the (kind, seed) grid."""
        return cells.copy(data=np.array([table[str(k)][key] for k in cells["kind"].values],
                                        dtype=dtype))

    def minus_dense(table: dict) -> xr.DataArray:
        """log10 onset minus the same seed's dense one (NaN for dense, or without it)."""
        lp = np.log10(per_seed(table))
        if "dense" not in table:
            return xr.full_like(lp, np.nan)
        return (lp - lp.sel(kind="dense", drop=True)).where(cells["kind"] != "dense")

    data = {"n_points": xr.full_like(cells, bad.sizes["feature_probability"], dtype=np.int64),
            "n_diverged": bad.sum("feature_probability")}
    for cond in onsets.INTERPOLATED_ONSETS:
        first, sus = interp[f"{cond}_first"], interp[f"{cond}_sustained"]
        data[cond] = per_seed(first)
        data[f"{cond}_sustained"] = per_seed(sus)
        data[f"{cond}_censored"] = per_seed(first, "censored", np.int64)
        data[f"{cond}_log10_minus_dense"] = minus_dense(first)
        data[f"{cond}_sustained_log10_minus_dense"] = minus_dense(sus)
        for rule in onsets.ONSET_RULES:
            data[f"{cond}_{rule}_grid"] = per_seed(grid[f"{cond}_{rule}"])
        data[f"{cond}_first_grid_features"] = per_seed(grid[f"{cond}_first"], "features",
                                                       object)
    df = grid_frame(xr.Dataset(data), ("kind", "seed")).assign(part=sweep.name)
    return df[["part", "kind", "seed", *data]]


def onset_seed_rows(sweep: LoadedSweep) -> list[dict]:
    """:func:`onset_seed_table` as one dict per row."""
    return onset_seed_table(sweep).to_dict("records")


# ----------------------------------------------------------------------------------------
# Figures


def _sparsity_axis(ax) -> None:
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("feature probability 1 - S  (log; sparser ->)")


def _grid_rows(parts: Mapping[str, LoadedSweep]) -> list[tuple[LoadedSweep, str, str]]:
    """``(sweep, kind, row label)`` for the weights figure: ReLU kinds, then linear kinds."""
    rows = []
    for name in ("relu", "linear"):
        if name in parts:
            for kind in parts[name].config.kind:
                rows.append((parts[name], kind, f"{kind}\n{ROW_LABELS[name]}"))
    return rows


def _draw_grid(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    rows = _grid_rows(parts)
    probs = _probabilities(rows[0][0])
    cfg = rows[0][0].config
    threshold = rows[0][0].default_threshold
    bests = {id(sweep): analysis.best_seed_grid(sweep) for sweep, _, _ in rows}
    n_rows, n_cols = len(rows), len(probs)
    fig = plt.figure(figsize=(2.3 * n_cols + 1.2, 1.55 * n_rows + 0.7))
    outer = fig.add_gridspec(n_rows, n_cols, left=0.05, right=0.9, top=0.9, bottom=0.06,
                             wspace=0.18, hspace=0.3)
    for r, (part, kind, label) in enumerate(rows):
        best_grid = bests[id(part)]
        for c, p in enumerate(probs):
            inner = outer[r, c].subgridspec(1, 3, width_ratios=[1.0, 0.09, 0.75], wspace=0.06)
            ax_g, ax_b, ax_n = (fig.add_subplot(inner[0, k]) for k in range(3))
            # The columns are the first row's probabilities; every row must have them.
            part.select(feature_probability=float(p))
            best = int(best_grid.sel(kind=kind).sel(feature_probability=p,
                                                    method="nearest"))
            if r == 0:
                ax_g.set_title(f"1-S = {p:g}", fontsize=9, loc="left")
            if c == 0:
                ax_g.set_ylabel(label, fontsize=9)
            if best < 0:
                for ax in (ax_g, ax_b, ax_n):
                    ax.set_xticks([])
                    ax.set_yticks([])
                ax_n.text(0.5, 0.5, "diverged", ha="center", transform=ax_n.transAxes)
                continue
            m = part.metrics()
            plots.gram_heatmap(ax_g, part.W_eff[best])
            ax_g.set_aspect("auto")  # fill the cell so rows line up with the bars
            plots.bias_column(ax_b, part.b[best])
            plots.norm_bars(ax_n, m["norm"][best], m["superposition"][best])
            ax_n.set_xticks([0, 1])
            ax_n.tick_params(labelsize=6, length=2, pad=1)
            ax_n.axvline(threshold, color="0.6", lw=0.5, ls=":")
            ax_n.set_xlabel(f"seed {int(part.coords['seed'][best])}: "
                            f"{int(m['n_represented'][best])} repr.", fontsize=6, labelpad=1)
            if r == 0 and c == 0:
                ax_b.set_title("b", fontsize=7)
                ax_n.set_title("||W_i||", fontsize=7)
    cax1 = fig.add_axes((0.915, 0.5, 0.01, 0.38))
    cb1 = fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(-1, 1), "RdBu"), cax=cax1)
    cb1.set_label("W^T W and b", fontsize=8)
    cax2 = fig.add_axes((0.915, 0.08, 0.01, 0.38))
    cb2 = fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 1), "viridis_r"),
                       cax=cax2)
    cb2.set_label("bar colour: sqrt(superposition),\nclipped to [0, 1]", fontsize=8)
    for cb in (cb1, cb2):
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(
        f"n={cfg.n_features}, m={cfg.n_hidden}, I_i = {IMPORTANCE}^i, effective weights, best "
        f"seed by final loss. Each cell: W^T W, bias b, bars ||W_i|| (dotted line: "
        f"represented threshold {threshold:g}); feature 0 (most important) at the top",
        fontsize=9)
    plots.footer(fig, run_label(parts))
    return plots.save(fig, out / "weights_by_sparsity")


def _onset_strips(found: dict, cond: str, kinds: list[str]) -> list[dict]:
    """Strip rows of :func:`bitjax.report.plots.onset_strip` for one condition: per kind, the
    first and the sustained crossing, with the mean and 95% t CI in log10(1-S)."""
    strips = []
    for kind in kinds:
        for rule, words in (("first", "first"), ("sustained", "sust.")):
            d = found[f"{cond}_{rule}"][kind]
            lmean, lhalf = stats.mean_ci_floats(np.log10(d["p"]))
            strips.append({
                "label": f"{kind}, {words}", "color": plots.kind_color(kind),
                "values": d["p"], "censored": d["censored"],
                "mean": 10 ** lmean if np.isfinite(lmean) else np.nan,
                "low": 10 ** (lmean - lhalf) if np.isfinite(lhalf) else np.nan,
                "high": 10 ** (lmean + lhalf) if np.isfinite(lhalf) else np.nan})
    return strips


def _draw_zoom(sweep: LoadedSweep, out: Path, label: str) -> list[Path]:
    import matplotlib.pyplot as plt

    cfg = sweep.config
    q = analysis.instance_quantities(sweep)
    found = onsets.interpolated_onset_table(sweep)
    panels = (
        ("n_represented", f"features represented (||W_i|| > {sweep.default_threshold:g})"),
        ("superposition_represented", "mean superposition of represented features"),
        ("min_bias", "minimum bias  min_i b_i"),
    )
    n_seeds = len(cfg.seed)
    kinds = [str(k) for k in cfg.kind]
    fig = plt.figure(figsize=(14.5, 3.6 + 0.32 * 2 * len(kinds) + 0.6))
    gs = fig.add_gridspec(2, 3, height_ratios=[3.6, 0.32 * 2 * len(kinds) + 0.4],
                          hspace=0.08)
    top = [fig.add_subplot(gs[0, c]) for c in range(3)]
    for ax, (key, ylabel) in zip(top, panels, strict=True):
        grid = analysis.kind_seed_grid(sweep, q[key])
        probs = grid["feature_probability"].values
        for kind in kinds:
            color = plots.kind_color(kind)
            sm = stats.mean_ci_over(grid.sel(kind=kind), "seed")
            mean, half = sm["mean"].values, sm["ci95"].values
            band = (mean - half, mean + half) if n_seeds > 1 else (None, None)
            plots.curve_with_band(ax, probs, mean, *band, label=kind, color=color)
        _sparsity_axis(ax)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.legend(title="kind", fontsize=8, title_fontsize=8)
    top[0].axhline(cfg.n_hidden + 0.5, color="0.6", ls="--", lw=0.7, zorder=0)
    top[2].axhline(onsets.NEGATIVE_BIAS, color="0.6", ls="--", lw=0.7, zorder=0)
    top[0].set_title(f"superposition: more than m={cfg.n_hidden} features represented\n"
                     f"(dashed: the onset level m + 1/2)", fontsize=9)
    top[1].set_title("superposition sum_{j!=i} (W_i_hat . W_j)^2\n"
                     f"(features with ||W_i|| > {sweep.default_threshold:g})", fontsize=9)
    top[2].set_title(f"negative biases (dashed: the onset level b = "
                     f"{onsets.NEGATIVE_BIAS})", fontsize=9)
    for c, cond in ((0, "superposition_onset"), (2, "negative_bias_onset")):
        ax = fig.add_subplot(gs[1, c], sharex=top[c])
        plots.onset_strip(ax, _onset_strips(found, cond, kinds))
        top[c].tick_params(labelbottom=False)
        top[c].set_xlabel("")
        ax.set_xlabel("feature probability 1 - S  (log; sparser ->)")
    note = fig.add_subplot(gs[1, 1])
    note.set_axis_off()
    note.text(0.5, 0.0,
              "Strips: each seed's onset (tick), interpolated linearly in log10(1-S)\n"
              "between the grid points where its curve crosses the dashed level;\n"
              "first = the first crossing from dense to sparse, sust. = the crossing\n"
              "after which it holds at every sparser point. Open triangle: it holds\n"
              "at 1-S = 1 already (onset there or denser). Black: geometric mean and\n"
              "95% t CI of the seeds found; (found/seeds) in the label.",
              ha="center", va="bottom", fontsize=7, transform=note.transAxes)
    fig.suptitle(f"Onset of superposition, n={cfg.n_features}, m={cfg.n_hidden}, "
                 f"I_i = {IMPORTANCE}^i: mean of {n_seeds} seed(s), band 95% CI; onsets per "
                 "seed below", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.86, bottom=0.1, wspace=0.55)
    plots.footer(fig, label)
    return plots.save(fig, out / "zoom")


def _draw_loss_gap(parts: Mapping[str, LoadedSweep], out: Path,
                   label: str) -> tuple[list[dict], list[Path]]:
    order = [n for n in ("relu", "linear", "zoom", "notebook") if n in parts]
    titles = {"relu": "ReLU, paper grid", "linear": "linear model", "zoom": "ReLU, zoom grid",
              "notebook": "notebook n=100, m=20"}
    rows, columns = analysis.loss_gap_parts({n: parts[n] for n in order}, titles=titles)
    cfg = parts[order[0]].config
    fig = plots.loss_gap_figure(
        columns, title=f"Loss gap at the end of training, paired by seed (same init and data), "
                       f"n={cfg.n_features}, m={cfg.n_hidden}, I_i = {IMPORTANCE}^i"
                       + ("; the notebook part n=100, m=20, I = 100^-linspace(0, 1, n)"
                          if "notebook" in order else ""))
    plots.footer(fig, label)
    return rows, plots.save(fig, out / "loss_gap")


def notebook_published(p: float) -> int | None:
    """The notebook's published count at feature probability ``p``, or None where it
    published none (its grid point ``20^(-2k/19)``, matched to 1e-9 relative)."""
    for k, count in enumerate(NOTEBOOK_PUBLISHED_COUNTS):
        if abs(p - 20.0 ** (-2 * k / 19)) <= 1e-9 * p:
            return count
    return None


def notebook_table(sweep: LoadedSweep):
    """The notebook anchor (n=100, m=20): per kind x probability, the features represented
    at the notebook's threshold 0.5 (mean, 95% t CI, min and max over seeds), the
    scale-free count (:func:`bitjax.analysis.metrics.n_represented_relative`), seeds converged where
    the run stored convergence, and the notebook's published count where it has one.

    Returns:
      A :class:`pandas.DataFrame`, kind by kind, dense probability first (``n_converged``
      and ``notebook_published`` empty where there is none).
    """
    # The notebook counts ||W_i|| > 0.5, the library's represented threshold (named here,
    # not the run's default, which an older run may have stored otherwise).
    counts = analysis.kind_seed_grid(
        sweep, sweep.metrics(DEFAULT_THRESHOLD)["n_represented"].astype(float))
    relative = analysis.kind_seed_grid(
        sweep, sweep.metrics()["n_represented_relative"].astype(float))
    conv = sweep.diagnostics.get("converged")
    sm, rel = stats.mean_ci_over(counts, "seed"), stats.mean_ci_over(relative, "seed")
    cells = sm["mean"]  # the (kind, probability) grid
    n_converged = (xr.full_like(cells, None, dtype=object) if conv is None else
                   analysis.kind_seed_grid(sweep, np.asarray(conv, float),
                                           mask_diverged=False).sum("seed").astype(np.int64))
    published = [notebook_published(float(p)) for p in cells["feature_probability"].values]
    data = {"n_seeds": xr.full_like(cells, counts.sizes["seed"], dtype=np.int64),
            "n_finite": counts.notnull().sum("seed"), "n_converged": n_converged,
            "n_represented_mean": sm["mean"], "n_represented_ci95": sm["ci95"],
            "n_represented_min": counts.min("seed"), "n_represented_max": counts.max("seed"),
            "n_represented_relative_mean": rel["mean"],
            "n_represented_relative_ci95": rel["ci95"],
            "notebook_published": xr.DataArray(
                np.array(published, dtype=object), dims="feature_probability",
                coords={"feature_probability": cells["feature_probability"]})}
    return grid_frame(xr.Dataset(data), ("kind", "feature_probability"),
                      ["kind", "feature_probability", *data])


def _draw_notebook(sweep: LoadedSweep, rows: list[dict], out: Path, label: str) -> list[Path]:
    import matplotlib.pyplot as plt

    cfg = sweep.config
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        kr = [r for r in rows if r["kind"] == kind]
        x = np.array([r["feature_probability"] for r in kr])
        mean = np.array([r["n_represented_mean"] for r in kr])
        half = np.array([r["n_represented_ci95"] for r in kr])
        plots.curve_with_band(ax, x, mean, mean - half, mean + half, label=kind,
                              color=plots.kind_color(kind))
    ref = [(r["feature_probability"], r["notebook_published"]) for r in rows
           if r["notebook_published"] is not None and r["kind"] == rows[0]["kind"]]
    if ref:
        ax.plot(*zip(*ref, strict=True), ls="none", marker="x", ms=7, color="black",
                label="notebook (published, one model)")
    ax.axhline(cfg.n_hidden, color="0.6", ls="--", lw=0.7, zorder=0)
    _sparsity_axis(ax)
    ax.set_ylabel(f"features with ||W_i|| > {DEFAULT_THRESHOLD:g}")
    ax.legend(fontsize=8)
    ax.set_title(f"Notebook variant n={cfg.n_features}, m={cfg.n_hidden}, "
                 f"I = 100^-linspace(0, 1, n):\nmean of {len(cfg.seed)} seed(s), band 95% CI; "
                 f"dashed: m", fontsize=9)
    fig.tight_layout()
    plots.footer(fig, label)
    return plots.save(fig, out / "notebook_counts")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.store import files as store_files

    files = [out / "summary.csv", out / "onsets.csv", out / "onset_summary.csv",
             out / "loss_gap.csv"]
    onset_parts = [p for name, p in parts.items() if name in ("relu", "zoom")]
    label = run_label(parts)
    with stats.quiet_nan_warnings():
        store_files.write_frames(files[0], [summary_table(part) for part in parts.values()])
        store_files.write_frames(files[1], [onset_seed_table(part) for part in onset_parts])
        store_files.write_frames(files[2], [onset_table(part) for part in onset_parts])
        gap_rows, gap_files = _draw_loss_gap(parts, out, label)
        store_files.write_csv(files[3], gap_rows, columns=analysis.LOSS_GAP_COLUMNS)
        files += gap_files
        files += _draw_grid(parts, out)
        if "zoom" in parts:
            files += _draw_zoom(parts["zoom"], out, label)
        if "notebook" in parts:
            counts = notebook_table(parts["notebook"])
            store_files.write_frames(out / "notebook_counts.csv", [counts])
            files += [out / "notebook_counts.csv"]
            files += _draw_notebook(parts["notebook"], counts.to_dict("records"), out, label)
    return files


EXPERIMENT = Experiment(
    name="sparsity",
    description="n=20, m=5 sparsity sweep: W^T W, biases and superposition against sparsity, "
                "dense vs ternary, with a fine grid at the onset (Elhage et al. 2022).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="weights_by_sparsity",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
