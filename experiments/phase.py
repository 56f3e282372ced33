"""Phase change: when does an extra feature get dropped, superposed or its own dimension?

Question: Elhage et al. 2022 (section "Superposition as a Phase Change") train n=2, m=1 and
n=3, m=2 toy models while varying the last ("extra") feature's relative importance r and
the feature density 1-S, and find three phases for the extra feature: dropped, superposed
(antipodal with another feature) and given a dedicated dimension. Does BitNet b1.58
ternarisation (per-tensor absmean scale) move the phase boundaries?

Command:  python -m experiments.phase                (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.phase --preset quick --n-seeds 4

Presets (parts "n2m1": n=2, m=1, importance (1, r); "n3m2": n=3, m=2, importance (1, 1, r);
the same density 1-S for every feature; kinds dense + ternary; seeds = restarts per cell):
  paper  30 x 30 grid (r log-spaced 0.1..10, 1-S log-spaced 0.01..1), 10 restarts per cell,
         10,000 steps, batch 1024: 18,000 instances per part, one compiled sweep each.
  quick  12 x 12 grid, 4 restarts, 3,000 steps, batch 256 (1,152 instances per part).
  tiny   3 x 3 grid, 2 restarts, 100 steps, batch 64 (smoke test).

Runtime (2-core CPU of the dev machine, shared with other jobs, load average ~5): quick
3m42s-3m50s wall in two runs (training 35-64 s for n2m1 and 133-169 s for n3m2, the rest
compiling, checkpointing and plotting); tiny 33-37 s; idle machine and paper preset on CPU
not measured (about 1 h 50 min by --dry-run). One NVIDIA H200 (jax 0.11.2): the paper preset
(2 x 18,000 instances, 10,000 steps, batch 1024) 113 s wall, run side by side with four other
experiments on the same GPU (results/phase/manifest.json).

Classification (of the extra feature's EFFECTIVE column W_x, gamma*T for ternary):
:func:`bitjax.analysis.metrics.extra_feature_phase`, the library's one extra-feature
classifier, with the represented threshold 0.5 on the norm
(:data:`bitjax.analysis.metrics.DEFAULT_THRESHOLD`) and its |cos| cut 0.3:
  dropped     ||W_x|| < 0.5;
  dedicated   otherwise, if |cos(W_x, W_j)| < 0.3 for every other feature j that is itself
              represented (||W_j|| >= 0.5);
  superposed  otherwise (antipodal or any other shared direction; with m=1 this includes the
              paper's "confused" W_1 = W_2 phase at high density and r near 1).
Per cell the phase of the best restart by final loss is drawn (the paper keeps the best
models); the fraction of restarts in each phase is in the CSV and in phase_fractions_*.

Closed-form boundary (n=2, m=1), as read from the spec and checked here: compare the loss of
the idealised solutions with features x_i = 0 w.p. S else U[0,1), density p = 1-S
(E x = p/2, E x^2 = p/3):
  superposed  W = (1, -1), b = 0:          L = (1 + r) p^2 / 6  (error only when both fire:
                                           E[min(x1, x2)^2] = 1/6 on each feature);
  r <= 1      W = (1, 0), b = (0, p/2):    L = r (p/3 - p^2/4)  (extra dropped, bias = mean);
  r >= 1      W = (0, 1), b = (p/2, 0):    L = p/3 - p^2/4      (extra dedicated).
Superposition wins for p < 4r/(2+5r) (r <= 1) and p < 4/(5+2r) (r >= 1): the spec's "s" is
the DENSITY 1-S (0.571 at r=1, 0.16 at r=0.1 and r=10), i.e. superposition below the curve,
on the sparse side. :func:`bitjax.analysis.representable.idealised_n2m1` holds these
formulas in bitjax's units (the mean over the two features, half the sums above) and
:func:`bitjax.analysis.representable.closed_form_boundary` the boundary; the tests check
them against a Monte Carlo estimate and check that the losses cross at the boundary.

Outputs (in --out, per part in --out/<part>/: sweep.json, metrics.csv, features.csv.gz,
checkpoints/): phase_<part>.{png,pdf} (best-restart phase per cell, dense | ternary;
closed-form boundary drawn over n2m1), phase_fractions_<part>.{png,pdf} (fraction of
restarts per phase), phase_cells.csv (per part, kind and cell: best phase, fractions, closed
form prediction), phase_summary.csv (per part and kind: phase shares and the agreement with
the closed form), manifest.json, experiment.json.
Paper figure: "Superposition as a Phase Change" (the n=2, m=1 and n=3, m=2 phase diagrams).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import metrics
from bitjax.analysis import representable as rep
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, importance_vector
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

#: The colours of the phases in every figure, in code order (0, 1, 2 of
#: :data:`bitjax.analysis.metrics.EXTRA_PHASES`).
PHASE_COLORS = tuple(plots.PHASE_COLORS[p] for p in metrics.EXTRA_PHASES)
PARTS = {"n2m1": (2, 1), "n3m2": (3, 2)}


# ------------------------------------------------------------------------------------------
# Theory: the idealised solutions of n=2, m=1.
# ------------------------------------------------------------------------------------------


def closed_form_phase(r, density):
    """Predicted phase code of the extra feature for n=2, m=1 (-1 at the r=1 tie)."""
    r = np.asarray(r, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    nonsup = np.where(np.isclose(r, 1.0), -1, np.where(r < 1, 0, 1))
    return np.where(p < rep.closed_form_boundary(r), 2, nonsup).astype(np.int64)


# ------------------------------------------------------------------------------------------
# Classification of trained instances.
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Presets.
# ------------------------------------------------------------------------------------------


def grid(n_r: int, n_p: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative importances (log 0.1..10) and densities (log 0.01..1) of the phase grid."""
    return np.geomspace(0.1, 10.0, n_r), np.geomspace(0.01, 1.0, n_p)


def _config(n: int, m: int, n_r: int, n_p: int, seeds: int, steps: int, **kw) -> SweepConfig:
    rs, ps = grid(n_r, n_p)
    importance = tuple((1.0,) * (n - 1) + (float(r),) for r in rs)
    return SweepConfig(n_features=n, n_hidden=m, kind=("dense", "ternary"),
                       seed=tuple(range(seeds)), feature_probability=tuple(float(p) for p in ps),
                       importance=importance, steps=steps, **kw)


def _parts(n_r, n_p, seeds, steps, **kw) -> dict[str, SweepConfig]:
    return {name: _config(n, m, n_r, n_p, seeds, steps, **kw) for name, (n, m) in PARTS.items()}


PRESETS = {
    "paper": lambda seeds: _parts(30, 30, seeds or 10, 10_000, batch_size=1024),
    "quick": lambda seeds: _parts(12, 12, seeds or 4, 3_000, batch_size=256, chunk_size=500,
                                  history_every=100),
    "tiny": lambda seeds: _parts(3, 3, seeds or 2, 100, batch_size=64, chunk_size=100,
                                 history_every=50),
}


# ------------------------------------------------------------------------------------------
# Analysis.
# ------------------------------------------------------------------------------------------


def phase_table(sweep: LoadedSweep) -> dict:
    """Per kind and cell: best-restart phase and the restart phase fractions.

    Returns ``{"r": [R], "p": [P], "kinds": [...], kind: {"best": [R, P] int (-1 = no
    finite restart), "frac": [3, R, P], "best_loss", "best_norm", "best_cos": [R, P],
    "n": [R, P]}}``; ``r`` is the extra feature's importance (the last entry of each
    importance vector), both axes in config order.

    Raises:
      ValueError: lr or weight decay varies (a cell would hold several instances).
    """
    from bitjax.analysis.results import best_instance, one_cell_per

    cfg = sweep.config
    t = sweep.default_threshold
    cell = ("kind", "seed", "importance", "feature_probability")
    codes_i = metrics.extra_feature_phase(sweep.W_eff, t)
    norm_i, cos_i = metrics.extra_feature_stats(sweep.W_eff, t)
    grid = {name: one_cell_per(sweep.grid(v), cell).transpose(*cell)
            for name, v in (("code", codes_i), ("diverged", sweep.diverged),
                            ("loss", sweep.loss), ("instance", np.arange(sweep.n_instances)))}
    best = best_instance(xr.Dataset(grid), "seed").transpose("kind", "importance",
                                                            "feature_probability")
    ok = ~grid["diverged"].values  # [K, S, R, P]
    code = grid["code"].values
    out: dict = {"r": np.array([_importance_last(v, cfg.n_features) for v in cfg.importance]),
                 "p": sweep.axes()["feature_probability"],
                 "kinds": [str(k) for k in grid["code"]["kind"].values]}
    for ki, kind in enumerate(out["kinds"]):
        b = best.values[ki]  # [R, P]
        has = b >= 0
        safe = np.where(has, b, 0)
        n = ok[ki].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.stack([np.where(n > 0, ((code[ki] == k) & ok[ki]).sum(axis=0) / n,
                                      np.nan) for k in range(3)])
        out[kind] = {
            "best": np.where(has, codes_i[safe], -1),
            "frac": frac,
            "best_loss": np.where(has, sweep.loss[safe], np.nan),
            "best_norm": np.where(has, norm_i[safe], np.nan),
            "best_cos": np.where(has, cos_i[safe], np.nan),
            "n": n.astype(int),
        }
    return out


def _importance_last(value, n: int) -> float:
    """The extra (last) feature's importance of one importance axis value."""
    return float(importance_vector(value, n)[-1])


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges for a log-spaced grid (geometric midpoints, extended at the ends)."""
    lv = np.log(v)
    if len(v) == 1:
        return np.exp([lv[0] - 0.5, lv[0] + 0.5])
    mid = (lv[1:] + lv[:-1]) / 2
    return np.exp(np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]]))


def _draw_boundary(ax, label: bool):
    r = np.geomspace(0.1, 10, 400)
    ax.plot(r, rep.closed_form_boundary(r), color="k", lw=1.5,
            label="closed form: superposition below" if label else None)
    ax.plot([1, 1], [rep.closed_form_boundary(1.0), 1.0], color="k", lw=1.5, ls="--",
            label="closed form: dropped | dedicated" if label else None)


def agreement(table: dict, kind: str) -> dict[str, float]:
    """Agreement of the best-restart phases with :func:`closed_form_phase` (n=2, m=1).

    ``all``: over every cell with a prediction; ``away``: only cells more than one grid step
    (in log density) from the boundary curve; ``restarts``: over all restarts, weighted by
    the restart fractions. ``median_loss_over_ideal``: median over cells of the best
    restart's final loss divided by the lowest idealised loss
    (:func:`bitjax.analysis.representable.idealised_n2m1`, in bitjax's units: the mean over
    features); about 1 or below when training found the idealised optimum (learned biases
    can beat it).
    """
    rr, pp = np.meshgrid(table["r"], table["p"], indexing="ij")
    pred = closed_form_phase(rr, pp)
    t = table[kind]
    ok = (pred >= 0) & (t["best"] >= 0)
    step = np.diff(np.log(table["p"])).mean() if len(table["p"]) > 1 else 1.0
    away = ok & (np.abs(np.log(pp) - np.log(rep.closed_form_boundary(rr))) > step)
    match = t["best"] == pred
    frac_match = np.take_along_axis(np.nan_to_num(t["frac"]),
                                    np.clip(pred, 0, 2)[None], axis=0)[0]
    ideal = rep.idealised_n2m1(rr, pp)["best"]
    ratio = t["best_loss"] / ideal
    return {
        "median_loss_over_ideal": float(np.nanmedian(ratio)) if ok.any() else np.nan,
        "agreement_all": float(match[ok].mean()) if ok.any() else np.nan,
        "agreement_away": float(match[away].mean()) if away.any() else np.nan,
        "agreement_restarts": float(frac_match[ok].mean()) if ok.any() else np.nan,
        "n_cells_compared": int(ok.sum()),
        "n_cells_away": int(away.sum()),
    }


#: Columns of ``phase_cells.csv``.
CELL_COLUMNS = ("part", "kind", "r", "density", "best_phase", "best_loss", "best_extra_norm",
                "best_extra_max_cos", *[f"frac_{p}" for p in metrics.EXTRA_PHASES],
                "n_restarts", "closed_form", "ideal_min_loss")
#: Columns of ``phase_summary.csv`` (the agreement columns are empty for a part other than
#: n=2, m=1, which has no closed form).
SUMMARY_COLUMNS = ("part", "kind", "n_cells", "restarts_per_cell",
                   *[f"share_{p}" for p in metrics.EXTRA_PHASES],
                   *[f"restart_share_{p}" for p in metrics.EXTRA_PHASES],
                   "agreement_all", "agreement_away", "agreement_restarts",
                   "n_cells_compared", "n_cells_away", "median_loss_over_ideal")
#: The columns of :func:`agreement` in ``phase_summary.csv``.
AGREEMENT_COLUMNS = SUMMARY_COLUMNS[-6:]


def cell_table(name: str, table: dict, is_n2m1: bool):
    """One row per kind x r x density cell of :func:`phase_table`: the best restart's phase,
    loss and extra-feature measures, the restart phase fractions, and for n=2, m=1 the
    closed-form phase and the lowest idealised loss.

    Returns:
      A :class:`pandas.DataFrame` (:data:`CELL_COLUMNS`), kind by kind, r then density in
      config order; a phase is empty where there is none.
    """
    kinds, cell = table["kinds"], ("kind", "r", "density")
    rr, pp = np.meshgrid(table["r"], table["p"], indexing="ij")
    pred = closed_form_phase(rr, pp) if is_n2m1 else np.full(rr.shape, -1)
    names = np.array(("", *metrics.EXTRA_PHASES), dtype=object)  # by code + 1 (-1: none)

    def per_kind(key):
        return np.stack([table[k][key] for k in kinds])

    frac = per_kind("frac")  # [K, 3, R, P]
    data = {"best_phase": (cell, names[per_kind("best") + 1]),
            "best_loss": (cell, per_kind("best_loss")),
            "best_extra_norm": (cell, per_kind("best_norm")),
            "best_extra_max_cos": (cell, per_kind("best_cos")),
            **{f"frac_{p}": (cell, frac[:, k]) for k, p in enumerate(metrics.EXTRA_PHASES)},
            "n_restarts": (cell, per_kind("n")),
            "closed_form": (cell[1:], names[pred + 1]),
            "ideal_min_loss": (cell[1:], rep.idealised_n2m1(rr, pp)["best"] if is_n2m1
                               else np.full(rr.shape, np.nan))}
    ds = xr.Dataset(data, coords={"kind": kinds, "r": table["r"], "density": table["p"]})
    return grid_frame(ds, cell).assign(part=name)[list(CELL_COLUMNS)]


def summary_table(name: str, table: dict, cells, n_restarts: int, is_n2m1: bool):
    """Per kind, from its rows of :func:`cell_table`: the cells with a best restart, the
    share of them in each phase, each phase's mean share of restarts over the cells, and
    for n=2, m=1 the :func:`agreement` with the closed form.

    Returns:
      A :class:`pandas.DataFrame` (:data:`SUMMARY_COLUMNS`), one row per kind.
    """
    import pandas as pd

    flags = cells.assign(valid=cells["best_phase"] != "",
                         **{f"is_{p}": cells["best_phase"] == p for p in metrics.EXTRA_PHASES})
    by = flags.groupby("kind", sort=False)
    out = pd.DataFrame({"n_cells": by["valid"].sum()})
    out["restarts_per_cell"] = n_restarts
    for p in metrics.EXTRA_PHASES:
        out[f"share_{p}"] = by[f"is_{p}"].sum() / out["n_cells"]
    for p in metrics.EXTRA_PHASES:
        out[f"restart_share_{p}"] = by[f"frac_{p}"].mean()
    if is_n2m1:
        out = out.join(pd.DataFrame.from_dict(
            {k: agreement(table, k) for k in table["kinds"]}, orient="index"))
    else:  # no closed form: the columns are empty
        out = out.assign(**dict.fromkeys(AGREEMENT_COLUMNS))
    return out.rename_axis("kind").reset_index().assign(part=name)[list(SUMMARY_COLUMNS)]


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    from bitjax.store import files as store_files

    cmap = ListedColormap(PHASE_COLORS)
    cnorm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3)
    files: list[Path] = []
    cells, summaries = [], []
    label = run_label(parts)
    for name, part in parts.items():
        cfg = part.config
        table = phase_table(part)
        kinds = table["kinds"]
        rx, py = _edges(table["r"]), _edges(table["p"])
        n_restarts = len(cfg.seed)
        is_n2m1 = cfg.n_features == 2 and cfg.n_hidden == 1

        fig, axes = plots.new_figure(1, len(kinds), size=(4.6, 4.0), sharey=True)
        for ax, kind in zip(axes[0], kinds, strict=True):
            best = np.ma.masked_less(table[kind]["best"].T.astype(float), 0)
            ax.pcolormesh(rx, py, best, cmap=cmap, norm=cnorm, edgecolors="w", lw=0.3)
            if is_n2m1:
                _draw_boundary(ax, label=True)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(rx[0], rx[-1])
            ax.set_ylim(py[0], py[-1])
            ax.set_xlabel("relative importance r of the extra feature")
            title = f"{kind}: best of {n_restarts} restart(s)"
            if is_n2m1:
                a = agreement(table, kind)["agreement_all"]
                title += f"\nagreement with closed form {a:.0%}"
            ax.set_title(title, fontsize=9)
        axes[0, 0].set_ylabel("feature density 1 - S")
        handles = [Patch(color=c, label=f"extra feature {p}")
                   for p, c in zip(metrics.EXTRA_PHASES, PHASE_COLORS, strict=True)]
        handles += axes[0, 0].get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8,
                   bbox_to_anchor=(0.5, -0.13 if is_n2m1 else -0.09), frameon=False)
        fig.suptitle(f"Phase of the extra (last) feature, n={cfg.n_features}, "
                     f"m={cfg.n_hidden}, importance (1, ..., r), effective weights",
                     fontsize=10, y=1.06)
        plots.footer(fig, label)
        files += plots.save(fig, out / f"phase_{name}")

        fig, axes = plots.new_figure(len(kinds), 3, size=(3.4, 3.0), sharex=True, sharey=True)
        for row, kind in enumerate(kinds):
            for k, phase in enumerate(metrics.EXTRA_PHASES):
                ax = axes[row, k]
                im = ax.pcolormesh(rx, py, table[kind]["frac"][k].T, cmap="viridis",
                                   vmin=0, vmax=1)
                if is_n2m1 and kind == "dense":
                    _draw_boundary(ax, label=False)
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_title(f"{kind}: fraction {phase}", fontsize=9)
                if row == len(kinds) - 1:
                    ax.set_xlabel("relative importance r")
                if k == 0:
                    ax.set_ylabel("density 1 - S")
        fig.colorbar(im, ax=axes, shrink=0.8, label=f"fraction of {n_restarts} restart(s)")
        fig.suptitle(f"n={cfg.n_features}, m={cfg.n_hidden}: share of restarts per phase",
                     fontsize=10, y=1.0)
        plots.footer(fig, label)
        files += plots.save(fig, out / f"phase_fractions_{name}")

        cells.append(cell_table(name, table, is_n2m1))
        summaries.append(summary_table(name, table, cells[-1], n_restarts, is_n2m1))

    files.append(out / "phase_summary.csv")
    store_files.write_frames(files[-1], summaries)
    files.append(out / "phase_cells.csv")
    store_files.write_frames(files[-1], cells)
    return files


EXPERIMENT = Experiment(
    name="phase",
    description="Phase diagrams of an extra feature (dropped / superposed / dedicated) over "
                "relative importance and density, n=2 m=1 and n=3 m=2, dense vs ternary "
                "(Elhage et al. 2022, Superposition as a Phase Change).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="phase_n2m1",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
