"""Slow tier: the dense model reproduces the paper's published anchors and headline phenomena.

One test per experiment trains dense models through the public library (``run_sweep`` into
a run folder, ``load_sweep``, ``to_xarray``, :mod:`bitjax.analysis.metrics`) with the paper's recipe
(AdamW, lr 1e-3, weight decay 0.01, batch 1024, 10,000 steps unless a docstring says
otherwise) and asserts the number or configuration the paper (or its notebook) published,
with a tolerance justified in the test. A test fails when the anchor is not reproduced, not
merely when training crashes.

Run with ``python -m pytest tests/experiments/test_reproduction.py -m slow``. The anchor tests
(all but the last three) were measured at 1,077 s wall, 165 s of CPU together in one
process; every anchor docstring states the test's own
runtime (pytest's call duration, and the CPU time of the pytest process when it ran alone)
measured under ``nice -n 5`` on the 2-core development CPU while a long training run and
other jobs kept it busy (load average 3-4.5), so the niced test got a fifth of the CPU or
less: wall times are five times the CPU times or more, and an idle machine needs little
more than the CPU time.

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model, and its notebook ``toy_models.ipynb``
  (anthropics/toy-models-of-superposition).

The last three tests train reduced but faithful versions of published setups in memory
(a Trainer, no run folder) and check the published numbers (several minutes on a 2-core
CPU).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bitjax import SweepConfig, load_sweep, run_sweep
from bitjax.analysis import metrics
from bitjax.analysis.results import LoadedSweep, best_instance
from bitjax.layers import effective_weights_host
from bitjax.train.trainer import Trainer

pytestmark = pytest.mark.slow


def _train(cfg: SweepConfig, out: Path) -> LoadedSweep:
    """Train ``cfg`` into the run folder ``out`` with :func:`bitjax.run_sweep` and load it.

    Args:
      cfg: the sweep (dense only in this module).
      out: a fresh run folder.

    Returns:
      The finished sweep as :func:`bitjax.load_sweep` gives it.
    """
    # One checkpoint at the end: intermediate Orbax writes only cost time here.
    result = run_sweep(cfg, out, handle_signals=False, checkpoint_every=cfg.steps)
    assert result.finished and result.step == cfg.steps
    sweep = load_sweep(out)
    # An instance that diverged would silently drop out of best-of-seed picks below.
    assert not sweep.diverged.any(), f"diverged instances: {np.flatnonzero(sweep.diverged)}"
    return sweep


def _best_seed(sweep: LoadedSweep) -> dict[float, int]:
    """Instance index of the lowest-final-loss seed per feature probability (dense only)."""
    best = best_instance(sweep.to_xarray(), "seed").squeeze(drop=True)
    return {float(p): int(best.sel(feature_probability=p))
            for p in best["feature_probability"].values}


def test_intro_dense_two_orthogonal_features_then_pentagon(tmp_path):
    """Intro (n=5, m=2, I_i = 0.9^i): two orthogonal features at 1-S = 1, a pentagon at
    1-S = 0.05.

    Anchor (spec section 5.1; the paper's introduction figure): dense data gives the two
    most important features orthogonal directions and drops the other three; at high
    sparsity (1-S <= ~0.07) all five are represented in a pentagon. The paper keeps the best
    of several restarts, so the best of 8 seeds by final loss is checked.

    Tolerances: the configuration is named by :func:`bitjax.analysis.metrics.geometry_m2` (angles
    within 10 degrees, equal norms within 20%); the pentagon's feature dimensionalities
    must be 2/5 within 0.02 (the cluster tolerance of
    :func:`bitjax.analysis.metrics.dimensionality_labels`; measured 0.396-0.406); at 1-S = 1
    ``|W_0 . W_1| < 0.05`` and dropped norms < 0.05 (measured 1e-4 and 0.008 for the best
    seed, at most 0.0015 and 0.02 over the 8 seeds: what weight decay has not yet removed of
    the initial weights). Measured with these seeds: every seed
    is "two_orthogonal" at 1-S = 1; at 1-S = 0.05 six of eight are pentagons (loss
    0.0012-0.0016) and two are two antipodal pairs (loss 0.0025), so the best seed is a
    pentagon by a wide loss margin, and would be unless all eight restarts missed it
    (211 of 240 seeds find it in results/intro).

    Runtime: 5-66 s wall (two runs), 17 s CPU (16 instances x 10,000 steps) under load.
    """
    cfg = SweepConfig(n_features=5, n_hidden=2, importance=(0.9,), seed=tuple(range(8)),
                      feature_probability=(1.0, 0.05), steps=10_000, batch_size=1024)
    sweep = _train(cfg, tmp_path / "intro")
    m = sweep.metrics()
    labels = metrics.GEOMETRY_M2_LABELS
    best = _best_seed(sweep)

    dense = best[1.0]
    w = sweep.W_eff[dense]
    assert labels[m["geometry_m2"][dense]] == "two_orthogonal", labels[m["geometry_m2"][dense]]
    norms = m["norm"][dense]
    # The two most important features are the ones kept, at unit norm, orthogonal.
    np.testing.assert_allclose(norms[:2], 1.0, atol=0.05)
    assert np.all(norms[2:] < 0.05), norms
    assert abs(float(w[:, 0] @ w[:, 1])) < 0.05

    sparse = best[0.05]
    assert int(m["n_represented"][sparse]) == 5, m["norm"][sparse]
    assert labels[m["geometry_m2"][sparse]] == "pentagon", labels[m["geometry_m2"][sparse]]
    np.testing.assert_allclose(m["dimensionality"][sparse], 2 / 5, atol=0.02)


def test_sparsity_dense_drops_features_with_bias_at_their_mean(tmp_path):
    """Sparsity (n=20, m=5, I_i = 0.7^i, ReLU): at 1-S = 1 the model is the linear one, and
    every dropped feature's bias is its mean (1-S)/2, at 1-S = 1 and at 1-S = 0.3.

    Anchor (spec section 5.2): the dense ReLU model at 1-S = 1 equals the linear model: the
    top m = 5 features in an identity block of W^T W with b = 0, the other 15 dropped with
    b = E[x_i] = (1-S)/2. Why (1-S)/2, for any sparsity: a dropped feature has W_i = 0, so
    its output is ReLU(b_i) whatever the input, and its loss term I_i E[(x_i - ReLU(b_i))^2]
    is minimised by ReLU(b_i) = E[x_i] = (1-S) E[U[0,1)] = (1-S)/2 (the importance only
    scales it). At 1-S = 0.3 some features beyond the top 5 are already superposed (7-8
    represented here), but the still-dropped ones (||W_i|| <= 0.5, all with ||W_i|| < 0.01)
    must again sit at 0.15.

    Tolerances, from the sampling noise the optimiser sees: the bias gradient is driven by
    a batch mean of x_i, whose standard deviation is sqrt(Var x_i / 1024) = 0.009 at
    1-S = 1 (Var = 1/12) and 0.0087 at 1-S = 0.3 (Var = p/3 - p^2/4); Adam's normalised
    steps of size ~lr = 1e-3 make each bias wander around the optimum. Measured with these
    4 seeds (15 dropped features each at 1-S = 1, 12-13 at 0.3): standard deviation 0.0017
    and 0.0021, largest deviation 0.0057, per-seed means within 0.0011 of (1-S)/2. Each
    dropped bias must be within 0.015 of (1-S)/2 (about 7 standard deviations), and their
    per-seed mean within 0.002 (the features are drawn independently, so the mean's
    standard deviation is about 0.002 / sqrt(12) = 0.0006); decoupled weight decay on b
    shifts the equilibrium by about wd * 0.009 = 1e-4, well inside. Kept biases at
    1-S = 1 must be within 0.015 of 0 (measured within 0.003), the identity block within
    0.05 (measured 0.003) and dropped norms below 0.05 (measured 0.008).

    Runtime: 66-127 s wall (two runs), 26 s CPU (8 instances x 10,000 steps) under load.
    """
    m_hidden = 5
    cfg = SweepConfig(n_features=20, n_hidden=m_hidden, importance=(0.7,),
                      seed=tuple(range(4)), feature_probability=(1.0, 0.3), steps=10_000,
                      batch_size=1024)
    sweep = _train(cfg, tmp_path / "sparsity")
    ds = sweep.to_xarray().squeeze(drop=True)  # dims: seed, feature_probability, feature, ...
    threshold = ds.attrs["threshold"]
    for p in (1.0, 0.3):
        cell = ds.sel(feature_probability=p)
        for seed in cell["seed"].values:
            one = cell.sel(seed=seed)
            norms, bias = one["norm"].values, one["bias"].values
            dropped = norms <= threshold
            where = f"1-S={p}, seed {seed}: norms {norms.round(3)}, biases {bias.round(4)}"
            assert np.all(norms[dropped] < 0.05), where
            np.testing.assert_allclose(bias[dropped], p / 2, atol=0.015, err_msg=where)
            assert abs(bias[dropped].mean() - p / 2) < 0.002, where
            if p == 1.0:
                # The linear model's solution: the top m features, identity block, b = 0.
                assert int(one["n_represented"]) == m_hidden, where
                assert np.array_equal(~dropped, np.arange(20) < m_hidden), where
                w = one["W_eff"].transpose("hidden", "feature").values[:, :m_hidden]
                np.testing.assert_allclose(w.T @ w, np.eye(m_hidden), atol=0.05,
                                           err_msg=where)
                np.testing.assert_allclose(bias[:m_hidden], 0.0, atol=0.015, err_msg=where)


def _longest_run(ok: np.ndarray) -> int:
    """Length of the longest run of consecutive True values in a 1-D boolean array."""
    best = run = 0
    for v in ok:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def test_uniform_dense_dims_per_feature_sticks_at_one_half(tmp_path):
    """Uniform importance (notebook size n=200, m=20): D* = m / ||W||_F^2 is 1 at 1-S = 1 and
    sits on the 1/2 plateau (antipodal pairs) over 1/(1-S) = 2.2-3.5.

    Anchor (spec section 5.3): the notebook's run (n=200, m=20, 1/(1-S) = 20^(k/19), one
    model per sparsity) gave D* = 1.00 at the dense end and 0.526, 0.510, 0.505, 0.503 at
    1/(1-S) = 2.2, 2.6, 3.0, 3.5. The same four grid points are trained here (plus 1-S = 1).

    Tolerances: D*(1-S = 1) within 0.02 of 1 (the dense model keeps m features at unit
    norm; weight decay and noise leave norms within 1%). On the plateau at least three
    consecutive of the four points must lie in [0.47, 0.53], i.e. within 0.03 of 1/2: a
    plateau, not a curve passing through 1/2 (on either side it moves by about 0.06-0.1 per
    grid step: 0.585 at 1.9 and 0.450 at 4.1 measured). Three of four, because the first
    point (2.2) is where the plateau starts and the notebook itself had 0.526 there;
    measured here with seed 0: 0.5255, 0.5103, 0.5047, 0.4896.

    Runtime: 425-547 s wall (two runs), 88 s CPU (5 instances x 10,000 steps) under load.
    """
    inv_p = 20.0 ** (np.arange(5, 9) / 19)  # 2.20, 2.58, 3.02, 3.53
    cfg = SweepConfig(n_features=200, n_hidden=20, importance=(1.0,), seed=(0,),
                      feature_probability=(1.0, *(float(1 / x) for x in inv_p)),
                      steps=10_000, batch_size=1024)
    sweep = _train(cfg, tmp_path / "uniform")
    d_star = sweep.to_xarray()["dims_per_feature"].squeeze(drop=True)
    d_star = d_star.sortby("feature_probability", ascending=False).values  # dense first
    assert abs(d_star[0] - 1.0) < 0.02, d_star
    plateau = d_star[1:]
    assert _longest_run((plateau >= 0.47) & (plateau <= 0.53)) >= 3, (inv_p, plateau)


def test_notebook_count_of_represented_features_grows_from_m_to_about_50(tmp_path):
    """Notebook variant of the sparsity sweep (n=100, m=20, I = 100^-linspace(0, 1, n)):
    20 features represented at 1-S = 1, about 50 at 1-S = 0.059.

    Anchor (spec section 5.2): the notebook trained 20 instances at 1-S = 20^-linspace(0, 1,
    20); the count of features with ||W_i|| > 0.5 at every other one was 20, 21, 24, 30,
    33, 37, 40, 43, 47, 50 as 1-S went from 1 to 20^(-18/19) = 0.0585 (the spec's 0.059).
    Both ends are trained here, with two seeds.

    Tolerances: exactly m = 20 at 1-S = 1 (dense data: the top m features, nothing in
    superposition; every seed measured 20). At 1-S = 0.0585, 50 +- 3: the notebook's
    number is one model with another initialisation (Xavier over its whole 3-D tensor), so
    it carries the seed-to-seed spread. Measured over the whole curve with seeds 0 and 1
    (10,000 steps): 20 20 23 30 35 39 41 42 46 51 and 20 20 24 29 34 39 40 44 47 51, i.e.
    seeds differ by at most 2 and differ from the notebook by at most 2 (39 vs 37), and 51
    at the sparse end; 3 features (6%) allows that spread with a margin but still fails a
    model that stalls in the 40s (not converged) or over-represents.

    Runtime: 189-225 s wall (two runs), 36 s CPU (4 instances x 10,000 steps) under load.
    """
    importance = tuple(float(v) for v in 100.0 ** -np.linspace(0.0, 1.0, 100))
    p_sparse = float(20.0 ** (-18 / 19))
    cfg = SweepConfig(n_features=100, n_hidden=20, importance=(importance,), seed=(0, 1),
                      feature_probability=(1.0, p_sparse), steps=10_000, batch_size=1024)
    sweep = _train(cfg, tmp_path / "count")
    n_rep = sweep.to_xarray()["n_represented"].squeeze(drop=True)  # (seed, probability)
    dense = n_rep.sel(feature_probability=1.0).values
    sparse = n_rep.sel(feature_probability=p_sparse).values
    assert np.all(dense == 20), dense
    assert np.all(np.abs(sparse - 50) <= 3), sparse


def test_phase_n2m1_dense_best_restart_matches_closed_form(tmp_path):
    """Phase change, n=2, m=1 (importance (1, r)): the best of 10 restarts per cell is in
    the phase the closed form predicts.

    Anchor (spec section 5.5): comparing the losses of the idealised solutions (extra
    feature dropped with its bias at its mean, given the dimension, or antipodal with
    feature 1; :func:`bitjax.analysis.representable.idealised_n2m1`), superposition wins below
    1-S = 4r/(2+5r) for r <= 1 and 4/(5+2r) for r >= 1, elsewhere the more important
    feature keeps the dimension. The paper trains 10 models per cell; an 8 x 8 grid
    (r log-spaced 0.1..10, 1-S log-spaced 0.01..1, as :func:`experiments.phase.grid`) with
    10 restarts of the paper's recipe is trained here and the best restart of each cell is
    classified with :func:`bitjax.analysis.metrics.extra_feature_phase`.

    Tolerances: every cell more than one grid step (a factor 1.93 in density) from the
    superposition boundary must agree (48 cells); over all 64 cells at least 90% must agree.
    Near the boundary the closed form is only approximate: the learned solutions there use
    their biases and beat the idealised losses (the median best loss is 0.74 of the
    idealised optimum), so superposition wins slightly above the curve, and the spec notes
    that real minima blur near the triple point. Measured: 100% away from the boundary and
    60 of 64 cells (0.94) overall; all 4 misses are superposed cells just above the curve.
    Single restarts agree in only 79% of cells (at r near 1 only 40% of restarts reach the
    superposed optimum), which is why the best of 10 is used, as in the paper.

    Runtime: 223-226 s wall (two runs), 44 s CPU (640 instances x 10,000 steps) under
    load.
    """
    from bitjax.analysis.metrics import EXTRA_PHASES, extra_feature_phase
    from bitjax.analysis.representable import closed_form_boundary, idealised_n2m1
    from experiments.phase import grid

    rs, ps = grid(8, 8)
    cfg = SweepConfig(n_features=2, n_hidden=1, importance=tuple((1.0, float(r)) for r in rs),
                      seed=tuple(range(10)), feature_probability=tuple(float(p) for p in ps),
                      steps=10_000, batch_size=1024)
    sweep = _train(cfg, tmp_path / "phase")
    best = best_instance(sweep.to_xarray(), "seed").squeeze(drop=True)
    best = best.transpose("importance", "feature_probability").values  # [r, p] instances
    codes = extra_feature_phase(sweep.W_eff[best.ravel()])
    phase = np.asarray(EXTRA_PHASES)[codes].reshape(best.shape)
    rr, pp = np.meshgrid(rs, ps, indexing="ij")
    predicted = idealised_n2m1(rr, pp)["phase"]
    assert set(np.unique(predicted)) == {"dropped", "dedicated", "superposed"}
    step = np.log(ps[1] / ps[0])
    away = np.abs(np.log(pp) - np.log(closed_form_boundary(rr))) > step
    match = phase == predicted
    table = "\n".join(" ".join(f"{a[:4]}/{b[:4]}" for a, b in zip(row_p, row_t, strict=True))
                      for row_p, row_t in zip(phase.T[::-1], predicted.T[::-1], strict=True))
    msg = f"trained/closed form, rows 1-S = 1 -> 0.01, columns r = 0.1 -> 10:\n{table}"
    assert match[away].all(), msg
    assert match.mean() >= 0.9, msg


def _train_in_memory(cfg: SweepConfig):
    tr = Trainer(cfg)
    state = tr.run(tr.init_state())
    host = tr.to_host(state)
    w = effective_weights_host(cfg, host["params"], tr.instances.quantizer)
    return tr, w, tr.evaluate(state)


def test_uniform_dense_dims_per_feature_sticks_at_one_half_in_a_reduced_run():
    """Notebook: D* = 1.00 dense, then a plateau at ~0.5 (0.526-0.503) over 1/(1-S) 2.2-3.5."""
    inv_p = (1.0, 2.2, 2.7, 3.3)
    cfg = SweepConfig(n_features=100, n_hidden=10, seed=(0, 1),
                      feature_probability=tuple(1 / x for x in inv_p), steps=6000)
    _, w, _ = _train_in_memory(cfg)
    d = np.asarray(metrics.all_metrics(w)["dims_per_feature"]).reshape(2, len(inv_p))
    assert np.all(np.abs(d[:, 0] - 1.0) < 0.05), d
    assert np.all((d[:, 1:] > 0.47) & (d[:, 1:] < 0.57)), d


def test_intro_dense_two_features_dense_and_pentagon_sparse():
    """Paper: dense -> two orthogonal features; 1-S <= ~0.07 -> all five, pentagon-like."""
    cfg = SweepConfig(n_features=5, n_hidden=2, seed=tuple(range(10)),
                      feature_probability=(1.0, 0.05), importance=(0.9,), steps=10_000)
    tr, w, loss = _train_in_memory(cfg)
    m = metrics.all_metrics(w)
    p = tr.instances.coords["feature_probability"]
    best_dense = np.flatnonzero(p == 1.0)[np.argmin(loss[p == 1.0])]
    best_sparse = np.flatnonzero(p == 0.05)[np.argmin(loss[p == 0.05])]
    assert int(m["n_represented"][best_dense]) == 2
    gram = w[best_dense].T @ w[best_dense]
    assert abs(gram[0, 1]) < 0.05  # the two most important, orthogonal
    assert int(m["n_represented"][best_sparse]) == 5
    np.testing.assert_allclose(m["dimensionality"][best_sparse], 0.4, atol=0.08)


def test_phase_dense_matches_closed_form_boundary(tmp_path):
    """n=2, m=1: the dense best-restart phase agrees with the closed-form boundary."""
    from experiments import _cli, phase

    assert _cli.main(phase.EXPERIMENT, ["--preset", "quick", "--out", str(tmp_path),
                                        "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "phase_summary.csv")))
    dense = next(r for r in rows if r["part"] == "n2m1" and r["kind"] == "dense")
    assert float(dense["agreement_away"]) >= 0.9
    assert float(dense["agreement_all"]) >= 0.85
