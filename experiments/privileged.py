"""Superposition in a privileged basis: are ternary neurons more monosemantic?

Question: the ReLU hidden-layer model (``h = ReLU(W x)``, ``x' = ReLU(W^T h + b)``) has a
privileged basis, so each of its m neurons can be read on its own. With n=10 features, m=5
neurons and importance I_i = 0.75^i, the paper's dense model has monosemantic neurons (one
feature each) on dense data and polysemantic neurons as the features get sparser (Elhage et
al. 2022, section "Superposition in a Privileged Basis": each neuron's weights as a stacked
bar coloured by feature, the best of many restarts per sparsity). Are BitNet b1.58 ternary
neurons more monosemantic, and at what loss?

Command:  python -m experiments.privileged           (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.privileged --preset quick --n-seeds 200

Presets (model relu_hidden, dense + ternary, 1-S in {1, .3, .1, .03, .01, .003, .001},
the paper's restarts as seeds):
  paper  n=10, m=5, 1,000 seeds per sparsity, 10,000 steps, batch 1024 (14,000 instances).
  quick  n=10, m=5, 100 seeds per sparsity, 3,000 steps, batch 1024 (1,400 instances).
  tiny   n=6, m=3, two sparsities, 2 seeds, 200 steps, batch 128 (smoke test, seconds).

Runtime: tiny about 20 s on the 2-core development CPU (measured); quick about 20 min there
by --dry-run (not run end to end); paper not measured (meant for one GPU).
Outputs (in --out): experiment.json, sweep.json, manifest.json, metrics.csv,
features.csv.gz, checkpoints/; neuron_summary.csv (per kind and sparsity, over seeds: mean
and 95% CI of the monosemantic and polysemantic neuron counts, the mean features per alive
neuron, the mean monosemanticity, the mean adversarial vulnerability (per feature: the
largest change of its output per unit L2 perturbation of the other inputs, by a
projected-gradient attack of radius 0.1; :mod:`bitjax.analysis.adversarial`) and the
loss; the same for the best restart, the one with
the lowest final loss; and the paired difference of the mean monosemanticity kind - dense,
same seed: same initial latent weights and data); neurons.csv (every neuron of every best
restart: norm, features carried, monosemanticity, top feature and its weights);
neuron_bars.{png,pdf} (rows: kinds; columns: sparsity; each best restart's neurons as
stacked bars of their effective weights, one colour per feature, positive weights up and
negative down, neurons ordered by their top feature); monosemanticity.{png,pdf} (mean
monosemanticity, polysemantic neurons and loss against 1-S, mean and 95% CI over seeds and
the best restart); loss_gap.{png,pdf} and loss_gap.csv (the paired loss gap kind - dense).
Definitions: :mod:`bitjax.analysis.neurons` (weight share, carried features at share >=
0.1, dead neurons below norm 0.1, monosemanticity = the dominant feature's share), on the
effective weights (gamma * T for ternary).
Paper figure: "Superposition in a Privileged Basis" (n=10, m=5, I=0.75^i: the stacked
neuron bars across sparsity).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from bitjax.analysis import adversarial, neurons, stats
from bitjax.analysis import grid as analysis
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

#: The paper's sparsity grid (as in experiments.sparsity's relu part).
PROBABILITIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
#: Per-neuron measures written to neurons.csv for each best restart.
NEURON_COLUMNS = ("norm", "n_features", "monosemanticity", "participation", "top_feature")
#: Per-instance measures summarised over seeds (and for the best restart).
SUMMARY_MEASURES = ("n_monosemantic", "n_polysemantic", "n_dead",
                    "mean_features_per_neuron", "mean_monosemanticity", "mean_vulnerability")


def _config(n, m, probs, seeds, steps, **kw) -> SweepConfig:
    return SweepConfig(n_features=n, n_hidden=m, model="relu_hidden",
                       kind=("dense", "ternary"), seed=tuple(range(seeds)),
                       feature_probability=tuple(probs), importance=(0.75,), steps=steps,
                       **kw)


PRESETS = {
    "paper": lambda seeds: {"privileged": _config(10, 5, PROBABILITIES, seeds or 1000,
                                                  10_000)},
    "quick": lambda seeds: {"privileged": _config(10, 5, PROBABILITIES, seeds or 100, 3_000)},
    "tiny": lambda seeds: {"privileged": _config(6, 3, (1.0, 0.1), seeds or 2, 200,
                                                 batch_size=128, chunk_size=100,
                                                 history_every=50, eval_batches=2)},
}


def neuron_measures(sweep: LoadedSweep) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(W_eff [I, m, n], neurons.neuron_metrics of it)`` for every instance, with each
    instance's ``mean_vulnerability`` (:meth:`LoadedSweep.vulnerability`)."""
    w = neurons.neuron_matrix(neurons.effective_params(sweep.config, sweep.params))
    measures = neurons.neuron_metrics(w)
    measures.update(adversarial.summarise(sweep.vulnerability()))
    return w, measures


def summary_table(sweep: LoadedSweep, measures: dict[str, np.ndarray]):
    """Per kind and sparsity: each of :data:`SUMMARY_MEASURES` and the loss, mean and 95%
    CI over seeds and at the best restart, and the paired mean-monosemanticity difference
    against dense.

    Returns:
      A :class:`pandas.DataFrame` over the labelled grid's (kind, sparsity) cells, kind by
      kind, dense sparsity first: kind, feature_probability, n_seeds, best_instance, then
      ``<measure>``, ``<measure>_ci95`` and ``<measure>_best`` per measure (the loss last),
      then (when the sweep has dense) ``monosemanticity_minus_dense`` and its CI.
    """
    values = {k: np.asarray(measures[k], np.float64) for k in SUMMARY_MEASURES}
    values["loss"] = sweep.loss
    grids = {k: analysis.kind_seed_grid(sweep, v) for k, v in values.items()}
    best = analysis.best_seed_grid(sweep)
    mono = grids["mean_monosemanticity"]
    with stats.quiet_nan_warnings():
        summaries = {k: stats.mean_ci_over(g, "seed") for k, g in grids.items()}
        diff = (stats.mean_ci_over(mono - mono.sel(kind="dense", drop=True), "seed")
                if "dense" in mono["kind"].values else None)
    found = best >= 0  # -1: every seed of the cell diverged, no best restart
    data = {"n_seeds": summaries["loss"]["n"], "best_instance": best}
    for k, s in summaries.items():
        data[k] = s["mean"]
        data[f"{k}_ci95"] = s["ci95"]
        at_best = np.asarray(values[k])[best.where(found, 0).to_numpy()]
        data[f"{k}_best"] = best.copy(data=at_best.astype(np.float64)).where(found)
    if diff is not None:
        data["monosemanticity_minus_dense"] = diff["mean"]
        data["monosemanticity_minus_dense_ci95"] = diff["ci95"]
    dims = ("kind", "feature_probability")
    return grid_frame(xr.Dataset(data), dims, [*dims, *data])


def summary_rows(sweep: LoadedSweep, measures: dict[str, np.ndarray]) -> list[dict]:
    """:func:`summary_table` as one dict per row."""
    return summary_table(sweep, measures).to_dict("records")


def neuron_table(sweep: LoadedSweep, w: np.ndarray, measures: dict[str, np.ndarray],
                 best_instances: list[int]):
    """One row per neuron of each best restart (those not -1, in order): instance, kind,
    feature_probability, seed, neuron, :data:`NEURON_COLUMNS`, then its weights ``w_<i>``.

    Returns:
      A :class:`pandas.DataFrame` (no rows when there is no best restart).
    """
    import pandas as pd

    inst = np.array([i for i in best_instances if i >= 0], dtype=np.int64)
    m, n = w.shape[1:]
    cols = {"instance": np.repeat(inst, m)}
    # The instances' coordinates by position (the grid's instance order), no value search.
    cols["kind"] = np.asarray(sweep.coords["kind"])[cols["instance"]].astype(str)
    cols["feature_probability"] = np.asarray(sweep.coords["feature_probability"],
                                             np.float64)[cols["instance"]]
    cols["seed"] = np.asarray(sweep.coords["seed"])[cols["instance"]]
    cols["neuron"] = np.tile(np.arange(m), len(inst))
    cols.update({c: np.asarray(measures[c])[inst].reshape(-1) for c in NEURON_COLUMNS})
    weights = np.asarray(w)[inst].reshape(-1, n).astype(np.float64)
    cols.update({f"w_{i}": weights[:, i] for i in range(n)})
    return pd.DataFrame(cols)


def neuron_rows(sweep: LoadedSweep, w: np.ndarray, measures: dict[str, np.ndarray],
                best_instances: list[int]) -> list[dict]:
    """:func:`neuron_table` as one dict per row."""
    return neuron_table(sweep, w, measures, best_instances).to_dict("records")


def neuron_order(w: np.ndarray) -> np.ndarray:
    """Neurons of one instance ordered by their top feature (dead neurons last)."""
    m = neurons.neuron_metrics(w)
    key = np.where(m["alive"], m["top_feature"], w.shape[1])
    return np.argsort(key, kind="stable")


def stacked_neuron_bars(ax, w: np.ndarray, colors) -> None:
    """Each neuron of ``w [m, n]`` as a bar: its weights stacked by feature, positive up
    and negative down (the paper's privileged-basis picture)."""
    order = neuron_order(w)
    x = np.arange(w.shape[0])
    up = np.zeros(w.shape[0])
    down = np.zeros(w.shape[0])
    for i in range(w.shape[1]):
        v = w[order, i]
        pos, neg = np.maximum(v, 0.0), np.minimum(v, 0.0)
        ax.bar(x, pos, bottom=up, color=colors[i], width=0.8, lw=0)
        ax.bar(x, neg, bottom=down, color=colors[i], width=0.8, lw=0)
        up += pos
        down += neg
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels([str(k) for k in order], fontsize=6)


def _draw_bars(sweep, w, best, out: Path, label: str) -> list[Path]:
    import matplotlib

    kinds = [str(k) for k in best["kind"].values]
    probs = best["feature_probability"].values
    n = w.shape[2]
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.95, n))
    fig, axes = plots.new_figure(len(kinds), len(probs), size=(1.9, 2.0), sharey=True)
    for r, kind in enumerate(kinds):
        for c, p in enumerate(probs):
            ax = axes[r, c]
            inst = int(best.sel(kind=kind).values[c])
            if inst >= 0:
                stacked_neuron_bars(ax, w[inst], colors)
            if r == 0:
                ax.set_title(f"1-S = {p:g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{kind}\nweight", fontsize=8)
            if r == len(kinds) - 1:
                ax.set_xlabel("neuron", fontsize=7)
    handles = [matplotlib.patches.Patch(color=colors[i], label=str(i)) for i in range(n)]
    axes[0, -1].legend(handles=handles, title="feature", fontsize=6, title_fontsize=6,
                       loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"Privileged basis, n={n}, m={w.shape[1]}: each neuron's effective "
                 "weights by feature (best restart per cell)", fontsize=9)
    plots.footer(fig, label)
    return plots.save(fig, out / "neuron_bars")


def _draw_monosemanticity(rows: list[dict], out: Path, label: str) -> list[Path]:
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    panels = (("mean_monosemanticity", "mean monosemanticity\n(dominant feature's share)"),
              ("n_polysemantic", "polysemantic neurons"), ("loss", "final loss"))
    fig, axes = plots.new_figure(1, len(panels), size=(4.0, 3.2))
    fig.subplots_adjust(wspace=0.4)
    for ax, (key, words) in zip(axes[0], panels, strict=True):
        plots.mean_and_best_by_kind(ax, rows, key, kinds)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("1 - S (sparser to the right)")
        ax.set_ylabel(words, fontsize=8)
        if key == "loss":
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Neurons across sparsity: mean and 95% CI over seeds (band), and the best "
                 "restart (dashed)", fontsize=9)
    plots.footer(fig, label)
    return plots.save(fig, out / "monosemanticity")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.store import files as store_files

    sweep = parts["privileged"]
    label = run_label(parts)
    w, measures = neuron_measures(sweep)
    summary = summary_table(sweep, measures)
    rows = summary.to_dict("records")
    best = analysis.best_seed_grid(sweep)
    files = [out / "neuron_summary.csv", out / "neurons.csv", out / "loss_gap.csv"]
    store_files.write_frames(files[0], [summary])
    table = neuron_table(sweep, w, measures, [int(i) for i in best.values.ravel()])
    # No best restart: an empty file with an empty header, as the table always had.
    store_files.write_frames(files[1], [table] if len(table) else [])
    with stats.quiet_nan_warnings():
        gap_rows, columns = analysis.loss_gap_parts({"privileged": sweep})
    store_files.write_csv(files[2], gap_rows, columns=analysis.LOSS_GAP_COLUMNS)
    files += _draw_bars(sweep, w, best, out, label)
    files += _draw_monosemanticity(rows, out, label)
    cfg = sweep.config
    fig = plots.loss_gap_figure(
        columns, title=f"Loss gap at the end of training, paired by seed (same init and "
                       f"data),\nprivileged basis, n={cfg.n_features}, m={cfg.n_hidden}")
    plots.footer(fig, label)
    files += plots.save(fig, out / "loss_gap")
    return files


EXPERIMENT = Experiment(
    name="privileged",
    description="Superposition in a privileged basis: monosemantic and polysemantic neurons "
                "against sparsity, dense vs ternary (Elhage et al. 2022).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="neuron_bars",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
