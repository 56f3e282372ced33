"""Known answers for bitjax.analysis.estimator: stratified losses against exact values."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax import data
from bitjax.analysis import estimator as est
from bitjax.analysis import representable as rep

N, M = 5, 2
IMP = 0.9 ** np.arange(N)
PAIRS = np.array([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0, 0.0]])
C = 0.2  # the dropped fifth feature's bias


def _pairs_exact(p: float) -> float:
    """Intro model with two antipodal pairs (bias 0) and a dropped fifth feature (bias C).

    A pair member's error is min(x_a, x_b) when both fire (E[min^2] = 1/6 for two uniforms),
    else 0; the dropped feature's is E[(x - C)^2] = (1 - p) C^2 + p (1/3 - C + C^2)."""
    pair = p * p / 6.0
    drop = (1 - p) * C * C + p * (1.0 / 3.0 - C + C * C)
    return float((IMP[:4].sum() * pair + IMP[4] * drop) / N)


@pytest.mark.parametrize("by_mask", [True, False])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_intro_pairs_match_the_closed_form_within_the_stated_error(p, by_mask):
    s = est.make_estimator_sample(data.FeatureStructure(N), np.full((1, N), p),
                                  n_per_mask=256, n_draws=4096, by_mask=by_mask)
    b = np.array([[0, 0, 0, 0, C]], np.float32)
    e = est.estimate_loss(PAIRS[None], b, IMP, s)
    exact = _pairs_exact(p)
    # Stated error: the standard error; 4 SE covers the estimate with near certainty, and the
    # standard error is a small fraction of the loss even at the sparse end.
    assert abs(e.loss[0] - exact) <= 4 * e.se[0]
    assert e.se[0] < 0.03 * exact


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_pentagon_matches_an_enumeration_of_active_sets(p):
    # Reference: every activity mask enumerated with its exact probability and integrated by
    # 4,096 scrambled Sobol' points per mask (error far below the estimator's SE).
    st = data.FeatureStructure(N)
    a = 2 * np.pi * np.arange(N) / N
    W = np.stack([np.cos(a), np.sin(a)])[None].astype(np.float32)
    b = np.full((1, N), -0.1, np.float32)
    ref_x, ref_w = rep.instance_samples(st, np.full((1, N), p), n_per_mask=4096)
    ref = rep.sample_loss(W, b, ref_x, ref_w, IMP)[0]
    for by_mask in (True, False):
        s = est.make_estimator_sample(st, np.full((1, N), p), n_per_mask=256, n_draws=4096,
                                      by_mask=by_mask, seed=3)
        e = est.estimate_loss(W, b, IMP, s)
        assert abs(e.loss[0] - ref) <= 4 * e.se[0], (by_mask, e, ref)


def test_count_strata_have_the_stated_law():
    st = data.FeatureStructure(12, correlated_sets=2, correlated_size=3)
    p = np.full(12, 0.2)
    # Units: two sets and six independent features, eight in all; binomial(8, 0.2).
    from math import comb

    law = est.count_distribution(st, p)
    np.testing.assert_allclose(law, [comb(8, k) * 0.2**k * 0.8 ** (8 - k) for k in range(9)])
    s = est.make_estimator_sample(st, p[None], n_draws=2048, n_min=32, by_mask=False)
    x, w, k = s.x[0], s.w[0], s.stratum[0]
    on = x > 0
    units = on[:, 0].astype(int) + on[:, 3] + on[:, 6:].sum(1)
    live = w > 0
    np.testing.assert_array_equal(units[live], k[live])  # exactly k active units per draw
    # A correlated set fires as a whole.
    assert np.all(on[live, 0:3].all(1) | ~on[live, 0:3].any(1))
    # Stratum weights add up to its probability; all of them to 1 - dropped.
    for kk in range(9):
        if law[kk] >= est.DEFAULT_MIN_STRATUM_PROB:
            np.testing.assert_allclose(w[k == kk].sum(), law[kk], rtol=1e-5)
    np.testing.assert_allclose(w.sum(), 1.0 - s.dropped[0], rtol=1e-5)


def test_strata_drawn_together_are_the_strata_drawn_one_after_another():
    """The count strata run their activity recursion together, and the uniforms of
    consecutive plain units come from one call: the sample is the one a call per stratum
    (and per unit) gives from the same stream, which the stored best-known losses of the
    committed results were estimated on."""
    st = data.FeatureStructure(12, correlated_sets=1, correlated_size=3,
                               anticorrelated_sets=2, anticorrelated_size=2)
    q, members, kinds = est._units(st, np.linspace(0.05, 0.4, 12))
    ks, ns = np.array([1, 2, 4]), np.array([5, 3, 7])
    together = est._draw_given_counts(q, members, kinds, 12, ks, ns, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    apart = np.concatenate([est._draw_given_counts(q, members, kinds, 12, [k], [n], rng)
                            for k, n in zip(ks, ns, strict=True)])
    np.testing.assert_array_equal(together, apart)
    # The plain reference: per stratum, unit by unit, a call per draw.
    rng = np.random.default_rng(7)
    t = est._tail_table(q)
    for k, n, rows in zip(ks, ns, np.split(together, np.cumsum(ns)[:-1]), strict=True):
        remaining, ref = np.full(n, k), np.zeros((n, 12), np.float32)
        for u, mem in enumerate(members):
            denom, nxt = t[u, remaining], t[u + 1, np.maximum(remaining - 1, 0)]
            prob = np.where((remaining > 0) & (denom > 0),
                            q[u] * nxt / np.where(denom > 0, denom, 1), 0.0)
            on = rng.random(n) < prob
            remaining = remaining - on
            mag = rng.random((n, len(mem))).astype(np.float32)
            if kinds[u] == "one":
                pick = rng.integers(0, len(mem), n)
                mag = np.where(np.arange(len(mem))[None, :] == pick[:, None], mag, 0.0)
            ref[:, mem] = np.where(on[:, None], mag, 0.0)
        np.testing.assert_array_equal(rows, ref)
        assert np.all((ref > 0).sum(1) >= k)


def test_rare_strata_get_their_own_draws_at_the_sparse_end():
    # sets20-like: both sets active has probability p^2 = 6e-6; a plain sample of 16k would
    # hold 0.1 such draws, the stratified one at least n_min.
    st = data.FeatureStructure(20, correlated_sets=2, correlated_size=10)
    s = est.make_estimator_sample(st, np.full((1, 20), 0.0025), n_draws=1024, n_min=64,
                                  by_mask=False)
    assert np.sum((s.stratum[0] == 2) & (s.w[0] > 0)) >= 64


def test_paired_difference_is_the_difference_with_a_smaller_error():
    st = data.FeatureStructure(N)
    s = est.make_estimator_sample(st, np.full((1, N), 0.1), n_per_mask=128)
    b = np.zeros((1, N), np.float32)
    W2 = (PAIRS * 1.02)[None]
    e1 = est.estimate_loss(PAIRS[None], b, IMP, s)
    e2 = est.estimate_loss(W2, b, IMP, s)
    d = est.estimate_difference(PAIRS[None], b, W2, b, IMP, s)
    np.testing.assert_allclose(d.loss, e1.loss - e2.loss, rtol=1e-4, atol=1e-9)
    assert d.se[0] < 0.5 * min(e1.se[0], e2.se[0])


def test_bad_input_is_refused():
    st = data.FeatureStructure(3)
    with pytest.raises(ValueError, match="probabilities"):
        est.make_estimator_sample(st, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="has 4 features"):
        est.make_estimator_sample(st, np.full((1, 4), 0.5))
    s = est.make_estimator_sample(st, np.full((2, 3), 0.5), n_per_mask=8)
    with pytest.raises(ValueError, match="2 instances"):
        est.estimate_loss(np.zeros((3, 1, 3)), np.zeros((3, 3)), np.ones(3), s)
    with pytest.raises(ValueError, match="activation"):
        est.estimate_loss(np.zeros((2, 1, 3)), np.zeros((2, 3)), np.ones(3), s,
                          activation="gelu")
