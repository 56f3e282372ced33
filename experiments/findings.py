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
* Two views per claim. "At the optimum": where the best-known ternary solutions reach the
  dense loss (within ATTAINED_FACTOR in at least SHARED_SHARE of the cells), the claim is
  decided by that fact, the same way for equivalence and difference claims (supported /
  not supported); elsewhere a measure is tested on the seeds whose trained ternary
  instances all came within ATTAINED_FACTOR of their attainable loss. "As trained": the
  runs from the standard initialisation; the primary seed selection keeps a seed only if
  every compared instance of it converged and none diverged; the verdicts on all seeds and
  on per-cell converged pairs are reported beside it (a sensitivity, not a second claim).
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
  lattice argument does not carry over (:data:`NO_OPTIMUM`): they are judged as trained
  only, in their own section, with the loss gap beside every comparison.
* All p-values of the tests carried out (for and against each claim, both views) form one
  Holm family in which each test counts once; verdicts are supported / not supported /
  refuted / undecided (with the reason: not converged, attainable not reached, too little
  power, or no run, and whether more compute can remove it).

Command:  python -m experiments.findings           (reads results/*, writes FINDINGS.md)
          python -m experiments.findings --results path/to/results --out FINDINGS.md
Runtime: 15 s of CPU time, 36 s wall on the shared 2-core CPU (loads the checkpoints;
trains nothing); GPU not measured. Paper figure: none; the tables answer the BitNet study's
claims.

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
from bitjax.analysis import geometry, metrics, neurons, onsets, stats
from bitjax.analysis import grid as analysis
from bitjax.analysis import verdicts as vd
from bitjax.analysis.results import LoadedSweep, SweepCollection, load_experiment
from bitjax.analysis.verdicts import Rule
from bitjax.store import files as store_files
from bitjax.store.checkpoint import CheckpointError

#: A trained ternary instance is "at its optimum" within this factor of its attainable loss.
ATTAINED_FACTOR = 1.05
#: The best-known ternary solutions "coincide with dense" (and decide the optimum view,
#: bitjax.analysis.verdicts.decide_by_optimum) when they reach the dense loss within
#: ATTAINED_FACTOR in at least this share of the claim's cells.
SHARED_SHARE = 0.95
#: The study the findings test (fields not known to this repository are None and left out
#: of the text rather than guessed).
STUDY = {"title": "Toy Models of Superposition: what about BitNets?", "kind": "blog study",
         "author": None, "date": "2024", "link": None}
#: How the trained view was trained (the route named in the opening).
TRAINED_ROUTE = ("trained from scratch: straight-through estimator from the standard "
                 "initialisation")
#: Seed selections of the as-trained view: the primary one first, the sensitivities after.
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
      trained_only: judged in the "as trained" view only (the neuron claims: the optimum
        view's argument does not apply to the run's model, :data:`NO_OPTIMUM` says why);
        its optimum view is neither tested nor in the Holm family.
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

#: The neuron claims of the two privileged-basis models (not claims of the BitNet study: the
#: project's own questions "are ternary neurons more monosemantic, at equal loss?" and
#: "does ternary change when computation goes into superposition?"), fixed here before any
#: result is read and judged as trained only (:data:`NO_OPTIMUM`). Each question is asked
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


def claim_grid(sweep: LoadedSweep, claim: Claim) -> Grid:
    """The cells of ``claim`` in ``sweep``, by kind (see :class:`Grid`)."""
    def grid(values, mask=True):
        da = analysis.kind_seed_grid(sweep, values, mask_diverged=mask)
        lo, hi = claim.p_range
        keep = (da["feature_probability"] >= lo) & (da["feature_probability"] <= hi)
        return da.isel(feature_probability=np.flatnonzero(keep.values))

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


# ---- measurements and verdicts --------------------------------------------------------------


@dataclass
class View:
    """One view ("at the optimum" or "as trained") of one claim.

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


@dataclass
class Result:
    """A claim with its two views, and the as-trained view on the other seed selections
    (``sensitivity``, keyed like :data:`SELECTIONS`)."""

    claim: Claim
    optimum: View
    trained: View
    sensitivity: dict = field(default_factory=dict)


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


def trained_view(claim: Claim, g: Grid, selection: str = "converged") -> View:
    """The "as trained" view on one seed selection.

    Args:
      claim: the claim.
      g: the claim's cells in the run.
      selection: a key of :data:`SELECTIONS`: "converged" (the primary one: seeds whose
        compared instances all converged), "all" (every seed; diverged instances are not
        measured) or "pairs" (every seed, each on its cells where both kinds converged).
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
    v = View("as trained")
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
                    f"{int(pairs.sum())} of {pairs.size} pairs converged")
    return v


def _censored_text(cens: dict, sel: np.ndarray) -> str:
    parts = []
    for k in (DENSE, TERNARY):
        c = cens[k][sel]
        parts.append(f"{k}: {int((c == -1).sum())} at or above the densest point, "
                     f"{int((c == 1).sum())} beyond the sparsest (bound used)")
    return "onsets outside the grid: " + "; ".join(parts)


def optimum_view(results: Path, claim: Claim, g: Grid) -> View:
    """The "at the optimum" view: attainable bounds, exact optima and the trained seeds that
    reached their attainable loss.

    Args:
      results: the results folder (its representable/ tables are read).
      claim: the claim.
      g: the claim's cells in the run.
    Returns:
      The view; decided by :func:`bitjax.analysis.verdicts.decide_by_optimum` where the
      best-known solutions reach the dense loss, else ``tested`` when enough seeds reached
      their attainable loss, else undecided (attainable not reached); the intro's verdict
      comes from the exact optima.
    """
    v = View("at the optimum")
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
    v.notes.append(f"ternary attains the dense loss within {ATTAINED_FACTOR - 1:.0%} in "
                   f"{int(shared.sum())} of {shared.size} dense instances ({share:.0%}); the "
                   f"bound is the optimum (enumerated or alignable) in {int(b.tight.sum())} "
                   f"of {b.tight.size}")
    # Every ternary solution is a dense one, so the best dense loss known is the smaller of
    # the trained dense loss and the ternary bound; the gap at the optimum is then >= 0.
    dense_best = np.fmin(b.dense, b.bound)
    v.gap = loss_gap(b.bound, dense_best, g.zero)
    v.gap_best = best_gap(b.bound, dense_best, g.zero)
    reached = (b.trained <= ATTAINED_FACTOR * b.bound) & g.ok[TERNARY] & g.ok[DENSE]
    use = reached.all(axis=1)
    diff, by, notes = per_seed(claim, g)
    v.basis = ("loss gap: the attainable bound of every dense instance (an upper bound on "
               "ternary's optimum); measure: "
               + _seeds_text(use, f"with every instance converged and ternary within "
                                  f"{ATTAINED_FACTOR - 1:.0%} of its attainable loss"))
    v.diff, v.by_kind = diff[use], {k: x[use] for k, x in by.items()}
    if "censored" in notes:
        v.notes.append(_censored_text(notes["censored"], use))
    if decided is not None:
        return v
    fact = vd.decide_by_optimum(claim.rule, share >= SHARED_SHARE)
    if fact is not None:
        v.verdict, v.reason = fact
        v.fact = (f"decided by the best-known solutions: ternary reaches the dense loss "
                  f"within {ATTAINED_FACTOR - 1:.0%} in {share:.0%} of the cells "
                  f"(>= {SHARED_SHARE:.0%})")
    elif int(use.sum()) < vd.MIN_SEEDS:
        v.reason = "attainable"
        v.detail = _seeds_text(use, "reached it")
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
    """The optimum view of a claim judged as trained only: not measured, never tested, and
    left out of the Holm family, its verdict and opening (:data:`NO_OPTIMUM` says why)."""
    return View("at the optimum", basis="not judged at the optimum: "
                + NO_OPTIMUM[claim.experiment])


def _missing(claim: Claim, why: str) -> Result:
    """Both views undecided: the run the claim needs does not exist (the optimum view of a
    claim judged as trained only stays :func:`no_optimum_view`)."""
    views = [no_optimum_view(claim) if claim.trained_only and name == "at the optimum"
             else View(name, basis=why, reason="missing", detail=why)
             for name in ("at the optimum", "as trained")]
    other = {sel: View("as trained", basis=why, reason="missing", detail=why)
             for sel in SELECTIONS if sel != "converged"}
    return Result(claim, *views, other)


def evaluate(results: Path) -> list[Result]:
    """Every claim of :data:`CLAIMS` measured, tested and decided (Holm over the family).

    Args:
      results: a results folder (``intro/``, ``sparsity/``, ..., ``representable/``).
    Returns:
      One :class:`Result` per claim, in table order. A claim whose run is missing or
      unfinished is undecided (no run) in both views; the others are evaluated.
    """
    cache: dict[str, SweepCollection | str] = {}
    out = []
    for claim in CLAIMS:
        if claim.experiment not in cache:
            try:
                cache[claim.experiment] = _load(results, claim.experiment)
            except (CheckpointError, FileNotFoundError) as e:
                cache[claim.experiment] = f"{results / claim.experiment}: {e}"
        parts = cache[claim.experiment]
        if isinstance(parts, str):
            out.append(_missing(claim, parts))
            continue
        if claim.part not in parts:
            out.append(_missing(claim, f"{results / claim.experiment} has no part "
                                       f"{claim.part!r}"))
            continue
        g = claim_grid(parts[claim.part], claim)
        optimum = (no_optimum_view(claim) if claim.trained_only
                   else optimum_view(results, claim, g))
        out.append(Result(claim, optimum, trained_view(claim, g),
                          {sel: trained_view(claim, g, sel) for sel in SELECTIONS
                           if sel != "converged"}))
    decide_family(out)
    for sel in SELECTIONS:
        if sel != "converged":
            decide_family(out, sel)
    return out


def _family(results: list[Result], selection: str) -> list[tuple[Rule, View]]:
    """The views of one Holm family: every optimum view and the as-trained views on one
    seed selection."""
    def trained(r: Result) -> View:
        return r.trained if selection == "converged" else r.sensitivity[selection]
    return [(r.claim.rule, v) for r in results for v in (r.optimum, trained(r))]


def decide_family(results: list[Result], selection: str = "converged") -> int:
    """Test, Holm-adjust and decide one family; each test counts once.

    The primary family ("converged") decides the optimum views and the primary as-trained
    views; a sensitivity family (another seed selection) has the same optimum views beside
    its own as-trained views and decides only the latter.

    Returns:
      The number of p-values in the family.
    """
    members = _family(results, selection)
    for rule, v in members:
        if v.tested and v.raw is None:
            v.raw = vd.raw_tests(rule, v.diff)
    adjusted, size = vd.holm_family([(vd.same_test_key(rule, v.diff), v.raw)
                                     for rule, v in members])
    for i, ((rule, v), a) in enumerate(zip(members, adjusted, strict=True)):
        if v.raw is None or (selection != "converged" and i % 2 == 0):
            continue  # not tested, or an optimum view (decided in the primary family)
        v.p_adj = a
        v.verdict, v.reason = vd.decide(rule, v.raw, a[0], a[1])
        v.detail = _power_detail(rule, v.raw) if v.reason == "power" else ""
    return size


def n_tests(results: list[Result], selection: str = "converged") -> int:
    """Size of a Holm family (two p-values per distinct test)."""
    return vd.holm_family([(vd.same_test_key(rule, v.diff), v.raw)
                           for rule, v in _family(results, selection)])[1]


def _power_detail(rule: Rule, raw: vd.RawTests) -> str:
    if raw.n < vd.MIN_SEEDS:
        return f"{raw.n} seeds"
    if raw.sd == 0.0:
        return "every seed gives the same value"
    if rule.test == "equivalence":
        return (f"{1 - 2 * vd.ALPHA:.0%} CI width {raw.high - raw.low:.3g} > margin band "
                f"{2 * rule.margin:g}")
    where = " (the largest over the windows)" if rule.windows else ""
    return (f"confidence bound {raw.bound:.3g}{where} of the effect in the claimed direction "
            f">= {rule.margin:g}")


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


def _view_row(rule: Rule, v: View) -> str:
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
                f"**{verdict}**", extra)


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


def _judged_views(r: Result) -> list[tuple[str, View]]:
    """The views a claim is judged in (a claim judged as trained only has one)."""
    views = [("as trained", r.trained)]
    return views if r.claim.trained_only else [("at the optimum", r.optimum), *views]


def _gap_sentence(results: list[Result]) -> str:
    """The as-trained loss gap of each run and part the claims read (per seed, mean ± 95% t
    half-width): the "at equal loss?" beside the neuron verdicts."""
    bits = {}
    for r in results:
        c, v = r.claim, r.trained
        key = f"{c.experiment}/{c.part}"
        if key not in bits and v.gap.size:
            bits[key] = f"{key} {_fmt_ci(v.gap)} ({v.basis})"
    if not bits:
        return "No loss gap: no run."
    return ("Loss gap as trained, (L_ternary - L_dense) / L_zero per seed over the claims' "
            "cells: " + "; ".join(bits.values()) + ".")


def opening(results: list[Result]) -> list[str]:
    """The answer in plain words, generated from the verdicts: what differs at the optimum,
    what differs as trained and by which route, what is undecided and why (and whether more
    compute can remove it), and which verdicts change with the seed selection. The neuron
    claims (judged as trained only) get their own sentence, with the loss gap of their
    runs."""
    study = [r for r in results if not r.claim.trained_only]
    neuron = [r for r in results if r.claim.trained_only]
    lines = [
        "## The answer in plain words",
        "",
        f"This file tests the claims of {_study_text()}, which trained the toy models of "
        "superposition (Elhage et al. 2022) with ternarised (BitNet) weights, against "
        "rules fixed before the data were read; `ternary` here is BitNet b1.58. Each "
        "claim is judged in two views: at the optimum (the best-known ternary solutions "
        "against dense) and as trained "
        f"({TRAINED_ROUTE})."
        + (f" The project's own questions about the neurons of the privileged-basis models "
           f"({', '.join(dict.fromkeys(r.claim.experiment for r in neuron))}; "
           f"{len(neuron)} claims, not claims of the study) follow, judged as trained only "
           "(their section says why)." if neuron else ""),
        "",
        "- " + _view_sentence("At the optimum", [(r.claim, r.optimum) for r in study]),
        "- " + _view_sentence("As trained", [(r.claim, r.trained) for r in study]),
    ]
    if neuron:
        lines.append("- " + _view_sentence(
            "Neurons of the privileged-basis models, as trained only",
            [(r.claim, r.trained) for r in neuron], NEURON_PLAIN) + " " + _gap_sentence(neuron))
    open_ = [(r.claim, name, v) for r in results for name, v in _judged_views(r)
             if v.verdict == "undecided"]
    if open_:
        by_reason: dict[str, dict[str, list[str]]] = {}
        for claim, name, v in open_:
            by_reason.setdefault(v.reason, {}).setdefault(_claim_words(claim), []).append(name)
        lines.append("- **Undecided, and why** — " + " ".join(
            f"{vd.REASONS[k][:1].upper() + vd.REASONS[k][1:]} ({vd.REMEDIES[k]}): "
            + "; ".join(f"{c} ({', '.join(names)})" for c, names in claims.items()) + "."
            for k, claims in by_reason.items()))
    changed = [f"{_claim_words(r.claim)} (" + ", ".join(
        f"{SELECTIONS[sel]}: {vd.verdict_text(v.verdict, v.reason)}"
        for sel, v in r.sensitivity.items()) + ")"
        for r in results
        if any(v.verdict != r.trained.verdict for v in r.sensitivity.values())]
    lines.append("- **Seed selection** — " + (
        f"as trained, the verdict on {SELECTIONS['converged']} changes on another "
        "selection for: " + "; ".join(changed) + "." if changed else
        "every as-trained verdict is the same on "
        + ", ".join(SELECTIONS.values()) + "."))
    return lines + [""]


def _code_commit() -> str:
    """Which code wrote the file: its commit, and whether the tree had changes."""
    git = store_files.git_commit()
    if not git.get("commit"):
        return "code outside a git checkout"
    dirty = " with uncommitted changes" if git.get("dirty") else ""
    return f"code at commit {git['commit'][:10]}{dirty}"


def render(results: list[Result], folder: Path) -> str:
    """FINDINGS.md: the answer in plain words, the protocol, the rule table, the verdicts
    (with the seed-selection sensitivity), one table per claim, context."""
    k = n_tests(results)
    study = [r for r in results if not r.claim.trained_only]
    q5, q20 = stats.min_quantile(5), stats.min_quantile(20)
    lines = [
        "# Findings: the BitNet toy-model claims, tested",
        "",
        "Generated by `python -m experiments.findings` (" + _code_commit()
        + ") from the runs in this folder (" + _commits(folder)
        + "). `ternary` is BitNet b1.58 absmean with one scale per "
        "tensor, float bias, float activations; `dense` is the float model. Every number "
        "and verdict below is computed from the runs; the fixed text states definitions "
        "and rules only.",
        "",
        *opening(results),
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
        "claim not supported. Elsewhere a measure uses the seeds whose instances all "
        f"converged with ternary within {ATTAINED_FACTOR - 1:.0%} of its attainable loss.",
        f"- As trained: the primary selection uses a seed if every compared instance of it "
        f"converged (bitjax.convergence) and none diverged; with fewer than {vd.MIN_SEEDS} "
        "such seeds the numbers are shown over all seeds and the verdict is undecided (not "
        "converged). The verdicts on all seeds and on per-cell converged pairs are shown "
        "beside it as a sensitivity (each in its own Holm family with the same optimum "
        "views).",
        f"- Holm's correction over the family of all {k} p-values computed (for and against "
        f"each distinct test, both views; two views testing the same values are one test); "
        f"α = {vd.ALPHA:g}. p columns: for / against the claim (raw, then Holm-adjusted).",
        "- The neuron claims of the privileged-basis models (their own section below) use "
        "the same unit, summaries, seed selections and decision rules, are judged as "
        "trained only, and join the same Holm family once each.",
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
              "| claim | theory at the optimum | at the optimum | as trained |",
              "|---|---|---|---|"]
    for r in study:
        lines.append(_row(r.claim.rule.claim, vd.theory_text(r.claim.rule),
                          *(_view_verdict(v) for v in (r.optimum, r.trained))))
    lines += ["", "### As trained, by seed selection (sensitivity)", "",
              "| claim | " + " | ".join(SELECTIONS.values()) + " |",
              "|---|" + "---|" * len(SELECTIONS)]
    lines += _selection_rows(study)
    lines += ["", "## Measurements per claim", ""]
    for r in study:
        lines += [f"### {r.claim.rule.claim}", "",
                  f"{r.claim.where}; measure: {r.claim.rule.measure}. Theory: "
                  f"{vd.theory_text(r.claim.rule)}.", "",
                  "| view | seeds used | loss gap per seed | loss gap best-of-seeds | "
                  "measure dense / ternary | ternary - dense | p for / against | verdict | "
                  "notes |",
                  "|---|---|---|---|---|---|---|---|---|",
                  _view_row(r.claim.rule, r.optimum), _view_row(r.claim.rule, r.trained), ""]
    lines += neuron_section([r for r in results if r.claim.trained_only], folder)
    lines += ["## Context", "", convergence_line(folder)]
    phase = _phase_line(folder)
    if phase:
        lines.append(phase)
    return "\n".join(lines) + "\n"


def _rule_cells(c: Claim) -> tuple[str, str, str, str]:
    """A rule table row's measure (with an onset's level), test, margin and direction."""
    ru = c.rule
    direction = ("none (equivalence)" if ru.direction == 0 else
                 "ternary > dense" if ru.direction > 0 else "ternary < dense")
    level = f" (level {c.level:g})" if c.summary == "onset" else ""
    return ru.measure + level, ru.test, f"{ru.margin:g} {ru.unit}".strip(), direction


def _selection_rows(results: list[Result]) -> list[str]:
    """The as-trained verdict of each claim on every seed selection, one row per claim."""
    rows = []
    for r in results:
        views = [r.trained] + [r.sensitivity[s] for s in SELECTIONS if s != "converged"]
        rows.append(_row(r.claim.rule.claim, *(
            f"{vd.verdict_text(v.verdict, v.reason)} ({v.basis})" for v in views)))
    return rows


def _representable_text(folder: Path, run: str) -> str:
    """Whether results/representable holds an attainable table for ``run`` (read, not
    assumed); one there would not be used, since its argument does not carry over."""
    found = sorted((folder / "representable").glob(f"attainable_{run}*.csv"))
    if not found:
        return f"results/representable holds no attainable ternary loss for {run}"
    return (f"results/representable's {', '.join(f.name for f in found)} is not used for "
            "these claims")


def neuron_section(results: list[Result], folder: Path) -> list[str]:
    """The neuron claims' section: why they are judged as trained only (from
    :data:`NO_OPTIMUM` and what results/representable holds), their rule table, verdicts by
    seed selection, and one measurement table per claim with the loss gap beside the
    measure. Empty without neuron claims."""
    if not results:
        return []
    runs = list(dict.fromkeys(r.claim.experiment for r in results))
    lines = [
        "## Neurons: dense vs ternary in the privileged-basis models (as trained only)",
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
        "- So these claims have no \"at the optimum\" view: no best-known ternary solution "
        "decides them and no trained ternary instance can be checked against an attainable "
        "loss. They are judged as trained only (primary selection: seeds with every compared "
        "instance converged), in the one Holm family of this file.",
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
    lines += ["", "### Verdicts as trained, by seed selection", "",
              "| claim | " + " | ".join(SELECTIONS.values()) + " |",
              "|---|" + "---|" * len(SELECTIONS), *_selection_rows(results), ""]
    for r in results:
        lines += [f"### {r.claim.rule.claim}", "",
                  f"{r.claim.where}; measure: {r.claim.rule.measure}.", "",
                  "| view | seeds used | loss gap per seed | loss gap best-of-seeds | "
                  "measure dense / ternary | ternary - dense | p for / against | verdict | "
                  "notes |",
                  "|---|---|---|---|---|---|---|---|---|",
                  _view_row(r.claim.rule, r.trained), ""]
    return lines


def _exact_rule(claim: Claim) -> str:
    if not claim.exact:
        return ""
    m = claim.rule.margin
    return (f". At the optimum, decided from the exact optima (intro_exact.csv) without a "
            f"test: supported if the exact ternary optimum has the configuration at a share "
            f"of the sparsities at least {m:g} above the best dense seed's (in the claimed "
            f"direction), refuted if at least {m:g} below, else not supported")


def _commits(folder: Path) -> str:
    bits = []
    for name in sorted({c.experiment for c in CLAIMS}):
        try:
            m = json.loads((folder / name / "manifest.json").read_text())
            bits.append(f"{name} trained at {(m.get('git', {}).get('commit') or '?')[:10]}")
        except (OSError, ValueError):
            bits.append(f"{name}: no manifest")
    return ", ".join(bits)


def convergence_line(results: Path) -> str:
    """Converged instances per run and kind (bitjax.convergence), as one line."""
    counts = []
    for name in sorted({c.experiment for c in CLAIMS}):
        try:
            parts = _load(results, name)
        except (CheckpointError, FileNotFoundError):
            counts.append(f"{name}: no run")
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


def main(argv=None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:  # one CPU device per core, as the experiments
        return code
    ap = argparse.ArgumentParser(prog="python -m experiments.findings", description=__doc__,
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
