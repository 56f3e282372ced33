"""Known answers for bitjax.analysis.representable: alignability, realisations, exact optima."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bitjax import data
from bitjax.analysis import metrics
from bitjax.analysis import representable as rep


def _rot(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _pentagon(n: int = 5) -> np.ndarray:
    a = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)])


# ----------------------------------------------------------------------------- alignability


def test_alignable_tells_antipodal_pairs_from_pentagon():
    pairs = _rot(17.0) @ np.array([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0, 0.0]])
    al = rep.alignable(np.stack([pairs, _pentagon()]))
    assert al.alignable.tolist() == [True, False]
    assert al.n_groups.tolist() == [2, 5]
    assert al.n_represented.tolist() == [4, 5]
    assert al.group[0].tolist() == [0, 0, 1, 1, -1]
    assert bool(al.equal_norms[0])


def test_alignable_tolerance_is_the_stated_angle():
    # Two features 90 + delta degrees apart: alignable iff delta is within the tolerance.
    def two(delta):
        return np.stack([[1.0, 0.0], [0.0, 0.0]], 0) * 0 + np.array(
            [[1.0, np.cos(np.radians(90 + delta))], [0.0, np.sin(np.radians(90 + delta))]])

    tol = rep.DEFAULT_ANGLE_TOL_DEG
    al = rep.alignable(np.stack([two(0.6 * tol), two(1.4 * tol)]))
    assert al.alignable.tolist() == [True, False]
    np.testing.assert_allclose(al.max_angle_error_deg, [0.6 * tol, 1.4 * tol], atol=1e-3)
    # A looser tolerance accepts the second one.
    assert bool(rep.alignable(two(1.4 * tol), angle_tol_deg=2 * tol).alignable)


def test_alignable_counts_groups_against_m_and_ignores_dropped_features():
    three_dirs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w = np.zeros((2, 3, 3))
    w[0] = three_dirs  # m=3: three orthogonal features
    w[1, :, :2] = three_dirs[:, :2]  # a dropped third feature (norm 0)
    al = rep.alignable(w)
    assert al.alignable.tolist() == [True, True]
    assert al.group[1].tolist() == [0, 1, -1]
    # Unequal norms are alignable but not equal-norm.
    assert not bool(rep.alignable(np.array([[1.0, 0.0], [0.0, 0.7]])).equal_norms)


def test_ternary_realisation_of_a_rotated_antipodal_solution_is_exactly_gamma_t():
    base = 0.9 * np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    q = rep.ternary_realisation((_rot(33.0) @ base)[None])[0]
    t = np.sign(q)
    # The quantizer's own scale: absmean of 4 non-zeros of 0.9 among 8 entries.
    np.testing.assert_allclose(q, 0.45 * t, rtol=1e-5)
    np.testing.assert_array_equal(t.T @ t, np.sign(base).T @ np.sign(base))
    att = rep.attainable_loss((_rot(33.0) @ base)[None], np.zeros((1, 4)), np.full((1, 4), .2),
                              np.ones((1, 4)), data.FeatureStructure(4),
                              sample_kw={"n_per_mask": 64})
    # The refit scale is the loss-optimal one (about 1 for an antipodal pair at this
    # density), not the quantizer's absmean 0.45.
    assert 0.85 < att.ternary_scale[0] < 1.15


# ----------------------------------------------------------------------------- samples and fits


def test_mask_probabilities_match_the_bitjax_sampler():
    import jax

    for st in (data.FeatureStructure(4, correlated_sets=2),
               data.FeatureStructure(4, anticorrelated_sets=2),
               data.FeatureStructure(4, anticorrelated_sets=2, anticorrelated_mode="arena"),
               data.FeatureStructure(3)):
        p = np.array([0.3, 0.3, 0.2, 0.2]) if st.n_features == 4 else np.array([0.5, .2, .1])
        x = np.asarray(data.sample_features(jax.random.key(3), p, 200_000, st))
        masks = rep._allowed_masks(st)
        probs = rep.mask_probabilities(st, masks, p)
        assert probs.sum() == pytest.approx(1.0)
        seen = x > 0
        for mk, pr in zip(masks, probs, strict=True):
            freq = np.mean(np.all(seen == mk, axis=1))
            assert freq == pytest.approx(pr, abs=4e-3), (st, mk)


def test_exact_bias_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    x = (rng.random((400, 3)) * (rng.random((400, 3)) < 0.4)).astype(np.float32)
    k = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    w = np.full(400, 1 / 400, np.float32)
    imp = np.array([1.0, 0.8, 0.5], np.float32)
    fit = rep.fit_scale_and_bias(k[None], x, w, imp)
    s = float(fit.scale[0])
    # Brute force over the bias on a fine grid at the fitted scale.
    grid = np.linspace(-1.0, 1.0, 40001)[:, None]
    y = x @ (s * k)
    best = [np.min(np.sum(w * (x[:, i] - np.maximum(y[:, i] + grid, 0)) ** 2, axis=1))
            for i in range(3)]
    assert fit.loss[0] == pytest.approx(np.mean(imp * best), rel=1e-4)
    assert fit.loss[0] <= np.mean(imp * best) * (1 + 1e-5)
    # The fitted model evaluated by the plain forward pass gives the same loss.
    ww = np.sqrt(s) * np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    direct = rep.sample_loss(ww[None], fit.bias, x, w, imp)
    assert direct[0] == pytest.approx(fit.loss[0], rel=1e-4)


def test_identity_and_antipodal_pair_realise_the_dense_loss():
    # Dense optima that are exactly ternary: the identity (dense end) and an antipodal pair.
    st = data.FeatureStructure(4)
    w_id = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    w_pair = _rot(20.0) @ np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    W = np.stack([w_id, w_pair])
    p = np.array([[1.0] * 4, [0.1] * 4])
    imp = np.array([0.9 ** np.arange(4)] * 2)
    # Each dense solution with its exact bias on the same sample (the dense reference).
    x, w = rep.instance_samples(st, p, n_per_mask=256)
    g = np.einsum("imk,imj->ikj", W, W)
    dense = rep.fit_scale_and_bias(g, x, w, imp, log10_range=(0.0, 0.0), n_grid=5,
                                   n_golden=8).loss
    att = rep.attainable_loss(W, np.zeros((2, 4)), p, imp, st, sample_kw={"n_per_mask": 256})
    assert att.alignment.alignable.all()
    np.testing.assert_allclose(att.dense_refit, dense, rtol=1e-5)
    # The realisation can only match or beat the dense solution (its scale is refit too).
    assert np.all(att.ternary <= dense * (1 + 1e-5))
    np.testing.assert_allclose(att.ternary, dense, rtol=2e-3)
    np.testing.assert_allclose(att.ternary_scale, [1.0, 1.0], rtol=2e-2)


def test_attainable_of_a_pentagon_is_worse_than_dense():
    st = data.FeatureStructure(5)
    p = np.full((1, 5), 0.05)
    imp = np.ones((1, 5))
    att = rep.attainable_loss(_pentagon()[None], np.full((1, 5), -0.3), p, imp, st,
                              sample_kw={"n_per_mask": 128})
    assert not att.alignment.alignable[0]
    assert att.ternary[0] > att.dense_refit[0]


# ----------------------------------------------------------------------------- enumeration


def test_gram_enumeration_counts():
    gs = rep.enumerate_grams(5, 2)
    assert gs.n_patterns == 59_049
    assert len(gs.grams) == 7_503
    assert gs.counts.sum() == 59_049
    # Sign flip of a hidden unit and swapping hidden units never change the Gram.
    t = gs.patterns[1234].astype(int)
    for t2 in (t[::-1], t * np.array([[-1], [1]])):
        assert any(np.array_equal(t2.T @ t2, g) for g in gs.grams.astype(int))


def test_n2m1_exact_optimum_matches_the_idealised_closed_form():
    # Cells far from the phase boundaries and from the high-density "confused" region, where
    # the idealised solutions are the optima: each phase and its loss must come out.
    dens = np.array([0.01, 0.05, 0.6])
    rs = np.array([0.2, 5.0])
    p = np.repeat(dens[:, None], 2, 1)
    imp = np.stack([np.ones(2), rs], 1)
    ex = rep.exact_optimum(data.FeatureStructure(2), 1, p, imp, n_per_mask=1024)
    cf = rep.idealised_n2m1(rs[None, :], dens[:, None])
    w = (ex.pattern * ex.scale[..., None, None]).reshape(-1, 1, 2)
    phase = np.asarray(metrics.EXTRA_PHASES)[metrics.extra_feature_phase(w)].reshape(3, 2)
    np.testing.assert_array_equal(phase, cf["phase"])
    np.testing.assert_allclose(ex.loss, cf["best"], rtol=0.02)
    # Dropped/dedicated: one feature exactly, the other's bias at its mean (scale 1).
    np.testing.assert_allclose(ex.scale[2], 1.0, rtol=1e-3)


def test_exact_optimum_finds_a_planted_optimum():
    # Anticorrelated pairs never fire together: two antipodal pairs on the axes reconstruct
    # every sample exactly (loss 0), so that pattern class must win with loss ~0.
    st = data.FeatureStructure(4, anticorrelated_sets=2)
    ex = rep.exact_optimum(st, 2, np.full((1, 4), 0.3), np.ones(4), n_per_mask=128)
    t = ex.pattern[0, 0].astype(int)
    assert ex.loss[0, 0] < 1e-6
    assert ex.runner_up[0, 0] > 1e-4
    g = t.T @ t
    assert g[0, 1] < 0 and g[2, 3] < 0  # pair members antipodal
    assert g[0, 2] == g[0, 3] == g[1, 2] == g[1, 3] == 0  # pairs orthogonal
    assert rep.configuration_name(t * 1.0) == "two antipodal pairs on the axes"


def _check_no_optimum_lost(n: int, m: int, p: np.ndarray, imp: np.ndarray, chunk: int):
    # Fit every pattern directly (no Gram reduction, no column canonicalisation) and compare.
    st = data.FeatureStructure(n)
    ex = rep.exact_optimum(st, m, p, imp, n_per_mask=128)
    pats = np.array(list(itertools.product((-1, 0, 1), repeat=m * n)), float).reshape(-1, m, n)
    k = np.einsum("pki,pkj->pij", pats, pats)
    sample = rep.make_sample(st, p, n_per_mask=128)
    for d in range(len(p)):
        full = rep.fit_scale_and_bias(k, sample.x, sample.w[d], imp, n_grid=41,
                                      log10_range=(-1.5, 1.0), n_golden=12, chunk=chunk)
        assert ex.loss[d, 0] <= full.loss.min() * (1 + 1e-3)
        assert ex.loss[d, 0] == pytest.approx(full.loss.min(), rel=1e-3)


def test_symmetry_reduction_loses_no_optimum():
    # n=2, m=2: all 81 patterns, 0 features dropped to both superposed across densities.
    _check_no_optimum_lost(2, 2, np.array([[0.05] * 2, [0.7] * 2]), np.array([1.0, 0.5]), 81)


@pytest.mark.slow
def test_symmetry_reduction_loses_no_optimum_n3m2():
    _check_no_optimum_lost(3, 2, np.array([[0.05] * 3, [0.4] * 3]), np.array([1.0, 1.0, 0.6]),
                           243)


def test_configuration_names():
    # The configuration is metrics.geometry_m2's, in its words; a lattice pattern of two
    # antipodal pairs also names its frame.
    assert rep.configuration_name(np.array([[1.0, 0, 0], [0, 1.0, 0]])) == "two orthogonal"
    assert rep.configuration_name(_pentagon()) == "pentagon"
    diag = np.array([[1.0, -1, 1, -1, 0], [1.0, -1, -1, 1, 0]])
    assert rep.configuration_name(diag) == "two antipodal pairs on the diagonals"
    fan = np.array([[1.0, 1, 0], [0.0, 1, 1]])
    assert rep.configuration_name(fan) == "fan"
    assert rep.configuration_name(np.array([[1.0, -1, 0], [0, 0, 1.0]])) == "pair plus one"
    # Off the lattice (unequal magnitudes) two antipodal pairs have no frame.
    square = np.array([[1.0, -1, 0, 0, 0], [0, 0, 0.9, -0.9, 0]])
    assert rep.configuration_name(square) == "two antipodal pairs"
    assert rep.lattice_frame(square) == ""
    with pytest.raises(ValueError, match=r"shape \[2, n\]"):
        rep.configuration_name(np.ones((3, 4)))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="angle_tol_deg"):
        rep.alignable(np.ones((2, 3)), angle_tol_deg=60)
    with pytest.raises(ValueError, match="activation"):
        rep.fit_scale_and_bias(np.ones((1, 2, 2)), np.ones((4, 2)), np.ones(4) / 4,
                               np.ones(2), activation="tanh")
    with pytest.raises(ValueError, match="n <= "):
        rep.exact_optimum(data.FeatureStructure(9), 2, np.full(9, 0.1), np.ones(9))
    with pytest.raises(ValueError, match="probabilities"):
        rep.make_sample(data.FeatureStructure(2), [0.0, 0.5])


@pytest.mark.slow
def test_exact_intro_solutions_are_not_worse_than_the_committed_dense_at_the_dense_end():
    # At 1 - S = 1 the dense optimum (two orthogonal features) is exactly ternary.
    st = data.FeatureStructure(5)
    ex = rep.exact_optimum(st, 2, np.ones((1, 5)), 0.9 ** np.arange(5), n_per_mask=256)
    assert rep.configuration_name(ex.pattern[0, 0] * 1.0) == "two orthogonal"
    # Two features perfect, three at their variance 1/12: mean over 5 of I_i/12.
    expected = np.sum(0.9 ** np.arange(2, 5) / 12) / 5
    assert ex.loss[0, 0] == pytest.approx(expected, rel=1e-2)


# ---- the n=2, m=1 closed form --------------------------------------------------------------


def test_closed_form_boundary_known_values():
    b = rep.closed_form_boundary
    assert float(b(1.0)) == pytest.approx(4 / 7)
    assert float(b(1.0)) == pytest.approx(0.5714, abs=1e-4)
    assert float(b(0.1)) == pytest.approx(0.16)
    assert float(b(10.0)) == pytest.approx(0.16)
    # Continuous at r=1 and symmetric in log r up to the 1/r importance scaling.
    assert float(b(1 - 1e-9)) == pytest.approx(float(b(1 + 1e-9)))
    r = np.geomspace(0.1, 10, 50)
    assert np.all(b(r) <= 4 / 7 + 1e-12)


@pytest.mark.parametrize("r", [0.1, 0.3, 0.9, 1.0, 1.5, 4.0, 10.0])
def test_boundary_is_where_the_idealised_losses_cross(r):
    p = float(rep.closed_form_boundary(r))
    L = rep.idealised_n2m1(r, p)
    nonsup = min(L["dropped"], L["dedicated"])
    assert float(L["superposed"]) == pytest.approx(float(nonsup), rel=1e-9)
    below = rep.idealised_n2m1(r, 0.9 * p)
    above = rep.idealised_n2m1(r, min(1.0, 1.1 * p))
    assert below["superposed"] < min(below["dropped"], below["dedicated"])
    assert above["superposed"] > min(above["dropped"], above["dedicated"])
    assert str(below["phase"]) == "superposed" and str(above["phase"]) != "superposed"


def test_idealised_losses_match_monte_carlo():
    """In bitjax's units: the mean over features of the importance-weighted error."""
    rng = np.random.default_rng(0)
    r, p, n = 0.5, 0.3, 400_000
    u = rng.random((n, 2))
    x = np.where(u < p, u / p, 0.0)
    imp = np.array([1.0, r])

    def loss(w, b):
        out = np.maximum((x @ w.T) @ w + b, 0.0)
        return np.mean(imp * (x - out) ** 2)

    L = rep.idealised_n2m1(r, p)
    assert loss(np.array([[1.0, -1.0]]), np.zeros(2)) == pytest.approx(L["superposed"], rel=0.03)
    assert loss(np.array([[1.0, 0.0]]), np.array([0, p / 2])) == pytest.approx(
        L["dropped"], rel=0.03)
    assert loss(np.array([[0.0, 1.0]]), np.array([p / 2, 0])) == pytest.approx(
        L["dedicated"], rel=0.03)
    assert L["best"] == min(L["superposed"], L["dropped"], L["dedicated"])
