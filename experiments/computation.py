"""Computation in superposition: do ternary weights keep the |x| circuits, and put fewer
features into each neuron?

Question: the absolute-value model (``h = ReLU(W1 x + b1)``, ``y = ReLU(W2 h + b2)``,
untied weights, inputs whose non-zero values are uniform in [-1, 1], target ``|x|``)
computes rather than stores. The paper's dense model computes each feature with a
``ReLU(x) + ReLU(-x)`` pair of neurons when it has the neurons for it (n=3 features on m=6
neurons), and as features get sparser (n=100, m=40, I_i = 0.8^i) packs more features into
each neuron, with motifs such as "asymmetric superposition" (two features share a neuron
unequally and another neuron inhibits the stronger one's interference; Elhage et al. 2022,
section "Computation in Superposition"). Do BitNet b1.58 ternary weights (``gamma * T``,
one scale per matrix) find the same circuits, carry as many features per neuron, and at
what loss? One structural fact bounds the answer: every non-zero weight of a per-tensor
ternary matrix has the same magnitude, so a ternary neuron cannot read one feature twice
as strongly as another, and the asymmetric-superposition motif as defined in
:mod:`bitjax.analysis.neurons` (an input-weight ratio >= 2) cannot occur in it.

Command:  python -m experiments.computation          (paper preset on GPU/TPU, quick on CPU)
          python -m experiments.computation --preset quick --n-seeds 10

Presets (model abs_computation, dense + ternary in one sweep, the restarts as seeds, the
paper notebook's recipe unless --recipe says otherwise; two parts, each in its own folder
under --out):
  paper  circuits: n=3, m=6, I=1 (every feature worth its pair of neurons; a choice),
         1-S in {1, 0.1}, 100 seeds, 10,000 steps, batch 1024
         (400 instances); sparsity: n=100, m=40, I=0.8^i, 1-S in {1, .3, .1, .03, .01,
         .003, .001}, 50 seeds, 10,000 steps, batch 1024 (700 instances).
  quick  circuits: as paper with 20 seeds (80 instances); sparsity: as paper with 8
         seeds and batch 512 (112 instances).
  tiny   circuits: n=3, m=6, 1-S = 1, 2 seeds; sparsity: n=12, m=5, 1-S in {1, 0.1},
         2 seeds; 200 steps of batch 128 (smoke test, seconds).

Runtime (the 2-core development CPU, shared with other jobs): tiny 16-24 s end to end
(measured; --dry-run: 5 s of training). quick by --dry-run (training only, not run end to
end): 6 min with the machine idle, 14-18 min at a load of 4; a cut of it (2 seeds, 2,000
steps) trained its sparsity part at 1,200 instance-steps/s under that load, which puts the
whole preset at about 16 min plus the analysis. paper: not measured on a GPU; --dry-run on
this CPU says about 5 h 20 min.
Outputs (in --out; each part's folder holds its experiment.json, sweep.json, metrics.csv,
features.csv.gz and checkpoints/): manifest.json; motif_instances.csv (one row per
instance of every part: loss, diverged, best restart or not, the neuron counts of
:func:`bitjax.analysis.neurons.neuron_metrics` on ``W1`` (alive, dead, monosemantic,
polysemantic, diffuse: alive but no feature's share reaches the cut, mean features per
alive neuron, mean monosemanticity) and the motif counts
(features computed by a ReLU pair, neurons in such pairs, asymmetric-superposition
motifs, distinct inhibiting neurons) and the mean adversarial vulnerability (per feature:
the largest change of its output per unit L2 perturbation of the other inputs, by a
projected-gradient attack of radius 0.1; :mod:`bitjax.analysis.adversarial`));
motif_summary.csv (per part, kind and sparsity:
each of those counts and the loss, mean and 95% t CI over seeds, the best restart's value,
and the paired difference kind - dense over seeds, same seed: same initial latent weights
and data); motifs.csv (every motif of every best restart, named: feature, neurons,
slopes, inhibitor); circuits.{png,pdf} (n=3, m=6: the best restart per kind and sparsity
as a table of neurons, W1 | b1 | W2^T with each neuron's detected role named: ReLU(+x_i),
ReLU(-x_i), shared, inhibits); neuron_features.{png,pdf} (n=100, m=40: the best restart's
neurons as stacked bars of their W1 weights, one colour per feature from the most
important, sorted by how many features each carries, sparsity down the rows, dense beside
ternary); motif_counts.{png,pdf} (per part: features computed by a pair, polysemantic
neurons, asymmetric motifs and the loss against 1-S, mean and 95% CI over seeds and the
best restart); loss_gap.{png,pdf} and loss_gap.csv (per part and sparsity: the loss gap
ternary - dense paired by seed, mean and 95% t CI, best of seeds, ratio).
Definitions: :mod:`bitjax.analysis.neurons` (carried features at weight share >= 0.1 of a
neuron's W1 row, dead neurons below norm 0.1, the ReLU-pair and asymmetric motifs), on the
effective weights (gamma * T for ternary); signed inputs fire a neuron through weights of
either sign, so both count.
Paper figure: "Computation in Superposition" (the |x| circuits of a small model; n=100,
m=40, I=0.8^i: neurons sorted by the features they carry, across sparsity).
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
from bitjax.report import neuron_plots, plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

#: The sparsity grid of the n=100, m=40 part (as experiments.privileged's).
PROBABILITIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
#: The n=3, m=6 part: dense data, and sparse data with the same neurons.
CIRCUIT_PROBABILITIES = (1.0, 0.1)
#: The parts: the small model that shows the circuits, the large one across sparsity.
CIRCUITS, SPARSITY = "circuits", "sparsity"
#: Per-instance measures from the neurons of ``W1`` (bitjax.analysis.neurons.neuron_metrics).
NEURON_MEASURES = ("n_alive", "n_dead", "n_monosemantic", "n_polysemantic",
                   "mean_features_per_neuron", "mean_monosemanticity")
#: Alive neurons that carry no feature: no share reaches the cut, the weight is spread
#: over more than 1 / cut features (neither monosemantic nor polysemantic as counted).
DIFFUSE = "n_diffuse"
#: Per-instance motif counts (:func:`motif_counts`).
MOTIF_MEASURES = ("n_abs_pairs", "n_pair_neurons", "n_asymmetric", "n_inhibitors")
#: Everything summarised over seeds in motif_summary.csv (and the loss).
#: Per-instance mean adversarial vulnerability (bitjax.analysis.adversarial, by PGD).
VULNERABILITY = "mean_vulnerability"
MEASURES = (*NEURON_MEASURES, DIFFUSE, *MOTIF_MEASURES, VULNERABILITY)


def _config(n, m, importance, probs, seeds, steps, **kw) -> SweepConfig:
    return SweepConfig(n_features=n, n_hidden=m, model="abs_computation",
                       kind=("dense", "ternary"), seed=tuple(range(seeds)),
                       feature_probability=tuple(probs), importance=(importance,),
                       steps=steps, **kw)


_TINY = dict(batch_size=128, chunk_size=100, history_every=50, eval_batches=2)

PRESETS = {
    "paper": lambda seeds: {
        CIRCUITS: _config(3, 6, 1.0, CIRCUIT_PROBABILITIES, seeds or 100, 10_000),
        SPARSITY: _config(100, 40, 0.8, PROBABILITIES, seeds or 50, 10_000)},
    "quick": lambda seeds: {
        CIRCUITS: _config(3, 6, 1.0, CIRCUIT_PROBABILITIES, seeds or 20, 10_000),
        SPARSITY: _config(100, 40, 0.8, PROBABILITIES, seeds or 8, 10_000,
                          batch_size=512)},
    "tiny": lambda seeds: {
        CIRCUITS: _config(3, 6, 1.0, (1.0,), seeds or 2, 200, **_TINY),
        SPARSITY: _config(12, 5, 0.8, (1.0, 0.1), seeds or 2, 200, **_TINY)},
}


# ----------------------------------------------------------------------------------------
# Measures.


def effective(sweep: LoadedSweep) -> dict[str, np.ndarray]:
    """Every instance's effective ``W1 [I, m, n]``, ``b1``, ``W2 [I, n, m]``, ``b2``."""
    return neurons.effective_params(sweep.config, sweep.params)


def instance_motifs(eff: dict[str, np.ndarray], i: int
                    ) -> tuple[neurons.AbsPairs, list[neurons.AsymmetricMotif]]:
    """The ReLU pairs and asymmetric motifs of instance ``i``."""
    return (neurons.abs_pairs(eff["W1"][i], eff["b1"][i], eff["W2"][i]),
            neurons.asymmetric_motifs(eff["W1"][i], eff["W2"][i], b1=eff["b1"][i]))


def motif_counts(pairs: neurons.AbsPairs, motifs: list[neurons.AsymmetricMotif]
                 ) -> dict[str, int]:
    """:data:`MOTIF_MEASURES` of one instance: features computed by a ReLU pair, distinct
    neurons in those pairs, asymmetric motifs, distinct inhibiting neurons."""
    return neurons.motif_counts(pairs, motifs)


def instance_measures(sweep: LoadedSweep, eff: dict[str, np.ndarray] | None = None
                      ) -> dict[str, np.ndarray]:
    """Every per-instance measure of :data:`MEASURES`, ``[I]`` each (float)."""
    eff = effective(sweep) if eff is None else eff
    m = neurons.neuron_metrics(neurons.neuron_matrix(eff))
    out = {k: np.asarray(m[k], np.float64) for k in NEURON_MEASURES}
    out[DIFFUSE] = out["n_alive"] - out["n_monosemantic"] - out["n_polysemantic"]
    counts = [motif_counts(*instance_motifs(eff, i)) for i in range(sweep.n_instances)]
    out.update({k: np.array([c[k] for c in counts], np.float64) for k in MOTIF_MEASURES})
    out[VULNERABILITY] = adversarial.summarise(sweep.vulnerability())[VULNERABILITY]
    return out


def best_instances(sweep: LoadedSweep) -> list[int]:
    """The best restart (lowest final loss) of every kind and sparsity (-1: all diverged)."""
    return [int(i) for i in analysis.best_seed_grid(sweep).values.ravel()]


def instance_table(name: str, sweep: LoadedSweep, measures: dict[str, np.ndarray]):
    """One row per instance, in instance order: its coordinates, loss, whether it is its
    cell's best restart, and every measure.

    Returns:
      A :class:`pandas.DataFrame`: part, instance, kind, seed, feature_probability, loss,
      diverged, best_restart, then the measures in their order.
    """
    import pandas as pd

    c, n = sweep.coords, sweep.n_instances
    best = np.zeros(n, np.int64)
    cells = np.asarray(best_instances(sweep))
    best[cells[cells >= 0]] = 1  # -1: a cell whose seeds all diverged has none
    cols = {"part": np.full(n, name, dtype=object), "instance": np.arange(n),
            "kind": np.asarray(c["kind"]).astype(str), "seed": np.asarray(c["seed"]),
            "feature_probability": np.asarray(c["feature_probability"], np.float64),
            "loss": np.asarray(sweep.loss, np.float64),
            "diverged": np.asarray(sweep.diverged).astype(np.int64), "best_restart": best}
    cols.update({k: np.asarray(v) for k, v in measures.items()})
    return pd.DataFrame(cols)


def instance_rows(name: str, sweep: LoadedSweep, measures: dict[str, np.ndarray]
                  ) -> list[dict]:
    """:func:`instance_table` as one dict per row."""
    return instance_table(name, sweep, measures).to_dict("records")


def summary_table(name: str, sweep: LoadedSweep, measures: dict[str, np.ndarray]):
    """Per kind and sparsity: every measure and the loss, mean and 95% t CI over seeds,
    the best restart's value, and the paired difference kind - dense (same seed).

    Returns:
      A :class:`pandas.DataFrame` over the labelled grid's (kind, sparsity) cells, kind by
      kind, dense sparsity first: part, kind, feature_probability, n_seeds, best_instance,
      ``<measure>``, ``<measure>_ci95`` and ``<measure>_best`` per measure (the loss last),
      then (when the sweep has dense) ``<measure>_minus_dense`` and its CI per measure.
    """
    values = {**measures, "loss": np.asarray(sweep.loss, np.float64)}
    grids = {k: analysis.kind_seed_grid(sweep, v) for k, v in values.items()}
    best = analysis.best_seed_grid(sweep)
    with stats.quiet_nan_warnings():
        summaries = {k: stats.mean_ci_over(g, "seed") for k, g in grids.items()}
        diffs = ({k: stats.mean_ci_over(g - g.sel(kind="dense", drop=True), "seed")
                  for k, g in grids.items()} if "dense" in best["kind"].values else {})
    found = best >= 0  # -1: every seed of the cell diverged, no best restart
    data = {"part": name, "n_seeds": summaries["loss"]["n"], "best_instance": best}
    for k, s in summaries.items():
        data[k] = s["mean"]
        data[f"{k}_ci95"] = s["ci95"]
        at_best = np.asarray(values[k], np.float64)[best.where(found, 0).to_numpy()]
        data[f"{k}_best"] = best.copy(data=at_best).where(found)
    for k, d in diffs.items():
        data[f"{k}_minus_dense"] = d["mean"]
        data[f"{k}_minus_dense_ci95"] = d["ci95"]
    dims = ("kind", "feature_probability")
    columns = ["part", *dims, *(k for k in data if k != "part")]
    return grid_frame(xr.Dataset(data), dims, columns)


def summary_rows(name: str, sweep: LoadedSweep, measures: dict[str, np.ndarray]
                 ) -> list[dict]:
    """:func:`summary_table` as one dict per row."""
    return summary_table(name, sweep, measures).to_dict("records")


MOTIF_COLUMNS = ("part", "instance", "kind", "seed", "feature_probability", "loss", "motif",
                 "feature", "weak_feature", "neurons", "slopes", "inhibitor", "ratio",
                 "cancelled")


def motif_table(name: str, sweep: LoadedSweep, eff: dict[str, np.ndarray]):
    """Every motif of every best restart, one row each: ``relu_pair`` (feature, its
    ``(k+, k-)`` neurons, each side's largest rectifier, and the slopes of the two sides,
    summed over their rectifiers) or ``asymmetric`` (strong feature, weak
    feature, shared neuron, inhibiting neuron, input-weight ratio, fraction cancelled).

    A motif is a variable-length list per instance, not a cell of the grid, so its rows
    are collected per best restart; a column a motif does not have is ``None`` (written
    empty).

    Returns:
      A :class:`pandas.DataFrame` with :data:`MOTIF_COLUMNS` (object columns, each value
      as the motif gives it).
    """
    import pandas as pd

    c = sweep.coords
    rows = []
    for inst in best_instances(sweep):
        if inst < 0:
            continue
        head = {"part": name, "instance": inst, "kind": str(c["kind"][inst]),
                "seed": int(c["seed"][inst]),
                "feature_probability": float(c["feature_probability"][inst]),
                "loss": float(sweep.loss[inst])}
        pairs, motifs = instance_motifs(eff, inst)
        for i in np.flatnonzero(pairs.present):
            rows.append({**head, "motif": "relu_pair", "feature": int(i),
                         "neurons": " ".join(str(int(k)) for k in pairs.neurons[i]),
                         "slopes": " ".join(f"{s:.3g}" for s in pairs.slopes[i])})
        for mo in motifs:
            rows.append({**head, "motif": "asymmetric", "feature": mo.strong,
                         "weak_feature": mo.weak, "neurons": str(mo.neuron),
                         "inhibitor": mo.inhibitor, "ratio": mo.ratio,
                         "cancelled": mo.cancelled})
    return pd.DataFrame([[r.get(k) for k in MOTIF_COLUMNS] for r in rows],
                        columns=list(MOTIF_COLUMNS), dtype=object)


def motif_rows(name: str, sweep: LoadedSweep, eff: dict[str, np.ndarray]) -> list[dict]:
    """:func:`motif_table` as one dict per row (a column the motif does not have left
    out)."""
    return [{k: v for k, v in r.items() if v is not None}
            for r in motif_table(name, sweep, eff).to_dict("records")]


def _aligned(frames: list) -> list:
    """Tables of several parts in the first one's columns, a column a later part lacks
    ``None`` (written empty, as a row without that key was)."""
    columns = list(frames[0].columns) if frames else []
    return [f.assign(**{k: np.full(len(f), None, dtype=object)
                        for k in columns if k not in f.columns}) for f in frames]


# ----------------------------------------------------------------------------------------
# Figures.


def _label(parts, names) -> str:
    return run_label({n: parts[n] for n in names}, getattr(parts, "provenance", None))


def draw_circuits(sweep: LoadedSweep, eff: dict[str, np.ndarray], out: Path,
                  label: str) -> list[Path]:
    """The best restart per kind (rows) and sparsity (columns) as a table of named
    neurons (:func:`bitjax.report.neuron_plots.circuit_table`)."""
    best = analysis.best_seed_grid(sweep)
    kinds = [str(k) for k in best["kind"].values]
    probs = best["feature_probability"].values
    cfg = sweep.config
    fig, axes = plots.new_figure(len(kinds), len(probs), size=(4.6, 0.42 * cfg.n_hidden + 1.1))
    fig.subplots_adjust(wspace=0.9, hspace=0.55)
    for r, kind in enumerate(kinds):
        for c, p in enumerate(probs):
            ax = axes[r, c]
            inst = int(best.sel(kind=kind).values[c])
            if inst < 0:
                ax.set_axis_off()
                ax.set_title(f"{kind}, 1-S = {p:g}: every seed diverged", fontsize=8)
                continue
            pairs, motifs = instance_motifs(eff, inst)
            w1 = eff["W1"][inst]
            roles = neuron_plots.neuron_roles(pairs, motifs, w1.shape[0])
            neuron_plots.circuit_table(ax, w1, eff["b1"][inst], eff["W2"][inst], roles,
                                       neuron_plots.order_by_top_feature(w1))
            ax.set_title(f"{kind}, 1-S = {p:g}, seed {int(sweep.coords['seed'][inst])}: "
                         f"loss {sweep.loss[inst]:.2g}\n|x_i| by a ReLU pair: "
                         f"{int(pairs.present.sum())} of {cfg.n_features} features, "
                         f"{len(motifs)} asymmetric motif(s)", fontsize=7)
    fig.suptitle(f"Computation in superposition, n={cfg.n_features}, m={cfg.n_hidden}: "
                 "each neuron's input weights W1, bias b1 and output weights W2 (effective),"
                 "\nbest restart per cell; right: the role each neuron plays in a detected "
                 "motif", fontsize=9, y=1.02)
    plots.footer(fig, label)
    return plots.save(fig, out / "circuits")


def draw_neuron_features(sweep: LoadedSweep, eff: dict[str, np.ndarray],
                         measures: dict[str, np.ndarray], out: Path, label: str
                         ) -> list[Path]:
    """The best restart's neurons as stacked bars of their ``W1`` weights, sorted by the
    features each carries: sparsity down the rows, kinds side by side."""
    import matplotlib

    best = analysis.best_seed_grid(sweep)
    kinds = [str(k) for k in best["kind"].values]
    probs = best["feature_probability"].values
    cfg = sweep.config
    w = neurons.neuron_matrix(eff)
    colors = neuron_plots.feature_colors(cfg.n_features)
    height = 1.7 * len(probs)
    fig, axes = plots.new_figure(len(probs), len(kinds), size=(5.0, 1.7))
    fig.subplots_adjust(hspace=0.75, top=1.0 - 0.85 / height)
    for r, p in enumerate(probs):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            inst = int(best.sel(kind=kind).values[r])
            if inst >= 0:
                order = neuron_plots.order_by_features(w[inst])
                neuron_plots.stacked_neuron_bars(ax, w[inst], colors, order)
                neuron_plots.features_carried_ticks(ax, w[inst], order)
                counts = ", ".join(f"{int(measures[k][inst])} {words}" for k, words in (
                    ("n_monosemantic", "monosemantic"), ("n_polysemantic", "polysemantic"),
                    (DIFFUSE, "diffuse"), ("n_dead", "dead")))
                ax.set_title(f"{kind}, 1-S = {p:g}, loss {sweep.loss[inst]:.3g}\n"
                             f"neurons: {counts}", fontsize=7)
            else:
                ax.set_title(f"{kind}, 1-S = {p:g}: every seed diverged", fontsize=7)
            if c == 0:
                ax.set_ylabel("W1 weight", fontsize=7)
            if r == len(probs) - 1:
                ax.set_xlabel("neurons by features carried (+: over "
                              f"{round(1 / neurons.CARRY_SHARE)}, spread thin)", fontsize=7)
            ax.tick_params(axis="y", labelsize=6)
    norm = matplotlib.colors.Normalize(0, cfg.n_features - 1)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(colors))
    bar = fig.colorbar(sm, ax=axes, fraction=0.02, pad=0.02)
    bar.set_label("feature (importance falls with the index)", fontsize=7)
    fig.suptitle(f"Computation in superposition, n={cfg.n_features}, m={cfg.n_hidden}: each "
                 "neuron's input weights stacked by feature (positive up, negative down),\n"
                 "sorted by the features it carries (the number under each bar; dead "
                 "neurons last), best restart per cell", fontsize=9, y=1.0 - 0.1 / height,
                 va="top")
    plots.footer(fig, label)
    return plots.save(fig, out / "neuron_features")


def draw_motif_counts(rows: list[dict], cfgs: Mapping[str, SweepConfig], out: Path,
                      label: str) -> list[Path]:
    """Per part (rows): the motif and neuron counts and the loss against 1-S, mean and 95%
    CI over seeds (band) and the best restart (dashed), one colour per kind."""
    panels = (("n_abs_pairs", "features computed\nby a ReLU pair"),
              ("n_polysemantic", "polysemantic neurons"),
              ("n_asymmetric", "asymmetric motifs"), ("loss", "final loss"))
    names = list(cfgs)
    fig, axes = plots.new_figure(len(names), len(panels), size=(3.4, 2.7))
    fig.subplots_adjust(wspace=0.45, hspace=0.6)
    for r, name in enumerate(names):
        cfg = cfgs[name]
        part_rows = [row for row in rows if row["part"] == name]
        for c, (key, words) in enumerate(panels):
            ax = axes[r, c]
            plots.mean_and_best_by_kind(ax, part_rows, key,
                                        dict.fromkeys(row["kind"] for row in part_rows))
            if len({row["feature_probability"] for row in part_rows}) > 1:
                ax.set_xscale("log")
                ax.invert_xaxis()
            ax.set_xlabel("1 - S (sparser to the right)", fontsize=7)
            ax.set_ylabel(words, fontsize=7)
            if key == "loss":
                ax.set_yscale("log")
            ax.tick_params(which="both", labelsize=6)
            if c == 0:
                ax.set_title(f"{name}: n={cfg.n_features}, m={cfg.n_hidden}", fontsize=8,
                             loc="left")
        axes[r, 0].legend(fontsize=6)
    fig.suptitle("Circuits across sparsity: mean and 95% CI over seeds (band), and the best "
                 "restart (dashed)", fontsize=9)
    plots.footer(fig, label)
    return plots.save(fig, out / "motif_counts")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.store import files as store_files

    names = [n for n in (CIRCUITS, SPARSITY) if n in parts]
    effs = {n: effective(parts[n]) for n in names}
    measures = {n: instance_measures(parts[n], effs[n]) for n in names}
    instances = [instance_table(n, parts[n], measures[n]) for n in names]
    summaries = [summary_table(n, parts[n], measures[n]) for n in names]
    motifs = [motif_table(n, parts[n], effs[n]) for n in names]
    rows = [r for f in summaries for r in f.to_dict("records")]
    files = [out / "motif_instances.csv", out / "motif_summary.csv", out / "motifs.csv",
             out / "loss_gap.csv"]
    store_files.write_frames(files[0], _aligned(instances))
    store_files.write_frames(files[1], _aligned(summaries))
    store_files.write_frames(files[2], motifs, columns=MOTIF_COLUMNS)
    with stats.quiet_nan_warnings():
        gap_rows, columns = analysis.loss_gap_parts(
            {n: parts[n] for n in names},
            titles={n: f"{n}, n={parts[n].config.n_features}, m={parts[n].config.n_hidden}"
                    for n in names})
    store_files.write_csv(files[3], gap_rows, columns=analysis.LOSS_GAP_COLUMNS)
    if CIRCUITS in parts:
        files += draw_circuits(parts[CIRCUITS], effs[CIRCUITS], out,
                               _label(parts, [CIRCUITS]))
    if SPARSITY in parts:
        files += draw_neuron_features(parts[SPARSITY], effs[SPARSITY], measures[SPARSITY],
                                      out, _label(parts, [SPARSITY]))
    label = _label(parts, names)
    files += draw_motif_counts(rows, {n: parts[n].config for n in names}, out, label)
    fig = plots.loss_gap_figure(
        columns, title="Loss gap at the end of training, paired by seed (same init and "
                       "data), computation in superposition")
    plots.footer(fig, label)
    files += plots.save(fig, out / "loss_gap")
    return files


EXPERIMENT = Experiment(
    name="computation",
    description="Computation in superposition: the |x| circuits (ReLU pairs, asymmetric "
                "superposition with an inhibitor) and features per neuron against "
                "sparsity, dense vs ternary (Elhage et al. 2022).",
    presets=PRESETS,
    analyse=analyse,
    main_figure="neuron_features",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
