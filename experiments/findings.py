"""Findings: every claim of the BitNet study, tested by rules stated before the data are read.

Question: the blog study "Toy Models of Superposition: what about BitNets?" (2024; one seed,
no error bars, unknown BitLinear) suggested that ternary models superpose much as dense ones
do, perhaps with later onsets of superposition and of negative biases, a wider
antipodal-only range, less superposition for a similar number of features around some
sparsities, the same sticky D* curve (perhaps lower in a small range) and the same (more
orthogonal) correlated geometry. This module writes results/FINDINGS.md from the runs in a
results folder with one protocol for every claim; the file opens with the answer in plain
words, generated from the verdicts.

* The rule table :data:`CLAIMS` fixes, per claim, the run, the sparsity cells, the per-seed
  measure, the test (equivalence by TOST for "same"/"similar" claims, one-sided paired t
  tests for differences), the margin, the direction, the declared windows of 1-S of a
  local claim, and the theory's prediction at the optimum. Nothing in it depends on the
  data.
* The unit is the seed: every cell of a seed (same initial latent weights, same data for
  both kinds) is summarised into one ternary - dense value per seed (the mean over the
  stated cells, the mean over each declared window, or an onset interpolated in
  log10(1-S) along the seed's curve) before any statistics.
* A local claim ("in a small range", "around some sparsities") is tested in each declared
  window, Bonferroni over its windows (bitjax.analysis.verdicts), not by a whole-grid mean.
* Three views per claim. "At the optimum": where the best-known ternary solutions reach the
  dense loss (within ATTAINED_FACTOR in at least SHARED_SHARE of the cells), the claim is
  decided by that fact, the same way for equivalence and difference claims (supported /
  not supported); elsewhere the claim's measure is computed on the best-known ternary
  solutions themselves (results/representable/best_known: one per dense instance) and
  tested against the trained dense instances of the same seed, on the cells whose dense
  instance converged. Two trained views,
  one per training route (:data:`ROUTES`), measured, tested and decided the same way:
  "trained from scratch" (the straight-through estimator from the standard
  initialisation) and "trained from full precision" (every quantized instance trains
  dense for the first part of its budget, is rotated onto the lattice and snapped, then
  trains quantized; the run's dense instances train normally, paired by seed).
* The training recipe is a sampled factor of each trained view (:data:`RECIPES`, one line
  per recipe): from scratch results/<experiment> (the recipe it was trained with: for the
  study's runs the convergence study's choice, for the neuron runs the paper's) and the
  other named recipe, results/<experiment>_paper (``--recipe paper``: the paper
  notebook's AdamW, constant lr 1e-3, weight decay 0.01) or results/<experiment>_committed
  (``--recipe committed``: the convergence study's choice); from full
  precision results/<experiment>_fp (``--recipe fp_first``) and
  results/<experiment>_fp_paper (``--recipe paper --fp-fraction 0.5``). Each recipe's run
  is decided alone; the view's verdict combines them by the rule stated in the protocol
  (bitjax.analysis.verdicts.RECIPE_RULE): it holds across recipes, rests on one recipe
  (the missing run named with its command), is decided by some recipes only, or depends
  on the recipe (undecided, never supported). Each run's recipe is described from its
  config. In each run, the primary seed
  selection keeps a seed only if every compared instance of it converged and none
  diverged; the verdicts on all seeds and on per-cell converged pairs are reported beside
  it (a sensitivity, not a second claim). Each trained view also reports how far its
  ternary instances are from the best-known solutions (results/representable/best_known):
  the median over the claim's cells and seeds of trained ternary loss / best-known
  ternary loss, both on the stratified estimator sample the best-known losses were
  computed on.
* Loss gap, the primary quantity, normalised by the zero model's loss:
  (L_ternary - L_dense) / L_zero per cell, L_zero the loss of the model that outputs zeros
  (so cells of very different loss weigh alike); per seed the mean over cells (mean with a
  95% t interval over seeds), and best-of-seeds (per cell the best seed of each kind, mean
  over cells), reported with no interval: a minimum has no valid bootstrap interval, so the
  text gives the distribution-free fact about the best of k seeds instead
  (bitjax.analysis.stats.best_of_seeds).
* The neuron claims (:data:`NEURON_CLAIMS`, the project's own questions, not the study's)
  ask of the two privileged-basis models (results/privileged: h = ReLU(W x); results/
  computation: the |x| model with untied W1, W2) whether ternary neurons are more
  monosemantic at equal loss and whether ternary changes when computation goes into
  superposition, each both ways (a one-sided difference and a TOST equivalence). Their
  hidden basis is privileged, so the loss is not rotation-invariant and the optimum view's
  lattice argument does not carry over (:data:`NO_OPTIMUM`), and the full-precision-first
  route does not exist for them (their config refuses ``fp_fraction``, which rotates the
  hidden space): they are judged trained from scratch only, in their own section, with
  the loss gap beside every comparison.
* All p-values of the tests carried out (for and against each claim, all three views,
  every recipe) form one Holm family in which each test counts once; verdicts are
  supported / not supported / refuted / undecided (with the reason: not converged,
  attainable not reached, too little power, no run, does not apply, or depends on the
  recipe, and whether more compute can remove it).

Command:  python -m experiments.findings           (reads results/*, writes FINDINGS.md)
          python -m experiments.findings --results path/to/results --out FINDINGS.md
Runtime: 78 s wall on the 2-core CPU, alone (loads the checkpoints; trains nothing), on
results/ with its 20 trained runs (every claim's runs of both routes and both recipes; intro
with 240 seeds, sparsity's ReLU part with 60) and every best-known folder (102 s before the
estimator drew its count strata together). The primary trained-from-scratch run's twins'
losses on the best-known estimator are read as the best-known runs recorded them; every other
recipe's run is evaluated on the rebuilt sample, which costs most for uniform (n = 200, 40
densities: its sample is rebuilt once), so each further recipe run adds its evaluation.
GPU not measured. Paper figure: none; the tables answer the BitNet study's claims.

Quantizer: ``ternary`` is BitNet b1.58 absmean with one scale per tensor, float bias after
the dequantized matmul, no norm, float activations (see README, "Quantizers").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitjax import convergence
from bitjax.analysis import best_ternary as bt
from bitjax.analysis import geometry, metrics, neurons, onsets, stats
from bitjax.analysis import grid as analysis
from bitjax.analysis import verdicts as vd
from bitjax.analysis.results import LoadedSweep, SweepCollection, load_experiment, load_sweep
from bitjax.analysis.verdicts import Rule
from bitjax.config import SweepConfig, instance_vectors, recipe_name
from bitjax.report import mechanism_plots
from bitjax.report.tables import recipe_text
from bitjax.store import files as store_files
from bitjax.store import layout
from bitjax.store.checkpoint import CheckpointError

#: A ternary loss "reaches" a dense one within this factor (the best-known solutions against
#: dense at the optimum).
ATTAINED_FACTOR = 1.05
#: The best-known ternary solutions "coincide with dense" (and decide the optimum view,
#: bitjax.analysis.verdicts.decide_by_optimum) when they reach the dense loss within
#: ATTAINED_FACTOR in at least this share of the claim's cells.
SHARED_SHARE = 0.95
#: The study the findings test (fields not known to this repository are None and left out
#: of the text rather than guessed).
STUDY = {"title": "Toy Models of Superposition: what about BitNets?", "kind": "blog study",
         "author": None, "date": "2024", "link": None}
#: The runs of the mechanism section, in its order (the tied-model runs the best-known
#: solutions are made for; results/mechanism holds what experiments.mechanism measured).
MECHANISM_RUNS = ("intro", "sparsity/relu", "sparsity/linear", "sparsity/zoom",
                  "sparsity/notebook", "uniform", "correlated/corr_pairs",
                  "correlated/anti_pairs", "correlated/three_corr", "correlated/sets20",
                  "correlated/anti20")
#: The views' names.
OPTIMUM, SCRATCH, FP = "at the optimum", "trained from scratch", "trained from full precision"
#: How the trained-from-scratch view was trained (the route named in the opening).
TRAINED_ROUTE = ("trained from scratch: straight-through estimator from the standard "
                 "initialisation")
#: How the trained-from-full-precision view was trained (the route named in the opening;
#: the protocol adds each run's switch step and recipe from its config).
FP_ROUTE = ("trained from full precision: every quantized instance trains dense for the "
            "first part of its budget, is rotated onto the ternary lattice "
            "(bitjax.lattice.align) and snapped, then trains quantized with the "
            "straight-through estimator; the run's dense instances train normally, paired "
            "by seed")
#: The trained views: route key -> view name.
ROUTES = {"scratch": SCRATCH, "fp": FP}


@dataclass(frozen=True)
class Recipe:
    """One training recipe of a trained view: where its runs are and how one is trained.

    Attributes:
      route: the view (a key of :data:`ROUTES`).
      suffix: its runs are ``<results>/<experiment><suffix>``.
      flags: the experiment's flags that train such a run (the preset's own recipe when
        empty). What the recipe is (schedule, learning rate, weight decay, switch step) is
        read from each run's config (bitjax.report.tables.recipe_text), never from here.
    """

    route: str
    suffix: str
    flags: str
    name: str = ""

    def folder(self, results: Path, experiment: str) -> Path:
        return results / (experiment + self.suffix)

    def command(self, results: Path, experiment: str) -> str:
        flags = f"{self.flags} " if self.flags else ""
        return (f"python -m experiments.{experiment} {flags}--out "
                f"{self.folder(results, experiment)}")

    @property
    def primary(self) -> bool:
        """Whether this is its route's primary recipe (the first of :func:`route_recipes`)."""
        return self == route_recipes(self.route)[0]


#: The training recipes, a sampled factor of each trained view (one line per recipe; the
#: first of a route is its primary recipe: the optimum view, the recorded twins of the
#: best-known runs and the measurement tables' first trained rows are its). From scratch:
#: the preset's recipe (for the study's runs the convergence study's choice, ``--recipe
#: committed``; for the neuron runs the paper's) and the other named recipe, the paper
#: notebook's (``--recipe paper``) or the committed one (``--recipe committed``): a named
#: recipe the primary run already uses is not listed (:func:`is_primary_recipe`); from
#: full precision: the two-phase study's choice (``--recipe fp_first``) and the paper's
#: optimiser with the full-precision-first schedule.
RECIPES: tuple[Recipe, ...] = (
    Recipe("scratch", "", ""),
    Recipe("scratch", "_paper", "--recipe paper", "paper"),
    Recipe("scratch", "_committed", "--recipe committed", "committed"),
    Recipe("fp", "_fp", "--recipe fp_first"),
    Recipe("fp", "_fp_paper", "--recipe paper --fp-fraction 0.5"),
)


def route_recipes(route: str) -> tuple[Recipe, ...]:
    """The recipes of one trained view (a key of :data:`ROUTES`), its primary first."""
    return tuple(rc for rc in RECIPES if rc.route == route)


def is_primary_recipe(recipe: Recipe, primary: LoadedSweep | None) -> bool:
    """Whether ``recipe`` (a named ``--recipe``) is the one the route's primary run was
    trained with: it is then no second recipe of that experiment and is not listed (the
    study's runs use ``committed``, the neuron runs ``paper``; each gets the other)."""
    return bool(recipe.name) and primary is not None and \
        recipe_name(primary.config) == recipe.name
#: Seed selections of the trained views: the primary one first, the sensitivities after.
SELECTIONS = {
    "converged": "seeds with every compared instance converged",
    "all": "all seeds",
    "pairs": "per-cell converged pairs",
}
#: The kinds compared.
TERNARY, DENSE = "ternary", "dense"
#: The m=2 configuration of the antipodal claim (a label of
#: :data:`bitjax.analysis.metrics.GEOMETRY_M2_LABELS`).
ANTIPODAL_PAIRS = "two_antipodal_pairs"
#: Relative tolerance when the representable tables' trained losses are checked against the
#: run (a table from another run must not be used).
TABLE_RTOL = 1e-3


@dataclass(frozen=True)
class Claim:
    """One row of the rule table: a :class:`~bitjax.analysis.verdicts.Rule` and where it is
    measured.

    Attributes:
      rule: the claim, its test, margin, direction and the theory's prediction.
      experiment, part: the run (``results/<experiment>/<part>``).
      value: key of :data:`VALUES`, the per-instance quantity.
      summary: "mean" (per seed, the mean over the cells of ternary - dense; with the rule's
        windows, one such mean per window) or "onset" (per seed and kind, the sustained
        onset of ``value >= level`` in log10(1-S),
        :func:`bitjax.analysis.onsets.bounded_onset`; the seed's value is ternary - dense).
      p_range: the cells used, ``lo <= 1-S <= hi`` (the whole run's grid by default).
      level: the onset's crossing level (onset summaries only).
      exact: use results/representable/intro_exact.csv for the optimum view (intro only).
      trained_only: judged in the "trained from scratch" view only (the neuron claims: the
        optimum view's argument does not apply to the run's model, :data:`NO_OPTIMUM` says
        why, and the full-precision-first route does not exist for it); its optimum and
        full-precision views are neither tested nor in the Holm family.
    """

    rule: Rule
    experiment: str
    part: str
    value: str
    summary: str = "mean"
    p_range: tuple[float, float] = (0.0, 1.0)
    level: float = math.nan
    exact: bool = False
    trained_only: bool = False

    @property
    def where(self) -> str:
        lo, hi = self.p_range
        cells = ("every sparsity of the run" if (lo, hi) == (0.0, 1.0)
                 else f"sparsities with {lo:g} <= 1-S <= {hi:g}")
        if self.rule.windows:
            cells += (f", in {len(self.rule.windows)} declared windows of 1-S: "
                      + vd.windows_text(self.rule.windows))
        return f"{self.experiment}/{self.part}, {cells}"


def _rule(key, claim, test, measure, unit, margin, direction, theory, windows=()) -> Rule:
    return Rule(key, claim, test, measure, unit, margin, direction, theory, windows)


#: The rule table: every claim of the BitNet study with its measure, test, margin and
#: direction, fixed here before any result is read. Margins are the smallest differences
#: that matter: one feature of n=20, a tenth of a decade of 1-S, a tenth of the grid, 0.05
#: in superposition or D*, 0.1 in a cosine (0.02 for the mean |cos| of a near-orthogonal
#: 10-feature basis). The two local claims get windows that tile their run's declared
#: range of 1-S (a quarter of a decade for the 40-point uniform grid, about five points
#: each; a decade for the 7-point sparsity grid, two or three points each), fixed from the
#: grid's range and never from the values.
STUDY_CLAIMS: tuple[Claim, ...] = (
    Claim(_rule("emerges", "Superposition emerges much as in dense models", "equivalence",
                "mean over the cells of the features represented (||W_i|| > "
                f"{metrics.DEFAULT_THRESHOLD:g})", "features", 1.0, 0, "same"),
          "sparsity", "relu", "n_represented"),
    Claim(_rule("onset_superposition", "A later onset of superposition (sparsity zoom)",
                "difference", "onset in log10(1-S) of max_{i>=m} ||W_i|| >= "
                f"{metrics.DEFAULT_THRESHOLD:g} (a less important feature represented)",
                "decades", 0.1, -1, "same"),
          "sparsity", "zoom", "max_extra_norm", "onset", level=metrics.DEFAULT_THRESHOLD),
    Claim(_rule("onset_superposition_uniform", "A later onset of superposition (uniform "
                "importance)", "difference", "onset in log10(1-S) of 1/D* >= 1.25 "
                "(D* <= 0.8)", "decades", 0.1, -1, "same"),
          "uniform", "uniform", "inverse_dims_per_feature", "onset", level=1.25),
    Claim(_rule("onset_negative_bias", "A later onset of negative biases", "difference",
                "onset in log10(1-S) of -min_i b_i >= 0.01", "decades", 0.1, -1, "same"),
          "sparsity", "relu", "negative_min_bias", "onset", level=0.01),
    Claim(_rule("antipodal_range", "A wider sparsity range with only antipodal structure",
                "difference", "share of the cells whose configuration is two antipodal "
                "pairs (bitjax.analysis.metrics.geometry_m2)", "", 0.1, 1,
                "different"),
          "intro", "intro", "two_antipodal_pairs", exact=True),
    Claim(_rule("less_superposition", "Around some sparsities, less superposition for a "
                "similar number of features", "difference", "mean over a window's cells of "
                "the mean superposition of the represented features", "", 0.05, -1, "same",
                vd.decade_windows(0.001, 1.0, 1)),
          "sparsity", "relu", "superposition_represented"),
    Claim(_rule("sticky_plateau", "The same sticky D* curve (the 1/2 plateau)",
                "equivalence", "mean over the cells of D* = m / ||W||_F^2", "", 0.05, 0,
                "same"), "uniform", "uniform", "dims_per_feature", p_range=(0.25, 0.5)),
    Claim(_rule("dstar_lower", "D* perhaps lower in a small range", "difference",
                "mean over a window's cells of D* = m / ||W||_F^2", "", 0.05, -1, "same",
                vd.decade_windows(0.01, 1.0, 4)),
          "uniform", "uniform", "dims_per_feature"),
    Claim(_rule("corr_pairs", "The same correlated geometry (correlated pairs orthogonal)",
                "equivalence", "mean over the cells of |cos| between the members of a "
                "correlated pair (both represented)", "", 0.1, 0, "same"),
          "correlated", "corr_pairs", "abs_within_pair_cos"),
    Claim(_rule("anti_pairs", "The same anticorrelated geometry (pairs antipodal)",
                "equivalence", "mean over the cells of cos between the members of an "
                "anticorrelated pair (both represented)", "", 0.1, 0, "same"),
          "correlated", "anti_pairs", "within_pair_cos"),
    Claim(_rule("more_orthogonal", "Ternary weights look more orthogonal", "difference",
                "mean over the cells of |cos| between represented features of the same "
                "correlated set", "", 0.02, -1, "different"),
          "correlated", "sets20", "within_set_abs_cos"),
)

#: Why the neuron claims (``Claim.trained_only``) have no "at the optimum" view, per run.
#: The optimum view rests on the tied model's loss being invariant under rotations of the
#: hidden space: a rotated dense optimum can then be put near the ternary lattice, which
#: is how results/representable finds the best-known ternary solutions it is decided by.
NO_OPTIMUM = {
    "privileged": "its loss is not invariant under rotations of the hidden space (the "
                  "ReLU on h = ReLU(W x) makes the neuron basis privileged), so a dense "
                  "optimum cannot be rotated onto the ternary lattice: the lattice and "
                  "best-known-ternary argument of the optimum view does not carry over",
    "computation": "its hidden layer h = ReLU(W1 x + b1) makes the neuron basis "
                   "privileged as well (untied W1, W2), so the same lattice argument does "
                   "not carry over",
}

#: The model (bitjax.layers.MODELS) of each run of the neuron claims: its config states why
#: the full-precision-first route does not apply (:func:`no_fp_view`; the run's own config
#: is asked when it exists, this one when it does not).
NEURON_MODELS = {"privileged": "relu_hidden", "computation": "abs_computation"}

#: The neuron claims of the two privileged-basis models (not claims of the BitNet study: the
#: project's own questions "are ternary neurons more monosemantic, at equal loss?" and
#: "does ternary change when computation goes into superposition?"), fixed here before any
#: result is read and judged trained from scratch only (:data:`NO_OPTIMUM`; their config
#: refuses the full-precision-first route, :func:`fp_refusal`). Each question is asked
#: both ways, a one-sided difference and a TOST equivalence on the same measure, so it can
#: come out either way. Margins: 0.05 in a monosemanticity score (as for superposition and
#: D* above); half a neuron of the m=5 (privileged) per instance; a quarter of a feature
#: per neuron; a quarter of a decade of 1-S for an onset (half the spacing of the 7-point
#: sparsity grid, the smallest shift it resolves); half a feature of the n=3 circuits
#: model; one motif per instance. The onset of computation in superposition reads the
#: cut-free count of features per neuron (participation, 1 / sum_i s_ki^2): the counted
#: features stop at 1 / CARRY_SHARE = 10 per neuron, and a ternary neuron with more than
#: ten equal non-zero weights would count as carrying none.
NEURON_CLAIMS: tuple[Claim, ...] = (
    Claim(_rule("priv_mono_more", "Ternary neurons are more monosemantic (privileged "
                "basis)", "difference", "mean over the cells of the mean monosemanticity "
                "score of the alive neurons (the dominant feature's share of a neuron's "
                "squared input weights)", "", 0.05, 1, "different"),
          "privileged", "privileged", "mean_monosemanticity", trained_only=True),
    Claim(_rule("priv_mono_same", "Ternary neurons are as monosemantic as dense ones "
                "(privileged basis)", "equivalence", "mean over the cells of the mean "
                "monosemanticity score of the alive neurons", "", 0.05, 0, "different"),
          "privileged", "privileged", "mean_monosemanticity", trained_only=True),
    Claim(_rule("priv_n_mono", "Ternary has more monosemantic neurons (privileged basis)",
                "difference", "mean over the cells of the number of monosemantic neurons "
                f"(alive, carrying one feature at weight share >= {neurons.CARRY_SHARE:g})",
                "neurons", 0.5, 1, "different"),
          "privileged", "privileged", "n_monosemantic", trained_only=True),
    Claim(_rule("priv_n_poly", "Ternary has fewer polysemantic neurons (privileged basis)",
                "difference", "mean over the cells of the number of polysemantic neurons "
                f"(alive, carrying two or more features at weight share >= "
                f"{neurons.CARRY_SHARE:g})", "neurons", 0.5, -1, "different"),
          "privileged", "privileged", "n_polysemantic", trained_only=True),
    Claim(_rule("priv_features", "Ternary neurons carry fewer features (privileged basis)",
                "difference", "mean over the cells of the mean number of features an "
                f"alive neuron carries (weight share >= {neurons.CARRY_SHARE:g})",
                "features", 0.25, -1, "different"),
          "privileged", "privileged", "mean_features_per_neuron", trained_only=True),
    Claim(_rule("comp_onset_later", "Ternary puts computation into superposition later "
                "(n=100, m=40)", "difference", "onset in log10(1-S) of the mean "
                "participation of the alive neurons of W1 (the cut-free effective number "
                "of features per neuron)", "decades", 0.25, -1, "different"),
          "computation", "sparsity", "mean_participation", "onset", level=2.0,
          trained_only=True),
    Claim(_rule("comp_onset_same", "Computation goes into superposition at the same "
                "sparsity (n=100, m=40)", "equivalence", "onset in log10(1-S) of the mean "
                "participation of the alive neurons of W1", "decades", 0.25, 0,
                "different"),
          "computation", "sparsity", "mean_participation", "onset", level=2.0,
          trained_only=True),
    Claim(_rule("comp_pairs_fewer", "Ternary computes fewer features with a ReLU(x) + "
                "ReLU(-x) pair (n=3, m=6)", "difference", "mean over the cells of the "
                "features computed by a ReLU pair (bitjax.analysis.neurons.abs_pairs)",
                "features", 0.5, -1, "different"),
          "computation", "circuits", "n_abs_pairs", trained_only=True),
    Claim(_rule("comp_pairs_same", "Ternary keeps the ReLU(x) + ReLU(-x) circuits (n=3, "
                "m=6)", "equivalence", "mean over the cells of the features computed by a "
                "ReLU pair", "features", 0.5, 0, "different"),
          "computation", "circuits", "n_abs_pairs", trained_only=True),
    Claim(_rule("comp_asymmetric", "Ternary has fewer asymmetric-superposition motifs "
                "(n=100, m=40)", "difference", "mean over the cells of the asymmetric-"
                "superposition motifs with an inhibiting neuron (bitjax.analysis.neurons"
                ".asymmetric_motifs)", "motif", 1.0, -1, "different"),
          "computation", "sparsity", "n_asymmetric", trained_only=True),
)
#: Every claim, in the order of the family and the file: the study's, then the neurons'.
CLAIMS: tuple[Claim, ...] = STUDY_CLAIMS + NEURON_CLAIMS


# ---- per-instance values -------------------------------------------------------------------


def _antipodal(sweep: LoadedSweep) -> np.ndarray:
    """1.0 where the instance's m=2 configuration is two antipodal pairs
    (:func:`bitjax.analysis.metrics.geometry_m2`, the configuration metrics.csv and the
    figures name)."""
    if sweep.config.n_hidden != 2:
        raise ValueError(f"{sweep.path}: the configuration names need m = 2, this run has "
                         f"m = {sweep.config.n_hidden}")
    code = metrics.GEOMETRY_M2_LABELS.index(ANTIPODAL_PAIRS)
    return (sweep.metrics()["geometry_m2"] == code).astype(np.float64)


#: Per-instance quantities ``[I]`` the claims read (effective weights, gamma * T for ternary).
VALUES: dict[str, Callable[[LoadedSweep], np.ndarray]] = {
    "n_represented": lambda s: s.metrics()["n_represented"].astype(np.float64),
    "max_extra_norm": lambda s: s.metrics()["norm"][:, s.config.n_hidden:].max(1),
    "inverse_dims_per_feature": lambda s: 1.0 / s.metrics()["dims_per_feature"],
    "dims_per_feature": lambda s: s.metrics()["dims_per_feature"].astype(np.float64),
    "negative_min_bias": lambda s: -np.asarray(s.b, np.float64).min(1),
    "two_antipodal_pairs": _antipodal,
    "superposition_represented":
        lambda s: analysis.instance_quantities(s)["superposition_represented"],
    "abs_within_pair_cos": lambda s: np.abs(geometry.instance_measures(s)["within_pair_cos"]),
    "within_pair_cos": lambda s: geometry.instance_measures(s)["within_pair_cos"],
    "within_set_abs_cos": lambda s: geometry.instance_measures(s)["within_set_abs_cos"],
    **{name: (lambda s, name=name: np.asarray(s.neuron_measures()["scalar"][name],
                                              np.float64))
       for name in ("mean_monosemanticity", "n_monosemantic", "n_polysemantic",
                    "mean_features_per_neuron", "mean_participation", "n_abs_pairs",
                    "n_asymmetric")},
}


# ---- loading --------------------------------------------------------------------------------


def _load(results: Path, name: str) -> SweepCollection:
    """Every part of ``results/<name>``; an unfinished part is an error."""
    parts = load_experiment(results / name)
    for sweep in parts.values():
        if not sweep.finished:
            raise CheckpointError(f"{sweep.path} holds an unfinished run (step {sweep.step})")
    return parts


def converged(sweep: LoadedSweep) -> np.ndarray:
    """``[I]`` bool: converged and not diverged (the stored diagnostic, else
    bitjax.convergence's default rule applied to the loss history)."""
    stored = sweep.diagnostics.get("converged")
    if stored is None:
        stored = convergence.convergence_summary(np.asarray(sweep.history, np.float64),
                                                 sweep.config.history_every)["converged"]
    return np.asarray(stored, bool) & ~sweep.diverged


@dataclass
class Grid:
    """One claim's cells as ``[seeds, P]`` arrays per kind (P dense to sparse).

    Attributes:
      seeds: ``[S]`` seed labels; ``p``: ``[P]`` the cells' 1-S.
      value, loss, ok: ``{kind: [S, P]}`` the claim's value (NaN where diverged), the final
        loss, and converged-and-not-diverged.
      zero: ``[S, P]`` the loss of the model that outputs zeros (the gap's unit).
    """

    seeds: np.ndarray
    p: np.ndarray
    value: dict[str, np.ndarray]
    loss: dict[str, np.ndarray]
    ok: dict[str, np.ndarray]
    zero: np.ndarray


def claim_cells(sweep: LoadedSweep, claim: Claim, values, mask: bool = True):
    """Per-instance ``values [I]`` on the claim's cells: a ``(kind, seed,
    feature_probability)`` DataArray, dense to sparse, NaN where diverged when ``mask``."""
    da = analysis.kind_seed_grid(sweep, values, mask_diverged=mask)
    lo, hi = claim.p_range
    keep = (da["feature_probability"] >= lo) & (da["feature_probability"] <= hi)
    return da.isel(feature_probability=np.flatnonzero(keep.values))


def claim_grid(sweep: LoadedSweep, claim: Claim) -> Grid:
    """The cells of ``claim`` in ``sweep``, by kind (see :class:`Grid`)."""
    def grid(values, mask=True):
        return claim_cells(sweep, claim, values, mask)

    val = grid(np.asarray(VALUES[claim.value](sweep), np.float64))
    loss = grid(sweep.loss)
    ok = grid(converged(sweep), mask=False)
    zero = grid(sweep.zero_loss, mask=False)
    if val.sizes["feature_probability"] < 1:
        raise ValueError(f"{claim.where}: no cell of the run lies in the stated range")
    out = {}
    for name, da in (("value", val), ("loss", loss), ("ok", ok)):
        out[name] = {k: da.sel(kind=k).transpose("seed", "feature_probability").values
                     for k in (TERNARY, DENSE)}
    return Grid(val["seed"].values, val["feature_probability"].values, **out,
                zero=zero.sel(kind=DENSE).transpose("seed", "feature_probability").values)


def _unconverged_text(g: Grid, pairs: np.ndarray) -> str:
    """Where a claim's pairs that did not converge lie (the range of 1-S) and which kind
    held them back, so a reader sees whether longer training of a few cells would do."""
    bad = ~pairs
    if not bad.any():
        return ""
    where = np.broadcast_to(g.p, bad.shape)[bad]
    lo, hi = float(where.min()), float(where.max())
    span = f"at 1-S = {lo:.3g}" if lo == hi else f"at 1-S from {lo:.3g} to {hi:.3g}"
    kinds = ", ".join(f"{k} {int((~g.ok[k]).sum())}" for k in (DENSE, TERNARY))
    return f", the other {int(bad.sum())} {span} (not converged or diverged: {kinds})"


def per_seed(claim: Claim, g: Grid, cells: np.ndarray | None = None
             ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Per seed: ternary - dense of the claim's summary, each kind's summary, and notes.

    Args:
      claim: the claim (its summary and the rule's windows).
      g: its cells.
      cells: ``[S, P]`` bool, the cells to use (the others count as not measured); all by
        default.
    Returns:
      ``(diff, {kind: ...}, {"censored": {kind: [S]}} for onsets else {})``; ``diff`` is
      ``[S]``, or ``[S, W]`` for a rule with W windows (the mean over each window's cells).
    """
    value = {k: g.value[k] if cells is None else np.where(cells, g.value[k], np.nan)
             for k in (TERNARY, DENSE)}
    if claim.summary == "onset":
        by, cens = {}, {}
        for k in (TERNARY, DENSE):
            by[k], cens[k] = onsets.bounded_onset(g.p, value[k], claim.level)
        return by[TERNARY] - by[DENSE], by, {"censored": cens}
    groups = ([vd.in_window(g.p, w) for w in claim.rule.windows] if claim.rule.windows
              else [np.ones(g.p.shape, bool)])
    for w, sel in zip(claim.rule.windows, groups, strict=False):
        if not sel.any():
            raise ValueError(f"{claim.where}: the declared window {vd.windows_text([w])} "
                             "holds no cell of the run")
    with stats.quiet_nan_warnings():
        diff = np.stack([np.nanmean(value[TERNARY][:, c] - value[DENSE][:, c], axis=1)
                         for c in groups], axis=1)
        by = {k: np.stack([np.nanmean(value[k][:, c], axis=1) for c in groups], axis=1)
              for k in (TERNARY, DENSE)}
    if not claim.rule.windows:
        diff, by = diff[:, 0], {k: x[:, 0] for k, x in by.items()}
    return diff, by, {}


# ---- the attainable ternary loss (results/representable) ----------------------------------


@dataclass
class Bounds:
    """The representable table matched to a claim's cells, ``[S, P]`` arrays.

    Attributes:
      found: the table exists and matches the run; ``why`` says what is missing otherwise.
      bound: attainable ternary loss (the smaller of the rotation bound and the exact
        optimum where computed); ``dense``: the dense loss on the same sample;
        ``trained``: the trained ternary loss on the same sample; ``tight``: the bound is
        the optimum (exact enumeration, or an axis-alignable dense solution).
    """

    found: bool
    why: str = ""
    bound: np.ndarray | None = None
    dense: np.ndarray | None = None
    trained: np.ndarray | None = None
    tight: np.ndarray | None = None


def bounds_for(results: Path, claim: Claim, g: Grid) -> Bounds:
    """The attainable bounds of ``claim``'s cells from ``results/representable``.

    Args:
      results: the results folder.
      claim: the claim (its experiment and part name the table).
      g: the claim's cells in the run.
    Returns:
      :class:`Bounds`; ``found`` is False (with ``why``) when the table is missing, lacks a
      cell, or holds trained losses that are not this run's.
    """
    folder = results / "representable"
    names = [f"attainable_{claim.experiment}.csv",
             f"attainable_{claim.experiment}_{claim.part}.csv"]
    path = next((folder / n for n in names if (folder / n).exists()), None)
    if path is None:
        return Bounds(False, f"no attainable bound for {claim.experiment}/{claim.part} "
                             f"(no {' or '.join(names)} in {folder})")
    rows = store_files.read_csv(path)
    shape = (len(g.seeds), len(g.p))
    out = {k: np.full(shape, np.nan)
           for k in ("bound", "dense", "trained", "run_trained", "tight")}
    seed_ix = {int(s): i for i, s in enumerate(g.seeds)}
    # A cell by its label: the table writes 1-S with 7 significant digits (bitjax.store.files
    # .write_csv), so the grid's labels are formatted the same way.
    p_ix = {f"{float(p):.7g}": j for j, p in enumerate(g.p)}
    for r in rows:
        i = seed_ix.get(int(r["seed"]))
        j = p_ix.get(r["feature_probability"])
        if i is None or j is None:
            continue
        if r.get("best_known_ternary"):
            # bitjax.analysis.best_ternary: the best-known solution on the stratified estimator
            out["bound"][i, j] = float(r["best_known_ternary"])
            out["tight"][i, j] = float(r["best_known_tight"] == "True")
            out["dense"][i, j] = float(r["estimator_dense_loss"])
            out["trained"][i, j] = float(r["trained_ternary_estimated"])
        else:  # tables written before the best-known columns existed
            cand = [float(r["attainable_ternary"]),
                    float(r.get("exact_ternary", "nan") or "nan")]
            cand = [c for c in cand if np.isfinite(c)]
            out["bound"][i, j] = min(cand) if cand else np.nan
            # The bound is the optimum where it was enumerated or the dense solution is
            # axis-alignable; elsewhere it is only an upper bound.
            out["tight"][i, j] = float(len(cand) == 2 or r["alignable"] == "True")
            out["dense"][i, j] = float(r["dense_loss"])
            out["trained"][i, j] = float(r["trained_ternary_loss"])
        out["run_trained"][i, j] = float(r["trained_ternary_final_loss"])
    if np.isnan(out["bound"]).any():
        return Bounds(False, f"{path.name} lacks {int(np.isnan(out['bound']).sum())} of "
                             f"{out['bound'].size} cells of {claim.where}")
    run = g.loss[TERNARY]
    fin = np.isfinite(run) & np.isfinite(out["run_trained"])
    if not np.allclose(out["run_trained"][fin], run[fin], rtol=TABLE_RTOL):
        return Bounds(False, f"{path.name} was computed from another run (its trained "
                             "ternary losses differ from this run's)")
    return Bounds(True, "", out["bound"], out["dense"], out["trained"], out["tight"] > 0)


# ---- trained ternary against the best-known solutions, on one estimator --------------------


@dataclass
class BestKnownRun:
    """The best-known ternary solutions of one run and part (a run folder written by
    bitjax.analysis.best_ternary.write_run) with the estimator sample their losses were
    computed on (:class:`bitjax.analysis.best_ternary.RunSample`: rebuilt from the folder's
    recorded settings and checked against its stored losses when first used).

    Attributes:
      path: ``<results>/representable/best_known/<name>``.
      why: empty when usable, else why not (no folder, no estimator settings).
      sweep: the loaded folder (``loss``: the best-known losses on the sample).
      sample: its estimator sample (built and checked only when a loss must be estimated
        on it; its ``why`` says why it cannot be used).
      keys: problem key (:func:`_problem_keys`) -> best-known instance.
      estimator: the folder and its sample's settings in words.
      recorded: ``[I]`` the trained twin's loss on the sample as the best-known run
        recorded it (``candidate_trained`` of its best_known.csv; the twin is the
        from-scratch run's ternary instance of the same problem), or None.
    """

    path: Path
    why: str = ""
    sweep: LoadedSweep | None = None
    sample: bt.RunSample | None = None
    keys: dict = field(default_factory=dict)
    estimator: str = ""
    recorded: np.ndarray | None = None


def _vectors(sweep: LoadedSweep) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance feature probabilities and importances ``[I, n]`` of a loaded run (its
    instances are in :func:`bitjax.config.build_instances`' order)."""
    return instance_vectors(sweep.config)


def _problem_keys(sweep: LoadedSweep) -> list[tuple]:
    """Per instance, what makes it the same problem in another run: the seed, the feature
    probabilities and the importances (the recipe, learning rate and weight decay, may
    differ between the routes)."""
    p, imp = _vectors(sweep)
    seeds = np.asarray(sweep.coords["seed"]).astype(int)
    return [(int(s), tuple(np.round(pi, 9)), tuple(np.round(ii, 9)))
            for s, pi, ii in zip(seeds, p, imp, strict=True)]


def best_known_run(results: Path, claim: Claim) -> BestKnownRun:
    """The best-known solutions of ``claim``'s run and part, ready to compare with.

    The folder is ``<results>/representable/best_known/<experiment>_<part>`` (or
    ``<experiment>`` for a one-part run); its metadata's ``estimator`` settings (draws,
    per_mask, seed) say how to rebuild the stratified sample its losses are on
    (:class:`bitjax.analysis.best_ternary.RunSample`, built only when a loss must be
    estimated), and its best_known.csv holds the trained twins' losses on that sample
    (``recorded``).
    """
    folder = results / "representable" / "best_known"
    names = [f"{claim.experiment}_{claim.part}", claim.experiment]
    path = next((folder / n for n in names if (folder / n).is_dir()), None)
    if path is None:
        return BestKnownRun(folder / names[0], f"no best-known solutions for "
                            f"{claim.experiment}/{claim.part} (no {' or '.join(names)} in "
                            f"{folder})")
    try:
        bk = load_sweep(path)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        return BestKnownRun(path, f"{path} cannot be read: {e}")
    if not isinstance(bk, LoadedSweep):
        return BestKnownRun(path, f"{path} holds several parts, not one best-known run")
    sample = bt.RunSample(bk)
    if sample.why:
        return BestKnownRun(path, sample.why)
    run = BestKnownRun(path, "", bk, sample, {k: j for j, k in enumerate(_problem_keys(bk))},
                       f"{path} ({sample.words()})")
    table = path / "best_known.csv"
    if table.is_file():
        rows = store_files.read_csv(table)
        if len(rows) == bk.n_instances and rows and "candidate_trained" in rows[0]:
            run.recorded = np.array([float(r["candidate_trained"] or "nan") for r in rows])
    return run


def best_known_ratios(bk: BestKnownRun, sweep: LoadedSweep, recorded: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """Per instance of a trained run: its ternary loss / the best-known ternary loss of the
    same problem (seed, densities, importances), both on the best-known run's estimator
    sample.

    Args:
      bk: :func:`best_known_run`.
      sweep: a trained run (either route).
      recorded: ``sweep`` is the run the best-known solutions were made from (trained from
        scratch): its ternary losses on the sample are those the best-known run recorded
        for its twins, where it has them; otherwise they are estimated on the rebuilt
        sample.
    Returns:
      ``(ratio [I], best [I], why)``: the ratio and the best-known loss, NaN for the other
      kinds, diverged instances and problems the best-known run lacks; ``why`` is empty
      when the ratios are computed, else why not.
    """
    out, best_of = np.full(sweep.n_instances, np.nan), np.full(sweep.n_instances, np.nan)
    if bk.why:
        return out, best_of, bk.why
    cfg, ref = sweep.config, bk.sweep.config
    if (cfg.structure, cfg.n_hidden, cfg.activation, cfg.model) != (
            ref.structure, ref.n_hidden, ref.activation, ref.model):
        return out, best_of, f"{bk.path} solves another model than {sweep.path}"
    keys = _problem_keys(sweep)
    ternary = np.flatnonzero((np.asarray(sweep.coords["kind"]) == TERNARY)
                             & ~sweep.diverged)
    rows = np.array([bk.keys.get(keys[i], -1) for i in ternary], int)
    use, rows = ternary[rows >= 0], rows[rows >= 0]
    if use.size:
        if recorded and bk.recorded is not None:
            loss = bk.recorded[rows]
        else:
            loss, why = bk.sample.losses(sweep.W_eff[use], sweep.b[use], rows)
            if loss is None:
                return out, best_of, why
        best = np.asarray(bk.sweep.loss, np.float64)[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            # A best-known loss of 0 (an exact solution) makes any loss above it infinite.
            out[use] = np.where(best > 0, loss / best, np.where(loss > 0, np.inf, 1.0))
        best_of[use] = best
    return out, best_of, ""


def set_best_known(v: View, results: Path, claim: Claim, sweep: LoadedSweep, recipe: Recipe,
                   cache: dict) -> None:
    """Fill a trained view's distance to the best-known solutions: the median over the
    claim's cells and seeds of :func:`best_known_ratios` (ternary instances that did not
    diverge), or why it is not computed. ``cache`` keeps each best-known run and each
    run's ratios for the other claims of the same run. Only the primary run from scratch
    (``RECIPES[0]``) is the one the best-known runs recorded their twins' losses of."""
    key = (claim.experiment, claim.part)
    if key not in cache:
        cache[key] = best_known_run(results, claim)
    if (recipe.suffix, *key) not in cache:
        cache[(recipe.suffix, *key)] = best_known_ratios(cache[key], sweep,
                                                         recorded=recipe == RECIPES[0])
    ratio, best, why = cache[(recipe.suffix, *key)]
    if why:
        v.to_best_why = why
        return
    cells = claim_cells(sweep, claim, ratio).sel(kind=TERNARY).values
    zero = claim_cells(sweep, claim, best).sel(kind=TERNARY).values == 0
    alive = claim_cells(sweep, claim, (~sweep.diverged).astype(np.float64), mask=False
                        ).sel(kind=TERNARY).values > 0
    lacking = int((alive & np.isnan(cells)).sum())
    if lacking:
        v.to_best_why = (f"{cache[key].path} lacks {lacking} of {int(alive.sum())} of the "
                         "claim's ternary instances")
        return
    finite = cells[~np.isnan(cells)]
    v.to_best_n, v.to_best_on = int(finite.size), cache[key].estimator
    v.to_best_zero = int(zero.sum())
    if finite.size:
        v.to_best = float(np.median(finite))
    else:
        v.to_best_why = "no ternary instance that did not diverge"


# ---- measurements and verdicts --------------------------------------------------------------


@dataclass
class View:
    """One view (:data:`OPTIMUM`, :data:`SCRATCH` or :data:`FP`) of one claim.

    Attributes:
      name: the view.
      basis: which seeds the numbers use, in words (computed).
      diff: per-seed ternary - dense of the measure on those seeds.
      by_kind: per-seed summaries per kind.
      gap: per-seed relative loss gap; ``gap_best``: the best-of-seeds gap (no interval).
      tested: whether the seeds qualify for a test (else ``reason``/``detail`` say why).
      raw: the unadjusted tests (when tested).
      verdict, reason, detail: the decision (filled after Holm).
      exact: a text and a (verdict, reason) decided from exact optima (no test).
      fact: why the verdict follows from the best-known solutions without a test (computed
        text; empty when tested).
      notes: further computed facts.
      to_best, to_best_n, to_best_why, to_best_on: a trained view's median over the claim's
        cells and seeds of trained ternary loss / best-known ternary loss (one estimator,
        :func:`best_known_ratios`), how many ternary instances it is over, why it is not
        computed (empty when it is) and the estimator it is computed on (in words);
        to_best_zero: of those instances, how many have a best-known loss of 0 (an exact
        solution: any loss above it is infinitely far).
    """

    name: str
    basis: str = ""
    diff: np.ndarray = field(default_factory=lambda: np.zeros(0))
    by_kind: dict = field(default_factory=dict)
    gap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gap_best: stats.BestOfSeeds | None = None
    tested: bool = False
    raw: vd.RawTests | None = None
    p_adj: tuple = (math.nan, math.nan)
    verdict: str = "undecided"
    reason: str = ""
    detail: str = ""
    exact: str = ""
    fact: str = ""
    notes: list = field(default_factory=list)
    to_best: float = math.nan
    to_best_n: int = 0
    to_best_why: str = ""
    to_best_on: str = ""
    to_best_zero: int = 0


def _not_evaluated() -> View:
    return View(FP, basis="not evaluated", reason="missing", detail="not evaluated")


@dataclass
class RecipeRun:
    """One recipe's run of a claim in a trained view.

    Attributes:
      recipe: its line of :data:`RECIPES`.
      folder: ``<results>/<experiment><suffix>``.
      view: its primary view; sensitivity: its other seed selections (keyed like
        :data:`SELECTIONS`).
    """

    recipe: Recipe
    folder: Path
    view: View
    sensitivity: dict = field(default_factory=dict)

    @property
    def has_run(self) -> bool:
        return self.view.verdict != "undecided" or self.view.reason not in vd.NO_RUN

    @property
    def primary(self) -> bool:
        """The route's primary recipe (the first of :data:`RECIPES` on its route)."""
        return self.recipe.primary


@dataclass
class Result:
    """A claim with its three views: at the optimum, trained from scratch (``trained``,
    with the other seed selections in ``sensitivity``, keyed like :data:`SELECTIONS`) and
    trained from full precision (``fp``, its other seed selections in
    ``fp_sensitivity``); those two are the primary recipe's, and ``runs`` holds every
    recipe's run of each trained view (route -> :class:`RecipeRun` in :data:`RECIPES`
    order, the primary first; empty for a result built by hand: then the primary views
    are the only recipe)."""

    claim: Claim
    optimum: View
    trained: View
    sensitivity: dict = field(default_factory=dict)
    fp: View = field(default_factory=_not_evaluated)
    fp_sensitivity: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)

    def trained_views(self, selection: str = "converged") -> list[tuple[str, View]]:
        """``[(route, view)]`` of both routes' primary recipes (:data:`ROUTES`) on one seed
        selection (a route whose view on it is absent is left out)."""
        if selection == "converged":
            return [("scratch", self.trained), ("fp", self.fp)]
        return [(route, views[selection]) for route, views in
                (("scratch", self.sensitivity), ("fp", self.fp_sensitivity))
                if selection in views]

    def recipe_runs(self, route: str) -> list[RecipeRun]:
        """Every recipe's run of one trained view (the primary views alone for a result
        built by hand)."""
        if self.runs.get(route):
            return self.runs[route]
        view, sens = ((self.trained, self.sensitivity) if route == "scratch" else
                      (self.fp, self.fp_sensitivity))
        recipe = route_recipes(route)[0]
        return [RecipeRun(recipe, Path(self.claim.experiment + recipe.suffix), view, sens)]

    def recipe_views(self, selection: str = "converged") -> list[tuple[str, View]]:
        """``[(route, view)]`` of every recipe of both trained views on one seed selection
        (views absent on it left out)."""
        out = []
        for route in ROUTES:
            for rr in self.recipe_runs(route):
                v = rr.view if selection == "converged" else rr.sensitivity.get(selection)
                if v is not None:
                    out.append((route, v))
        return out

    def across(self, route: str) -> vd.Across:
        """The trained view's verdict over its recipes (:data:`bitjax.analysis.verdicts
        .RECIPE_RULE`)."""
        return vd.across_recipes([vd.RecipeVerdict(str(rr.folder), rr.view.verdict,
                                                   rr.view.reason, rr.view.detail)
                                  for rr in self.recipe_runs(route)])


def loss_gap(t: np.ndarray, d: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Per seed, the mean over cells of (t - d) / zero: the loss gap in units of the loss of
    the model that outputs zeros (cells of very different loss then weigh alike, and a
    near-zero dense loss does not blow the gap up).

    Args:
      t, d: ``[S, P]`` ternary and dense losses; zero: ``[S, P]`` the zero model's loss.
    Returns:
      ``[S]``.
    """
    with stats.quiet_nan_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean((t - d) / zero, axis=1)


def best_gap(t: np.ndarray, d: np.ndarray, zero: np.ndarray) -> stats.BestOfSeeds:
    """Best-of-seeds loss gap (per cell the best ternary and the best dense seed, in units of
    the zero model's loss, mean over cells), with no interval
    (:func:`bitjax.analysis.stats.best_of_seeds` says why)."""
    z = zero[0]  # the zero model's loss does not depend on the seed

    def stat(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.nanmean((np.nanmin(a, axis=0) - np.nanmin(b, axis=0)) / z))
    return stats.best_of_seeds(t, d, stat)


def _seeds_text(use: np.ndarray, what: str) -> str:
    return f"{int(use.sum())} of {use.size} seeds {what}"


def trained_view(claim: Claim, g: Grid, selection: str = "converged",
                 name: str = SCRATCH) -> View:
    """A trained view (either route: the same measures, selections and tests) on one seed
    selection.

    Args:
      claim: the claim.
      g: the claim's cells in the run (the route's run).
      selection: a key of :data:`SELECTIONS`: "converged" (the primary one: seeds whose
        compared instances all converged), "all" (every seed; diverged instances are not
        measured) or "pairs" (every seed, each on its cells where both kinds converged).
      name: the view's name (:data:`SCRATCH` or :data:`FP`).
    Returns:
      The view; ``tested`` with at least MIN_SEEDS seeds, else undecided (not converged)
      with, for "converged", the numbers over all seeds.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown seed selection {selection!r}; one of {', '.join(SELECTIONS)}")
    pairs = g.ok[TERNARY] & g.ok[DENSE]
    cells = pairs if selection == "pairs" else None
    diff, by, notes = per_seed(claim, g, cells)
    finite = np.isfinite(diff.reshape(diff.shape[0], -1)).any(axis=1)
    use = pairs.all(axis=1) if selection == "converged" else finite
    v = View(name)
    enough = int(use.sum()) >= vd.MIN_SEEDS
    sel = use if enough else np.ones_like(use)
    if selection == "converged":
        v.basis = (_seeds_text(use, "with every compared instance converged")
                   + ("" if enough else "; numbers over all seeds, no test"))
    else:
        v.basis = _seeds_text(use, "measured, " + SELECTIONS[selection])
    loss = {k: g.loss[k] if cells is None else np.where(cells, g.loss[k], np.nan)
            for k in (TERNARY, DENSE)}
    v.diff, v.by_kind = diff[sel], {k: x[sel] for k, x in by.items()}
    v.gap = loss_gap(loss[TERNARY][sel], loss[DENSE][sel], g.zero[sel])
    v.gap_best = best_gap(loss[TERNARY][sel], loss[DENSE][sel], g.zero[sel])
    if "censored" in notes:
        v.notes.append(_censored_text(notes["censored"], sel))
    if enough:
        v.tested = True
    else:
        v.reason = "not_converged"
        v.detail = (_seeds_text(use, "have every compared instance converged"
                                if selection == "converged" else "measured") + f"; "
                    f"{int(pairs.sum())} of {pairs.size} pairs converged"
                    + _unconverged_text(g, pairs))
    return v


def _censored_text(cens: dict, sel: np.ndarray) -> str:
    parts = []
    for k in (DENSE, TERNARY):
        c = cens[k][sel]
        parts.append(f"{k}: {int((c == -1).sum())} at or above the densest point, "
                     f"{int((c == 1).sum())} beyond the sparsest (bound used)")
    return "onsets outside the grid: " + "; ".join(parts)


def best_known_values(results: Path, claim: Claim, g: Grid) -> tuple[np.ndarray | None, str]:
    """The claim's per-instance value measured on the best-known ternary solutions, aligned
    with ``g`` (``[S, P]``), or None and why not.

    The solutions are the run folder ``<results>/representable/best_known/<experiment>_<part>``
    (or ``<experiment>``): one per dense instance of the claim's run, with its seed and
    cell, so the value is the claim's measure (:data:`VALUES`) of that solution.
    """
    folder = results / "representable" / "best_known"
    names = [f"{claim.experiment}_{claim.part}", claim.experiment]
    path = next((folder / n for n in names if (folder / n).is_dir()), None)
    if path is None:
        return None, (f"no best-known solutions for {claim.experiment}/{claim.part} (no "
                      f"{' or '.join(names)} in {folder})")
    try:
        bk = load_sweep(path)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        return None, f"{path} cannot be read: {e}"
    if not isinstance(bk, LoadedSweep):
        return None, f"{path} holds several parts, not one best-known run"
    da = claim_cells(bk, claim, np.asarray(VALUES[claim.value](bk), np.float64), mask=False)
    da = da.isel(kind=0)  # the one lattice of the folder
    try:
        da = da.sel(seed=g.seeds, feature_probability=g.p)
    except KeyError:
        return None, f"{path} does not hold the claim's cells of {claim.where}"
    return da.transpose("seed", "feature_probability").values, str(path)


def optimum_view(results: Path, claim: Claim, g: Grid) -> View:
    """The "at the optimum" view: the best-known ternary solutions against dense.

    Args:
      results: the results folder (its representable/ tables and best-known solutions are
        read).
      claim: the claim.
      g: the claim's cells in the run.
    Returns:
      The view; decided by :func:`bitjax.analysis.verdicts.decide_by_optimum` where the
      best-known solutions reach the dense loss, else ``tested`` on the claim's measure of
      the best-known solutions against the trained dense instances of the same seed (on
      the cells whose dense instance converged), else undecided; the intro's verdict comes
      from the exact optima.
    """
    v = View(OPTIMUM)
    b = bounds_for(results, claim, g)
    decided = None
    if claim.exact:
        v.exact, decided = exact_intro(results, claim)
        if decided is not None:
            v.verdict, v.reason = decided
    if not b.found:
        v.basis = b.why
        if not v.exact:
            v.reason, v.detail = "attainable", f"no bound for {claim.experiment}/{claim.part}"
        return v
    shared = b.bound <= ATTAINED_FACTOR * b.dense
    share = float(shared.mean())
    v.notes.append(f"the best-known ternary solution reaches the dense loss within "
                   f"{ATTAINED_FACTOR - 1:.0%} in {int(shared.sum())} of {shared.size} dense "
                   f"instances ({share:.0%}); it is the optimum (enumerated, or the "
                   f"alignable dense solution snapped) or within {ATTAINED_FACTOR - 1:.0%} of "
                   f"the cell's best dense seed in {int(b.tight.sum())} of {b.tight.size}")
    # Every ternary solution is a dense one, so the best dense loss known is the smaller of
    # the trained dense loss and the ternary bound; the gap at the optimum is then >= 0.
    dense_best = np.fmin(b.dense, b.bound)
    v.gap = loss_gap(b.bound, dense_best, g.zero)
    v.gap_best = best_gap(b.bound, dense_best, g.zero)
    fact = None if decided is not None else vd.decide_by_optimum(
        claim.rule, share >= SHARED_SHARE)
    if fact is not None:
        v.verdict, v.reason = fact
        v.fact = (f"decided by the best-known solutions: ternary reaches the dense loss "
                  f"within {ATTAINED_FACTOR - 1:.0%} in {share:.0%} of the cells "
                  f"(>= {SHARED_SHARE:.0%})")
    values, where = best_known_values(results, claim, g)
    basis = ("loss gap: the best-known ternary solution of every dense instance (an upper "
             "bound on ternary's optimum) against the best dense loss known, both on the "
             "best-known estimator; measure: ")
    if values is None:
        v.basis = basis + where
        if decided is None and fact is None:
            v.reason, v.detail = "missing", where
        return v
    sol = Grid(g.seeds, g.p, value={TERNARY: values, DENSE: g.value[DENSE]}, loss=g.loss,
               ok={TERNARY: np.isfinite(values), DENSE: g.ok[DENSE]}, zero=g.zero)
    # A solution is not trained: the selection is on the dense side only, cell by cell (a
    # dense instance that did not converge is not at the dense optimum: its cell is left
    # out of its seed's summary).
    cells = sol.ok[DENSE] & sol.ok[TERNARY]
    diff, by, notes = per_seed(claim, sol, cells)
    use = np.isfinite(diff.reshape(diff.shape[0], -1)).any(axis=1)
    v.basis = basis + ("the best-known ternary solutions (" + where + ") against the "
                       "trained dense instances of the same seed, on the cells whose dense "
                       f"instance converged ({int(cells.sum())} of {cells.size}); "
                       + _seeds_text(use, "measured"))
    v.diff, v.by_kind = diff[use], {k: x[use] for k, x in by.items()}
    if "censored" in notes:
        v.notes.append(_censored_text(notes["censored"], use))
    if decided is not None or fact is not None:
        return v
    if int(use.sum()) < vd.MIN_SEEDS:
        v.reason = "not_converged"
        v.detail = _seeds_text(use, "measured (a converged dense instance in the cells)")
    else:
        v.tested = True
    return v


def exact_intro(results: Path, claim: Claim) -> tuple[str, tuple[str, str] | None]:
    """The intro's exact ternary optima against the best dense seed: how many sparsities
    of intro_exact.csv each has two antipodal pairs, and the deterministic verdict
    (difference of the shares against the rule's margin)."""
    path = results / "representable" / "intro_exact.csv"
    if not path.exists():
        return f"no {path.name}", None
    rows = store_files.read_csv(path)
    words = metrics.geometry_m2_words(metrics.GEOMETRY_M2_LABELS.index(ANTIPODAL_PAIRS))

    def antipodal(name: str) -> bool:  # the table's words, with the lattice frame after them
        return name.startswith(words)

    t = np.array([antipodal(r["configuration"]) for r in rows])
    d = np.array([antipodal(r["dense_best_configuration"]) for r in rows])
    diff = float(t.mean() - d.mean())
    m, s = claim.rule.margin, claim.rule.direction
    verdict = ("supported" if s * diff >= m else "refuted" if s * diff <= -m
               else "not supported")
    text = (f"exact ternary optimum: two antipodal pairs at {int(t.sum())} of {len(rows)} "
            f"sparsities; best dense seed: {int(d.sum())} of {len(rows)} (share difference "
            f"{diff:+.2f})")
    return text, (verdict, "")


def no_optimum_view(claim: Claim) -> View:
    """The optimum view of a claim judged trained only: not measured, never tested, and
    left out of the Holm family, its verdict and opening (:data:`NO_OPTIMUM` says why)."""
    return View(OPTIMUM, basis="not judged at the optimum: "
                + NO_OPTIMUM[claim.experiment])


def fp_refusal(claim: Claim, parts: SweepCollection | str) -> str:
    """Why the full-precision-first route does not apply to a claim's model, in its
    config's own words (the run's config when it exists, else one of
    :data:`NEURON_MODELS`' model); empty when the config takes ``fp_fraction``."""
    if not isinstance(parts, str) and claim.part in parts:
        cfg = parts[claim.part].config
    else:
        cfg = SweepConfig(n_features=3, n_hidden=2, model=NEURON_MODELS[claim.experiment])
    try:
        cfg.replace(fp_fraction=0.5)
    except ValueError as e:
        return str(e)
    return ""


def no_fp_view(claim: Claim, why: str) -> View:
    """The full-precision-first view of a claim whose model refuses that route: undecided
    (does not apply, ``why``), never tested, left out of the Holm family and the opening."""
    text = f"the config refuses --recipe fp_first: {why}"
    return View(FP, basis=text, reason="not_applicable", detail=text,
                to_best_why="no route")


def _missing_views(name: str, why: str) -> tuple[View, dict]:
    """A trained view and its sensitivities, undecided: no run (``why``)."""
    return (View(name, basis=why, reason="missing", detail=why, to_best_why="no run"),
            {sel: View(name, basis=why, reason="missing", detail=why)
             for sel in SELECTIONS if sel != "converged"})


def _runs(results: Path, name: str, cache: dict) -> SweepCollection | str:
    """``results/<name>`` loaded once (:func:`_load`), or why it cannot be (missing or
    unfinished)."""
    if name not in cache:
        if not (results / name).exists():
            cache[name] = f"{results / name} does not exist"
            return cache[name]
        try:
            cache[name] = _load(results, name)
        except (CheckpointError, FileNotFoundError) as e:
            cache[name] = f"{results / name}: {e}"
    return cache[name]


def _recipe_sweep(results: Path, claim: Claim, recipe: Recipe, cache: dict
                  ) -> LoadedSweep | str:
    """The claim's part of its run by ``recipe``, or why there is none (no run, with the
    command that trains it; unfinished; no such part; a run of the other route)."""
    folder = recipe.folder(results, claim.experiment)
    parts = _runs(results, folder.name, cache)
    if isinstance(parts, str):
        if not folder.exists():
            return f"{parts} ({recipe.command(results, claim.experiment)} trains it)"
        return parts
    if claim.part not in parts:
        return f"{folder} has no part {claim.part!r}"
    sweep = parts[claim.part]
    if (recipe.route == "fp") != bool(sweep.config.has_fp_phase):
        # A run of the other route in this folder would be read as this one.
        return (f"{sweep.path} was not trained from full precision (fp_fraction "
                f"{sweep.config.fp_fraction:g} in its config)" if recipe.route == "fp" else
                f"{sweep.path} was trained from full precision (fp_fraction "
                f"{sweep.config.fp_fraction:g}); this view reads runs trained from scratch")
    return sweep


def _trained_views(claim: Claim, sweep: LoadedSweep, name: str) -> tuple[View, dict]:
    """A route's primary trained view of the claim and its sensitivities."""
    g = claim_grid(sweep, claim)
    return (trained_view(claim, g, name=name),
            {sel: trained_view(claim, g, sel, name) for sel in SELECTIONS
             if sel != "converged"})


def _recipe_run(results: Path, claim: Claim, recipe: Recipe, cache: dict,
                earlier: list[tuple[RecipeRun, LoadedSweep]]) -> tuple[RecipeRun,
                                                                       LoadedSweep | None]:
    """One recipe's run of a claim, its views computed the same way as every other
    recipe's; no run where it is missing, unfinished, of another grid than the claim's
    cells, or trained with the same recipe as an ``earlier`` recipe's run of the view (not
    a second recipe)."""
    folder = recipe.folder(results, claim.experiment)
    name = (ROUTES[recipe.route] if recipe.primary
            else f"{ROUTES[recipe.route]} ({folder.name})")
    sweep = _recipe_sweep(results, claim, recipe, cache)
    if not isinstance(sweep, str):
        words = recipe_text(sweep.config)
        same = next((rr for rr, s in earlier if recipe_text(s.config) == words), None)
        if same is not None:
            sweep = (f"{folder} was trained with the same recipe as {same.folder} "
                     f"({words}): not a second recipe")
    if isinstance(sweep, str):
        return RecipeRun(recipe, folder, *_missing_views(name, sweep)), None
    if recipe == RECIPES[0]:
        # The primary run from scratch defines the claim's cells: a run without them is an
        # error, not a missing recipe.
        return RecipeRun(recipe, folder, *_trained_views(claim, sweep, name)), sweep
    try:
        return RecipeRun(recipe, folder, *_trained_views(claim, sweep, name)), sweep
    except ValueError as e:
        # A run of another grid (preset) than the claim's cells: not the claim's run.
        return RecipeRun(recipe, folder, *_missing_views(name, f"{sweep.path}: {e}")), None


def evaluate(results: Path) -> list[Result]:
    """Every claim of :data:`CLAIMS` measured, tested and decided (Holm over the family).

    Args:
      results: a results folder (``intro/``, ``sparsity/``, ..., ``representable/``, and
        every recipe's runs (:data:`RECIPES`: ``intro_paper/``, ``intro_fp/``, ...) where
        they exist).
    Returns:
      One :class:`Result` per claim, in table order. The optimum view reads the primary
      run from scratch, ``results/<experiment>``; each trained view reads one run per
      recipe of its route, ``results/<experiment><suffix>``, each decided alone
      (:meth:`Result.across` combines them). A recipe whose run is missing or unfinished
      is undecided (no run); the full-precision view of a claim whose model refuses that
      route is undecided (does not apply); the others are evaluated.
    """
    cache: dict[str, SweepCollection | str] = {}
    best: dict = {}
    out = []
    for claim in CLAIMS:
        runs: dict[str, list[RecipeRun]] = {}
        sweeps: dict[int, LoadedSweep] = {}
        refusal = fp_refusal(claim, _runs(results, claim.experiment, cache)) \
            if claim.trained_only else ""
        for route in ROUTES:
            done: list[tuple[RecipeRun, LoadedSweep]] = []
            runs[route] = []
            for recipe in route_recipes(route):
                if done and done[0][0].primary and is_primary_recipe(recipe, done[0][1]):
                    continue
                if route == "fp" and refusal:
                    view = no_fp_view(claim, refusal)
                    runs[route] = [RecipeRun(recipe, recipe.folder(results, claim.experiment),
                                             view, {})]
                    break
                rr, sweep = _recipe_run(results, claim, recipe, cache, done)
                runs[route].append(rr)
                if sweep is not None:
                    done.append((rr, sweep))
                    sweeps[id(rr)] = sweep
        first = runs["scratch"][0]
        primary = sweeps.get(id(first))
        if claim.trained_only:
            optimum = no_optimum_view(claim)
        elif primary is None:
            why = first.view.detail
            optimum = View(OPTIMUM, basis=why, reason="missing", detail=why)
        else:
            optimum = optimum_view(results, claim, claim_grid(primary, claim))
        fp = runs["fp"][0]
        r = Result(claim, optimum, first.view, first.sensitivity, fp.view, fp.sensitivity,
                   runs)
        if not claim.trained_only:
            for route in ROUTES:
                for rr in runs[route]:
                    if id(rr) in sweeps:
                        set_best_known(rr.view, results, claim, sweeps[id(rr)], rr.recipe,
                                       best)
        out.append(r)
    decide_family(out)
    for sel in SELECTIONS:
        if sel != "converged":
            decide_family(out, sel)
    return out


def _family(results: list[Result], selection: str) -> list[tuple[Rule, View, bool]]:
    """The views of one Holm family, each with whether this family decides it: every
    optimum view (decided in the primary family only) and the trained views of every
    recipe of both routes on one seed selection."""
    return [(r.claim.rule, v, decides) for r in results
            for v, decides in ((r.optimum, selection == "converged"),
                               *((v, True) for _, v in r.recipe_views(selection)
                                 if v.reason != "not_applicable"))]


def decide_family(results: list[Result], selection: str = "converged") -> int:
    """Test, Holm-adjust and decide one family; each test counts once.

    The primary family ("converged") decides the optimum views and the primary trained
    views of every recipe of both routes; a sensitivity family (another seed selection)
    has the same optimum views beside its own trained views of every recipe and decides
    only the latter.

    Returns:
      The number of p-values in the family.
    """
    members = _family(results, selection)
    for rule, v, _ in members:
        if v.tested and v.raw is None:
            v.raw = vd.raw_tests(rule, v.diff)
    adjusted, size = vd.holm_family([(vd.same_test_key(rule, v.diff), v.raw)
                                     for rule, v, _ in members])
    for (rule, v, decides), a in zip(members, adjusted, strict=True):
        if v.raw is None or not decides:
            continue  # not tested, or an optimum view (decided in the primary family)
        v.p_adj = a
        v.verdict, v.reason = vd.decide(rule, v.raw, a[0], a[1])
        v.detail = _power_detail(rule, v.raw, size) if v.reason == "power" else ""
    return size


def n_tests(results: list[Result], selection: str = "converged") -> int:
    """Size of a Holm family (two p-values per distinct test)."""
    return vd.holm_family([(vd.same_test_key(rule, v.diff), v.raw)
                           for rule, v, _ in _family(results, selection)])[1]


def _power_detail(rule: Rule, raw: vd.RawTests, family_size: int) -> str:
    """Why a test lacked power, and the seeds that would decide it: a count at the level
    Holm's correction over the family can fall to (Bonferroni's, α / the family's p-values,
    also divided over a local claim's windows), so it suffices whatever the other tests
    give."""
    if raw.n < vd.MIN_SEEDS:
        return f"{raw.n} seeds"
    if raw.sd == 0.0:
        return "every seed gives the same value"
    n = vd.seeds_for_power(rule, raw, alpha=vd.ALPHA / max(1, family_size))
    if n is not None:
        windows = f" and {len(rule.windows)} windows" if rule.windows else ""
        need = (f"; at the observed mean and spread about {n} seeds in this selection would "
                f"decide it ({vd.POWER:.0%} power at Bonferroni's level α = {vd.ALPHA:g} / "
                f"({family_size} p-values{windows}), enough under Holm's correction whatever "
                "the other tests give)")
    elif rule.test == "equivalence" and abs(raw.mean) >= rule.margin:
        need = (f"; the observed mean {raw.mean:.3g} lies outside ±{rule.margin:g}: more "
                "seeds could refute the claim, not support it")
    else:
        need = "; no seed count would decide it at the observed mean and spread"
    if rule.test == "equivalence":
        return (f"{1 - 2 * vd.ALPHA:.0%} CI width {raw.high - raw.low:.3g} > margin band "
                f"{2 * rule.margin:g}{need}")
    where = " (the largest over the windows)" if rule.windows else ""
    return (f"confidence bound {raw.bound:.3g}{where} of the effect in the claimed direction "
            f">= {rule.margin:g}{need}")


# ---- rendering --------------------------------------------------------------------------------


def _fmt_ci(x: np.ndarray, digits: int = 3) -> str:
    x = np.asarray(x, np.float64)
    m, h = stats.mean_ci_floats(x[np.isfinite(x)]) if np.isfinite(x).any() else (np.nan,
                                                                                   np.nan)
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}g} ± {h:.2g}" if np.isfinite(h) else f"{m:.{digits}g}"


def _fmt_best(b: stats.BestOfSeeds | None) -> str:
    """The best-of-seeds value and its seed count; never an interval (see
    :func:`bitjax.analysis.stats.best_of_seeds`)."""
    if b is None or not np.isfinite(b.estimate):
        return "n/a"
    return f"{b.estimate:.3g} (best of {b.k})"


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else f"{p:.2g}"


def _view_verdict(v: View) -> str:
    """The verdict's text, with the fact that decided it when no test did."""
    text = vd.verdict_text(v.verdict, v.reason, v.detail)
    return f"{text} ({v.fact})" if v.fact else text


def _across_text(a: vd.Across) -> str:
    """A trained view's verdict over its recipes and what it rests on
    (:data:`bitjax.analysis.verdicts.RECIPE_RULE`): the runs it rests on, each recipe's
    verdict where they differ or some are undecided, and each missing run with the command
    that trains it."""
    absent = "".join(f"; no run: {r.detail}" for r in a.absent if r.reason == "missing")
    ran = a.ran
    if a.scope == "none":
        return vd.verdict_text(a.verdict, a.reason, a.detail)
    if a.scope == "one":
        return f"{ran[0].text()} — {vd.SCOPES['one']} ({ran[0].label}{absent})"
    if a.scope == "across":
        return (f"{a.verdict} — {vd.SCOPES['across']} ({len(ran)} recipes: "
                + ", ".join(r.label for r in ran) + f"{absent})")
    if a.scope == "partial":
        decided = [r.label for r in ran if r.verdict != "undecided"]
        return (f"{a.verdict} — decided by {', '.join(decided)} only (" + "; ".join(
            f"{r.label}: {r.text()}" for r in ran if r.verdict == "undecided")
            + f"{absent})")
    if a.scope == "depends":
        return vd.verdict_text(a.verdict, a.reason, a.detail + absent)
    return f"undecided — {vd.SCOPES['undecided']} ({a.detail}{absent})"


def _recipe_rows(r: Result, route: str) -> list[RecipeRun]:
    """The recipe runs of a trained view that get a row of their own: the primary recipe
    always (its row says when it has no run), the others where they have a run (a missing
    one is named in the verdict table)."""
    return [rr for rr in r.recipe_runs(route) if rr.primary or rr.has_run]


def _view_row(rule: Rule, v: View, to_best: bool = True) -> str:
    """A measurement table's row of one view (with the distance to the best-known
    solutions unless ``to_best`` is False: the neuron claims have none)."""
    verdict = _view_verdict(v)
    # A tested windowed claim shows the window its test reports (the smallest claim
    # p-value); an untested one the mean of every window, densest first (none is picked).
    col = v.raw.window if v.raw is not None and v.raw.window >= 0 else None

    def show(x: np.ndarray) -> str:
        if not x.size:
            return "n/a"
        if x.ndim == 2:
            return (_fmt_ci(x[:, col]) if col is not None
                    else "per window: " + ", ".join(_fmt_ci(c) for c in x.T))
        return _fmt_ci(x)

    by = " / ".join(show(v.by_kind[k]) if k in v.by_kind else "n/a" for k in (DENSE, TERNARY))
    if v.raw is not None:
        level = "90% CI (TOST)" if rule.test == "equivalence" else "95% CI"
        where = f" (window {vd.windows_text([rule.windows[col]])})" if col is not None else ""
        diff = (f"{v.raw.mean:.3g} [{v.raw.low:.3g}, {v.raw.high:.3g}] ({level}){where}")
        pv = (f"{_fmt_p(v.raw.p_support)} / {_fmt_p(v.raw.p_refute)} (Holm "
              f"{_fmt_p(v.p_adj[0])} / {_fmt_p(v.p_adj[1])})")
    else:
        diff, pv = (show(v.diff) + " (95% t)" if v.diff.size else "n/a"), "not tested"
    extra = "; ".join([v.exact] * bool(v.exact) + v.notes)
    return _row(v.name, v.basis, _fmt_ci(v.gap), _fmt_best(v.gap_best), by, diff, pv,
                f"**{verdict}**", *[_fmt_to_best(v)] * to_best, extra)


def _fmt_to_best(v: View) -> str:
    """A trained view's distance to the best-known solutions (:func:`set_best_known`); the
    optimum view is the best-known itself."""
    if v.name == OPTIMUM:
        return "—"
    if v.to_best_n:
        zero = (f"; the best-known loss is 0 for {v.to_best_zero}" if v.to_best_zero
                else "")
        return f"{v.to_best:.3g} (median of {v.to_best_n}{zero})"
    return f"n/a ({v.to_best_why})" if v.to_best_why else "n/a"


#: The header of a claim's measurement table (one row per view, :func:`_view_row`).
MEASUREMENT_HEADER = [
    "| view | seeds used | loss gap per seed | loss gap best-of-seeds | measure dense / "
    "ternary | ternary - dense | p for / against | verdict | trained ternary / best-known "
    "loss | notes |",
    "|---|---|---|---|---|---|---|---|---|---|"]


def _row(*cells: str) -> str:
    """A markdown table row; a "|" inside a cell (``||W_i||``, ``|cos|``) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


#: How a verdict reads in plain words, by (test, verdict): the opening's sentences group the
#: claims by these.
PLAIN = {
    ("difference", "supported"): "the difference the study saw is shown",
    ("difference", "refuted"): "the opposite of the difference the study saw is shown",
    ("difference", "not supported"): "no difference of the size that matters",
    ("equivalence", "supported"): "ternary is the same as dense, as the study said",
    ("equivalence", "refuted"): "ternary differs from dense, against the study's \"same\"",
    ("equivalence", "not supported"): "neither shown the same nor shown different",
}


def _claim_words(claim: Claim) -> str:
    """A claim's words inside a sentence ("a later onset of negative biases")."""
    text = claim.rule.claim
    # "A later onset ..." becomes "a later onset ..."; "D* ..." keeps its capital.
    return text[:1].lower() + text[1:] if text.split()[0].isalpha() else text


#: The same for the neuron claims, which are the project's questions, not the study's.
NEURON_PLAIN = {
    ("difference", "supported"): "shown",
    ("difference", "refuted"): "the opposite is shown",
    ("difference", "not supported"): "no difference of the size that matters",
    ("equivalence", "supported"): "ternary is the same as dense within the margin",
    ("equivalence", "refuted"): "ternary differs from dense by more than the margin",
    ("equivalence", "not supported"): "neither shown the same nor shown different",
}


def _view_sentence(name: str, pairs: list[tuple[Claim, View]], plain=None) -> str:
    """One view's verdicts as one paragraph, grouped by ``plain`` (:data:`PLAIN` by
    default; undecided claims are listed with their reasons separately)."""
    plain = PLAIN if plain is None else plain
    groups: dict[str, list[str]] = {}
    for claim, v in pairs:
        if v.verdict != "undecided":
            groups.setdefault(plain[(claim.rule.test, v.verdict)], []).append(
                _claim_words(claim))
    undecided = sum(v.verdict == "undecided" for _, v in pairs)
    bits = [f"{words}: {'; '.join(claims)}" for words, claims in groups.items()]
    if not bits:
        bits = ["no claim is decided"]
    tail = (f" {undecided} of {len(pairs)} claims are undecided (below)." if undecided
            else "")
    return f"**{name}** — " + ". ".join(b[:1].upper() + b[1:] for b in bits) + "." + tail


def _study_text() -> str:
    """The tested study's citation from :data:`STUDY` (unknown fields left out)."""
    who = ", ".join(str(STUDY[k]) for k in ("author", "date") if STUDY[k])
    link = f", {STUDY['link']}" if STUDY["link"] else ""
    return f"the {STUDY['kind']} \"{STUDY['title']}\" ({who}{link})"


def _judged_views(r: Result) -> list[tuple[str, View | vd.Across]]:
    """The views a claim is judged in: at the optimum and both trained routes, each over
    its recipes (a claim judged trained from scratch only has that one)."""
    if r.claim.trained_only:
        return [(SCRATCH, r.across("scratch"))]
    return [(OPTIMUM, r.optimum), (SCRATCH, r.across("scratch")), (FP, r.across("fp"))]


def _gap_sentence(results: list[Result]) -> str:
    """The trained-from-scratch loss gap of each run and part the claims read (per seed,
    mean ± 95% t half-width): the "at equal loss?" beside the neuron verdicts."""
    bits = {}
    for r in results:
        c, v = r.claim, r.trained
        key = f"{c.experiment}/{c.part}"
        if key not in bits and v.gap.size:
            bits[key] = f"{key} {_fmt_ci(v.gap)} ({v.basis})"
    if not bits:
        return "No loss gap: no run."
    return ("Loss gap trained from scratch, (L_ternary - L_dense) / L_zero per seed over the "
            "claims' cells: " + "; ".join(bits.values()) + ".")


def _selection_shift(rr: RecipeRun) -> dict[str, View]:
    """A recipe run's views on the other seed selections where its primary verdict
    changes on at least one of them; empty where every selection agrees."""
    others = {sel: v for sel in SELECTIONS if sel != "converged"
              and (v := rr.sensitivity.get(sel)) is not None}
    return others if any(v.verdict != rr.view.verdict for v in others.values()) else {}


def _selection_changes(results: list[Result]) -> list[str]:
    """Per route, the claims whose primary verdict changes on another seed selection."""
    out = []
    for route, name in ROUTES.items():
        changed = []
        if not any(rr.has_run for r in results for rr in r.recipe_runs(route)):
            out.append(f"{name}, no view has a run.")
            continue
        for r in results:
            for rr in _recipe_rows(r, route):
                if others := _selection_shift(rr):
                    which = "" if rr.primary else f", {rr.folder.name}"
                    changed.append(f"{_claim_words(r.claim)}{which} (" + ", ".join(
                        f"{SELECTIONS[sel]}: {vd.verdict_text(v.verdict, v.reason)}"
                        for sel, v in others.items()) + ")")
        out.append(f"{name}, the verdict on {SELECTIONS['converged']} changes on another "
                   "selection for: " + "; ".join(changed) + "." if changed else
                   f"{name}, every verdict is the same on "
                   + ", ".join(SELECTIONS.values()) + ".")
    return out


def opening(results: list[Result], folder: Path | None = None) -> list[str]:
    """The answer in plain words, generated from the verdicts: what differs at the optimum,
    what differs trained from scratch and trained from full precision (each route named),
    what is undecided and why (and whether more compute can remove it), and which verdicts
    change with the seed selection. The neuron claims (judged trained from scratch only)
    get their own sentence, with the loss gap of their runs."""
    study = [r for r in results if not r.claim.trained_only]
    neuron = [r for r in results if r.claim.trained_only]
    lines = [
        "## The answer in plain words",
        "",
        f"This file tests the claims of {_study_text()}, which trained the toy models of "
        "superposition (Elhage et al. 2022) with ternarised (BitNet) weights, against "
        "rules fixed before the data were read; `ternary` here is BitNet b1.58. Each "
        "claim is judged in three views: at the optimum (the best-known ternary solutions "
        "against dense; exact where enumerated or where they reach the dense loss, "
        "elsewhere the best ternary solutions known, an upper bound on ternary's optimum), "
        "and trained by two routes, each against dense instances of its "
        f"own runs: {TRAINED_ROUTE}; and {FP_ROUTE}. Each trained route is judged on "
        "every training recipe that has a run, and its verdict says whether it holds "
        "across recipes (the protocol's recipe rule)."
        + (f" The project's own questions about the neurons of the privileged-basis models "
           f"({', '.join(dict.fromkeys(r.claim.experiment for r in neuron))}; "
           f"{len(neuron)} claims, not claims of the study) follow, judged trained from "
           "scratch only (their section says why)." if neuron else ""),
        "",
        *glance(results),
        "- " + _view_sentence("At the optimum", [(r.claim, r.optimum) for r in study]),
        "- " + _view_sentence("Trained from scratch",
                              [(r.claim, r.across("scratch")) for r in study]),
        "- " + _view_sentence("Trained from full precision",
                              [(r.claim, r.across("fp")) for r in study]),
    ]
    if neuron:
        lines.append("- " + _view_sentence(
            "Neurons of the privileged-basis models, trained from scratch only",
            [(r.claim, r.across("scratch")) for r in neuron], NEURON_PLAIN) + " "
            + _gap_sentence(neuron))
    lines.append("- **Recipes** — " + " ".join(_recipe_sentences(results)))
    if folder is not None and (mech := mechanism_plots.opening_sentence(folder / "mechanism")):
        lines.append("- **Mechanism** — " + mech)
    undecided = _undecided_lines(results)
    if undecided:
        lines += ["- **Undecided, and why** (each reason, with what could remove it):",
                  *(f"  - {u}" for u in undecided)]
    lines.append("- **Seed selection** — " + _selection_count(results))
    return lines + [""]


def _selection_count(results: list[Result]) -> str:
    """How many trained verdicts (per recipe run) change on another seed selection; the
    list itself heads the sensitivity section (:func:`_selection_changes`)."""
    n = changed = 0
    for r in results:
        for route in ROUTES:
            for rr in _recipe_rows(r, route):
                if not rr.has_run:
                    continue
                n += 1
                changed += bool(_selection_shift(rr))
    if not n:
        return "no trained run to select seeds from."
    return (f"{changed} of {n} trained verdicts (one per claim and recipe run) change when "
            f"the seeds are selected otherwise ({' or '.join(list(SELECTIONS.values())[1:])}, "
            f"instead of {SELECTIONS['converged']}); the section \"Trained views, by seed "
            "selection\" lists them.")


#: The verdict words of the glance table, defined once under it.
GLANCE_LEGEND = (
    "supported: the study's claim is shown (a difference in its direction, or equality "
    "within the margin); refuted: its opposite is shown; not supported: an effect of the "
    "claim's size is excluded (or, for a \"same\" claim, neither equality nor a difference "
    "beyond the margin is shown although the data could have); undecided: none of these, "
    "with the reason. A trained verdict on one recipe says so; the sections below give "
    "every number.")


def _glance_cell(v: View | vd.Across) -> str:
    """A verdict with its reason, no detail; a trained view's over its recipes marks
    whether it rests on one recipe or holds across several."""
    text = vd.verdict_text(v.verdict, v.reason)
    if isinstance(v, vd.Across) and v.verdict != "undecided":
        ran = len(v.ran)
        text += (", 1 recipe" if v.scope == "one" else
                 f", {ran} recipes" if v.scope == "across" else f", {vd.SCOPES[v.scope]}")
    return text


def glance(results: list[Result]) -> list[str]:
    """Every claim's verdict in each view, one table row per claim (the study's claims,
    then the neuron claims, judged trained from scratch only), with the words defined."""
    study = [r for r in results if not r.claim.trained_only]
    neuron = [r for r in results if r.claim.trained_only]
    lines = [f"| the study's claim | {OPTIMUM} | {SCRATCH} | {FP} |", "|---|---|---|---|"]
    lines += [_row(r.claim.rule.claim, *(_glance_cell(v) for _, v in _judged_views(r)))
              for r in study]
    if neuron:
        lines += ["", f"| the project's neuron claim | {SCRATCH} |", "|---|---|"]
        lines += [_row(r.claim.rule.claim, _glance_cell(r.across("scratch"))) for r in neuron]
    return lines + ["", GLANCE_LEGEND, ""]


def _recipe_sentences(results: list[Result]) -> list[str]:
    """Per trained view (the neuron claims' apart), whether its decided verdicts hold
    across recipes, rest on one recipe (which, and which recipes have no run) or are decided
    by some recipes only, and which claims depend on the recipe: claims grouped, one
    sentence per view."""
    out = []
    groups = [(f"{ROUTES[route][:1].upper()}{ROUTES[route][1:]}", route,
               [r for r in results if not r.claim.trained_only]) for route in ROUTES]
    neuron = [r for r in results if r.claim.trained_only]
    if neuron:
        groups.append(("Neurons, trained from scratch", "scratch", neuron))
    for label, route, members in groups:
        by: dict[str, list[str]] = {}
        for r in members:
            a, runs = r.across(route), r.recipe_runs(route)
            if a.scope == "one" and a.verdict != "undecided":
                ran = next(rr for rr in runs if rr.has_run)
                missing = [f"results/<experiment>{rr.recipe.suffix}" for rr in runs
                           if not rr.has_run]
                key = (f"rests on one recipe, results/<experiment>{ran.recipe.suffix}"
                       + (f" ({', '.join(missing)} {'has' if len(missing) == 1 else 'have'}"
                          " no run)" if missing else ""))
            elif a.scope == "across":
                key = "holds across recipes"
            elif a.scope == "partial":
                key = "decided by some recipes only (the others undecided)"
            elif a.scope == "depends":
                key = "depends on the recipe"
            else:
                continue  # undecided for want of a run or a decision: the undecided bullet
            by.setdefault(key, []).append(_claim_words(r.claim))
        if not by:
            out.append(f"{label}: no verdict is decided on any recipe.")
            continue
        decided = sum(len(v) for v in by.values())
        (key, claims), = list(by.items())[:1]
        if len(by) == 1 and key.startswith("rests on one recipe"):
            # Today's usual state: say it once for the whole view.
            who = "the one decided verdict" if decided == 1 else \
                f"every decided verdict ({decided} claims)"
            out.append(f"{label}: {who} {key}.")
            continue
        out.append(f"{label}: " + ". ".join(
            f"{key[:1].upper() + key[1:]}: {'; '.join(claims)}" for key, claims in by.items())
            + ".")
    return out


def _undecided_reasons(v: View | vd.Across) -> dict[str, list[str]]:
    """An undecided view's reasons: over recipes, each undecided recipe run's own reason,
    with the runs it holds for where the runs differ in reason (else no runs named); a
    single view, or recipes without a run of their own reason, the view's reason."""
    ran = [rv for rv in getattr(v, "ran", ()) if rv.verdict == "undecided"]
    reasons: dict[str, list[str]] = {}
    for rv in ran:
        reasons.setdefault(rv.reason, []).append(rv.label)
    if not reasons:
        return {v.reason: []}
    return reasons if len(reasons) > 1 else {k: [] for k in reasons}


def _undecided_lines(results: list[Result]) -> list[str]:
    """The undecided verdicts grouped by reason (one line each), then by view (the neuron
    claims' views named as such): per view the claims, or "all N claims" where every claim
    judged in that view is undecided for that reason; each reason with whether more compute
    removes it."""
    judged: dict[str, list] = {}  # view label -> [(claim, view)]
    for r in results:
        for name, v in _judged_views(r):
            label = f"{name} (neuron claims)" if r.claim.trained_only else name
            judged.setdefault(label, []).append((r.claim, v))
    by_reason: dict[str, dict[str, list[str]]] = {}
    for label, pairs in judged.items():
        for claim, v in pairs:
            if v.verdict != "undecided":
                continue
            for reason, runs in _undecided_reasons(v).items():
                words = _claim_words(claim) + (f" ({', '.join(runs)})" if runs else "")
                by_reason.setdefault(reason, {}).setdefault(label, []).append(words)
    out = []
    for k, views in by_reason.items():
        parts = [f"{label}: all {len(claims)} claims" if len(claims) == len(judged[label])
                 else f"{label}: " + "; ".join(claims) for label, claims in views.items()]
        out.append(f"{vd.REASONS[k][:1].upper() + vd.REASONS[k][1:]} ({vd.REMEDIES[k]}) — "
                   + " | ".join(parts) + ".")
    return out


def render(results: list[Result], folder: Path) -> str:
    """FINDINGS.md: the answer in plain words, the protocol, the rule table, the verdicts
    (with the seed-selection sensitivity), one table per claim, context."""
    k = n_tests(results)
    study = [r for r in results if not r.claim.trained_only]
    q5, q20 = stats.min_quantile(5), stats.min_quantile(20)
    lines = [
        "# Findings: the BitNet toy-model claims, tested",
        "",
        "Generated by `python -m experiments.findings` (" + store_files.code_commit_words()
        + ") from the runs in this folder (" + _commits(folder)
        + "). `ternary` is BitNet b1.58 absmean with one scale per "
        "tensor, float bias, float activations; `dense` is the float model. Every number "
        "and verdict below is computed from the runs; the fixed text states definitions "
        "and rules only.",
        "",
        *opening(results, folder),
        "## Protocol",
        "",
        "- Unit: the seed. A seed's dense and ternary instances share initial latent weights "
        "and data; each seed contributes one value of ternary - dense (the mean over the "
        "stated cells, the mean over each declared window, or the difference of the two "
        "onsets), never one value per cell.",
        "- Onsets: per seed and kind, the sustained crossing of the stated level, linearly "
        "interpolated in log10(1-S) between the grid points around it "
        "(bitjax.analysis.onsets.bounded_onset); an onset outside the grid takes the "
        "grid's edge as a bound.",
        "- Local claims (\"in a small range\", \"around some sparsities\"): one test per "
        "window of 1-S declared in the rule table, Bonferroni over the windows for the "
        "claim, the intersection-union test (the opposite in every window) for its "
        "refutation; the table shows the window with the smallest p-value.",
        "- Loss gap (the primary quantity): (L_ternary - L_dense) / L_zero per cell (L_zero: "
        "the loss of the model that outputs zeros, so cells of very different loss weigh "
        "alike), averaged per seed (mean ± 95% t half-width over seeds), and best-of-seeds "
        "(per cell the best seed of each kind, averaged over cells) with no interval: a "
        "minimum has no valid bootstrap interval; what holds without assumptions is that "
        f"the best of k seeds lies, with 95% probability, at or below the "
        f"1 - 0.05^(1/k) quantile of one seed's loss ({q5:.2f} for 5 seeds, {q20:.2f} for "
        "20). At the optimum L_ternary is the best-known ternary loss (results/"
        "representable), an upper bound on ternary's optimum, and L_dense the smaller of "
        "the trained dense loss and that bound (a ternary solution is also a dense one), "
        "both on the same sample.",
        f"- At the optimum: where the best-known ternary solutions reach the dense loss "
        f"within {ATTAINED_FACTOR - 1:.0%} in at least {SHARED_SHARE:.0%} of the cells, "
        "ternary's optimum is the dense one and the claim is decided by that fact, the "
        "same way for both kinds of claim: a \"same\" claim is supported, a difference "
        "claim not supported. Elsewhere the claim's measure is computed on the best-known "
        "ternary solutions themselves (one per dense instance, results/representable/"
        "best_known) and tested, per seed, against the trained dense instances of the same "
        "seed, on the cells whose dense instance converged (the others left out of the "
        "seed's summary).",
        *route_lines(folder),
        f"- Both trained views, the same way on each recipe's runs: the primary selection "
        f"uses a seed if every compared instance of it converged (bitjax.convergence) and "
        f"none diverged; with fewer than {vd.MIN_SEEDS} such seeds the numbers are shown "
        "over all seeds and the verdict is undecided (not converged). The verdicts on all "
        "seeds and on per-cell converged pairs are shown beside it as a sensitivity (each "
        "selection in its own Holm family with the same optimum views and that selection's "
        "trained views of every recipe of both routes). A recipe whose run is missing or "
        "unfinished, or that repeats another recipe of its view, is undecided (no run).",
        f"- Recipes: {vd.RECIPE_RULE}",
        *best_known_lines(results),
        f"- Holm's correction over the family of all {k} p-values computed (for and against "
        f"each distinct test, all three views and every recipe; two views testing the same "
        f"values are one test); α = {vd.ALPHA:g}. p columns: for / against the claim (raw, then "
        "Holm-adjusted).",
        "- The neuron claims of the privileged-basis models (their own section below) use "
        "the same unit, summaries, seed selections and decision rules, are judged trained "
        "from scratch only, and join the same Holm family once each.",
        "",
        "## Rule table (fixed in experiments/findings.py before the data are read)",
        "",
        "| claim | run and cells | per-seed measure (ternary - dense) | test | margin | "
        "direction | theory at the optimum | decision rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in study:
        c, ru = r.claim, r.claim.rule
        lines.append(_row(ru.claim, c.where, *_rule_cells(c)[:4], vd.theory_text(ru),
                          vd.rule_text(ru) + _exact_rule(c)))
    lines += ["", "## Verdicts", "",
              "Each trained view over its recipes (the protocol's recipe rule): what it "
              "rests on, each recipe's verdict where they differ, and each missing run with "
              "the command that trains it.", "",
              f"| claim | theory at the optimum | {OPTIMUM} | {SCRATCH} | {FP} |",
              "|---|---|---|---|---|"]
    for r in study:
        lines.append(_row(r.claim.rule.claim, vd.theory_text(r.claim.rule),
                          _view_verdict(r.optimum),
                          *(_across_text(r.across(route)) for route in ROUTES)))
    lines += ["", "### Trained views, by seed selection (sensitivity)", "",
              *("- " + t[:1].upper() + t[1:] for t in _selection_changes(results)), "",
              "| claim | view | " + " | ".join(SELECTIONS.values()) + " |",
              "|---|---|" + "---|" * len(SELECTIONS)]
    lines += _selection_rows(study)
    lines += ["", "### Trained ternary against the best-known solutions", "",
              "Per claim and trained view, the median over the claim's cells and seeds of "
              "trained ternary loss / best-known ternary loss, both on one estimator sample "
              "(the protocol says which); 1 is the best-known solution.", "",
              f"| claim | run and cells | {SCRATCH} | {FP} |", "|---|---|---|---|"]
    lines += [_row(r.claim.rule.claim, r.claim.where,
                   *(_to_best_cell(r, route) for route in ROUTES)) for r in study]
    lines += ["", "## Measurements per claim", ""]
    for r in study:
        lines += [f"### {r.claim.rule.claim}", "",
                  f"{r.claim.where}; measure: {r.claim.rule.measure}. Theory: "
                  f"{vd.theory_text(r.claim.rule)}.", "", *MEASUREMENT_HEADER,
                  _view_row(r.claim.rule, r.optimum),
                  *(_view_row(r.claim.rule, rr.view) for route in ROUTES
                    for rr in _recipe_rows(r, route)), ""]
    lines += mechanism_plots.section_from_folder(folder / "mechanism", MECHANISM_RUNS)
    lines += neuron_section([r for r in results if r.claim.trained_only], folder)
    lines += ["## Context", "", convergence_line(folder)]
    phase = _phase_line(folder)
    if phase:
        lines.append(phase)
    return "\n".join(lines) + "\n"


def _to_best_cell(r: Result, route: str) -> str:
    """A trained view's distance to the best-known solutions: the primary recipe's, then
    each other recipe's with a run."""
    rows = _recipe_rows(r, route)
    return "; ".join(_fmt_to_best(rr.view) if rr.primary else
                     f"{rr.folder.name}: {_fmt_to_best(rr.view)}" for rr in rows)


def _rule_cells(c: Claim) -> tuple[str, str, str, str]:
    """A rule table row's measure (with an onset's level), test, margin and direction."""
    ru = c.rule
    direction = ("none (equivalence)" if ru.direction == 0 else
                 "ternary > dense" if ru.direction > 0 else "ternary < dense")
    level = f" (level {c.level:g})" if c.summary == "onset" else ""
    return ru.measure + level, ru.test, f"{ru.margin:g} {ru.unit}".strip(), direction


def _selection_rows(results: list[Result], routes=tuple(ROUTES)) -> list[str]:
    """The trained verdicts of each claim on every seed selection, one row per claim,
    route (of ``routes``) and recipe (the primary one, and each other with a run)."""
    rows = []
    for r in results:
        for route in routes:
            for rr in _recipe_rows(r, route):
                views = [rr.view if s == "converged" else rr.sensitivity.get(s)
                         for s in SELECTIONS]
                # A missing run's path is in the verdict table; here its reason only.
                rows.append(_row(r.claim.rule.claim, rr.view.name, *(
                    "n/a" if v is None else vd.verdict_text(v.verdict, v.reason)
                    + ("" if v.reason == "missing" else f" ({v.basis})") for v in views)))
    return rows


def _run_configs(folder: Path, name: str) -> dict[str, SweepConfig] | str:
    """Part -> config of ``folder/name`` (read from each part's sweep.json, without loading
    the checkpoints), or why there is none."""
    path = folder / name
    parts = layout.part_folders(path) if path.is_dir() else None
    if not parts:
        return "no run"
    out = {}
    for part, d in parts.items():
        try:
            out[part] = SweepConfig.from_dict(json.loads((d / layout.SWEEP_FILE).read_text()))
        except (OSError, ValueError, TypeError) as e:
            return f"no readable config ({e})"
    return out


def _recipe_claims(route: str) -> tuple[Claim, ...]:
    """The claims a trained view judges (the neuron claims' models refuse the
    full-precision-first route)."""
    return CLAIMS if route == "scratch" else STUDY_CLAIMS


def route_lines(folder: Path) -> list[str]:
    """The protocol's lines on the two training routes: what each route is, its recipes
    (:data:`RECIPES`: the folder and the command of each) and how each recipe's claim runs
    were trained (steps and recipe, from the runs' configs)."""
    lines = []
    for route, name in ROUTES.items():
        recipes = []
        for recipe in route_recipes(route):
            bits = []
            for exp in dict.fromkeys(c.experiment for c in _recipe_claims(route)):
                run = exp + recipe.suffix
                cfgs = _run_configs(folder, run)
                if isinstance(cfgs, str):
                    bits.append(f"{run}: {cfgs}")
                    continue
                texts: dict[str, list[str]] = {}
                for part, cfg in cfgs.items():
                    texts.setdefault(f"{cfg.steps:,} steps, {recipe_text(cfg)}",
                                     []).append(part)
                bits.append(f"{run} (" + "; ".join(
                    f"{', '.join(parts)}: {text}" for text, parts in texts.items()) + ")")
            flags = recipe.flags or "the preset's own recipe, no recipe flag"
            recipes.append(f"results/<experiment>{recipe.suffix} ({flags}): "
                           + ", ".join(bits))
        # The route texts open with the view's name; here it leads the line already.
        how = (TRAINED_ROUTE if route == "scratch" else FP_ROUTE).split(": ", 1)[1]
        if route == "fp":
            how += (" (these runs' configs have fp_fraction > 0, and the step of the switch "
                    "is in their recipes below)")
        lines.append(f"- {name[:1].upper() + name[1:]}: {how}. Its recipes, one run folder "
                     "each (python -m experiments.<experiment> <flags> --out "
                     "results/<experiment><suffix> trains one), with each run's recipe from "
                     "its config: " + " | ".join(recipes) + ".")
    return lines


def best_known_lines(results: list[Result]) -> list[str]:
    """The protocol's line on the trained views' distance to the best-known solutions and
    the estimator samples it is computed on."""
    on = list(dict.fromkeys(v.to_best_on for r in results for _, v in r.recipe_views()
                            if v.to_best_on))
    where = ("; the best-known runs and their samples: " + "; ".join(on) if on else
             "; no trained view has a best-known run to compare with")
    return ["- Trained ternary / best-known loss (each trained view): per ternary instance "
            "that did not diverge, its loss divided by the best-known ternary loss of the "
            "same problem (seed, densities, importances; results/representable/best_known, "
            "bitjax.analysis.best_ternary), both evaluated on the stratified estimator "
            "sample the best-known losses were computed on (bitjax.analysis.estimator: "
            "rebuilt from the best-known run's recorded settings and checked to reproduce "
            f"its losses on up to {bt.SAMPLE_CHECKS} of its solutions), never on the training "
            "loss; the median over the claim's cells and seeds (the best-known runs "
            "recorded the twins' losses of the primary runs from scratch, results/"
            "<experiment>; every other recipe's run is evaluated on the rebuilt sample)"
            + where + "."]


def _representable_text(folder: Path, run: str) -> str:
    """Whether results/representable holds an attainable table for ``run`` (read, not
    assumed); one there would not be used, since its argument does not carry over."""
    found = sorted((folder / "representable").glob(f"attainable_{run}*.csv"))
    if not found:
        return f"results/representable holds no attainable ternary loss for {run}"
    return (f"results/representable's {', '.join(f.name for f in found)} is not used for "
            "these claims")


def neuron_section(results: list[Result], folder: Path) -> list[str]:
    """The neuron claims' section: why they are judged trained from scratch only (from
    :data:`NO_OPTIMUM`, what results/representable holds, and why their config refuses the
    full-precision-first route), their rule table, verdicts by seed selection, and one
    measurement table per claim with the loss gap beside the measure. Empty without neuron
    claims."""
    if not results:
        return []
    runs = list(dict.fromkeys(r.claim.experiment for r in results))
    no_fp = {r.claim.experiment: r.fp for r in results}
    lines = [
        "## Neurons: dense vs ternary in the privileged-basis models (trained from scratch "
        "only)",
        "",
        "The project's own questions, not claims of the study: are ternary neurons more "
        "monosemantic, at equal loss, and does ternary change when computation goes into "
        "superposition? Each is asked both ways (a one-sided paired difference and a TOST "
        "equivalence on one measure) so it can come out either way; the loss gap is shown "
        "beside every comparison. The measures read the effective weights (gamma * T for "
        "ternary) through bitjax.analysis.neurons.",
        "",
        *(f"- {run}: not judged at the optimum, because {NO_OPTIMUM[run]}; "
          f"{_representable_text(folder, run)}." for run in runs),
        *(f"- {run}, {FP}: {_view_verdict(v)}." for run, v in no_fp.items()),

        "- So these claims have no \"at the optimum\" view: no best-known ternary solution "
        "decides them and no trained ternary instance can be checked against an attainable "
        "loss. They are judged trained from scratch only (primary selection: seeds with "
        "every compared instance converged), in the one Holm family of this file.",
        "",
        "### Rule table (fixed in experiments/findings.py before the data are read)",
        "",
        "| claim | run and cells | per-seed measure (ternary - dense) | test | margin | "
        "direction | decision rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(_row(r.claim.rule.claim, r.claim.where, *_rule_cells(r.claim),
                          vd.rule_text(r.claim.rule)))
    lines += ["", "### Verdicts trained from scratch, by seed selection", "",
              "| claim | view | " + " | ".join(SELECTIONS.values()) + " |",
              "|---|---|" + "---|" * len(SELECTIONS), *_selection_rows(results, ("scratch",)),
              "", f"### Verdicts {SCRATCH}, over recipes (the protocol's recipe rule)", "",
              "| claim | verdict |", "|---|---|",
              *(_row(r.claim.rule.claim, _across_text(r.across("scratch"))) for r in results),
              ""]
    for r in results:
        lines += [f"### {r.claim.rule.claim}", "",
                  f"{r.claim.where}; measure: {r.claim.rule.measure}.", "",
                  "| view | seeds used | loss gap per seed | loss gap best-of-seeds | "
                  "measure dense / ternary | ternary - dense | p for / against | verdict | "
                  "notes |",
                  "|---|---|---|---|---|---|---|---|---|",
                  *(_view_row(r.claim.rule, rr.view, to_best=False)
                    for rr in _recipe_rows(r, "scratch")), ""]
    return lines


def _exact_rule(claim: Claim) -> str:
    if not claim.exact:
        return ""
    m = claim.rule.margin
    return (f". At the optimum, decided from the exact optima (intro_exact.csv) without a "
            f"test: supported if the exact ternary optimum has the configuration at a share "
            f"of the sparsities at least {m:g} above the best dense seed's (in the claimed "
            f"direction), refuted if at least {m:g} below, else not supported")


def _claim_runs(folder: Path) -> list[str]:
    """The runs the claims read, by recipe (:data:`RECIPES`): each route's primary recipe
    always (every claim's experiment, then the study claims' ``<experiment>_fp``), each
    other recipe where its folder exists (a missing one is named in the protocol and the
    verdicts)."""
    out = []
    for recipe in RECIPES:
        names = sorted({c.experiment + recipe.suffix for c in _recipe_claims(recipe.route)})
        out += [n for n in names if recipe.primary or (folder / n).is_dir()]
    return out


def _commits(folder: Path) -> str:
    bits = []
    for name in _claim_runs(folder):
        if not (folder / name).is_dir():
            bits.append(f"{name}: not in this folder")
            continue
        try:
            m = json.loads((folder / name / "manifest.json").read_text())
            bits.append(f"{name} trained at {(m.get('git', {}).get('commit') or '?')[:10]}")
        except (OSError, ValueError):
            bits.append(f"{name}: no manifest")
    return ", ".join(bits)


def convergence_line(results: Path) -> str:
    """Converged instances per run and kind (bitjax.convergence), as one line."""
    counts = []
    for name in _claim_runs(results):
        try:
            parts = _load(results, name)
        except (CheckpointError, FileNotFoundError):
            counts.append(f"{name}: no finished run")
            continue
        for part in parts.values():
            conv, kind = converged(part), part.coords["kind"]
            for k in (DENSE, TERNARY):
                sel = kind == k
                if sel.any():
                    counts.append(f"{name}/{part.name} {k} {int(conv[sel].sum())}/"
                                  f"{int(sel.sum())}")
    return ("- Converged and not diverged, per run and kind (stored diagnostic, else the "
            "default rule on the loss history): " + ", ".join(counts) + ".")


def _phase_line(results: Path) -> str:
    path = results / "phase" / "phase_summary.csv"
    if not path.exists():
        return ""
    rows = {(r["part"], r["kind"]): r for r in store_files.read_csv(path)}
    d, t = rows.get(("n2m1", "dense")), rows.get(("n2m1", "ternary"))
    if not (d and t):
        return ""
    return (f"- phase (not a claim of the study), n=2, m=1: best-restart phase equal to the "
            f"closed-form boundary in {float(d['agreement_all']):.0%} (dense) and "
            f"{float(t['agreement_all']):.0%} (ternary) of {d['n_cells']} cells; extra "
            f"feature superposed in {float(d['share_superposed']):.0%} (dense) and "
            f"{float(t['share_superposed']):.0%} (ternary) of cells.")


def reads_text() -> str:
    """Which run folders (under ``--results``) each view reads, from :data:`RECIPES` (the
    ``--help`` epilog)."""
    exps = ", ".join(dict.fromkeys(c.experiment for c in CLAIMS))
    lines = ["Run folders each view reads (under --results; <experiment>: " + exps + "):",
             f"  {OPTIMUM}: <experiment> (the primary run from scratch) and representable/ "
             "(attainable tables, best_known/ solutions)"]
    for route, name in ROUTES.items():
        lines.append(f"  {name}, one run per recipe: " + "; ".join(
            f"<experiment>{rc.suffix} ({rc.flags or 'the preset recipe'})"
            for rc in route_recipes(route))
            + ("" if route == "scratch" else " (study claims only)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:  # one CPU device per core, as the experiments
        return code
    ap = argparse.ArgumentParser(prog="python -m experiments.findings", description=__doc__,
                                 epilog=reads_text(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=None,
                    help="output file (default: <results>/FINDINGS.md)")
    args = ap.parse_args(argv)
    try:
        results = evaluate(args.results)
        text = render(results, args.results)
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: a result run is missing or unfinished: {e}", file=sys.stderr)
        return 2
    out = args.out or args.results / "FINDINGS.md"
    store_files.write_text(out, text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
