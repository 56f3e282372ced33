"""bitjax.analysis.verdicts: the decision rules of the findings protocol.

Equivalence and difference rules decided every way on fixed samples, Holm-adjusted p-values
deciding instead of the raw ones, and the rules' text; local claims on declared windows
(a local effect found, none found at the stated level), each test once in the Holm family,
and the optimum's fact deciding both kinds of claim (the findings' onsets:
analysis/test_onsets.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bitjax.analysis import stats
from bitjax.analysis import verdicts as vd

EQ = vd.Rule("eq", "the same", "equivalence", "m", "u", 0.1, 0, "same")


LESS = vd.Rule("less", "smaller", "difference", "m", "u", 0.1, -1, "same")


def _decide(rule, diff):
    raw = vd.raw_tests(rule, np.asarray(diff, float))
    return vd.decide(rule, raw, raw.p_support, raw.p_refute)


def test_equivalence_decisions_go_every_way():
    rng = np.random.default_rng(0)
    small = rng.normal(0.0, 0.01, 10)
    assert _decide(EQ, small) == ("supported", "")
    assert _decide(EQ, small + 0.5) == ("refuted", "")
    assert _decide(EQ, rng.normal(0.0, 1.0, 4)) == ("undecided", "power")
    # Narrow enough, but the interval straddles the margin's edge.
    assert _decide(EQ, np.array([0.08, 0.1, 0.12, 0.09, 0.11, 0.1])) == ("not supported", "")
    assert _decide(EQ, [0.0, 0.0, 0.0]) == ("undecided", "power")  # no spread
    assert _decide(EQ, [0.01, 0.02]) == ("undecided", "power")  # fewer than MIN_SEEDS


def test_difference_decisions_go_every_way():
    rng = np.random.default_rng(1)
    assert _decide(LESS, -1.0 + rng.normal(0, 0.05, 8)) == ("supported", "")
    assert _decide(LESS, 1.0 + rng.normal(0, 0.05, 8)) == ("refuted", "")
    # No effect, and the 95% bound excludes an effect of 0.1 in the claimed direction.
    assert _decide(LESS, rng.normal(0, 0.01, 8)) == ("not supported", "")
    assert _decide(LESS, rng.normal(0, 1.0, 4)) == ("undecided", "power")
    more = dataclasses.replace(LESS, direction=1)
    assert _decide(more, 1.0 + rng.normal(0, 0.05, 8)) == ("supported", "")


def test_holm_adjusted_p_values_decide_not_the_raw_ones():
    raw = vd.raw_tests(LESS, np.array([-0.3, -0.1, -0.25, -0.05, -0.2]))
    assert raw.p_support < 0.05
    assert vd.decide(LESS, raw, raw.p_support, raw.p_refute)[0] == "supported"
    # In a family where Holm lifts it above alpha it no longer is.
    assert vd.decide(LESS, raw, min(1.0, raw.p_support * 20), 1.0)[0] != "supported"


def test_rule_text_follows_the_rule_fields():
    text = vd.rule_text(LESS)
    assert "ternary - dense < 0 is shown" in text and "0.1 u" in text
    flipped = vd.rule_text(dataclasses.replace(LESS, direction=1, margin=0.3))
    assert "ternary - dense > 0 is shown" in flipped and "0.3 u" in flipped
    assert "±0.1" in vd.rule_text(EQ) and "90% CI" in vd.rule_text(EQ)
    with pytest.raises(ValueError, match="margin must be > 0"):
        dataclasses.replace(EQ, margin=0.0)
    with pytest.raises(ValueError, match="direction"):
        dataclasses.replace(LESS, direction=0)
    with pytest.raises(ValueError, match="test must be one of"):
        dataclasses.replace(EQ, test="similar")
    assert vd.verdict_text("undecided", "not_converged", "1 of 8") == (
        "undecided (not converged: 1 of 8)")
    with pytest.raises(ValueError, match="unknown verdict"):
        vd.verdict_text("maybe")


# ---- local claims: declared windows ---------------------------------------------------------

WINDOWS = vd.decade_windows(0.01, 1.0, 4)
LOCAL = dataclasses.replace(LESS, key="local", windows=WINDOWS)


def test_decade_windows_tile_the_declared_range_from_the_data_free_bounds():
    assert WINDOWS[0] == (0.5623, 1.0) and WINDOWS[-1] == (0.01, 0.01778)
    assert len(WINDOWS) == 8
    assert all(WINDOWS[i][0] == WINDOWS[i + 1][1] for i in range(7))  # adjacent, no gap
    grid = np.logspace(-2, 0, 40).astype(np.float32)  # labels stored in float32
    member = np.array([vd.in_window(grid, w) for w in WINDOWS])
    assert (member.sum(axis=0) == 1).all()  # every cell in exactly one window
    assert vd.in_window(np.float32(0.01), (0.01, 0.1)) and vd.in_window(1.0, (0.1, 1.0))
    assert not vd.in_window(0.1, (0.01, 0.1))
    with pytest.raises(ValueError, match="windows need a difference test"):
        dataclasses.replace(EQ, windows=WINDOWS)
    with pytest.raises(ValueError, match="0 < lo < hi <= 1"):
        dataclasses.replace(LESS, windows=((0.5, 0.2),))


def _local_sample(rng, effect_window=None, effect=-0.2, sd=0.02, seeds=5):
    """Per-seed window means [seeds, 8]; an effect in one window, and the opposite spread
    over the other seven so the whole-grid mean is unchanged."""
    d = rng.normal(0.0, sd, (seeds, len(WINDOWS)))
    if effect_window is not None:
        d[:, effect_window] += effect
        d[:, np.arange(len(WINDOWS)) != effect_window] -= effect / (len(WINDOWS) - 1)
    return d


def test_a_local_effect_is_detected_in_its_window_and_missed_by_the_grid_mean():
    rng = np.random.default_rng(3)
    d = _local_sample(rng, effect_window=2)
    raw = vd.raw_tests(LOCAL, d)
    assert raw.window == 2 and raw.mean < -0.15
    assert vd.decide(LOCAL, raw, raw.p_support, raw.p_refute) == ("supported", "")
    # The same seeds summarised by their whole-grid mean: the effect is invisible.
    assert _decide(LESS, d.mean(axis=1))[0] != "supported"


def test_no_local_effect_is_not_detected_at_the_stated_level():
    rng = np.random.default_rng(4)
    # Small noise, no effect: every window's bound excludes the margin.
    assert _decide(LOCAL, _local_sample(rng, sd=0.01)) == ("not supported", "")
    # Under the null the claim is supported at most alpha of the time (Bonferroni over the
    # windows keeps the family-wise rate): 400 null samples of 5 seeds.
    hits = [_decide(LOCAL, rng.normal(0.0, 1.0, (5, 8)))[0] == "supported"
            for _ in range(400)]
    assert np.mean(hits) <= vd.ALPHA + 0.02


def test_a_local_claim_is_refuted_only_by_the_opposite_in_every_window():
    rng = np.random.default_rng(5)
    everywhere = 0.3 + rng.normal(0.0, 0.02, (6, 8))
    assert _decide(LOCAL, everywhere) == ("refuted", "")
    one = rng.normal(0.0, 0.02, (6, 8))
    one[:, 4] += 0.3  # the opposite in one window only: nothing refutes "some window"
    assert _decide(LOCAL, one)[0] != "refuted"
    with pytest.raises(ValueError, match=r"\[seeds, 8 windows\]"):
        vd.raw_tests(LOCAL, everywhere[:, :3])
    assert "8 declared windows" in vd.rule_text(LOCAL) and "[0.5623, 1]" in vd.rule_text(LOCAL)


# ---- the Holm family: each test once ---------------------------------------------------------


def test_each_test_enters_the_holm_family_once():
    d = np.array([-0.35, 0.0, -0.3, -0.1, -0.25])  # one-sided p = 0.019
    raw = vd.raw_tests(LESS, d)
    key = vd.same_test_key(LESS, d)
    assert key == vd.same_test_key(LESS, d.copy())
    assert key != vd.same_test_key(LESS, d + 1e-9)
    assert key != vd.same_test_key(EQ, d)
    # The two views of a claim test the same values: one test, two p-values in the family.
    adjusted, size = vd.holm_family([(key, raw), (key, raw), ("other", None)])
    assert size == 2 and adjusted[0] == adjusted[1]
    assert np.isnan(adjusted[2]).all()
    assert vd.decide(LESS, raw, *adjusted[0])[0] == "supported"
    # The old family counted it twice (four p-values) and lost the verdict.
    twice = stats.holm([[raw.p_support, raw.p_refute]] * 2)
    assert vd.decide(LESS, raw, *twice[0])[0] != "supported"


# ---- the theory's prediction, used the same way for both kinds of claim ----------------------


def test_the_optimum_fact_decides_equivalence_and_difference_alike():
    different = dataclasses.replace(LESS, theory="different")
    assert vd.decide_by_optimum(EQ, True) == ("supported", "")
    assert vd.decide_by_optimum(LESS, True) == ("not supported", "")
    # The measured fact decides, not the prediction.
    assert vd.decide_by_optimum(different, True) == ("not supported", "")
    for rule in (EQ, LESS, different):
        assert vd.decide_by_optimum(rule, False) is None  # tested on the seeds instead
    assert "theory" not in vd.REASONS and set(vd.REMEDIES) == set(vd.REASONS)


def test_a_view_that_does_not_exist_for_a_model_says_so_and_no_compute_removes_it():
    assert vd.verdict_text("undecided", "not_applicable", "the config refuses it") == (
        "undecided (does not apply: the config refuses it)")
    assert vd.REMEDIES["not_applicable"].startswith("no compute removes it")
    assert vd.REMEDIES["missing"] == "running the experiment removes it"


def test_seeds_for_power_follow_the_t_quantiles_and_refuse_what_more_seeds_cannot_do():
    import dataclasses

    from scipy import stats as st

    eq = vd.Rule("k", "c", "equivalence", "m", "u", 0.1, 0, "same")
    raw = vd.RawTests(n=5, mean=0.02, sd=0.2, low=np.nan, high=np.nan, bound=np.nan,
                      p_support=np.nan, p_refute=np.nan)
    n = vd.seeds_for_power(eq, raw)

    def need(k):
        return (st.t.ppf(0.95, k - 1) + st.t.ppf(0.8, k - 1)) * 0.2 / np.sqrt(k)

    assert need(n) <= 0.08 < need(n - 1)  # the first count within margin - |mean|
    # a mean outside the margin: more seeds would refute, never support
    assert vd.seeds_for_power(eq, dataclasses.replace(raw, mean=0.12)) is None
    # a difference: the easier of showing it (|mean| = 0.3) and bounding it (0.1 - 0.3 < 0)
    diff = vd.Rule("k", "c", "difference", "m", "u", 0.1, 1, "same")
    n = vd.seeds_for_power(diff, dataclasses.replace(raw, mean=0.3))
    assert need(n) <= 0.3 < need(n - 1)
    assert vd.seeds_for_power(diff, dataclasses.replace(raw, sd=0.0)) is None
    # A family's level (Bonferroni's, which Holm's never asks more than) needs more seeds.
    strict = vd.seeds_for_power(diff, dataclasses.replace(raw, mean=0.3), alpha=0.05 / 78)

    def need_at(k, a):
        return (st.t.ppf(1 - a, k - 1) + st.t.ppf(0.8, k - 1)) * 0.2 / np.sqrt(k)

    assert strict > n and need_at(strict, 0.05 / 78) <= 0.3 < need_at(strict - 1, 0.05 / 78)
    # A local claim: its own Bonferroni over 3 windows, and only the route of showing the
    # effect (bounding it below the margin would need every window, not the one in raw).
    local = vd.Rule("k", "c", "difference", "m", "u", 0.1, 1, "same",
                    windows=((0.1, 1.0), (0.01, 0.1), (0.001, 0.01)))
    n3 = vd.seeds_for_power(local, dataclasses.replace(raw, mean=0.3))
    assert need_at(n3, 0.05 / 3) <= 0.3 < need_at(n3 - 1, 0.05 / 3) and n3 > n
    assert vd.seeds_for_power(local, dataclasses.replace(raw, mean=0.02)) is not None
    assert vd.seeds_for_power(local, dataclasses.replace(raw, mean=-0.02)) is None


def test_recipe_verdicts_combine_by_the_stated_rule():
    """Every case of vd.RECIPE_RULE: the same decided verdict on every recipe with a run,
    one recipe only, different decided verdicts, decided beside undecided, none decided,
    no run at all."""
    def rv(label, verdict, reason=""):
        return vd.RecipeVerdict(label, verdict, reason, f"{label} detail" if reason else "")

    missing = rv("c", "undecided", "missing")
    a = vd.across_recipes([rv("a", "refuted"), rv("b", "refuted"), missing])
    assert (a.verdict, a.reason, a.scope) == ("refuted", "", "across")
    assert [r.label for r in a.ran] == ["a", "b"] and a.absent == (missing,)
    a = vd.across_recipes([rv("a", "undecided", "power"), missing])
    assert (a.verdict, a.reason, a.detail, a.scope) == ("undecided", "power", "a detail",
                                                        "one")
    a = vd.across_recipes([rv("a", "supported"), rv("b", "not supported")])
    assert (a.verdict, a.reason, a.scope) == ("undecided", "recipe", "depends")
    assert a.detail == "a: supported; b: not supported"
    assert vd.verdict_text(a.verdict, a.reason, a.detail) == (
        "undecided (depends on the recipe: a: supported; b: not supported)")
    a = vd.across_recipes([rv("a", "undecided", "not_converged"), rv("b", "supported")])
    assert (a.verdict, a.scope) == ("supported", "partial")
    a = vd.across_recipes([rv("a", "undecided", "not_converged"), rv("b", "undecided", "power")])
    assert (a.verdict, a.reason, a.scope) == ("undecided", "not_converged", "undecided")
    assert "b: undecided (too little power: b detail)" in a.detail
    a = vd.across_recipes([missing, rv("d", "undecided", "missing")])
    assert (a.verdict, a.reason, a.scope) == ("undecided", "missing", "none")
    assert a.detail == "c detail; d detail"
    a = vd.across_recipes([rv("e", "undecided", "not_applicable")])
    assert (a.reason, a.scope) == ("not_applicable", "none")
    with pytest.raises(ValueError):
        vd.across_recipes([])
    with pytest.raises(ValueError, match="unknown verdict"):
        vd.across_recipes([rv("a", "maybe")])
    assert set(vd.SCOPES) == {"across", "one", "partial", "depends", "undecided", "none"}
