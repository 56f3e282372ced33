"""bitjax.analysis.onsets: every onset definition, one name per censoring rule.

Onsets are checked on hand-made curves whose crossings are known (and, with hypothesis, on
random ones); one curve read by all three rules shows where they differ: at the grid's edges.
"""

from __future__ import annotations

import math

import chex
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitjax.analysis import onsets


def test_grid_onsets_first_and_sustained():
    probs = np.array([1.0, 0.5, 0.2, 0.1, 0.05])
    valid = np.ones(5, bool)

    def found(hit, ok=valid):
        return {k: v[0] for k, v in onsets.grid_onsets(probs, np.array(hit, bool),
                                                       ok).items()}

    assert found([1, 0, 0, 1, 1]) == {"first": 1.0, "sustained": 0.1}
    assert found([1, 1, 1, 1, 1]) == {"first": 1.0, "sustained": 1.0}
    r = found([0, 1, 1, 1, 0])
    assert r["first"] == 0.5 and np.isnan(r["sustained"])
    r = found([0, 0, 0, 0, 0])
    assert np.isnan(r["first"]) and np.isnan(r["sustained"])
    # a diverged grid point is skipped, neither breaking nor starting a run
    assert found([0, 0, 1, 0, 1], np.array([1, 1, 1, 0, 1], bool)) == {
        "first": 0.2, "sustained": 0.2}


def test_interpolated_onset_at_a_known_crossing():
    log_p = np.log10([1.0, 0.3, 0.1, 0.03])
    # the count goes 5 -> 7 between 1-S = 0.3 and 0.1: m + 1/2 = 5.5 is a quarter of the way
    got = onsets.interpolated_onset(log_p, [5, 5, 7, 9], 5.5)
    assert got == pytest.approx(log_p[1] + 0.25 * (log_p[2] - log_p[1]))
    # a falling quantity (the minimum bias) crossing -0.01 downwards, halfway
    got = onsets.interpolated_onset(log_p, [0.05, 0.01, -0.03, -0.2], -0.01, above=False)
    assert got == pytest.approx(log_p[1] + 0.5 * (log_p[2] - log_p[1]))
    # the order of the grid does not matter (sorted dense first inside)
    rev = onsets.interpolated_onset(log_p[::-1], [9, 7, 5, 5], 5.5)
    assert rev == pytest.approx(log_p[1] + 0.25 * (log_p[2] - log_p[1]))


def test_interpolated_onset_rules_censoring_missing_points_and_shapes():
    log_p = np.log10([1.0, 0.5, 0.25, 0.125, 0.0625])
    isolated = [0, 1, 0, 0, 1]  # an isolated hit at 0.5, then on from 0.0625
    assert onsets.interpolated_onset(log_p, isolated, 0.5) == pytest.approx(
        (log_p[0] + log_p[1]) / 2)
    assert onsets.interpolated_onset(log_p, isolated, 0.5, rule="sustained") == pytest.approx(
        (log_p[3] + log_p[4]) / 2)
    # holds at the densest point: the onset is that point (censored), for both rules
    assert onsets.interpolated_onset(log_p, [1, 1, 1, 1, 1], 0.5) == log_p[0]
    assert onsets.interpolated_onset(log_p, [1, 1, 1, 1, 1], 0.5, rule="sustained") == log_p[0]
    # never: NaN; not holding at the sparsest point: no sustained onset
    assert np.isnan(onsets.interpolated_onset(log_p, [0, 0, 0, 0, 0], 0.5))
    assert np.isnan(onsets.interpolated_onset(log_p, [0, 1, 1, 1, 0], 0.5, rule="sustained"))
    assert np.isnan(onsets.interpolated_onset(log_p, [np.nan] * 5, 0.5))
    # a missing (diverged) point is skipped: the line joins its finite neighbours
    got = onsets.interpolated_onset(log_p, [0, np.nan, 0, 1, 1], 0.5)
    assert got == pytest.approx((log_p[2] + log_p[3]) / 2)
    got = onsets.interpolated_onset(log_p, [0, 0, np.nan, 1, 1], 0.5)
    assert got == pytest.approx((log_p[1] + log_p[3]) / 2)
    # leading axes are kept: [kinds, seeds, n] -> [kinds, seeds]
    v = np.zeros((2, 3, 5))
    v[1, 2, 3:] = 1
    out = onsets.interpolated_onset(log_p, v, 0.5)
    chex.assert_shape(out, (2, 3))
    assert np.isnan(out).sum() == 5 and out[1, 2] == pytest.approx((log_p[2] + log_p[3]) / 2)


def test_interpolated_onset_rejects_bad_input():
    with pytest.raises(ValueError, match="last axis must match"):
        onsets.interpolated_onset([0.0, -1.0], [1, 2, 3], 0.5)
    with pytest.raises(ValueError, match="distinct"):
        onsets.interpolated_onset([0.0, 0.0], [1, 2], 0.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        onsets.interpolated_onset([0.0, -1.0], [1, 2], 0.5, rule="last")


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8), st.floats(-4, 4))
def test_interpolated_onset_lands_where_the_line_reaches_the_level(values, level):
    """Between grid points the onset is where the piecewise-linear curve reaches ``level``,
    and every denser point fails the condition."""
    values = np.asarray(values)
    log_p = -np.arange(values.size) * 0.3
    x = float(onsets.interpolated_onset(log_p, values, level))
    hit = values > level
    if not hit.any():
        assert np.isnan(x)
        return
    j = int(np.argmax(hit))
    if j == 0:
        assert x == log_p[0]
        return
    # <= on the sparse side: t < 1 in exact arithmetic, yet (level - v0) / (v1 - v0) rounds
    # to 1 when v1 - level is below the spacing of floats at v0 (v1 = 1e-229, v0 = -1).
    assert log_p[j] <= x <= log_p[j - 1]
    # np.interp needs increasing x: the grid runs dense (0) to sparse (negative)
    assert np.interp(x, log_p[::-1], values[::-1]) == pytest.approx(level, abs=1e-9)
    assert not hit[:j].any()


def test_bounded_onset_interpolates_in_log10_of_the_probability():
    p = np.array([1.0, 0.1, 0.01])  # x = 0, -1, -2
    values = np.array([[0.0, 0.4, 0.8],    # crosses 0.5 a quarter of the way from -1 to -2
                       [0.2, 0.6, 0.9],    # crosses between 0 and -1 at 3/4
                       [0.9, 0.9, 0.9],    # holds everywhere: left-censored at x = 0
                       [0.0, 0.1, 0.2],    # never: right-censored at x = -2
                       [0.9, 0.1, 0.7]])   # sustained only from the last crossing on
    onset, cens = onsets.bounded_onset(p, values, 0.5)
    np.testing.assert_allclose(onset, [-1.25, -0.75, 0.0, -2.0, -1.0 - 2.0 / 3.0])
    np.testing.assert_array_equal(cens, [0, 0, -1, 1, 0])
    # The grid order does not matter; NaN points (diverged) are skipped.
    onset2, _ = onsets.bounded_onset(p[::-1], values[:, ::-1], 0.5)
    np.testing.assert_allclose(onset2, onset)
    gap, _ = onsets.bounded_onset(p, np.array([[0.0, np.nan, 1.0]]), 0.5)
    np.testing.assert_allclose(gap, [-1.0])  # halfway between x = 0 and x = -2
    none, c = onsets.bounded_onset(p, np.full((1, 3), np.nan), 0.5)
    assert math.isnan(none[0]) and c[0] == 0
    with pytest.raises(ValueError, match=r"values must be \[seeds, 3\]"):
        onsets.bounded_onset(p, np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="must be > 0"):
        onsets.bounded_onset([1.0, 0.0], np.zeros((1, 2)), 0.5)


def test_the_rules_differ_only_at_the_edges_of_the_grid():
    """One curve per case, read by the three rules: inside the grid the interpolated and the
    bounded onset agree and the grid onset is the grid point after the crossing; where the
    condition never settles, each rule answers in its own way."""
    p = np.array([1.0, 0.1, 0.01, 0.001])
    x = np.log10(p)
    inside = np.array([0.0, 0.2, 0.8, 0.9])  # crosses 0.5 halfway between x = -1 and -2
    grid = onsets.grid_onsets(p, inside >= 0.5, np.ones(4, bool))["sustained"][0]
    interp = onsets.interpolated_onset(x, inside, 0.5, rule="sustained", inclusive=True)
    bounded, cens = onsets.bounded_onset(p, inside[None], 0.5)
    assert grid == 0.01
    assert float(interp) == pytest.approx(-1.5) and bounded[0] == pytest.approx(-1.5)
    assert cens[0] == 0
    # Never settled at the sparsest point: no grid onset, no interpolated onset, and a
    # bound at the sparsest point flagged +1.
    late = np.array([0.0, 0.2, 0.8, 0.1])
    assert np.isnan(onsets.grid_onsets(p, late >= 0.5, np.ones(4, bool))["sustained"][0])
    assert np.isnan(onsets.interpolated_onset(x, late, 0.5, rule="sustained",
                                              inclusive=True))
    bounded, cens = onsets.bounded_onset(p, late[None], 0.5)
    assert bounded[0] == x[-1] and cens[0] == 1


def test_onset_definitions_name_their_rules():
    assert "every sparser grid point" in onsets.onset_definition(
        "negative_bias_onset_sustained")
    assert str(onsets.NEGATIVE_BIAS) in onsets.onset_definition("negative_bias_onset_first")
    words = onsets.interpolated_definition("superposition_onset_first")
    assert "the first crossing" in words and "m + 1/2" in words
