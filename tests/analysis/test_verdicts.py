"""bitjax.analysis.verdicts: the decision rules of the findings protocol.

Equivalence and difference rules decided every way on fixed samples, Holm-adjusted p-values
deciding instead of the raw ones, and the rules' text (the findings' onsets:
analysis/test_onsets.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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
