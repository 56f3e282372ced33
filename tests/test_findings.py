"""The statistics behind results/FINDINGS.md: pairing by seed and the verdict rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from experiments import findings


def _part(kinds, seeds, probs, diverged=None):
    coords = {"kind": np.array(kinds), "seed": np.array(seeds),
              "feature_probability": np.array(probs, dtype=float)}
    n = len(kinds)
    return SimpleNamespace(sweep=SimpleNamespace(coords=coords),
                           diverged=np.zeros(n, bool) if diverged is None else diverged)


def test_paired_matches_instances_that_differ_only_in_kind():
    #            0        1        2          3          4
    part = _part(["dense", "dense", "ternary", "ternary", "ternary"],
                 [0, 1, 1, 0, 2], [0.1, 0.1, 0.1, 0.1, 0.1])
    values = np.array([1.0, 2.0, 5.0, 7.0, 9.0])
    t, d, diff = findings.paired(part, values)
    # ternary seed 1 pairs with dense seed 1, seed 0 with seed 0; seed 2 has no partner.
    np.testing.assert_array_equal(t, [5.0, 7.0])
    np.testing.assert_array_equal(d, [2.0, 1.0])
    np.testing.assert_array_equal(diff, [3.0, 6.0])


def test_paired_drops_diverged_and_filtered_instances():
    part = _part(["dense", "dense", "ternary", "ternary"], [0, 0, 0, 0], [0.1, 0.5, 0.1, 0.5],
                 diverged=np.array([False, False, True, False]))
    t, d, diff = findings.paired(part, np.arange(4.0))
    np.testing.assert_array_equal(diff, [2.0])  # the p=0.1 pair is gone (diverged)
    t, d, diff = findings.paired(part, np.arange(4.0), where=lambda i: False)
    assert diff.size == 0


def test_verdict_rule_follows_the_confidence_interval():
    below = np.array([-1.0, -1.1, -0.9, -1.05])
    above = -below
    noisy = np.array([-1.0, 1.0, -0.5, 0.6])
    assert findings._direction(below, smaller_supports=True) == "supported"
    assert findings._direction(above, smaller_supports=True).startswith("not supported")
    assert findings._direction(above, smaller_supports=False) == "supported"
    assert findings._direction(noisy, smaller_supports=True).startswith("inconclusive")
    assert findings._direction(np.array([1.0]), smaller_supports=True).startswith(
        "inconclusive")
