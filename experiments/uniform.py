"""Uniform superposition: do ternary weights change the "sticky" dimensions per feature?

Question: with every feature equally important (I = 1), the dense model's dimensions per
feature D* = m / ||W||_F^2 sticks at 1 and then at 1/2 (antipodal pairs) as features get
sparser (Elhage et al. 2022, section "Feature Dimensionality", the D* vs 1/(1-S) figure and
the per-feature D_i scatter). Does BitNet b1.58 ternarisation keep those plateaus?

Command:  python -m experiments.uniform            (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.uniform --preset quick --seeds 3

Presets:
  paper  n=400, m=30, 40 feature probabilities log-spaced 1 -> 1/100, dense + ternary,
         5 seeds, 10,000 steps, batch 1024 (400 instances).
  quick  n=100, m=10, 16 probabilities 1 -> 1/20, dense + ternary, 2 seeds, 4,000 steps.
  tiny   smoke test (seconds).

Runtime: quick 2 min 52 s on a 2-core CPU (this machine, 2 CPU devices); with --seeds 3
--steps 6000 7 min 55 s (results/uniform); paper preset not measured on CPU (about 3 hours
extrapolated from experiments.benchmark) and not measured on a GPU.
Outputs (in --out): config.json, manifest.json, metrics.csv, features.csv, checkpoints/,
dims_summary.csv (per kind and sparsity: D* mean and 95% CI over seeds, the paired
difference ternary - dense with its CI, loss, features represented),
dims_per_feature.{png,pdf}, feature_dimensionality.{png,pdf}.
Paper figure: "Feature Dimensionality" (D* against 1/(1-S), and the D_i scatter).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bitjax import plots
from bitjax.sweep import SweepConfig
from experiments._cli import Experiment, Part, main


def _config(n, m, n_p, p_min, seeds, steps, kinds=("dense", "ternary"), **kw) -> SweepConfig:
    probs = tuple(float(p) for p in np.geomspace(1.0, p_min, n_p))
    return SweepConfig(n_features=n, n_hidden=m, kind=kinds, seed=tuple(range(seeds)),
                       feature_probability=probs, importance=(1.0,), steps=steps, **kw)


PRESETS = {
    "paper": lambda seeds: {"uniform": _config(400, 30, 40, 0.01, seeds or 5, 10_000)},
    "quick": lambda seeds: {"uniform": _config(100, 10, 16, 0.05, seeds or 2, 4_000)},
    "tiny": lambda seeds: {"uniform": _config(12, 3, 4, 0.1, seeds or 1, 200, batch_size=128,
                                              chunk_size=100, history_every=50)},
}


def dims_table(part: Part) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(1/p, dense first; {kind: D* [seeds, probs]})`` for the D* curve."""
    d_star = part.metrics["dims_per_feature"]
    return 1.0 / part.probabilities(), {k: part.seed_table(k, d_star) for k in part.kinds()}


def summary_rows(part: Part) -> list[dict]:
    """Per kind and sparsity: D*, loss and features represented (mean, 95% CI over seeds) and
    the paired difference of D* against dense (same seed: same init and same data)."""
    probs, kinds = part.probabilities(), part.kinds()
    tables = {
        name: {k: part.seed_table(k, values) for k in kinds}
        for name, values in (("dims", part.metrics["dims_per_feature"]), ("loss", part.loss),
                             ("n_rep", part.metrics["n_represented"]))
    }
    rows = []
    for kind in kinds:
        d_mean, d_ci = plots.mean_ci(tables["dims"][kind])
        l_mean, _ = plots.mean_ci(tables["loss"][kind])
        r_mean, _ = plots.mean_ci(tables["n_rep"][kind])
        diff = tables["dims"][kind] - tables["dims"].get("dense", np.nan)
        f_mean, f_ci = plots.mean_ci(diff)
        for j, p in enumerate(probs):
            rows.append({
                "kind": kind, "feature_probability": float(p), "inv_probability": 1 / p,
                "n_seeds": int(np.isfinite(tables["dims"][kind][:, j]).sum()),
                "dims_per_feature": float(d_mean[j]), "dims_ci95": float(d_ci[j]),
                "dims_minus_dense": float(f_mean[j]), "dims_minus_dense_ci95": float(f_ci[j]),
                "loss": float(l_mean[j]), "n_represented": float(r_mean[j]),
            })
    return rows


def analyse(parts: dict[str, Part], out: Path) -> list[Path]:
    from bitjax import io

    part = parts["uniform"]
    cfg = part.sweep.config
    x, tables = dims_table(part)
    n_seeds = next(iter(tables.values())).shape[0]
    files = [out / "dims_summary.csv"]
    with plots.quiet_nan_warnings():  # one seed: the CI is NaN, and the CSV says so
        io.write_csv(files[0], summary_rows(part))

    fig, axes = plots.new_figure(1, 1, size=(6, 4))
    ax = axes[0, 0]
    for kind, table in tables.items():
        plots.curve_with_band(ax, x, table, label=kind, color=plots.kind_color(kind))
    plots.reference_lines(ax, {"1": 1.0, "1/2": 0.5, "2/5": 0.4})
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 - S)  (inverse feature probability)")
    ax.set_ylabel("dimensions per feature  m / ||W||_F^2")
    ax.set_ylim(0, 1.15)
    ax.set_title(f"Uniform importance, n={cfg.n_features}, m={cfg.n_hidden}: mean of "
                 f"{n_seeds} seed(s), band 95% CI", fontsize=9)
    ax.legend(title="kind", fontsize=8)
    files += plots.save(fig, out / "dims_per_feature")

    kinds = list(tables)
    fig, axes = plots.new_figure(1, len(kinds), size=(5, 3.6), sharey=True)
    c = part.sweep.coords
    rng = np.random.default_rng(0)
    for ax, kind in zip(axes[0], kinds, strict=True):
        idx = part.sweep.select(kind=kind)
        idx = idx[~part.diverged[idx]]
        inv_p = 1.0 / c["feature_probability"][idx]
        d = part.metrics["dimensionality"][idx]  # [k, n]
        xs = np.repeat(inv_p[:, None], d.shape[1], axis=1)
        jitter = np.exp(rng.normal(0, 0.02, xs.shape))
        ax.scatter((xs * jitter).ravel(), d.ravel(), s=2, alpha=0.25,
                   color=plots.kind_color(kind), lw=0)
        xk, tk = x, tables[kind]
        ax.plot(xk, np.nanmean(tk, axis=0), color="k", lw=1, label="D* (mean over seeds)")
        plots.reference_lines(ax)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.1)
        ax.set_xlabel("1 / (1 - S)")
        ax.set_title(f"{kind}: every feature's D_i (all seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[0, 0].set_ylabel("feature dimensionality D_i")
    files += plots.save(fig, out / "feature_dimensionality")
    return files


EXPERIMENT = Experiment(
    name="uniform",
    description="Uniform importance: dimensions per feature against sparsity, dense vs "
                "ternary (Elhage et al. 2022, Feature Dimensionality).",
    presets=PRESETS,
    analyse=analyse,
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
