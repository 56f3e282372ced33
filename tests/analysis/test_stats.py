"""bitjax.analysis.stats: t intervals, the paired t test, TOST, Holm and the paired bootstrap,
checked against values computed by hand (textbook formulas) on fixed samples; best-of-seeds
minima reported without an interval (the bootstrap's failure on them shown)."""

from __future__ import annotations

import math

import chex
import numpy as np
import pytest

from bitjax.analysis import stats

# A fixed sample: mean 3, sd sqrt(2.5), n 5, so t = 3 / (sqrt(2.5) / sqrt(5)) = 3 sqrt(2).
D = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def test_t_quantile_and_mean_ci_match_tables():
    assert float(stats.t_quantile(2)) == pytest.approx(4.302653, abs=1e-6)  # t table, 95%
    mean, half = stats.mean_ci_floats(D)
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    mean, half = stats.mean_ci_floats([np.nan, 2.0])
    assert mean == 2.0 and math.isnan(half)


def test_paired_t_matches_the_hand_computed_statistic_and_p_value():
    r = stats.paired_t(D)
    assert r.n == 5 and r.mean == 3.0 and r.sd == pytest.approx(math.sqrt(2.5))
    assert r.statistic == pytest.approx(3.0 * math.sqrt(2.0))
    # Two-sided p of t = 4.2426 at 4 degrees of freedom (Student t table: 0.013236).
    assert r.p == pytest.approx(0.0132356, rel=1e-4)
    assert (r.low, r.high) == pytest.approx((3.0 - 2.776445 * math.sqrt(0.5),
                                            3.0 + 2.776445 * math.sqrt(0.5)), rel=1e-6)
    one = stats.paired_t(D, "greater")
    assert one.p == pytest.approx(r.p / 2.0)
    assert one.high == math.inf and one.low == pytest.approx(3.0 - 2.131847 * math.sqrt(0.5))
    less = stats.paired_t(D, "less", null=2.0)  # t = sqrt(2): p = 1 - 0.11510
    assert less.statistic == pytest.approx(math.sqrt(2.0))
    assert less.p == pytest.approx(1.0 - 0.1150998, rel=1e-5)


def test_paired_t_drops_nan_and_reports_nothing_for_one_value():
    r = stats.paired_t(np.append(D, np.nan))
    assert r.n == 5 and r.p == pytest.approx(0.0132356, rel=1e-4)
    single = stats.paired_t([1.0, np.nan])
    assert single.n == 1 and math.isnan(single.p) and math.isnan(single.low)
    with pytest.raises(ValueError, match="alternative must be one of"):
        stats.paired_t(D, "bigger")
    with pytest.raises(ValueError, match="1-D sample"):
        stats.paired_t(np.ones((2, 2)))


def test_tost_equals_the_larger_one_sided_p_and_the_90_percent_interval():
    centred = D - 3.0  # mean 0, sd sqrt(2.5)
    r = stats.tost_paired(centred, 2.0)
    # Each side: t = 2 / sqrt(0.5) = 2.8284 at 4 dof, one-sided p = 0.023710.
    assert r.p_lower == pytest.approx(0.0237103, rel=1e-4)
    assert r.p_upper == pytest.approx(r.p_lower)
    assert r.p == r.p_lower and r.equivalent
    half = 2.131847 * math.sqrt(0.5)  # the 90% two-sided interval's half-width
    assert (r.low, r.high) == pytest.approx((-half, half), rel=1e-6)
    assert not r.ci_wider_than_margin


def test_tost_rejects_and_accepts_where_it_must():
    near = np.array([0.01, -0.02, 0.015, 0.0, -0.005, 0.01, -0.01, 0.005])
    assert stats.tost_paired(near, 0.1).equivalent
    shifted = near + 0.5  # clearly outside a 0.1 margin
    far = stats.tost_paired(shifted, 0.1)
    assert not far.equivalent and far.p > 0.99 and far.low > 0.1
    noisy = np.array([1.0, -1.0, 0.8, -0.9])  # mean near 0 but CI much wider than the margin
    r = stats.tost_paired(noisy, 0.1)
    assert not r.equivalent and r.ci_wider_than_margin
    # An asymmetric margin: equivalence only where the interval fits inside it.
    assert stats.tost_paired(near + 0.05, (-0.01, 0.1)).equivalent
    assert not stats.tost_paired(near + 0.05, (-0.1, 0.04)).equivalent
    with pytest.raises(ValueError, match="must contain 0"):
        stats.tost_paired(near, (0.1, 0.2))
    with pytest.raises(ValueError, match="TOST level"):
        stats.tost_paired(near, 0.1, level=0.6)


def test_holm_textbook_example():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    # NaN = a test not carried out: not counted in m, stays NaN.
    adj = stats.holm([0.01, np.nan, 0.04])
    np.testing.assert_allclose(adj, [0.02, np.nan, 0.04])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    chex.assert_shape(stats.holm([]), (0,))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        stats.holm([0.1, 1.5])


def test_holm_never_below_the_raw_p_and_keeps_the_order():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=12)
    adj = stats.holm(p)
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)


def test_paired_bootstrap_keeps_the_pairing_and_is_reproducible():
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = a - 0.5  # every pair differs by exactly 0.5
    est, lo, hi = stats.paired_bootstrap_ci(a, b, lambda x, y: float(np.mean(x - y)))
    assert (est, lo, hi) == (0.5, 0.5, 0.5)  # paired resampling: no spread at all
    best = lambda x, y: float(np.min(x) - np.min(y))  # noqa: E731
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 1)), rng.normal(size=(10, 1))
    one = stats.paired_bootstrap_ci(x, y, best, seed=4)
    assert one == stats.paired_bootstrap_ci(x, y, best, seed=4)
    assert one[1] <= one[2]
    assert math.isnan(stats.paired_bootstrap_ci(a[:1], b[:1], best)[1])
    with pytest.raises(ValueError, match="same number of rows"):
        stats.paired_bootstrap_ci(a, b[:2], best)


def _minima_far_apart():
    """Six seeds, six cells; each cell's best ternary seed is a different seed (loss 0, the
    others 1), dense is 1 everywhere: the best-of-seeds gap is -1, reached only by a
    resample holding all six seeds (probability 6!/6^6 = 1.5%)."""
    return 1.0 - np.eye(6), np.ones((6, 6))


def _best_gap_stat(x, y):
    return float(np.mean(np.min(x, axis=0) - np.min(y, axis=0)))


def test_the_bootstrap_of_a_minimum_can_exclude_its_own_estimate():
    """The failure mode that rules the bootstrap out for best-of-seeds minima: no resample
    goes below the sample's minimum, so the 95% interval lies above the estimate."""
    a, b = _minima_far_apart()
    est, lo, hi = stats.paired_bootstrap_ci(a, b, _best_gap_stat)
    assert est == -1.0 and not lo <= est <= hi


def test_best_of_seeds_reports_the_value_and_no_interval():
    a, b = _minima_far_apart()
    best = stats.best_of_seeds(a, b, _best_gap_stat)
    assert best.estimate == -1.0 and best.k == 6
    assert best.quantile == pytest.approx(stats.min_quantile(6))
    # No interval exists to exclude the estimate.
    assert not any(hasattr(best, name) for name in ("low", "high", "ci"))
    a[2] = np.nan  # a seed with nothing measured does not count
    b[2] = np.nan
    assert stats.best_of_seeds(a, b, lambda x, y: float(np.nanmin(x))).k == 5
    with pytest.raises(ValueError, match="same number of rows"):
        stats.best_of_seeds(a, b[:2], _best_gap_stat)


def test_min_quantile_is_the_order_statistic_fact():
    # 1 - 0.05^(1/5): the best of 5 seeds is at or below a seed's 45% quantile, 95% of the time.
    assert stats.min_quantile(5) == pytest.approx(0.4507, abs=1e-4)
    assert stats.min_quantile(1) == pytest.approx(0.95)
    q = stats.min_quantile(20)
    rng = np.random.default_rng(0)
    draws = rng.uniform(size=(20000, 20)).min(axis=1)  # a uniform's q-quantile is q
    assert np.mean(draws <= q) == pytest.approx(0.95, abs=0.005)
    with pytest.raises(ValueError, match="k >= 1"):
        stats.min_quantile(0)
